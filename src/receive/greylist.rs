//! Greylisting (`greylist = true` on a domain): the first attempt of a
//! triplet (client network, envelope sender, recipient) is told to try
//! again later; real MTAs do, most spam engines do not.
//!
//! The client network is the IPv4 /24 or IPv6 /64, so a sender's pool of
//! outgoing servers retrying from a neighbouring address still matches.
//! The null sender `<>` is a sender like any other: bounces come from real
//! MTAs, which retry. A retry passes from `[filter] greylist_delay` after
//! the first attempt until `greylist_expiry` after it; later, it starts
//! over. A triplet that passed is remembered for `greylist_lifetime` after
//! its last message, so regular correspondents are delayed once.
//!
//! State is this module's sled tree `greylist`, one entry per triplet:
//! a state byte (0 waiting since the first attempt, 1 passed) and a time in
//! Unix milliseconds. [`Greylist::purge`] removes what has expired. Entries
//! go to disk with the node's next group commit; one lost in a crash costs
//! a sender one more retry.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

const WAITING: u8 = 0;
const PASSED: u8 = 1;

#[derive(Clone)]
pub struct Greylist {
    tree: sled::Tree,
}

/// What greylisting says about one recipient.
#[derive(Debug, PartialEq, Eq)]
pub enum Greylisting {
    Pass,
    /// Not yet: first seen now (`new`) or earlier; passes in `wait`.
    Wait {
        new: bool,
        wait: Duration,
    },
}

/// The client's network: IPv4 /24, IPv6 /64 (IPv4-mapped IPv6 as IPv4).
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn key(ip: IpAddr, sender: &str, recipient: &str) -> Vec<u8> {
    format!(
        "{}\0{}\0{}",
        network(ip),
        sender.to_lowercase(),
        recipient.to_lowercase()
    )
    .into_bytes()
}

fn decode(value: &[u8]) -> Option<(u8, u64)> {
    let (&state, time) = value.split_first()?;
    Some((state, u64::from_be_bytes(time.try_into().ok()?)))
}

fn encode(state: u8, at_ms: u64) -> Vec<u8> {
    let mut value = vec![state];
    value.extend_from_slice(&at_ms.to_be_bytes());
    value
}

/// The settings from `[filter]`, in milliseconds.
pub struct Times {
    pub delay: u64,
    pub expiry: u64,
    pub lifetime: u64,
}

impl Times {
    pub fn of(config: &crate::config::Config) -> Times {
        let ms = |d: Duration| d.as_millis() as u64;
        Times {
            delay: ms(config.filter.greylist_delay),
            expiry: ms(config.filter.greylist_expiry),
            lifetime: ms(config.filter.greylist_lifetime),
        }
    }

    /// Whether an entry can go: a wait whose window has closed, or a pass
    /// not used for `lifetime`.
    fn expired(&self, state: u8, at_ms: u64, now_ms: u64) -> bool {
        let age = now_ms.saturating_sub(at_ms);
        match state {
            PASSED => age > self.lifetime,
            _ => age > self.expiry,
        }
    }
}

impl Greylist {
    pub fn open(store: &crate::store::Store) -> io::Result<Greylist> {
        Ok(Greylist {
            tree: store.tree("greylist")?,
        })
    }

    /// Judges one attempt at `now_ms` and records it.
    pub fn check(
        &self,
        times: &Times,
        ip: IpAddr,
        sender: &str,
        recipient: &str,
        now_ms: u64,
    ) -> io::Result<Greylisting> {
        let key = key(ip, sender, recipient);
        let seen = self
            .tree
            .get(&key)
            .map_err(io::Error::other)?
            .and_then(|v| decode(&v));
        let (result, record) = match seen {
            Some((state, at)) if !times.expired(state, at, now_ms) => {
                let age = now_ms.saturating_sub(at);
                if state == PASSED || age >= times.delay {
                    (Greylisting::Pass, Some(encode(PASSED, now_ms)))
                } else {
                    // The first attempt's time stays: retrying often does
                    // not push the end of the wait further away.
                    let wait = Duration::from_millis(times.delay - age);
                    (Greylisting::Wait { new: false, wait }, None)
                }
            }
            _ => {
                let wait = Duration::from_millis(times.delay);
                let first = encode(WAITING, now_ms);
                (Greylisting::Wait { new: true, wait }, Some(first))
            }
        };
        if let Some(value) = record {
            self.tree.insert(key, value).map_err(io::Error::other)?;
        }
        Ok(result)
    }

    /// Removes expired entries; returns how many.
    pub fn purge(&self, times: &Times, now_ms: u64) -> usize {
        let mut purged = 0;
        for item in self.tree.iter() {
            let Ok((key, value)) = item else { continue };
            let stale = match decode(&value) {
                Some((state, at)) => times.expired(state, at, now_ms),
                None => true,
            };
            // Only if unchanged: an attempt recorded meanwhile stays.
            if stale
                && matches!(
                    self.tree.compare_and_swap(&key, Some(value), None::<&[u8]>),
                    Ok(Ok(()))
                )
            {
                purged += 1;
            }
        }
        purged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net = |s: &str| network(s.parse().unwrap());
        assert_eq!(net("192.0.2.77"), "192.0.2.0/24");
        assert_eq!(net("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(net("::ffff:192.0.2.9"), "192.0.2.0/24");
    }

    #[test]
    fn a_triplet_waits_then_passes_then_is_remembered_then_forgotten() {
        let dir = std::env::temp_dir().join(format!("antemx-greylist-{}", std::process::id()));
        let store = crate::store::Store::open(&dir).unwrap();
        let list = Greylist::open(&store).unwrap();
        let times = Times {
            delay: 300_000,
            expiry: 4 * 3_600_000,
            lifetime: 36 * 86_400_000,
        };
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let neighbour: IpAddr = "192.0.2.200".parse().unwrap();
        let t0 = 1_000_000_000_000;
        let check = |ip, sender, at| {
            list.check(&times, ip, sender, "bob@example.com", at)
                .unwrap()
        };
        assert!(matches!(
            check(ip, "a@s.test", t0),
            Greylisting::Wait { new: true, .. }
        ));
        assert_eq!(
            check(ip, "a@s.test", t0 + 60_000),
            Greylisting::Wait {
                new: false,
                wait: Duration::from_secs(240)
            }
        );
        assert_eq!(
            check(neighbour, "A@S.test", t0 + 300_000),
            Greylisting::Pass
        );
        // Remembered long after the window, counted from the last pass.
        let later = t0 + 10 * 86_400_000;
        assert_eq!(check(ip, "a@s.test", later), Greylisting::Pass);
        assert_eq!(list.purge(&times, later + 30 * 86_400_000), 0);
        assert_eq!(list.purge(&times, later + 37 * 86_400_000), 1);
        // A retry after the window starts over.
        assert!(matches!(
            check(ip, "b@s.test", t0),
            Greylisting::Wait { new: true, .. }
        ));
        assert!(matches!(
            check(ip, "b@s.test", t0 + 5 * 3_600_000),
            Greylisting::Wait { new: true, .. }
        ));
        drop(list);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
