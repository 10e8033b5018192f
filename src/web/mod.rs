//! HTTP: the admin API that the CLI talks to, accepted only from loopback
//! so that only someone on the node can use it; the customers' API, for
//! `[[user]]` accounts ([`api`]); the peer API that the other nodes of a
//! cluster call, signed ([`peer`]); and /metrics.

mod admin;
mod api;
mod drain;
mod lists;
mod peer;
mod sideline;
mod verify;

use crate::receive::Receiver;
use crate::retry::Queue;
use crate::store::Store;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use smol::net::TcpListener;
use smol_hyper::rt::FuturesIo;
use std::net::SocketAddr;
use std::sync::Arc;

pub type Reply = Response<Full<Bytes>>;

pub fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"null".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

pub fn error_reply(status: StatusCode, message: &str) -> Reply {
    json_reply(status, &serde_json::json!({ "error": message }))
}

/// What the web server answers about.
#[derive(Clone)]
pub struct Node {
    pub live: crate::config::Live,
    pub sign_in_failures: Arc<api::SignInFailures>,
    pub cluster: crate::cluster::Cluster,
    pub queue: Queue,
    pub store: Store,
    pub receiver: Arc<Receiver>,
    pub sideline: crate::sideline::Sideline,
    pub bayes: Arc<crate::filter::checks::bayes::Bayes>,
    pub user_lists: crate::filter::user_lists::UserLists,
}

/// A query parameter's value, percent-decoded; `None` when absent.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    Some(percent_decode(&raw.replace('+', " ")))
}

/// A value for a path or query string: everything but unreserved
/// characters percent-encoded (`+` in an address must not become a space).
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `%40` and the like turned back into their bytes.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connections the web server holds at once; more are closed at accept
/// (the callers are the CLI, the peers and a metrics scraper).
const MAX_CONNECTIONS: usize = 256;
/// A client that has not sent its request head by then is dropped.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a listener answers.
#[derive(Clone, Copy, PartialEq)]
pub enum Role {
    /// `[web] listen`: the admin API and /metrics (loopback callers), the
    /// peer API.
    Node,
    /// `[web] api_listen`: the customers' API only.
    Customers,
}

pub async fn serve(listener: TcpListener, node: Node, role: Role) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("web: accept failed: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            log::warn!("web: {MAX_CONNECTIONS} connections open; closing one from {peer}");
            continue;
        }
        let node = node.clone();
        let open = open.clone();
        smol::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let node = node.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(route(request, peer, &node, role).await)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(smol_hyper::rt::SmolTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(FuturesIo::new(stream), service)
                .await
            {
                log::debug!("web: connection from {peer}: {e}");
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        })
        .detach();
    }
}

async fn route(request: Request<Incoming>, peer: SocketAddr, node: &Node, role: Role) -> Reply {
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        return json_reply(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    }
    if role == Role::Customers {
        return if path.starts_with("/api/") {
            api::handle(request, peer, node).await
        } else {
            error_reply(StatusCode::NOT_FOUND, "only /api/ answers here")
        };
    }
    if path.starts_with("/peer/") {
        return peer::handle(request, peer, node).await;
    }
    let admin_path = path.strip_prefix("/admin/");
    if (admin_path.is_some() || path == "/metrics") && !peer.ip().is_loopback() {
        return error_reply(
            StatusCode::FORBIDDEN,
            "the admin API and /metrics answer on loopback only",
        );
    }
    if path == "/metrics" {
        return metrics_page(node).await;
    }
    if let Some(rest) = admin_path {
        let decoded: Vec<String> = rest
            .split('/')
            .filter(|p| !p.is_empty())
            .map(percent_decode)
            .collect();
        let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
        let query = request.uri().query().unwrap_or("");
        return match parts.as_slice() {
            ["sideline", rest @ ..] => {
                sideline::handle(request.method(), rest, query, &node.sideline).await
            }
            ["lists", rest @ ..] => {
                lists::handle(
                    request.method(),
                    rest,
                    query,
                    &node.user_lists,
                    &node.store,
                    Some(&node.cluster),
                )
                .await
            }
            ["drain"] if request.method() == hyper::Method::POST => drain::handle(node).await,
            ["verify", rest @ ..] => {
                verify::handle(request.method(), rest, query, node.receiver.policies()).await
            }
            _ => admin::handle(request.method(), &parts, query, &node.queue).await,
        };
    }
    error_reply(StatusCode::NOT_FOUND, "no such page")
}

async fn metrics_page(node: &Node) -> Reply {
    let (queue, store, sideline) = (
        node.queue.clone(),
        node.store.clone(),
        node.sideline.clone(),
    );
    let ((queued, oldest), disk, (sidelined, sidelined_bytes)) = smol::unblock(move || {
        (
            queue.size_and_oldest_age(),
            store.disk_usage(),
            sideline.size(),
        )
    })
    .await;
    let page = crate::metrics::render(&[
        (
            "antemx_smtp_sessions_active",
            "SMTP sessions open now",
            node.receiver.active_sessions() as f64,
        ),
        (
            "antemx_queue_messages",
            "Jobs (message x recipient domain) in the delivery queue",
            queued as f64,
        ),
        (
            "antemx_queue_oldest_age_seconds",
            "Age of the oldest queued message",
            oldest,
        ),
        (
            "antemx_sideline_messages",
            "Messages held in the sideline store",
            sidelined as f64,
        ),
        (
            "antemx_sideline_bytes",
            "Size of the messages held in the sideline store",
            sidelined_bytes as f64,
        ),
        (
            "antemx_classifier_learned_spam",
            "Messages the classifier has learned as spam",
            f64::from(node.bayes.trained().0),
        ),
        (
            "antemx_classifier_learned_ham",
            "Messages the classifier has learned as ham",
            f64::from(node.bayes.trained().1),
        ),
        (
            "antemx_cluster_peers",
            "Other nodes in [cluster] nodes",
            node.cluster.reachable_peers().1 as f64,
        ),
        (
            "antemx_cluster_peers_reachable",
            "Other nodes that answered their last call (checked every heal_interval)",
            node.cluster.reachable_peers().0 as f64,
        ),
        (
            "antemx_cluster_undelivered_calls",
            "Calls to peers waiting in the outbox for a peer that is down",
            node.cluster.undelivered() as f64,
        ),
        (
            "antemx_disk_bytes",
            "Bytes used under data_dir",
            disk as f64,
        ),
    ]);
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(page)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
