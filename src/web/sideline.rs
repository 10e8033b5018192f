//! The admin API behind `antemx sideline ...`:
//!
//! - `GET /admin/sideline?domain=&recipient=&sender=&since_ms=&until_ms=`
//! - `GET /admin/sideline/ID`, `DELETE /admin/sideline/ID`
//! - `POST /admin/sideline/ID/release?by=WHO&train=1`
//!
//! In a cluster each answers for every node (`sideline::everywhere`).

use super::{error_reply, json_reply, query_value, Reply};
use crate::sideline::{Filter, ReleaseError, Sideline};
use hyper::{Method, StatusCode};
use serde_json::json;

pub async fn handle(method: &Method, parts: &[&str], query: &str, sideline: &Sideline) -> Reply {
    match (method, parts) {
        (&Method::GET, []) => match filter(query) {
            Ok(filter) => json_reply(
                StatusCode::OK,
                &sideline.list_everywhere(filter, query).await,
            ),
            Err(e) => error_reply(StatusCode::BAD_REQUEST, &e),
        },
        (&Method::GET, [id]) => match sideline.find(id).await {
            Some(entry) => json_reply(StatusCode::OK, &entry),
            None => not_found(id),
        },
        (&Method::DELETE, [id]) => match sideline.delete(id, "admin").await {
            Ok(true) => json_reply(StatusCode::OK, &json!({ "deleted": id })),
            Ok(false) => not_found(id),
            Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        (&Method::POST, [id, "release"]) => {
            let by = query_value(query, "by").unwrap_or_else(|| "admin".into());
            release(sideline, id, &by, query).await
        }
        _ => error_reply(StatusCode::NOT_FOUND, "no such admin call"),
    }
}

/// A release's answer, for the admin API and the customers' API alike;
/// `train=1` in the query also teaches the classifier.
pub(super) async fn release(sideline: &Sideline, id: &str, by: &str, query: &str) -> Reply {
    let train = query_value(query, "train").is_some_and(|t| t == "1" || t == "true");
    match sideline.release(id, by, train).await {
        Ok(entry) => json_reply(
            StatusCode::OK,
            &json!({ "released": entry.id, "by": by, "trained": train }),
        ),
        Err(ReleaseError::NotFound) => not_found(id),
        Err(e @ ReleaseError::AlreadyReleased) => {
            error_reply(StatusCode::CONFLICT, &format!("{id}: {e}"))
        }
        Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn not_found(id: &str) -> Reply {
    error_reply(StatusCode::NOT_FOUND, &format!("no sidelined message {id}"))
}

pub(super) fn filter(query: &str) -> Result<Filter, String> {
    let ms = |name: &str| {
        query_value(query, name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{name}={v} is not a number of milliseconds"))
            })
            .transpose()
    };
    Ok(Filter {
        domain: query_value(query, "domain"),
        recipient: query_value(query, "recipient"),
        sender: query_value(query, "sender"),
        since_ms: ms("since_ms")?,
        until_ms: ms("until_ms")?,
    })
}
