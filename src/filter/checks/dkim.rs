//! DKIM (RFC 6376): every signature of the message is verified against its
//! signer's key in DNS. A valid signature says who vouches for the message,
//! not that it is wanted (spammers sign too): little score. A signature that
//! does not verify means the message was changed or forged. The lookups run
//! in [`super::auth`].

use crate::filter::lookups::Lookups;
use crate::filter::{Check, Hit};
use mail_auth::dkim::DkimError;
use mail_auth::{DkimOutput, DkimResult, Error};

pub const VALID: f64 = -0.1;
pub const INVALID: f64 = 1.0;

/// What was learnt of the message's signatures.
#[derive(Debug, Clone, PartialEq)]
pub enum Dkim {
    /// Each signature's result; empty when the message is not signed.
    Verified(Vec<Signature>),
    /// The keys did not arrive before the deadline.
    Late,
    /// Only the first part of the message was read (receive's filter
    /// limit), so its body hash cannot be checked.
    TooLarge,
}

/// One signature and its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub result: DkimResult,
    /// The signing domain (`d=`); empty when the signature could not be read.
    pub domain: String,
    /// The key's selector (`s=`).
    pub selector: String,
}

impl Signature {
    pub fn from_output(output: &DkimOutput) -> Signature {
        let (domain, selector) = output
            .signature()
            .map(|s| (s.d.to_ascii_lowercase(), s.s.clone()))
            .unwrap_or_default();
        // mail-auth calls a body that does not match its hash "neutral";
        // RFC 6376 §6.1.3 makes it a failed verification, and so do we.
        let result = match output.result() {
            DkimResult::Neutral(e @ Error::Dkim(DkimError::FailedBodyHashMatch)) => {
                DkimResult::Fail(e.clone())
            }
            other => other.clone(),
        };
        Signature {
            result,
            domain,
            selector,
        }
    }

    /// The RFC 8601 result word and, unless it passed, why.
    pub fn word(&self) -> (&'static str, Option<String>) {
        match &self.result {
            DkimResult::Pass => ("pass", None),
            DkimResult::Neutral(e) => ("neutral", Some(e.to_string())),
            DkimResult::Fail(e) => ("fail", Some(e.to_string())),
            DkimResult::PermError(e) => ("permerror", Some(e.to_string())),
            DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
            DkimResult::None => ("none", None),
        }
    }
}

pub struct DkimCheck;

impl Check for DkimCheck {
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        let Some(Dkim::Verified(signatures)) = lookups.auth.as_ref().and_then(|a| a.dkim.as_ref())
        else {
            return Vec::new();
        };
        let mut valid: Vec<&str> = signatures
            .iter()
            .filter(|s| s.result == DkimResult::Pass)
            .map(|s| s.domain.as_str())
            .collect();
        valid.dedup();
        // One hit however many signatures: adding signatures must not buy
        // a lower score.
        if !valid.is_empty() {
            return vec![Hit::new(
                "DKIM_VALID",
                VALID,
                format!("valid DKIM signature by {}", valid.join(", ")),
            )];
        }
        // A key that is missing or broken (permerror) is the signer's
        // fault as much as a changed message (fail); a temporary error or a
        // signature we cannot parse (neutral) says nothing.
        let invalid = signatures
            .iter()
            .find(|s| matches!(s.result, DkimResult::Fail(_) | DkimResult::PermError(_)));
        match invalid {
            Some(signature) => {
                let (_, why) = signature.word();
                vec![Hit::new(
                    "DKIM_INVALID",
                    INVALID,
                    format!(
                        "DKIM signature by {} does not verify: {}",
                        signature.domain,
                        why.unwrap_or_default()
                    ),
                )]
            }
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::auth::Authentication;

    fn judged(results: Vec<(DkimResult, &str)>) -> Vec<Hit> {
        let signatures = results
            .into_iter()
            .map(|(result, domain)| Signature {
                result,
                domain: domain.into(),
                selector: "s1".into(),
            })
            .collect();
        let lookups = Lookups {
            auth: Some(Authentication {
                dkim: Some(Dkim::Verified(signatures)),
                ..Default::default()
            }),
            ..Default::default()
        };
        DkimCheck.lookups(&lookups)
    }

    #[test]
    fn one_valid_signature_is_enough() {
        let broken = DkimResult::Fail(Error::Dkim(DkimError::FailedBodyHashMatch));
        let hits = judged(vec![
            (broken.clone(), "a.test"),
            (DkimResult::Pass, "b.test"),
        ]);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].rule, "DKIM_VALID");
        assert_eq!(hits[0].reason, "valid DKIM signature by b.test");
        let hits = judged(vec![(broken, "a.test")]);
        assert_eq!(hits[0].rule, "DKIM_INVALID");
        assert!(hits[0]
            .reason
            .starts_with("DKIM signature by a.test does not verify: "));
    }

    #[test]
    fn temporary_errors_and_no_signature_say_nothing() {
        let dns = DkimResult::TempError(Error::Dns(mail_auth::DnsError::Resolver("x".into())));
        assert!(judged(vec![(dns, "a.test")]).is_empty());
        assert!(judged(Vec::new()).is_empty());
    }
}
