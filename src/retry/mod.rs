//! The delivery queue: every accepted message waits here until the
//! customer's server (or, for a bounce, the sender's MX) has it.
//!
//! A message becomes one *job* per recipient domain, stored in sled under
//! `<message id>/<domain>`; the body stays in the spool until the message's
//! last job is done. Due times live in an in-memory ordered index rebuilt
//! from the jobs at start-up, so finding due work costs what is due, and a
//! job that was being delivered during a crash is simply due again.

mod backoff;
/// Also used by `receive::verify` for recipient callouts.
pub mod deliver;
mod dsn;
mod handover;
mod scheduler;

use crate::config::Live;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A message accepted by `receive`, body already in the spool.
pub struct Incoming {
    pub id: String,
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    pub received_ms: u64,
    pub client: String,
    pub size: u64,
    /// Header lines (CRLF-terminated) put on top of the message when it is
    /// delivered: the filter's verdict, who released it.
    pub headers: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Job {
    message: String,
    domain: String,
    sender: String,
    /// Recipients still to deliver.
    recipients: Vec<String>,
    received_ms: u64,
    next_attempt_ms: u64,
    attempts: u32,
    last_error: Option<String>,
    client: String,
    size: u64,
    #[serde(default)]
    headers: String,
}

impl Job {
    fn key(&self) -> String {
        format!("{}/{}", self.message, self.domain)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Extension {
    extra_ms: u64,
    /// Messages received until then get the extra time.
    until_ms: u64,
}

/// One queued job as operators see it (`antemx queue list --json`).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct QueueEntry {
    pub id: String,
    pub domain: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: u64,
    pub client: String,
    pub received_ms: u64,
    pub next_attempt_ms: u64,
    pub expires_ms: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Clone)]
pub struct Queue(Arc<Inner>);

struct Inner {
    live: Live,
    store: Store,
    jobs: sled::Tree,
    extensions: sled::Tree,
    due: Mutex<BTreeSet<(u64, String)>>,
    in_flight: Mutex<HashSet<String>>,
    destinations: Mutex<HashMap<String, Arc<scheduler::Destination>>>,
    wake: async_channel::Sender<()>,
    woken: async_channel::Receiver<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn decode(bytes: &[u8]) -> Option<Job> {
    serde_json::from_slice(bytes).ok()
}

impl Queue {
    pub fn open(live: Live, store: Store) -> io::Result<Queue> {
        let jobs = store.tree("retry.jobs")?;
        let extensions = store.tree("retry.extensions")?;
        let mut due = BTreeSet::new();
        for entry in jobs.iter() {
            let (key, value) = entry.map_err(io::Error::other)?;
            match decode(&value) {
                Some(job) => {
                    due.insert((job.next_attempt_ms, job.key()));
                }
                None => log::error!(
                    "queue entry {} is unreadable; left in place",
                    String::from_utf8_lossy(&key)
                ),
            }
        }
        let (wake, woken) = async_channel::bounded(1);
        Ok(Queue(Arc::new(Inner {
            live,
            store,
            jobs,
            extensions,
            due: Mutex::new(due),
            in_flight: Mutex::new(HashSet::new()),
            destinations: Mutex::new(HashMap::new()),
            wake,
            woken,
        })))
    }

    /// Queues an accepted message; returns once it is on disk.
    pub async fn enqueue(&self, message: Incoming) -> io::Result<()> {
        let mut by_domain: Vec<(String, Vec<String>)> = Vec::new();
        for recipient in message.recipients {
            let domain = recipient
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            match by_domain.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, list)) => list.push(recipient),
                None => by_domain.push((domain, vec![recipient])),
            }
        }
        let jobs: Vec<Job> = by_domain
            .into_iter()
            .map(|(domain, recipients)| Job {
                message: message.id.clone(),
                domain,
                sender: message.sender.clone(),
                recipients,
                received_ms: message.received_ms,
                next_attempt_ms: message.received_ms,
                attempts: 0,
                last_error: None,
                client: message.client.clone(),
                size: message.size,
                headers: message.headers.clone(),
            })
            .collect();
        for job in &jobs {
            self.put(job)?;
        }
        self.0.store.flush().await?;
        for job in &jobs {
            self.schedule(job);
        }
        Ok(())
    }

    fn put(&self, job: &Job) -> io::Result<()> {
        let value = serde_json::to_vec(job).map_err(io::Error::other)?;
        self.0
            .jobs
            .insert(job.key(), value)
            .map_err(io::Error::other)?;
        Ok(())
    }

    fn schedule(&self, job: &Job) {
        lock(&self.0.due).insert((job.next_attempt_ms, job.key()));
        let _ = self.0.wake.try_send(());
    }

    fn get(&self, key: &str) -> Option<Job> {
        self.0.jobs.get(key).ok().flatten().and_then(|v| decode(&v))
    }

    fn all_jobs(&self) -> impl Iterator<Item = Job> + '_ {
        self.0
            .jobs
            .iter()
            .filter_map(|entry| entry.ok().and_then(|(_, v)| decode(&v)))
    }

    fn jobs_of(&self, message: &str) -> Vec<Job> {
        self.0
            .jobs
            .scan_prefix(format!("{message}/"))
            .filter_map(|entry| entry.ok().and_then(|(_, v)| decode(&v)))
            .collect()
    }

    /// Whether the spool file `id` still belongs to a queued message.
    pub fn holds(&self, id: &str) -> bool {
        self.0.jobs.scan_prefix(format!("{id}/")).next().is_some()
    }

    fn expiry_ms(&self, job: &Job) -> u64 {
        let lifetime = self.0.live.current().retry.lifetime.as_millis() as u64;
        let extra = self
            .0
            .extensions
            .get(&job.domain)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<Extension>(&v).ok())
            .filter(|e| job.received_ms <= e.until_ms)
            .map(|e| e.extra_ms)
            .unwrap_or(0);
        job.received_ms + lifetime + extra
    }

    fn entry(&self, job: Job) -> QueueEntry {
        QueueEntry {
            expires_ms: self.expiry_ms(&job),
            id: job.message,
            domain: job.domain,
            sender: job.sender,
            recipients: job.recipients,
            size: job.size,
            client: job.client,
            received_ms: job.received_ms,
            next_attempt_ms: job.next_attempt_ms,
            attempts: job.attempts,
            last_error: job.last_error,
        }
    }

    pub fn list(&self) -> Vec<QueueEntry> {
        self.all_jobs().map(|job| self.entry(job)).collect()
    }

    pub fn show(&self, id: &str) -> Vec<QueueEntry> {
        self.jobs_of(id)
            .into_iter()
            .map(|job| self.entry(job))
            .collect()
    }

    /// Makes one message (or all) due now; returns how many jobs.
    pub fn flush(&self, id: Option<&str>) -> usize {
        let jobs = match id {
            Some(id) => self.jobs_of(id),
            None => self.all_jobs().collect(),
        };
        self.make_due(jobs)
    }

    fn make_due(&self, jobs: Vec<Job>) -> usize {
        let now = crate::time::now_ms();
        let mut count = 0;
        for mut job in jobs {
            if job.next_attempt_ms <= now {
                continue;
            }
            lock(&self.0.due).remove(&(job.next_attempt_ms, job.key()));
            job.next_attempt_ms = now;
            if self.put(&job).is_ok() {
                self.schedule(&job);
                count += 1;
            }
        }
        count
    }

    /// Deletes a queued message without notifying anyone; returns whether it
    /// was there.
    pub async fn delete(&self, id: &str) -> io::Result<bool> {
        let jobs = self.jobs_of(id);
        for job in &jobs {
            self.0.jobs.remove(job.key()).map_err(io::Error::other)?;
            lock(&self.0.due).remove(&(job.next_attempt_ms, job.key()));
        }
        self.0.store.flush().await?;
        if !jobs.is_empty() {
            self.0.store.spool().remove(id)?;
            log::info!("{id}: removed by the operator");
        }
        Ok(!jobs.is_empty())
    }

    /// Gives a domain's mail `by` more time before it expires: what is queued
    /// now and what arrives during the next `by`.
    pub async fn extend(&self, domain: &str, by: Duration) -> io::Result<QueueExtension> {
        let domain = crate::config::normalize_domain(domain);
        let now = crate::time::now_ms();
        let by_ms = by.as_millis() as u64;
        let mut extension: Extension = self
            .0
            .extensions
            .get(&domain)
            .map_err(io::Error::other)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        extension.extra_ms += by_ms;
        extension.until_ms = extension.until_ms.max(now + by_ms);
        let value = serde_json::to_vec(&extension).map_err(io::Error::other)?;
        self.0
            .extensions
            .insert(domain.as_bytes(), value)
            .map_err(io::Error::other)?;
        self.0.store.flush().await?;
        log::info!("queue: lifetime of {domain} extended by {}s", by.as_secs());
        Ok(QueueExtension {
            domain,
            extra_seconds: extension.extra_ms / 1000,
            until_ms: extension.until_ms,
        })
    }

    /// (queued jobs, age in seconds of the oldest), for the metrics page.
    pub fn size_and_oldest_age(&self) -> (usize, f64) {
        let now = crate::time::now_ms();
        let (mut count, mut oldest) = (0, now);
        for job in self.all_jobs() {
            count += 1;
            oldest = oldest.min(job.received_ms);
        }
        (count, now.saturating_sub(oldest) as f64 / 1000.0)
    }

    /// Runs deliveries until the process ends.
    pub async fn run(&self) {
        scheduler::run(self).await
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct QueueExtension {
    pub domain: String,
    pub extra_seconds: u64,
    pub until_ms: u64,
}
