//! Recipient verification (`verify_recipients = true` on a domain): at our
//! RCPT a callout asks the customer's server whether it takes the address
//! (`MAIL FROM:<>`, `RCPT TO`, RSET, QUIT), so that an unknown user is
//! refused during the session instead of bounced later.
//!
//! Answers are cached in this module's sled tree `verify.cache`, keyed
//! `domain/local` in lower case so that a domain's entries share a prefix:
//! "exists" for `[filter] verify_positive_ttl`, "unknown" for
//! `verify_negative_ttl`. Temporary failures are not cached. Concurrent RCPTs
//! for one address share one callout (in-flight dedupe), so a burst of mail
//! to a new address opens one connection downstream, not one per RCPT.
//!
//! The cache is not flushed on its own: it is written to disk with the
//! node's next group commit, and losing some answers in a crash costs only
//! a callout each. Clearing it is flushed, since an operator asked for it.

use crate::config::{normalize_domain, Config, Domain};
use crate::dns::Resolver;
use crate::retry::deliver::{self, Outcome, Target};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use smol::future::FutureExt;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the customer's server says about a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It takes mail for the recipient (its reply, for the log).
    Exists(String),
    /// It refused the recipient with a 5xx: its reply.
    Unknown(String),
    /// It could not tell now; `unreachable` when it did not answer at all
    /// (refused connection, timeout, DNS).
    Temporary { unreachable: bool, why: String },
}

/// A cache entry.
#[derive(Serialize, Deserialize)]
struct Cached {
    exists: bool,
    at_ms: u64,
    reply: String,
}

/// One callout in progress; callers for the same address wait on `done`,
/// which the caller doing the callout closes when it ends.
struct Flight {
    done: async_channel::Receiver<()>,
    answer: Mutex<Option<Answer>>,
}

/// Removes a flight when its callout ends, however it ends (a cancelled
/// callout leaves `answer` empty: the waiters see a temporary failure).
struct Landing<'a> {
    flights: &'a Mutex<HashMap<String, Arc<Flight>>>,
    key: String,
    _close: async_channel::Sender<()>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        lock(self.flights).remove(&self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
pub struct Verifier {
    cache: sled::Tree,
    store: Store,
    flights: Arc<Mutex<HashMap<String, Arc<Flight>>>>,
}

/// Which cache entries `antemx verify clear` removes.
pub enum Selector {
    All,
    Domain(String),
    Address(String),
}

/// The cache key of an address: `domain/local`, lower case.
fn key(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{}/{}", normalize_domain(domain), local.to_lowercase()),
        None => address.to_lowercase(),
    }
}

impl Verifier {
    pub fn open(store: &Store) -> io::Result<Verifier> {
        Ok(Verifier {
            cache: store.tree("verify.cache")?,
            store: store.clone(),
            flights: Arc::default(),
        })
    }

    /// The answer for `address` of `domain` (whose `deliver_to` is asked),
    /// and whether it came from the cache.
    pub async fn check(&self, config: &Config, domain: &Domain, address: &str) -> (Answer, bool) {
        let key = key(address);
        let (flight, landing) = {
            let mut flights = lock(&self.flights);
            if let Some(flight) = flights.get(&key) {
                (flight.clone(), None)
            } else {
                // Looked up under the lock: a callout that just ended has
                // written its answer before leaving the map.
                if let Some(answer) = self.cached(config, &key, crate::time::now_ms()) {
                    return (answer, true);
                }
                let (close, done) = async_channel::bounded(1);
                let flight = Arc::new(Flight {
                    done,
                    answer: Mutex::new(None),
                });
                flights.insert(key.clone(), flight.clone());
                let landing = Landing {
                    flights: &self.flights,
                    key: key.clone(),
                    _close: close,
                };
                (flight, Some(landing))
            }
        };
        let Some(landing) = landing else {
            // Closed, never sent on: returns when the callout ends.
            let _ = flight.done.recv().await;
            let answer = lock(&flight.answer).clone();
            return match answer {
                Some(answer) => (answer, true),
                None => (
                    Answer::Temporary {
                        unreachable: true,
                        why: "the callout was cut short".into(),
                    },
                    false,
                ),
            };
        };
        let answer = callout(config, domain, address).await;
        let exists = match &answer {
            Answer::Exists(reply) => Some((true, reply)),
            Answer::Unknown(reply) => Some((false, reply)),
            Answer::Temporary { .. } => None,
        };
        if let Some((exists, reply)) = exists {
            let cached = Cached {
                exists,
                at_ms: crate::time::now_ms(),
                reply: reply.clone(),
            };
            if let Ok(value) = serde_json::to_vec(&cached) {
                if let Err(e) = self.cache.insert(key.as_bytes(), value) {
                    log::warn!("verify: cannot cache the answer for <{address}>: {e}");
                }
            }
        }
        *lock(&flight.answer) = Some(answer.clone());
        drop(landing);
        (answer, false)
    }

    /// A cached answer still within its lifetime.
    fn cached(&self, config: &Config, key: &str, now_ms: u64) -> Option<Answer> {
        let value = self.cache.get(key.as_bytes()).ok()??;
        let cached: Cached = serde_json::from_slice(&value).ok()?;
        if expired(config, &cached, now_ms) {
            return None;
        }
        Some(if cached.exists {
            Answer::Exists(cached.reply)
        } else {
            Answer::Unknown(cached.reply)
        })
    }

    /// Removes cached answers; returns how many.
    pub async fn clear(&self, selector: Selector) -> io::Result<usize> {
        let keys: Vec<sled::IVec> = match &selector {
            Selector::All => self.cache.iter().keys().collect::<Result<_, _>>(),
            Selector::Domain(domain) => {
                let prefix = format!("{}/", normalize_domain(domain));
                self.cache.scan_prefix(prefix).keys().collect()
            }
            Selector::Address(address) => Ok(vec![key(address).into_bytes().into()]),
        }
        .map_err(io::Error::other)?;
        let mut removed = 0;
        for key in keys {
            if self.cache.remove(key).map_err(io::Error::other)?.is_some() {
                removed += 1;
            }
        }
        self.store.flush().await?;
        Ok(removed)
    }

    /// Removes expired answers; returns how many.
    pub fn purge(&self, config: &Config, now_ms: u64) -> usize {
        let mut purged = 0;
        for item in self.cache.iter() {
            let Ok((key, value)) = item else { continue };
            let stale = match serde_json::from_slice::<Cached>(&value) {
                Ok(cached) => expired(config, &cached, now_ms),
                Err(_) => true,
            };
            // Only if unchanged: a fresh answer written meanwhile stays.
            if stale
                && matches!(
                    self.cache
                        .compare_and_swap(&key, Some(value), None::<&[u8]>),
                    Ok(Ok(()))
                )
            {
                purged += 1;
            }
        }
        purged
    }
}

fn expired(config: &Config, cached: &Cached, now_ms: u64) -> bool {
    let ttl = if cached.exists {
        config.filter.verify_positive_ttl
    } else {
        config.filter.verify_negative_ttl
    };
    now_ms.saturating_sub(cached.at_ms) >= ttl.as_millis() as u64
}

/// Asks the domain's `deliver_to`, with its `tls` setting as delivery uses
/// it, all within `[filter] verify_timeout`.
async fn callout(config: &Config, domain: &Domain, address: &str) -> Answer {
    let timeout = config.filter.verify_timeout;
    let hop = &domain.deliver_to;
    let ask = async {
        let resolver = Resolver::new(&config.dns.servers, config.dns.timeout);
        let addresses: Vec<SocketAddr> = match resolver.addresses(&hop.host).await {
            Ok(ips) => ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, hop.port))
                .collect(),
            Err(e) => {
                return Answer::Temporary {
                    unreachable: true,
                    why: format!("{}: {e}", hop.host),
                }
            }
        };
        let (host, tls, helo, recipient) = (
            hop.host.clone(),
            domain.tls,
            config.node.hostname.clone(),
            address.to_string(),
        );
        let probe = smol::unblock(move || {
            let mut connection = deliver::connect(&Target {
                addresses: &addresses,
                server_name: &host,
                tls,
                helo: &helo,
                connect_timeout: timeout,
                command_timeout: timeout,
            })?;
            let probed = connection.probe(&recipient);
            connection.quit();
            Ok::<_, String>(probed)
        });
        match probe.await {
            Err(e) => Answer::Temporary {
                unreachable: true,
                why: format!("connect: {e}"),
            },
            Ok(Ok(Outcome::Sent(reply))) => Answer::Exists(reply),
            Ok(Ok(Outcome::Permanent(reply))) => Answer::Unknown(reply),
            Ok(Ok(Outcome::Temporary(why)) | Err(Outcome::Temporary(why))) => Answer::Temporary {
                unreachable: false,
                why,
            },
            Ok(Err(refused)) => {
                // The server refuses the null sender, so it cannot tell us
                // about anyone: accept (delivery still finds unknown users),
                // remembered like an answer so that each RCPT does not ask.
                let reply = match refused {
                    Outcome::Sent(r) | Outcome::Permanent(r) | Outcome::Temporary(r) => r,
                };
                log::warn!(
                    "verify: {hop} refuses MAIL FROM:<> ({reply}); recipients are accepted unverified"
                );
                Answer::Exists(format!("unverified: MAIL FROM:<> refused: {reply}"))
            }
        }
    };
    let deadline = async {
        smol::Timer::after(timeout).await;
        Answer::Temporary {
            unreachable: true,
            why: format!("{hop}: no answer within {timeout:?}"),
        }
    };
    ask.or(deadline).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_put_a_domain_first() {
        assert_eq!(super::key("Bob.Smith@Example.COM"), "example.com/bob.smith");
        assert_eq!(super::key("a/b@x.test"), "x.test/a/b");
    }
}
