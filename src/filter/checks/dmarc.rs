//! DMARC (RFC 7489): does an SPF or DKIM pass vouch for the domain in the
//! header From, the address the reader sees, with the alignment (relaxed or
//! strict) the domain asks for? A domain that publishes `p=reject` or
//! `p=quarantine` asks receivers to refuse or quarantine what fails; what
//! antemx does is `[filter] dmarc_reject` / `dmarc_quarantine`.
//!
//! The action goes through the score like all evidence, so every verdict
//! stays a sum the customer can read. "reject" scores past `reject_at` by
//! half the distance between the two lines (at least 1), "sideline" scores
//! halfway between them: small evidence either way (an unaligned valid
//! signature, a Bayes opinion) does not change the outcome, strong evidence
//! still can. A failure while SPF or DKIM could not be checked (a DNS error,
//! the deadline) is not acted on: a passing check may have been missed.

use crate::config::{DmarcAction, Filter};
use crate::filter::lookups::Lookups;
use crate::filter::{Check, Hit};
use mail_auth::dmarc::Policy;

pub const PASS: f64 = -0.2;
/// What a failure weighs with the action "score".
pub const REJECT_SCORE: f64 = 4.0;
pub const QUARANTINE_SCORE: f64 = 2.0;

/// The DMARC result of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Dmarc {
    pub result: Outcome,
    /// The header From domain.
    pub domain: String,
    /// The policy that applies to it (`p=`, or `sp=` for a subdomain).
    pub policy: Policy,
    /// Why it did not pass, for the customer.
    pub why: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The From domain publishes no DMARC record.
    None,
    Pass,
    Fail,
    /// Not judged: a DNS error, or SPF or DKIM could not be checked.
    TempError,
    PermError,
}

impl Dmarc {
    pub fn word(&self) -> &'static str {
        match self.result {
            Outcome::None => "none",
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }

    pub fn policy_word(&self) -> &'static str {
        match self.policy {
            Policy::Reject => "reject",
            Policy::Quarantine => "quarantine",
            Policy::None | Policy::Unspecified => "none",
        }
    }
}

pub struct DmarcCheck {
    reject: (f64, DmarcAction),
    quarantine: (f64, DmarcAction),
}

impl DmarcCheck {
    pub fn new(filter: &Filter) -> DmarcCheck {
        let (sideline_at, reject_at) = (
            filter.thresholds.sideline_at(),
            filter.thresholds.reject_at(),
        );
        let band = reject_at - sideline_at;
        let score = |action, fixed| match action {
            DmarcAction::Reject => reject_at + (band / 2.0).max(1.0),
            DmarcAction::Sideline => sideline_at + band / 2.0,
            DmarcAction::Score => fixed,
        };
        DmarcCheck {
            reject: (
                score(filter.dmarc_reject, REJECT_SCORE),
                filter.dmarc_reject,
            ),
            quarantine: (
                score(filter.dmarc_quarantine, QUARANTINE_SCORE),
                filter.dmarc_quarantine,
            ),
        }
    }
}

impl Check for DmarcCheck {
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        let Some(dmarc) = lookups.auth.as_ref().and_then(|a| a.dmarc.as_ref()) else {
            return Vec::new();
        };
        match (dmarc.result, dmarc.policy) {
            (Outcome::Pass, _) => vec![Hit::new(
                "DMARC_PASS",
                PASS,
                format!("the From domain {} passes DMARC", dmarc.domain),
            )],
            (Outcome::Fail, Policy::Reject) => {
                vec![self.failure("DMARC_REJECT", self.reject, dmarc)]
            }
            (Outcome::Fail, Policy::Quarantine) => {
                vec![self.failure("DMARC_QUARANTINE", self.quarantine, dmarc)]
            }
            _ => Vec::new(),
        }
    }
}

impl DmarcCheck {
    fn failure(
        &self,
        rule: &'static str,
        (score, action): (f64, DmarcAction),
        dmarc: &Dmarc,
    ) -> Hit {
        let did = match action {
            DmarcAction::Reject => "refused",
            DmarcAction::Sideline => "sidelined",
            DmarcAction::Score => "scored",
        };
        Hit::new(
            rule,
            score,
            format!(
                "the From domain {} fails DMARC ({}) and asks for p={}: {did}",
                dmarc.domain,
                dmarc
                    .why
                    .as_deref()
                    .unwrap_or("no aligned SPF or DKIM pass"),
                dmarc.policy_word()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::filter::checks::auth::Authentication;
    use crate::filter::Verdict;

    fn judged(config: &str, result: Outcome, policy: Policy) -> Vec<Hit> {
        let config = Config::parse(&format!(
            "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n[filter]\n{config}"
        ))
        .unwrap();
        let lookups = Lookups {
            auth: Some(Authentication {
                dmarc: Some(Dmarc {
                    result,
                    domain: "sender.test".into(),
                    policy,
                    why: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        DmarcCheck::new(&config.filter).lookups(&lookups)
    }

    fn verdict(hits: &[Hit]) -> Verdict {
        let score: f64 = hits.iter().map(|h| h.score).sum();
        crate::filter::Thresholds::default().verdict(score)
    }

    #[test]
    fn the_actions_reach_their_lines_with_room_to_spare() {
        let reject = judged("", Outcome::Fail, Policy::Reject);
        assert_eq!(reject[0].rule, "DMARC_REJECT");
        assert_eq!(reject[0].score, 20.0);
        assert_eq!(verdict(&reject), Verdict::Reject);
        let quarantine = judged("", Outcome::Fail, Policy::Quarantine);
        assert_eq!(quarantine[0].rule, "DMARC_QUARANTINE");
        assert_eq!(quarantine[0].score, 10.0);
        assert_eq!(verdict(&quarantine), Verdict::Sideline);
        let sideline = judged("dmarc_reject = \"sideline\"", Outcome::Fail, Policy::Reject);
        assert_eq!(verdict(&sideline), Verdict::Sideline);
        let scored = judged("dmarc_reject = \"score\"", Outcome::Fail, Policy::Reject);
        assert_eq!(scored[0].score, REJECT_SCORE);
        // Lines that coincide: "reject" still lands past them.
        let close = judged(
            "sideline_at = 6.0\nreject_at = 6.0",
            Outcome::Fail,
            Policy::Reject,
        );
        assert_eq!(close[0].score, 7.0);
    }

    #[test]
    fn no_action_without_a_failure_under_a_policy() {
        assert!(judged("", Outcome::Fail, Policy::None).is_empty());
        assert!(judged("", Outcome::TempError, Policy::Reject).is_empty());
        assert!(judged("", Outcome::None, Policy::None).is_empty());
        assert_eq!(judged("", Outcome::Pass, Policy::Reject)[0].score, PASS);
    }
}
