//! The sideline store: messages the filter found suspect are kept here,
//! neither delivered nor lost, with everything needed to explain the verdict,
//! until a customer or operator releases or deletes them or `[sideline]
//! retention` runs out.
//!
//! The message itself stays in the spool under its queue id; this module's
//! sled tree `sideline.entries` holds one [`Entry`] per message. Release is
//! in [`release`], the retention purge in [`retention`].

mod release;
mod retention;

pub use release::ReleaseError;

use crate::config::Live;
use crate::filter::checks::bayes::Bayes;
use crate::retry::{Incoming, Queue};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;

/// One rule that fired, as the customer sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub score: f64,
    pub reason: String,
}

/// A sidelined message: its envelope, what its headers say, and why it was
/// sidelined.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Entry {
    pub id: String,
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    pub client: String,
    pub helo: String,
    pub received_ms: u64,
    pub size: u64,
    /// The header From, Subject and Date as the message gives them.
    pub from: String,
    pub subject: String,
    pub date: String,
    pub score: f64,
    pub rules: Vec<Rule>,
    /// Verdict headers the message carries if it is released.
    pub headers: String,
    /// Set, once, by the release that won; the entry is removed right after
    /// the message is queued.
    pub released: Option<Released>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Released {
    pub by: String,
    pub at_ms: u64,
}

impl Entry {
    /// The message as the delivery queue takes it.
    fn incoming(&self, headers: String) -> Incoming {
        Incoming {
            id: self.id.clone(),
            sender: self.sender.clone(),
            recipients: self.recipients.clone(),
            received_ms: self.received_ms,
            client: self.client.clone(),
            size: self.size,
            headers,
        }
    }
}

/// What `antemx sideline list` asks for; every part given must match.
#[derive(Default, Debug)]
pub struct Filter {
    /// A recipient's domain.
    pub domain: Option<String>,
    pub recipient: Option<String>,
    pub sender: Option<String>,
    /// Arrived at or after, ms since the epoch.
    pub since_ms: Option<u64>,
    /// Arrived before, ms since the epoch.
    pub until_ms: Option<u64>,
}

impl Filter {
    fn matches(&self, entry: &Entry) -> bool {
        let domain_of = |r: &String| r.rsplit_once('@').map(|(_, d)| d.to_string());
        self.domain.as_ref().is_none_or(|d| {
            entry
                .recipients
                .iter()
                .any(|r| domain_of(r).is_some_and(|rd| rd.eq_ignore_ascii_case(d)))
        }) && self.recipient.as_ref().is_none_or(|want| {
            entry
                .recipients
                .iter()
                .any(|r| r.eq_ignore_ascii_case(want))
        }) && self
            .sender
            .as_ref()
            .is_none_or(|s| entry.sender.eq_ignore_ascii_case(s))
            && self.since_ms.is_none_or(|t| entry.received_ms >= t)
            && self.until_ms.is_none_or(|t| entry.received_ms < t)
    }
}

#[derive(Clone)]
pub struct Sideline(Arc<Inner>);

struct Inner {
    live: Live,
    store: Store,
    queue: Queue,
    bayes: Arc<Bayes>,
    entries: sled::Tree,
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    serde_json::from_slice(bytes).ok()
}

fn encode(entry: &Entry) -> io::Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(io::Error::other)
}

impl Sideline {
    /// Opens the store and finishes releases a crash interrupted.
    pub async fn open(
        live: Live,
        store: Store,
        queue: Queue,
        bayes: Arc<Bayes>,
    ) -> io::Result<Sideline> {
        let entries = store.tree("sideline.entries")?;
        let sideline = Sideline(Arc::new(Inner {
            live,
            store,
            queue,
            bayes,
            entries,
        }));
        sideline.finish_releases().await?;
        Ok(sideline)
    }

    /// Keeps a message; returns once it is on disk. The spool file must
    /// already be committed.
    pub async fn put(&self, entry: &Entry) -> io::Result<()> {
        self.0
            .entries
            .insert(&entry.id, encode(entry)?)
            .map_err(io::Error::other)?;
        self.0.store.flush().await
    }

    /// Whether the spool file `id` belongs to a sidelined message.
    pub fn holds(&self, id: &str) -> bool {
        self.0.entries.contains_key(id).unwrap_or(true)
    }

    pub fn show(&self, id: &str) -> Option<Entry> {
        self.0
            .entries
            .get(id)
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
    }

    /// Entries that match, oldest first.
    pub fn list(&self, filter: &Filter) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .all()
            .filter(|e| e.released.is_none() && filter.matches(e))
            .collect();
        entries.sort_by(|a, b| (a.received_ms, &a.id).cmp(&(b.received_ms, &b.id)));
        entries
    }

    /// Sidelined messages held now, and their bytes.
    pub fn size(&self) -> (usize, u64) {
        self.all()
            .filter(|e| e.released.is_none())
            .fold((0, 0), |(n, bytes), e| (n + 1, bytes + e.size))
    }

    fn all(&self) -> impl Iterator<Item = Entry> + '_ {
        self.0
            .entries
            .iter()
            .filter_map(|item| item.ok().and_then(|(_, v)| decode(&v)))
    }

    /// Deletes a message for good. False when there is no such entry (or it
    /// is being released).
    pub async fn delete(&self, id: &str) -> io::Result<bool> {
        let Some(old) = self.0.entries.get(id).map_err(io::Error::other)? else {
            return Ok(false);
        };
        if decode(&old).is_none_or(|e| e.released.is_some()) {
            return Ok(false);
        }
        // Only if unchanged: a release that won in between keeps its message.
        let removed = self
            .0
            .entries
            .compare_and_swap(id, Some(old), None::<&[u8]>)
            .map_err(io::Error::other)?
            .is_ok();
        if removed {
            self.0.store.flush().await?;
            self.remove_file(id);
            log::info!("{id}: sideline: deleted");
        }
        Ok(removed)
    }

    /// Removes a message file that neither the queue nor this store uses.
    fn remove_file(&self, id: &str) {
        if !self.0.queue.holds(id) && !self.holds(id) {
            if let Err(e) = self.0.store.spool().remove(id) {
                log::error!("{id}: cannot remove the message file: {e}");
            }
        }
    }
}
