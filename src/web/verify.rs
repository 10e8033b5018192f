//! The admin API behind `antemx verify clear`:
//!
//! - `DELETE /admin/verify` clears every cached verification answer,
//!   `?address=A` one address's, `?domain=D` a domain's.

use super::{error_reply, json_reply, query_value, Reply};
use crate::receive::{Policies, Selector};
use hyper::{Method, StatusCode};
use serde_json::json;

pub async fn handle(method: &Method, parts: &[&str], query: &str, policies: &Policies) -> Reply {
    if method != Method::DELETE || !parts.is_empty() {
        return error_reply(StatusCode::NOT_FOUND, "no such admin call");
    }
    let selector = match (query_value(query, "address"), query_value(query, "domain")) {
        (Some(_), Some(_)) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                "give an address or a domain, not both",
            )
        }
        (Some(address), None) => Selector::Address(address),
        (None, Some(domain)) => Selector::Domain(domain),
        (None, None) => Selector::All,
    };
    match policies.verifier().clear(selector).await {
        Ok(cleared) => json_reply(StatusCode::OK, &json!({ "cleared": cleared })),
        Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
