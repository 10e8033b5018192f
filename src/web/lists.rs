//! The admin API behind `antemx lists ...`: each recipient's own sender
//! lists.
//!
//! - `GET /admin/lists/RECIPIENT`
//! - `POST /admin/lists/RECIPIENT/allow?sender=S`, `.../block?sender=S`
//! - `DELETE /admin/lists/RECIPIENT?sender=S`

use super::{error_reply, json_reply, query_value, Reply};
use crate::filter::user_lists::{Kind, Lists, UserLists};
use crate::store::Store;
use hyper::{Method, StatusCode};

pub async fn handle(
    method: &Method,
    parts: &[&str],
    query: &str,
    lists: &UserLists,
    store: &Store,
) -> Reply {
    let sender = query_value(query, "sender");
    let changed = |result: Result<Lists, String>| async {
        match result {
            Ok(lists) => match store.flush().await {
                Ok(()) => json_reply(StatusCode::OK, &lists),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Err(e) => error_reply(StatusCode::BAD_REQUEST, &e),
        }
    };
    match (method, parts, sender) {
        (&Method::GET, [recipient], _) => json_reply(StatusCode::OK, &lists.get(recipient)),
        (&Method::POST, [recipient, kind], Some(sender)) => {
            let kind = match *kind {
                "allow" => Kind::Allow,
                "block" => Kind::Block,
                _ => return error_reply(StatusCode::NOT_FOUND, "lists are allow or block"),
            };
            changed(lists.add(recipient, kind, &sender)).await
        }
        (&Method::DELETE, [recipient], Some(sender)) => {
            changed(lists.remove(recipient, &sender)).await
        }
        (&Method::POST | &Method::DELETE, _, None) => {
            error_reply(StatusCode::BAD_REQUEST, "name the sender: ?sender=")
        }
        _ => error_reply(StatusCode::NOT_FOUND, "no such admin call"),
    }
}
