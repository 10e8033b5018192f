//! The admin API behind `antemx queue ...`:
//!
//! - `GET /admin/queue`, `GET /admin/queue/ID`
//! - `POST /admin/queue/flush`, `POST /admin/queue/ID/flush`
//! - `DELETE /admin/queue/ID`
//! - `POST /admin/queue/extend?domain=D&by=2d`

use super::{error_reply, json_reply, query_value, Reply};
use crate::retry::Queue;
use hyper::{Method, StatusCode};
use serde_json::json;

pub async fn handle(method: &Method, parts: &[&str], query: &str, queue: &Queue) -> Reply {
    match (method, parts) {
        (&Method::GET, ["queue"]) => json_reply(StatusCode::OK, &queue.list()),
        (&Method::POST, ["queue", "flush"]) => {
            json_reply(StatusCode::OK, &json!({ "flushed": queue.flush(None) }))
        }
        (&Method::POST, ["queue", "extend"]) => {
            let (Some(domain), Some(by)) = (query_value(query, "domain"), query_value(query, "by"))
            else {
                return error_reply(StatusCode::BAD_REQUEST, "extend needs domain= and by=");
            };
            let by = match crate::config::parse_duration(&by) {
                Ok(by) => by,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, &e),
            };
            match queue.extend(&domain, by).await {
                Ok(extension) => json_reply(StatusCode::OK, &extension),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::GET, ["queue", id]) => match queue.show(id) {
            entries if entries.is_empty() => {
                error_reply(StatusCode::NOT_FOUND, &format!("no queued message {id}"))
            }
            entries => json_reply(StatusCode::OK, &entries),
        },
        (&Method::POST, ["queue", id, "flush"]) => match queue.show(id) {
            entries if entries.is_empty() => {
                error_reply(StatusCode::NOT_FOUND, &format!("no queued message {id}"))
            }
            _ => json_reply(StatusCode::OK, &json!({ "flushed": queue.flush(Some(id)) })),
        },
        (&Method::DELETE, ["queue", id]) => match queue.delete(id).await {
            Ok(true) => json_reply(StatusCode::OK, &json!({ "deleted": id })),
            Ok(false) => error_reply(StatusCode::NOT_FOUND, &format!("no queued message {id}")),
            Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        _ => error_reply(StatusCode::NOT_FOUND, "no such admin call"),
    }
}
