//! The optional per-domain RCPT policies, asked after the relay policy has
//! accepted a recipient: recipient verification ([`super::verify`]).
//!
//! It lives in `receive` because it answers RCPT, not score a message as
//! the checks in `filter` do.

use super::verify::{Answer, Verifier};
use crate::config::{Config, Live};
use crate::store::Store;
use std::io;
use std::time::Duration;

/// A recipient refused by a policy: the reply, and what the log adds.
pub struct Refusal {
    pub reply: String,
    pub detail: String,
}

pub struct Policies {
    live: Live,
    verifier: Verifier,
}

impl Policies {
    pub fn open(live: Live, store: &Store) -> io::Result<Policies> {
        Ok(Policies {
            live,
            verifier: Verifier::open(store)?,
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Judges an accepted recipient of customer domain `domain`.
    pub async fn judge(&self, config: &Config, address: &str, domain: &str) -> Result<(), Refusal> {
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
        Ok(())
    }

    /// Purges expired cached answers, now and then, for as long as the node
    /// runs.
    pub async fn run(&self) {
        loop {
            let config = self.live.current();
            // Often enough that the tree stays near its live size, rarely
            // enough to cost nothing; tests use lifetimes of seconds.
            let every = (config.filter.verify_negative_ttl / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(3600));
            smol::Timer::after(every).await;
            let verifier = self.verifier.clone();
            let answers =
                smol::unblock(move || verifier.purge(&config, crate::time::now_ms())).await;
            if answers > 0 {
                log::debug!("purged {answers} verification answers");
            }
        }
    }
}
