//! Copies: in a cluster every sidelined message is kept on `[cluster]
//! copies` nodes, so that losing one makes nothing unavailable.
//!
//! The node that received a message keeps it, then pushes it to the peers
//! the message's id ranks first (rendezvous order) until enough hold it; a
//! peer that is down is skipped for the next one. Every holder re-checks
//! its messages each `heal_interval` and pushes again when holders were
//! lost (a node removed from the config). A message released or deleted
//! anywhere leaves a tombstone in `sideline.gone` on every node: a copy
//! pushed late is refused with it, and the pusher forgets its own.

use super::{copy_path, decode, encode, Entry, Sideline};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io;

/// Whether this node counts among a message's holders when copies are
/// placed: not when it is being drained.
#[derive(Clone, Copy)]
pub(super) enum ThisNode {
    Stays,
    Leaving,
}

/// What a node does with a copy a peer pushes.
#[derive(Debug, PartialEq)]
pub enum Kept {
    /// Stored now, on disk.
    New,
    /// It had it already; it now knows the pusher's holders too.
    Known,
    /// Released or deleted already: not stored.
    Gone,
}

/// What is left of a message released or deleted.
#[derive(Serialize, Deserialize)]
pub struct Tombstone {
    received_ms: u64,
    at_ms: u64,
    pub how: String,
    /// The node that released or deleted it; empty when not known.
    #[serde(default)]
    pub decider: String,
}

/// Tombstones outlive the retention by this much: a node back after a long
/// absence must still find them while its own copy has not expired.
const TOMBSTONE_MARGIN_MS: u64 = 7 * 86_400_000;

impl Sideline {
    /// Brings `id` to `copies` holders, as far as peers answer; with
    /// [`ThisNode::Leaving`], to that many holders besides this node. Peers
    /// in `down` are not tried (a pass over many messages asks a dead
    /// peer once, not once per message); those that fail are added.
    /// Returns the holders known now, this node among them.
    pub(super) async fn place(
        &self,
        id: &str,
        this_node: ThisNode,
        down: &mut HashSet<String>,
    ) -> Vec<String> {
        let cluster = &self.0.cluster;
        let Some(entry) = self.show(id).filter(|e| e.released.is_none()) else {
            return Vec::new();
        };
        let mut holders: Vec<String> = match this_node {
            ThisNode::Stays => self.other_holders(&entry),
            // This copy is about to go: trust no record of the others (a
            // holder may have lost its disk), ask them.
            ThisNode::Leaving => self.confirmed_holders(&entry).await,
        };
        holders.push(cluster.me().to_string());
        let (wanted, counted) = match this_node {
            ThisNode::Stays => (cluster.copies(), 0),
            ThisNode::Leaving => (cluster.copies().min(cluster.peers().len()), 1),
        };
        if holders.len() >= wanted + counted && holders.len() == entry.holders.len() {
            return holders;
        }
        let candidates: Vec<String> = cluster
            .ranked(id)
            .into_iter()
            .filter(|peer| !holders.contains(peer) && !down.contains(peer))
            .collect();
        let message = if candidates.is_empty() {
            Vec::new()
        } else {
            match self.0.store.spool().read(id) {
                Ok(bytes) => bytes,
                Err(e) => {
                    log::error!("{id}: sideline: cannot read the message to copy it: {e}");
                    return holders;
                }
            }
        };
        for peer in candidates {
            if holders.len() >= wanted + counted {
                break;
            }
            let mut copy = entry.clone();
            copy.holders = holders.clone();
            copy.holders.push(peer.clone());
            let Ok(body) = crate::cluster::frame(&copy, &message) else {
                return holders;
            };
            let path = copy_path(id);
            match cluster.call(&peer, "PUT", &path, body).await {
                Ok(answer) if answer.is_success() => {
                    log::info!("{id}: sideline: copy kept on {peer}");
                    holders.push(peer);
                }
                Ok(answer) if answer.status == 410 => {
                    // Released or deleted elsewhere while this node held it.
                    let _ = self.forget(id, &format!("gone on {peer}"), "").await;
                    return Vec::new();
                }
                Ok(answer) => log::warn!(
                    "{id}: sideline: {peer} refused a copy: {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                ),
                Err(e) => {
                    log::info!("{id}: sideline: no copy on {e}");
                    down.insert(peer);
                }
            }
        }
        if holders.len() < wanted + counted {
            // Per message at debug: with a peer down this repeats each pass;
            // the pass logs one line.
            log::debug!(
                "{id}: sideline: kept on {} of {} nodes",
                holders.len(),
                wanted + counted
            );
        }
        self.record_holders(id, holders.clone());
        holders
    }

    /// Adds holders to an entry (keeping those recorded meanwhile) and
    /// drops those no longer in the cluster.
    fn record_holders(&self, id: &str, holders: Vec<String>) {
        let cluster = &self.0.cluster;
        let _ = self.0.entries.fetch_and_update(id, |old| {
            let mut entry = decode(old?)?;
            for holder in &holders {
                if !entry.holders.contains(holder) {
                    entry.holders.push(holder.clone());
                }
            }
            entry.holders.retain(|h| cluster.is_member(h));
            encode(&entry).ok()
        });
    }

    /// The other holders of `entry` that say they have it now.
    async fn confirmed_holders(&self, entry: &Entry) -> Vec<String> {
        let path = copy_path(&entry.id);
        let mut confirmed = Vec::new();
        for holder in self.other_holders(entry) {
            let answer = self.0.cluster.call(&holder, "GET", &path, Vec::new()).await;
            if answer.is_ok_and(|a| a.is_success()) {
                confirmed.push(holder);
            }
        }
        confirmed
    }

    /// The other nodes known to hold a copy of `entry`.
    pub(super) fn other_holders(&self, entry: &Entry) -> Vec<String> {
        let cluster = &self.0.cluster;
        entry
            .holders
            .iter()
            .filter(|h| *h != cluster.me() && cluster.is_member(h))
            .cloned()
            .collect()
    }

    /// Whether another holder has released (or is releasing) the message,
    /// or deleted it; the reason when so. Holders that do not answer are
    /// passed over.
    pub(super) async fn gone_elsewhere(&self, entry: &Entry) -> Option<String> {
        let cluster = &self.0.cluster;
        let path = copy_path(&entry.id);
        for holder in self.other_holders(entry) {
            let Ok(answer) = cluster.call(&holder, "GET", &path, Vec::new()).await else {
                continue;
            };
            let decider = answer
                .json::<serde_json::Value>()
                .ok()
                .and_then(|v| v["decider"].as_str().map(str::to_string))
                .unwrap_or_default();
            match answer.status {
                409 => return Some(format!("being released on {holder}")),
                410 if decider != cluster.me() => {
                    return Some(format!("released or deleted on {decider} (says {holder})"))
                }
                _ => {}
            }
        }
        None
    }

    /// Keeps a copy a peer pushed: message file and entry on disk before
    /// this returns.
    pub async fn keep_copy(&self, mut entry: Entry, message: &[u8]) -> io::Result<Kept> {
        let id = entry.id.clone();
        // Queued here: released elsewhere and handed to this node by a
        // drain before the news came.
        if self.is_gone(&id) || self.0.queue.holds(&id) {
            return Ok(Kept::Gone);
        }
        if let Some(mut known) = self.show(&id) {
            for holder in entry.holders {
                if !known.holders.contains(&holder) {
                    known.holders.push(holder);
                }
            }
            self.record_holders(&id, known.holders);
            return Ok(Kept::Known);
        }
        let spool = self.0.store.spool().clone();
        let bytes = message.to_vec();
        let file_id = id.clone();
        smol::unblock(move || {
            // A file left by an earlier push that failed half-way.
            spool.remove(&file_id)?;
            let mut file = spool.create(&file_id)?;
            file.write(&bytes)?;
            file.commit()
        })
        .await?;
        let me = self.0.cluster.me().to_string();
        if !entry.holders.contains(&me) {
            entry.holders.push(me);
        }
        entry.released = None;
        self.0
            .entries
            .insert(&id, encode(&entry)?)
            .map_err(io::Error::other)?;
        self.0.store.flush().await?;
        log::info!("{id}: sideline: copy kept for {}", entry.origin);
        Ok(Kept::New)
    }

    /// Whether `id` was released or deleted (here or, as far as this node
    /// was told, elsewhere).
    pub fn is_gone(&self, id: &str) -> bool {
        self.0.gone.contains_key(id).unwrap_or(false)
    }

    /// The tombstone of a message released or deleted, if any.
    pub fn tombstone(&self, id: &str) -> Option<Tombstone> {
        let bytes = self.0.gone.get(id).ok().flatten()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Leaves a tombstone for `id`, naming the node that decided; not
    /// flushed (the caller flushes).
    pub(super) fn bury(
        &self,
        id: &str,
        received_ms: u64,
        how: &str,
        decider: &str,
    ) -> io::Result<()> {
        let tombstone = Tombstone {
            received_ms,
            at_ms: crate::time::now_ms(),
            how: how.to_string(),
            decider: decider.to_string(),
        };
        let bytes = serde_json::to_vec(&tombstone).map_err(io::Error::other)?;
        self.0.gone.insert(id, bytes).map_err(io::Error::other)?;
        Ok(())
    }

    /// Drops this node's copy of a message that `decider` released or
    /// deleted. True when there was one.
    pub async fn forget(&self, id: &str, how: &str, decider: &str) -> io::Result<bool> {
        let held = self.show(id);
        // A copy this node is releasing itself is not dropped under it.
        if held.as_ref().is_some_and(|e| e.released.is_some()) {
            return Ok(false);
        }
        let received_ms = held
            .as_ref()
            .map_or_else(crate::time::now_ms, |e| e.received_ms);
        self.bury(id, received_ms, how, decider)?;
        let removed = match held {
            Some(entry) => self
                .0
                .entries
                .compare_and_swap(id, Some(encode(&entry)?), None::<&[u8]>)
                .map_err(io::Error::other)?
                .is_ok(),
            None => false,
        };
        self.0.store.flush().await?;
        if removed {
            self.remove_file(id);
            log::info!("{id}: sideline: copy dropped ({how})");
        }
        Ok(removed)
    }

    /// Tombstones of messages that expired by `cutoff_ms`, and a margin
    /// before.
    pub(super) fn purge_tombstones(&self, cutoff_ms: u64) {
        let cutoff_ms = cutoff_ms.saturating_sub(TOMBSTONE_MARGIN_MS);
        for item in self.0.gone.iter() {
            let Ok((key, value)) = item else { continue };
            let old = serde_json::from_slice::<Tombstone>(&value)
                .map_or(true, |t| t.received_ms < cutoff_ms);
            if old {
                let _ = self.0.gone.remove(key);
            }
        }
    }

    /// Pushes copies of every message held here that has too few.
    pub(super) async fn heal(&self) {
        let short: Vec<String> = self
            .all()
            .filter(|e| {
                e.released.is_none()
                    && (e.holders.len() < self.0.cluster.copies()
                        || e.holders.iter().any(|h| !self.0.cluster.is_member(h)))
            })
            .map(|e| e.id)
            .collect();
        let mut down = HashSet::new();
        let wanted = self.0.cluster.copies();
        let mut still_short = 0;
        for id in short {
            let placed = self.place(&id, ThisNode::Stays, &mut down).await;
            if !placed.is_empty() && placed.len() < wanted {
                still_short += 1;
            }
        }
        if still_short > 0 {
            let mut down: Vec<String> = down.into_iter().collect();
            down.sort();
            log::warn!(
                "sideline: {still_short} messages kept on fewer than {wanted} nodes (not answering: {}); trying again in {}s",
                down.join(", "),
                self.0.cluster.heal_interval().as_secs()
            );
        }
    }

    /// Heals for as long as the node runs.
    pub(super) async fn heal_forever(&self) {
        loop {
            smol::Timer::after(self.0.cluster.heal_interval()).await;
            if self.0.cluster.copies() > 1 {
                self.heal().await;
            }
        }
    }

    /// `antemx drain`: makes sure every message held here is kept on enough
    /// other nodes (asking them, not trusting the record), then drops this
    /// node's copy. Returns (moved, left): what could not be placed (peers
    /// down) stays.
    pub async fn drain(&self) -> (usize, usize) {
        let cluster = &self.0.cluster;
        let wanted = cluster.copies().min(cluster.peers().len());
        let ids: Vec<String> = self
            .all()
            .filter(|e| e.released.is_none())
            .map(|e| e.id)
            .collect();
        let (mut moved, mut left) = (0, 0);
        let mut down = HashSet::new();
        for id in ids {
            let holders = self.place(&id, ThisNode::Leaving, &mut down).await;
            let elsewhere = holders.iter().filter(|h| *h != cluster.me()).count();
            let Ok(Some(raw)) = self.0.entries.get(&id) else {
                continue;
            };
            let placed = wanted > 0
                && elsewhere >= wanted
                && decode(&raw).is_some_and(|e| e.released.is_none());
            // Only if unchanged: a release at this moment wins.
            let removed = placed
                && self
                    .0
                    .entries
                    .compare_and_swap(&id, Some(raw), None::<&[u8]>)
                    .is_ok_and(|swapped| swapped.is_ok());
            if removed {
                self.remove_file(&id);
                log::info!("{id}: sideline: drained to {}", holders.join(", "));
                moved += 1;
            } else {
                left += 1;
            }
        }
        if let Err(e) = self.0.store.flush().await {
            log::error!("sideline: drain not flushed: {e}");
        }
        (moved, left)
    }
}
