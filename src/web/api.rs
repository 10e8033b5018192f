//! The customers' JSON API. A `[[user]]` signs in with HTTP Basic (email
//! and password) on every call, and sees and acts on the sidelined mail of
//! their domains (all of them with `admin = true`); in a cluster, of every
//! node. Serve it to the Internet only through a TLS reverse proxy: Basic
//! sends the password with each call.
//!
//! - `GET /api/sideline?domain=&recipient=&sender=&since_ms=&until_ms=`
//! - `GET /api/sideline/ID`, `DELETE /api/sideline/ID`
//! - `POST /api/sideline/ID/release?train=1`
//!
//! A message to recipients of several customers is visible to each, and a
//! release delivers it to all its recipients (it has one verdict).

use super::{error_reply, json_reply, query_value, Node, Reply};
use crate::config::Scope;
use crate::sideline::{Entry, ReleaseError};
use base64ct::{Base64, Encoding};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use std::net::SocketAddr;

pub async fn handle(request: Request<Incoming>, remote: SocketAddr, node: &Node) -> Reply {
    let Some((email, scope)) = sign_in(&request, remote, node).await else {
        let mut reply = error_reply(
            StatusCode::UNAUTHORIZED,
            "sign in with the email and password of a [[user]] (HTTP Basic)",
        );
        reply.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"antemx\""),
        );
        return reply;
    };
    let path = request.uri().path().trim_start_matches("/api/").to_string();
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(super::percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let query = request.uri().query().unwrap_or("");
    let sideline = &node.sideline;
    let visible = |entry: &Entry| {
        entry.recipients.iter().any(|r| {
            r.rsplit_once('@')
                .is_some_and(|(_, domain)| scope.covers(domain))
        })
    };
    let not_found =
        |id: &str| error_reply(StatusCode::NOT_FOUND, &format!("no sidelined message {id}"));
    match (request.method(), parts.as_slice()) {
        (&Method::GET, ["sideline"]) => {
            let filter = match super::sideline::filter(query) {
                Ok(filter) => filter,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, &e),
            };
            if let Some(domain) = &filter.domain {
                if !scope.covers(domain) {
                    return error_reply(StatusCode::FORBIDDEN, &format!("{domain} is not yours"));
                }
            }
            let entries: Vec<Entry> = sideline
                .list_everywhere(filter, query)
                .await
                .into_iter()
                .filter(|e| visible(e))
                .collect();
            json_reply(StatusCode::OK, &entries)
        }
        (&Method::GET, ["sideline", id]) => match sideline.find(id).await {
            Some(entry) if visible(&entry) => json_reply(StatusCode::OK, &entry),
            _ => not_found(id),
        },
        (&Method::POST, ["sideline", id, "release"]) => {
            if !sideline.find(id).await.is_some_and(|e| visible(&e)) {
                return not_found(id);
            }
            let train = query_value(query, "train").is_some_and(|t| t == "1" || t == "true");
            match sideline.release(id, &email, train).await {
                Ok(entry) => json_reply(
                    StatusCode::OK,
                    &json!({ "released": entry.id, "by": email, "trained": train }),
                ),
                Err(ReleaseError::NotFound) => not_found(id),
                Err(e @ ReleaseError::AlreadyReleased) => {
                    error_reply(StatusCode::CONFLICT, &format!("{id}: {e}"))
                }
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::DELETE, ["sideline", id]) => {
            if !sideline.find(id).await.is_some_and(|e| visible(&e)) {
                return not_found(id);
            }
            match sideline.delete(id, &email).await {
                Ok(true) => json_reply(StatusCode::OK, &json!({ "deleted": id })),
                Ok(false) => not_found(id),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        _ => error_reply(StatusCode::NOT_FOUND, "no such API call"),
    }
}

/// The signed-in user's email and scope, if the Basic credentials hold.
async fn sign_in(
    request: &Request<Incoming>,
    remote: SocketAddr,
    node: &Node,
) -> Option<(String, Scope)> {
    let credentials = request
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = Base64::decode_vec(credentials.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (email, password) = decoded.split_once(':')?;
    let email = email.trim().to_ascii_lowercase();
    let user = node.live.current().users.get(&email).cloned();
    let password = password.to_string();
    let checked = user.clone();
    let valid = smol::unblock(move || checked.is_some_and(|u| u.has_password(&password))).await;
    if !valid {
        log::warn!("api: sign-in failed for {email:?} from {}", remote.ip());
        return None;
    }
    user.map(|u| (email, u.scope))
}
