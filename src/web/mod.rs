//! HTTP: for now the admin API that the CLI talks to. Admin requests are
//! accepted only from loopback, so only someone on the node can use them.

mod admin;

use crate::retry::Queue;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use smol::net::TcpListener;
use smol_hyper::rt::FuturesIo;
use std::net::SocketAddr;

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

pub async fn serve(listener: TcpListener, queue: Queue) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("web: accept failed: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let queue = queue.clone();
        smol::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let queue = queue.clone();
                async move { Ok::<_, std::convert::Infallible>(route(request, peer, &queue).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(FuturesIo::new(stream), service)
                .await
            {
                log::debug!("web: connection from {peer}: {e}");
            }
        })
        .detach();
    }
}

async fn route(request: Request<Incoming>, peer: SocketAddr, queue: &Queue) -> Reply {
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        return json_reply(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    }
    if let Some(rest) = path.strip_prefix("/admin/") {
        if !peer.ip().is_loopback() {
            return error_reply(
                StatusCode::FORBIDDEN,
                "the admin API answers on loopback only",
            );
        }
        return admin::handle(
            request.method(),
            rest,
            request.uri().query().unwrap_or(""),
            queue,
        )
        .await;
    }
    error_reply(StatusCode::NOT_FOUND, "no such page")
}
