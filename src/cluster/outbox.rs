//! Calls that must reach a peer even if it is down now: kept in sled
//! `cluster.outbox` under increasing keys and sent to each peer in the
//! order they were made (a list change then its undoing must not arrive
//! the other way round). A peer that fails is tried again at the next
//! round, every `[cluster] heal_interval`, or sooner when more is added.

use super::Cluster;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io;

#[derive(Serialize, Deserialize)]
struct Call {
    peer: String,
    method: String,
    path: String,
    /// When it was made; a call older than [`MAX_AGE_MS`] is given up.
    #[serde(default)]
    at_ms: u64,
}

/// A peer down for longer than this is not waited for: what it missed is
/// moot by then (sidelined mail has expired), or must be made again by the
/// operator (list changes; the log says which).
const MAX_AGE_MS: u64 = 30 * 86_400_000;

pub(super) struct Outbox {
    store: Store,
    calls: sled::Tree,
    wake: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl Outbox {
    pub(super) fn open(store: &Store) -> io::Result<Outbox> {
        Ok(Outbox {
            store: store.clone(),
            calls: store.tree("cluster.outbox")?,
            wake: async_channel::bounded(1),
        })
    }

    pub(super) fn add(&self, peer: &str, method: &str, path: &str, body: &[u8]) -> io::Result<()> {
        let call = Call {
            peer: peer.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            at_ms: crate::time::now_ms(),
        };
        // Fixed-width ids sort in the order they were made.
        let key = self.store.new_id()?;
        self.calls
            .insert(key.as_bytes(), super::frame(&call, body)?)
            .map_err(io::Error::other)?;
        Ok(())
    }

    pub(super) async fn flush(&self) -> io::Result<()> {
        self.store.flush().await
    }

    pub(super) fn wake(&self) {
        let _ = self.wake.0.try_send(());
    }

    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    pub(super) async fn run(&self, cluster: &Cluster) {
        loop {
            self.deliver(cluster).await;
            let interval = cluster.heal_interval();
            smol::future::or(
                async {
                    let _ = self.wake.1.recv().await;
                },
                async {
                    smol::Timer::after(interval).await;
                },
            )
            .await;
        }
    }

    /// One round: every waiting call, in order, to the peers that answer.
    async fn deliver(&self, cluster: &Cluster) {
        let mut down: HashSet<String> = HashSet::new();
        for item in self.calls.iter() {
            let Ok((key, value)) = item else { continue };
            let Some((call, body)) = super::unframe::<Call>(&value) else {
                log::error!("cluster: dropping an unreadable outbox record");
                let _ = self.calls.remove(&key);
                continue;
            };
            if !cluster.is_member(&call.peer) {
                log::warn!(
                    "cluster: {} {} dropped: {} is no longer a node",
                    call.method,
                    call.path,
                    call.peer
                );
                let _ = self.calls.remove(&key);
                continue;
            }
            if crate::time::now_ms().saturating_sub(call.at_ms) > MAX_AGE_MS {
                log::warn!(
                    "cluster: {} {} given up: {} has not answered for {} days",
                    call.method,
                    call.path,
                    call.peer,
                    MAX_AGE_MS / 86_400_000
                );
                let _ = self.calls.remove(&key);
                continue;
            }
            if down.contains(&call.peer) {
                continue;
            }
            match cluster
                .call(&call.peer, &call.method, &call.path, body.to_vec())
                .await
            {
                // The peer decided; a refusal is its answer, not a failure
                // to deliver (but a bad signature is a config to fix).
                Ok(answer) if answer.settles() => {
                    if !answer.is_success() {
                        log::warn!(
                            "cluster: {} {} on {}: {} {}",
                            call.method,
                            call.path,
                            call.peer,
                            answer.status,
                            String::from_utf8_lossy(&answer.body).trim()
                        );
                    }
                    let _ = self.calls.remove(&key);
                }
                Ok(answer) => {
                    log::warn!(
                        "cluster: {} {} on {} answered {}; trying again later",
                        call.method,
                        call.path,
                        call.peer,
                        answer.status
                    );
                    down.insert(call.peer);
                }
                Err(e) => {
                    log::debug!("cluster: {e}; {} {} waits", call.method, call.path);
                    down.insert(call.peer);
                }
            }
        }
    }
}
