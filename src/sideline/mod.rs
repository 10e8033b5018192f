//! The sideline store: messages the filter found suspect are kept here,
//! neither delivered nor lost, with everything needed to explain the verdict,
//! until a customer or operator releases or deletes them or `[sideline]
//! retention` runs out.
//!
//! The message itself stays in the spool under its queue id; this module's
//! sled tree `sideline.entries` holds one [`Entry`] per message. Release is
//! in [`release`], the retention purge in [`retention`]. In a cluster each
//! message is kept on `[cluster] copies` nodes ([`replicas`]) and the
//! operator's actions reach all of them ([`everywhere`]).

mod everywhere;
mod release;
mod replicas;
mod retention;

pub use release::ReleaseError;
pub use replicas::Kept;

use crate::cluster::Cluster;
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
    /// The node that received the message: while it is up, it alone
    /// releases it (see [`everywhere`]).
    #[serde(default)]
    pub origin: String,
    /// The nodes known to keep a copy, this one among them.
    #[serde(default)]
    pub holders: Vec<String>,
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
    cluster: Cluster,
    entries: sled::Tree,
    /// Ids released or deleted here or elsewhere, kept past retention so
    /// that a copy arriving late is refused, not released twice.
    gone: sled::Tree,
}

/// Where a peer keeps its copy of message `id` (its peer API).
fn copy_path(id: &str) -> String {
    format!("/peer/sideline/{}", crate::web::percent_encode(id))
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
        cluster: Cluster,
    ) -> io::Result<Sideline> {
        let entries = store.tree("sideline.entries")?;
        let gone = store.tree("sideline.gone")?;
        let sideline = Sideline(Arc::new(Inner {
            live,
            store,
            queue,
            bayes,
            cluster,
            entries,
            gone,
        }));
        sideline.finish_releases().await?;
        Ok(sideline)
    }

    /// Keeps a message this node received; returns once it is on disk. The
    /// spool file must already be committed. Copies go to peers after.
    pub async fn put(&self, mut entry: Entry) -> io::Result<()> {
        entry.origin = self.0.cluster.me().to_string();
        entry.holders = vec![entry.origin.clone()];
        self.0
            .entries
            .insert(&entry.id, encode(&entry)?)
            .map_err(io::Error::other)?;
        self.0.store.flush().await?;
        if self.0.cluster.copies() > 1 {
            let (sideline, id) = (self.clone(), entry.id);
            smol::spawn(async move {
                sideline
                    .place(&id, replicas::ThisNode::Stays, &mut Default::default())
                    .await
            })
            .detach();
        }
        Ok(())
    }

    /// Purges expired messages and keeps copies on enough nodes, for as
    /// long as the node runs.
    pub async fn run(&self) {
        smol::future::zip(self.purge_forever(), self.heal_forever()).await;
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

    /// Removes a message file that neither the queue nor this store uses.
    fn remove_file(&self, id: &str) {
        if !self.0.queue.holds(id) && !self.holds(id) {
            if let Err(e) = self.0.store.spool().remove(id) {
                log::error!("{id}: cannot remove the message file: {e}");
            }
        }
    }
}
