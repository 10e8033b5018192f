//! Release: a sidelined message goes into the delivery queue exactly once.
//!
//! The entry is marked released with a compare-and-swap, so of two releases
//! at the same moment only one proceeds; the message is queued (durably),
//! then the entry removed. sled makes writes durable in the order they were
//! made, so after a crash an entry marked released whose message is not in
//! the queue was never queued, and [`Sideline::finish_releases`] queues it.

use super::{decode, encode, Entry, Released, Sideline};
use crate::filter::checks::bayes::Class;
use crate::filter::Content;
use std::io;

#[derive(Debug)]
pub enum ReleaseError {
    NotFound,
    AlreadyReleased,
    Io(io::Error),
}

impl std::fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReleaseError::NotFound => write!(f, "no sidelined message with that id"),
            ReleaseError::AlreadyReleased => write!(f, "the message was already released"),
            ReleaseError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl Sideline {
    /// Queues this node's copy of a sidelined message for delivery, not
    /// filtered again, with a header naming who released it; `train` also
    /// teaches the classifier (this node's and its peers') that it is ham.
    ///
    /// In a cluster the release is marked and on disk before the other
    /// holders are told (they lay tombstones naming this node), and they
    /// are told before the message is queued: after a crash at any point,
    /// either this node finishes the release at its start (see
    /// [`Sideline::finish_releases`]) or another holder refuses to release
    /// it again.
    pub(super) async fn release_here(
        &self,
        id: &str,
        by: &str,
        train: bool,
    ) -> Result<Entry, ReleaseError> {
        if self.is_gone(id) {
            return Err(ReleaseError::AlreadyReleased);
        }
        let entry = self.mark_released(id, by)?;
        self.0.store.flush().await.map_err(ReleaseError::Io)?;
        let how = released_how(&entry, self.0.cluster.me());
        if let Err(e) = self.announce_gone(&entry, &how).await {
            log::error!("{id}: peers not told to drop their copies: {e}");
        }
        // Read before queueing: delivery removes the file.
        let message = if train {
            let spool = self.0.store.spool().clone();
            let id = id.to_string();
            smol::unblock(move || spool.read(&id)).await.ok()
        } else {
            None
        };
        if let Err(e) = self.0.queue.enqueue(as_released(&entry)).await {
            // Not queued: the message stays sidelined here and can be
            // released again (the holders told name this node).
            let mut held = entry.clone();
            held.released = None;
            if let Ok(bytes) = encode(&held) {
                let _ = self.0.entries.insert(id, bytes);
            }
            return Err(ReleaseError::Io(e));
        }
        self.settle(&entry, &how);
        log::info!(
            "{id}: released: by={} from=<{}> to=<{}> train={train}",
            header_safe(by),
            entry.sender,
            entry.recipients.join(">,<")
        );
        if let Some(message) = message {
            self.learn_ham(&message).await;
            // In any order: sent now, kept in the outbox only for peers down.
            let peers = self.0.cluster.peers();
            if let Err(e) = self
                .0
                .cluster
                .tell_all(&peers, "POST", "/peer/learn/ham", &message)
                .await
            {
                log::error!("{id}: release: peers not told to learn it: {e}");
            }
        }
        Ok(entry)
    }

    /// Tells every peer that the message is gone (released or deleted
    /// `how`): its other holders now, the rest (and holders that do not
    /// answer) through the outbox, on disk when this returns.
    pub(super) async fn announce_gone(&self, entry: &Entry, how: &str) -> io::Result<()> {
        let path = format!(
            "{}/forget?how={}",
            super::copy_path(&entry.id),
            crate::web::percent_encode(how)
        );
        let holders = self.other_holders(entry);
        self.0.cluster.tell_all(&holders, "POST", &path, b"").await
    }

    /// After a release here: the entry goes, a tombstone stays (both reach
    /// disk with the next flush; until then the queue holds the message and
    /// a restart settles it again).
    fn settle(&self, entry: &Entry, how: &str) {
        let id = &entry.id;
        if let Err(e) = self.bury(id, entry.received_ms, how, self.0.cluster.me()) {
            log::error!("{id}: no tombstone: {e}");
        }
        if let Err(e) = self.0.entries.remove(id) {
            log::error!("{id}: released, but its sideline entry stays: {e}");
        }
    }

    /// Marks the entry released; only one caller can.
    fn mark_released(&self, id: &str, by: &str) -> Result<Entry, ReleaseError> {
        let entries = &self.0.entries;
        loop {
            let old = entries
                .get(id)
                .map_err(|e| ReleaseError::Io(io::Error::other(e)))?
                .ok_or(ReleaseError::NotFound)?;
            let mut entry = decode(&old).ok_or(ReleaseError::NotFound)?;
            if entry.released.is_some() {
                return Err(ReleaseError::AlreadyReleased);
            }
            entry.released = Some(Released {
                by: by.to_string(),
                at_ms: crate::time::now_ms(),
            });
            let new = encode(&entry).map_err(ReleaseError::Io)?;
            match entries.compare_and_swap(id, Some(old), Some(new)) {
                Ok(Ok(())) => return Ok(entry),
                // Changed under us: look again (it may be released now).
                Ok(Err(_)) => continue,
                Err(e) => return Err(ReleaseError::Io(io::Error::other(e))),
            }
        }
    }

    /// Teaches this node's classifier that `message` is ham.
    pub async fn learn_ham(&self, message: &[u8]) {
        let bayes = self.0.bayes.clone();
        let message = message.to_vec();
        let learned = smol::unblock(move || {
            bayes.learn(&Content::parse(&message), Class::Ham);
            bayes.save()
        })
        .await;
        if let Err(e) = learned {
            log::warn!("release: could not train the classifier: {e}");
        }
    }

    /// Finishes what a crash left marked released: queued unless another
    /// holder released the message meanwhile (this node was down).
    pub(super) async fn finish_releases(&self) -> io::Result<()> {
        let pending: Vec<Entry> = self.all().filter(|e| e.released.is_some()).collect();
        for entry in pending {
            let id = &entry.id;
            if !self.0.queue.holds(id) {
                if let Some(why) = self.gone_elsewhere(&entry).await {
                    self.bury(id, entry.received_ms, &why, "")?;
                    self.0.entries.remove(id).map_err(io::Error::other)?;
                    self.0.store.flush().await?;
                    self.remove_file(id);
                    log::info!("{id}: release not finished: {why}");
                    continue;
                }
            }
            let how = released_how(&entry, self.0.cluster.me());
            if let Err(e) = self.announce_gone(&entry, &how).await {
                log::error!("{id}: peers not told to drop their copies: {e}");
            }
            if !self.0.queue.holds(id) {
                self.0.queue.enqueue(as_released(&entry)).await?;
                log::info!("{id}: release finished after a restart");
            }
            self.settle(&entry, &how);
        }
        self.0.store.flush().await
    }
}

/// How a tombstone describes a release decided on `node`.
fn released_how(entry: &Entry, node: &str) -> String {
    let by = entry.released.as_ref().map_or("", |r| r.by.as_str());
    format!("released by {} on {node}", header_safe(by))
}

/// The message as the queue takes it after a release: its verdict headers
/// under one saying who released it and when (the time the release was
/// marked, so a release finished after a restart says the same).
fn as_released(entry: &Entry) -> crate::retry::Incoming {
    let released = entry.released.as_ref().map_or(String::new(), |r| {
        format!(
            "X-Antemx-Released: by {} on {}\r\n",
            header_safe(&r.by),
            crate::time::rfc5322(r.at_ms)
        )
    });
    entry.incoming(format!("{released}{}", entry.headers))
}

/// Who released, as it may appear in a header: one line, printable.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(200)
        .collect()
}
