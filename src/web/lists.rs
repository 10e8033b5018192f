//! The admin API behind `antemx lists ...` (and the customers' API, for
//! their own recipients): each recipient's own sender lists.
//!
//! - `GET /admin/lists/RECIPIENT`
//! - `POST /admin/lists/RECIPIENT/allow?sender=S`, `.../block?sender=S`
//! - `DELETE /admin/lists/RECIPIENT?sender=S`
//!
//! A change made through the admin or customers' API goes to every peer too (the peer API
//! takes the same calls under `/peer/lists/`, applied there only).

use super::{error_reply, json_reply, percent_encode, query_value, Reply};
use crate::cluster::Cluster;
use crate::filter::user_lists::{Kind, Lists, UserLists};
use crate::store::Store;
use hyper::{Method, StatusCode};

pub async fn handle(
    method: &Method,
    parts: &[&str],
    query: &str,
    lists: &UserLists,
    store: &Store,
    peers: Option<&Cluster>,
) -> Reply {
    let sender = query_value(query, "sender");
    let changed = |result: Result<Lists, String>| async {
        let lists = match result {
            Ok(lists) => lists,
            Err(e) => return error_reply(StatusCode::BAD_REQUEST, &e),
        };
        if let Err(e) = store.flush().await {
            return error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
        if let Some(cluster) = peers {
            let path = format!(
                "/peer/lists/{}?{query}",
                parts
                    .iter()
                    .map(|p| percent_encode(p))
                    .collect::<Vec<_>>()
                    .join("/")
            );
            // Through the outbox only: a peer gets list changes in order.
            if let Err(e) = cluster.tell_all(&[], method.as_str(), &path, b"").await {
                return error_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("changed here, but the other nodes were not told: {e}"),
                );
            }
        }
        json_reply(StatusCode::OK, &lists)
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
