//! The peer API: what the other nodes of the cluster call. Every call must
//! carry a valid signature made with `[cluster] secret`; anything else is
//! refused with 401 before its body is looked at.
//!
//! - `GET /peer/ping`: whether this node answers
//! - `GET /peer/sideline?FILTER`, `GET /peer/sideline/ID`: this node's copies
//! - `PUT /peer/sideline/ID`: keep a copy (entry JSON, newline, message)
//! - `POST /peer/sideline/ID/release?by=&train=`: decide a release here
//! - `POST /peer/sideline/ID/forget?how=`: released or deleted elsewhere
//! - `POST /peer/learn/ham`: teach the classifier (body: the message)
//! - `PUT /peer/queue/ID/DOMAIN`: take over a job of a draining node
//! - `POST|DELETE /peer/lists/...`: a recipient's lists changed elsewhere

use super::{error_reply, json_reply, query_value, Node, Reply};
use crate::cluster::unframe;
use crate::sideline::{Entry, Kept, ReleaseError};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use std::net::SocketAddr;

/// Room for a message's entry or job record beside the message itself.
const RECORD_ROOM: u64 = 4 * 1024 * 1024;
/// A peer sends a message of the largest size well within this.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub async fn handle(request: Request<Incoming>, remote: SocketAddr, node: &Node) -> Reply {
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_string());
    let headers = request.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Nothing is read from a caller that is not even claiming to be a peer.
    let claim = match node.cluster.precheck(header) {
        Ok(claim) => claim,
        Err(e) => {
            log::warn!("peer API: refused {method} {target} from {remote}: {e}");
            return error_reply(StatusCode::UNAUTHORIZED, &e);
        }
    };
    let limit = node.live.current().smtp.max_message_size + RECORD_ROOM;
    let declared = header("content-length").and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return error_reply(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
    }
    let reading = async {
        Some(
            Limited::new(request.into_body(), limit as usize)
                .collect()
                .await,
        )
    };
    let too_slow = async {
        smol::Timer::after(BODY_TIMEOUT).await;
        None
    };
    let body = match smol::future::or(reading, too_slow).await {
        Some(Ok(collected)) => collected.to_bytes(),
        Some(Err(e)) => return error_reply(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
        None => return error_reply(StatusCode::REQUEST_TIMEOUT, "the body came too slowly"),
    };
    let peer = match node
        .cluster
        .authenticate(&claim, method.as_str(), &target, &body)
    {
        Ok(peer) => peer,
        Err(e) => {
            log::warn!("peer API: refused {method} {target} from {remote}: {e}");
            return error_reply(StatusCode::UNAUTHORIZED, &e);
        }
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let decoded: Vec<String> = path
        .trim_start_matches("/peer/")
        .split('/')
        .filter(|p| !p.is_empty())
        .map(super::percent_decode)
        .collect();
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    log::debug!("peer API: {peer}: {method} {target}");
    let reply = route(&method, &parts, query, &body, &peer, node).await;
    signed(reply, claim.signature(), node).await
}

/// The answer with this node's signature, bound to the call's.
async fn signed(reply: Reply, call_signature: &str, node: &Node) -> Reply {
    let (mut parts, body) = reply.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    if let Some(signature) = node
        .cluster
        .sign_answer(parts.status.as_u16(), call_signature, &bytes)
        .and_then(|s| hyper::header::HeaderValue::from_str(&s).ok())
    {
        parts
            .headers
            .insert(crate::cluster::SIGNATURE_HEADER, signature);
    }
    Reply::from_parts(parts, http_body_util::Full::new(bytes))
}

async fn route(
    method: &Method,
    parts: &[&str],
    query: &str,
    body: &[u8],
    peer: &str,
    node: &Node,
) -> Reply {
    let sideline = &node.sideline;
    let failed = |e: std::io::Error| error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    match (method, parts) {
        (&Method::GET, ["ping"]) => {
            json_reply(StatusCode::OK, &json!({ "node": node.cluster.me() }))
        }
        (&Method::GET, ["sideline"]) => match super::sideline::filter(query) {
            Ok(filter) => {
                let sideline = sideline.clone();
                let entries = smol::unblock(move || sideline.list(&filter)).await;
                json_reply(StatusCode::OK, &entries)
            }
            Err(e) => error_reply(StatusCode::BAD_REQUEST, &e),
        },
        (&Method::GET, ["sideline", id]) => match sideline.show(id) {
            Some(entry) if entry.released.is_none() => json_reply(StatusCode::OK, &entry),
            Some(_) => json_reply(
                StatusCode::CONFLICT,
                &json!({ "error": format!("{id} is being released on {}", node.cluster.me()) }),
            ),
            None => match sideline.tombstone(id) {
                Some(tombstone) => json_reply(
                    StatusCode::GONE,
                    &json!({ "error": format!("{id}: {}", tombstone.how), "decider": tombstone.decider }),
                ),
                None => not_here(id),
            },
        },
        (&Method::PUT, ["sideline" | "queue", ..]) if node.cluster.is_draining() => error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{} is being drained", node.cluster.me()),
        ),
        (&Method::PUT, ["sideline", id]) => {
            let Some((entry, message)) = unframe::<Entry>(body).filter(|(e, _)| e.id == *id) else {
                return error_reply(StatusCode::BAD_REQUEST, "expected an entry and its message");
            };
            match sideline.keep_copy(entry, message).await {
                Ok(Kept::New) => json_reply(StatusCode::CREATED, &json!({ "kept": id })),
                Ok(Kept::Known) => json_reply(StatusCode::OK, &json!({ "kept": id })),
                Ok(Kept::Gone) => gone(id),
                Err(e) => failed(e),
            }
        }
        (&Method::POST, ["sideline", id, "release"]) => {
            let by = query_value(query, "by").unwrap_or_else(|| "admin".into());
            let train = query_value(query, "train").is_some_and(|t| t == "1");
            match sideline.decide_release(id, &by, train).await {
                Ok(entry) => json_reply(StatusCode::OK, &entry),
                Err(ReleaseError::NotFound) => not_here(id),
                Err(ReleaseError::AlreadyReleased) => gone(id),
                Err(ReleaseError::Io(e)) => failed(e),
            }
        }
        (&Method::POST, ["sideline", id, "forget"]) => {
            let how = query_value(query, "how").unwrap_or_else(|| "gone elsewhere".into());
            match sideline.forget(id, &how, peer).await {
                Ok(dropped) => json_reply(StatusCode::OK, &json!({ "dropped": dropped })),
                Err(e) => failed(e),
            }
        }
        (&Method::POST, ["learn", "ham"]) => {
            sideline.learn_ham(body).await;
            json_reply(StatusCode::OK, &json!({ "learned": "ham" }))
        }
        (&Method::PUT, ["queue", id, _domain]) => {
            let Some((handover, message)) = unframe(body) else {
                return error_reply(StatusCode::BAD_REQUEST, "expected a job and its message");
            };
            match node.queue.take_over(handover, message).await {
                Ok(()) => json_reply(StatusCode::OK, &json!({ "taken": id })),
                Err(e) => failed(e),
            }
        }
        (_, ["lists", rest @ ..]) => {
            super::lists::handle(method, rest, query, &node.user_lists, &node.store, None).await
        }
        _ => error_reply(StatusCode::NOT_FOUND, "no such peer call"),
    }
}

fn gone(id: &str) -> Reply {
    error_reply(
        StatusCode::GONE,
        &format!("{id} was released or deleted already"),
    )
}

fn not_here(id: &str) -> Reply {
    error_reply(
        StatusCode::NOT_FOUND,
        &format!("no copy of {id} on this node"),
    )
}
