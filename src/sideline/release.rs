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
    /// Queues a sidelined message for delivery, not filtered again, with a
    /// header naming who released it; `train` also teaches the classifier
    /// that it is ham.
    pub async fn release(&self, id: &str, by: &str, train: bool) -> Result<Entry, ReleaseError> {
        let entry = self.mark_released(id, by)?;
        if let Err(e) = self.0.queue.enqueue(as_released(&entry)).await {
            // Not queued: the message stays sidelined and can be released
            // again.
            let mut held = entry.clone();
            held.released = None;
            if let Ok(bytes) = encode(&held) {
                let _ = self.0.entries.insert(id, bytes);
            }
            return Err(ReleaseError::Io(e));
        }
        if let Err(e) = self.0.entries.remove(id) {
            log::error!("{id}: released, but its sideline entry stays: {e}");
        }
        log::info!(
            "{id}: released: by={} from=<{}> to=<{}> train={train}",
            header_safe(by),
            entry.sender,
            entry.recipients.join(">,<")
        );
        if train {
            self.learn_ham(id).await;
        }
        Ok(entry)
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

    async fn learn_ham(&self, id: &str) {
        let (spool, bayes) = (self.0.store.spool().clone(), self.0.bayes.clone());
        let id = id.to_string();
        let learned = smol::unblock(move || {
            let raw = spool.read(&id)?;
            bayes.learn(&Content::parse(&raw), Class::Ham);
            bayes.save()
        })
        .await;
        if let Err(e) = learned {
            log::warn!("release: could not train the classifier: {e}");
        }
    }

    /// Queues what a crash left marked released but not queued.
    pub(super) async fn finish_releases(&self) -> io::Result<()> {
        let pending: Vec<Entry> = self.all().filter(|e| e.released.is_some()).collect();
        for entry in pending {
            if !self.0.queue.holds(&entry.id) {
                self.0.queue.enqueue(as_released(&entry)).await?;
                log::info!("{}: release finished after a restart", entry.id);
            }
            self.0.entries.remove(&entry.id).map_err(io::Error::other)?;
        }
        self.0.store.flush().await
    }
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
