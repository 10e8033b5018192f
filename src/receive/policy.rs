//! The optional per-domain RCPT policies, asked after the relay policy has
//! accepted a recipient: recipient verification ([`super::verify`]), then
//! greylisting ([`super::greylist`]).
//!
//! Verification comes first: an unknown user is told 550 at once rather
//! than after a greylisting round, and only real mailboxes take places in
//! the greylist. Both live in `receive` because they answer RCPT, not
//! score a message as the checks in `filter` do.

use super::greylist::{Greylist, Greylisting, Times};
use super::verify::{Answer, Verifier};
use crate::config::{Config, Live};
use crate::store::Store;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// A recipient refused by a policy: the reply, and what the log adds.
pub struct Refusal {
    pub reply: String,
    pub detail: String,
}

pub struct Policies {
    live: Live,
    verifier: Verifier,
    greylist: Greylist,
}

impl Policies {
    pub fn open(live: Live, store: &Store) -> io::Result<Policies> {
        Ok(Policies {
            live,
            verifier: Verifier::open(store)?,
            greylist: Greylist::open(store)?,
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Judges an accepted recipient of customer domain `domain`.
    pub async fn judge(
        &self,
        config: &Config,
        ip: IpAddr,
        sender: &str,
        address: &str,
        domain: &str,
    ) -> Result<(), Refusal> {
        let Some(route) = config.domain(domain) else {
            return Ok(());
        };
        if route.verify_recipients {
            let (answer, cached) = self.verifier.check(config, route, address).await;
            let how = if cached { "cached" } else { "callout" };
            let hop = &route.deliver_to;
            match answer {
                Answer::Exists(_) => {}
                Answer::Unknown(said) => {
                    return Err(Refusal {
                        reply: "550 5.1.1 Recipient address rejected: no such user here".into(),
                        detail: format!("verify={how} ({hop} said: {said})"),
                    })
                }
                Answer::Temporary { unreachable, why } => {
                    let reply = if unreachable {
                        "450 4.4.1 Recipient address cannot be verified now: the destination does not answer, try again later"
                    } else {
                        "450 4.4.0 Recipient address cannot be verified now, try again later"
                    };
                    return Err(Refusal {
                        reply: reply.into(),
                        detail: format!("verify={how} ({why})"),
                    });
                }
            }
        }
        // Local relays and monitoring in `trusted_networks` are no strangers.
        let trusted = || {
            config
                .filter
                .trusted_networks
                .iter()
                .any(|n| n.contains(ip))
        };
        if route.greylist && !trusted() {
            let times = Times::of(config);
            let now = crate::time::now_ms();
            match self.greylist.check(&times, ip, sender, address, now) {
                Ok(Greylisting::Pass) => {}
                Ok(Greylisting::Wait { new, wait }) => {
                    let seconds = wait.as_secs_f64().ceil() as u64;
                    return Err(Refusal {
                        reply: format!("451 4.7.1 Greylisted, please try again in {seconds}s"),
                        detail: format!("greylist={}", if new { "new" } else { "too-soon" }),
                    });
                }
                // A broken database must not stop mail: let it through.
                Err(e) => log::error!("greylist: {e}; <{address}> passes unchecked"),
            }
        }
        Ok(())
    }

    /// Purges expired greylist entries and cached answers, now and then,
    /// for as long as the node runs.
    pub async fn run(&self) {
        loop {
            let config = self.live.current();
            let shortest = config
                .filter
                .greylist_expiry
                .min(config.filter.verify_negative_ttl);
            // Often enough that the trees stay near their live size, rarely
            // enough to cost nothing; tests use lifetimes of seconds.
            let every = (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            smol::Timer::after(every).await;
            let (verifier, greylist) = (self.verifier.clone(), self.greylist.clone());
            let (answers, triplets) = smol::unblock(move || {
                let now = crate::time::now_ms();
                (
                    verifier.purge(&config, now),
                    greylist.purge(&Times::of(&config), now),
                )
            })
            .await;
            if answers + triplets > 0 {
                log::debug!(
                    "purged {answers} verification answers and {triplets} greylist entries"
                );
            }
        }
    }
}
