//! ARC (RFC 8617): the chain of seals that forwarders and mailing lists
//! add, each vouching for what the message looked like when it reached
//! them. A chain that does not verify was tampered with or forged. A valid
//! chain is not trusted to override DMARC: that would need a list of
//! trusted sealers, which antemx does not have. The lookups run in
//! [`super::auth`].

use crate::filter::lookups::Lookups;
use crate::filter::{Check, Hit};
use mail_auth::DkimResult;

pub const INVALID: f64 = 1.0;

/// The result of the message's ARC chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Arc {
    /// ARC reuses DKIM's results; `None` when the message has no ARC sets.
    pub result: DkimResult,
    /// How many ARC sets the message carries.
    pub sets: usize,
}

impl Arc {
    /// The RFC 8601 result word and, unless it passed, why.
    pub fn word(&self) -> (&'static str, Option<String>) {
        match &self.result {
            DkimResult::Pass => ("pass", None),
            DkimResult::None => ("none", None),
            // RFC 8617 knows only none, pass and fail.
            DkimResult::Fail(e)
            | DkimResult::Neutral(e)
            | DkimResult::PermError(e)
            | DkimResult::TempError(e) => ("fail", Some(e.to_string())),
        }
    }
}

pub struct ArcCheck;

impl Check for ArcCheck {
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        let Some(arc) = lookups.auth.as_ref().and_then(|a| a.arc.as_ref()) else {
            return Vec::new();
        };
        // A key that did not arrive in time is no evidence of tampering.
        match &arc.result {
            DkimResult::Fail(e) | DkimResult::Neutral(e) | DkimResult::PermError(e) => {
                vec![Hit::new(
                    "ARC_INVALID",
                    INVALID,
                    format!("ARC chain of {} set(s) does not verify: {e}", arc.sets),
                )]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::auth::Authentication;

    fn judged(result: DkimResult) -> Vec<Hit> {
        let lookups = Lookups {
            auth: Some(Authentication {
                arc: Some(Arc { result, sets: 2 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        ArcCheck.lookups(&lookups)
    }

    #[test]
    fn only_a_broken_chain_scores() {
        let broken = DkimResult::Fail(mail_auth::Error::Arc(mail_auth::arc::ArcError::BrokenChain));
        let hits = judged(broken);
        assert_eq!(hits[0].rule, "ARC_INVALID");
        assert!(hits[0]
            .reason
            .starts_with("ARC chain of 2 set(s) does not verify: "));
        assert!(judged(DkimResult::Pass).is_empty());
        assert!(judged(DkimResult::None).is_empty());
    }
}
