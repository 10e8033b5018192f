//! The operator's and customer's view of the sideline store: in a cluster
//! it spans every node, whichever node is asked.
//!
//! - Listing merges every node's entries (each message once).
//! - A release is decided by one node, so that a message is delivered once
//!   even when two nodes are asked at the same moment: the node that
//!   received it while it is up, else the first of its other holders in the
//!   message's rendezvous order that answers (the order copies were placed
//!   in, so every holder knows the ones before it). The decider releases its
//!   copy and tells every peer to drop theirs (`release`).
//! - A delete drops every copy; a copy on a node that is down is dropped
//!   when it is back (through the outbox).
//!
//! Limit: if the receiving node is up but cut off from the node asked (a
//! network partition, not a crash), both sides may decide.

use super::{copy_path, Entry, Filter, ReleaseError, Sideline};
use crate::web::percent_encode;
use std::collections::BTreeMap;
use std::io;

impl Sideline {
    /// Entries that match on every node that answers, oldest first;
    /// `query` is the filter as the admin API got it, passed on to peers.
    pub async fn list_everywhere(&self, filter: Filter, query: &str) -> Vec<Entry> {
        let local = self.clone();
        let mut entries: BTreeMap<String, Entry> = smol::unblock(move || local.list(&filter))
            .await
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let path = format!("/peer/sideline?{query}");
        for (peer, answer) in self.0.cluster.call_all("GET", &path, Vec::new()).await {
            match answer.and_then(|a| a.json::<Vec<Entry>>()) {
                Ok(theirs) => {
                    for entry in theirs {
                        entries.entry(entry.id.clone()).or_insert(entry);
                    }
                }
                Err(e) => log::warn!("sideline: listing without {peer}: {e}"),
            }
        }
        let mut entries: Vec<Entry> = entries.into_values().collect();
        entries.sort_by(|a, b| (a.received_ms, &a.id).cmp(&(b.received_ms, &b.id)));
        entries
    }

    /// A held message, from this node or the first peer that has it.
    pub async fn find(&self, id: &str) -> Option<Entry> {
        if let Some(entry) = self.show(id).filter(|e| e.released.is_none()) {
            return Some(entry);
        }
        if self.is_gone(id) {
            return None;
        }
        let path = copy_path(id);
        self.0
            .cluster
            .call_all("GET", &path, Vec::new())
            .await
            .into_iter()
            .find_map(|(_, answer)| {
                answer
                    .ok()
                    .filter(|a| a.is_success())
                    .and_then(|a| a.json().ok())
            })
    }

    /// Releases a message wherever it is held, exactly once.
    pub async fn release(&self, id: &str, by: &str, train: bool) -> Result<Entry, ReleaseError> {
        let entry = self.find(id).await.ok_or(ReleaseError::NotFound)?;
        let path = format!(
            "{}/release?by={}&train={}",
            copy_path(id),
            percent_encode(by),
            u8::from(train)
        );
        for node in self.deciders(&entry) {
            if node == self.0.cluster.me() {
                match self.decide_release(id, by, train).await {
                    Err(ReleaseError::NotFound) => continue,
                    done => return done,
                }
            }
            match self.0.cluster.call(&node, "POST", &path, Vec::new()).await {
                Ok(answer) if answer.is_success() => {
                    return answer
                        .json()
                        .map_err(|e| ReleaseError::Io(io::Error::other(e)))
                }
                Ok(answer) if answer.status == 404 => continue,
                Ok(answer) if answer.status == 409 || answer.status == 410 => {
                    // Released elsewhere; this node's copy, if any, goes.
                    let _ = self.forget(id, &format!("released, says {node}"), "").await;
                    return Err(ReleaseError::AlreadyReleased);
                }
                Ok(answer) => {
                    return Err(ReleaseError::Io(io::Error::other(format!(
                        "{node} could not release it: {}",
                        String::from_utf8_lossy(&answer.body).trim()
                    ))))
                }
                Err(e) => log::warn!("{id}: release: {e}; asking the next holder"),
            }
        }
        Err(ReleaseError::Io(io::Error::other(
            "no node holding the message answered; try again",
        )))
    }

    /// Releases this node's copy, unless another holder has released or is
    /// releasing it (this node was down when it was released there and has
    /// not been told yet).
    pub async fn decide_release(
        &self,
        id: &str,
        by: &str,
        train: bool,
    ) -> Result<Entry, ReleaseError> {
        if let Some(entry) = self.show(id).filter(|e| e.released.is_none()) {
            if let Some(why) = self.gone_elsewhere(&entry).await {
                let _ = self.forget(id, &why, "").await;
                return Err(ReleaseError::AlreadyReleased);
            }
        }
        self.release_here(id, by, train).await
    }

    /// Who may release `entry`, in the order they are asked.
    fn deciders(&self, entry: &Entry) -> Vec<String> {
        let cluster = &self.0.cluster;
        let mut order = vec![entry.origin.clone()];
        order.extend(
            cluster
                .ranked(&entry.id)
                .into_iter()
                .filter(|node| entry.holders.contains(node)),
        );
        let mut seen = std::collections::HashSet::new();
        order.retain(|node| {
            !node.is_empty() && cluster.is_member(node) && seen.insert(node.clone())
        });
        if order.is_empty() {
            // An entry from before this node was in a cluster.
            order.push(cluster.me().to_string());
        }
        order
    }

    /// Deletes a message on every node. False when no node holds it.
    pub async fn delete(&self, id: &str, by: &str) -> io::Result<bool> {
        let Some(entry) = self.find(id).await else {
            return Ok(false);
        };
        let me = self.0.cluster.me();
        let how = format!("deleted by {by} on {me}");
        self.forget(id, &how, me).await?;
        self.announce_gone(&entry, &how).await?;
        log::info!("{id}: sideline: deleted by {by}");
        Ok(true)
    }
}
