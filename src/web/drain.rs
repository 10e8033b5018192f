//! `POST /admin/drain` (behind `antemx drain`): before a node is removed,
//! it stops taking mail and hands its queue and its sidelined mail to its
//! peers. Remove the node from the MX records first; start it again to take
//! mail again.

use super::{error_reply, json_reply, Node, Reply};
use hyper::StatusCode;
use serde_json::json;

pub async fn handle(node: &Node) -> Reply {
    if node.cluster.peers().is_empty() {
        return error_reply(
            StatusCode::CONFLICT,
            "this node has no peers to drain to ([cluster] nodes)",
        );
    }
    node.receiver.stop();
    node.cluster.start_draining();
    log::info!("drain: no longer taking mail; handing over the queue and the sidelined mail");
    let (sideline_moved, sideline_left) = node.sideline.drain().await;
    let (queue_moved, queue_left) = node.queue.hand_over(&node.cluster).await;
    log::info!(
        "drain: queue {queue_moved} jobs handed over, {queue_left} left; sideline {sideline_moved} messages moved, {sideline_left} left"
    );
    json_reply(
        StatusCode::OK,
        &json!({
            "queue_moved": queue_moved,
            "queue_left": queue_left,
            "sideline_moved": sideline_moved,
            "sideline_left": sideline_left,
        }),
    )
}
