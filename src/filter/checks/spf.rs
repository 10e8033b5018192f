//! SPF (RFC 7208): may the client's address send mail for the envelope
//! sender's domain? For a bounce (`MAIL FROM:<>`) the HELO name is the
//! identity checked, as `postmaster@HELO` (RFC 7208 §2.4). A pass is weak
//! evidence of wanted mail (spammers publish SPF too); a fail or softfail
//! counts against the message. The lookups run in [`super::auth`].

use crate::filter::lookups::Lookups;
use crate::filter::{Check, Hit};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};
use std::net::IpAddr;

pub const PASS: f64 = -0.1;
pub const FAIL: f64 = 2.0;
pub const SOFTFAIL: f64 = 1.0;

/// The SPF result of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Spf {
    pub result: SpfResult,
    /// The client's address.
    pub ip: IpAddr,
    pub identity: Identity,
    /// The domain whose policy was evaluated.
    pub domain: String,
}

/// Which identity was checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// The envelope sender, as given at MAIL FROM.
    MailFrom(String),
    /// The HELO name, for the null sender.
    Helo(String),
}

impl Spf {
    /// The result word of RFC 8601 and RFC 7208 (`pass`, `softfail`, ...).
    pub fn word(&self) -> &'static str {
        word(self.result)
    }

    /// The identity as RFC 8601 names it: `smtp.mailfrom` or `smtp.helo`.
    pub fn property(&self) -> (&'static str, &str) {
        match &self.identity {
            Identity::MailFrom(sender) => ("smtp.mailfrom", sender),
            Identity::Helo(name) => ("smtp.helo", name),
        }
    }
}

pub fn word(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// The identity SPF checks: the envelope sender, or the HELO name when the
/// sender is null; `None` for a bounce from a client that gave no HELO name.
pub fn identity(helo: &str, sender: Option<&str>) -> Option<Identity> {
    match sender {
        Some(sender) => Some(Identity::MailFrom(sender.to_string())),
        None if !helo.is_empty() => Some(Identity::Helo(helo.to_string())),
        None => None,
    }
}

impl Identity {
    /// The domain whose policy applies, and that DMARC aligns with the
    /// header From.
    pub fn domain(&self) -> &str {
        match self {
            Identity::MailFrom(sender) => sender.rsplit_once('@').map_or("", |(_, d)| d),
            Identity::Helo(name) => name,
        }
    }
}

/// Evaluates the SPF policy of `identity`'s domain for the client `ip`
/// (`hostname`: this node, for the `%{r}` macro).
pub async fn evaluate(
    authenticator: &MessageAuthenticator,
    hostname: &str,
    ip: IpAddr,
    helo: &str,
    identity: &Identity,
) -> mail_auth::SpfOutput {
    let parameters = match identity {
        Identity::MailFrom(sender) => SpfParameters::verify_mail_from(ip, helo, hostname, sender),
        Identity::Helo(name) => SpfParameters::verify_ehlo(ip, name, hostname),
    };
    async_compat::Compat::new(authenticator.verify_spf(parameters)).await
}

pub struct SpfCheck;

impl Check for SpfCheck {
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        let Some(spf) = lookups.auth.as_ref().and_then(|a| a.spf.as_ref()) else {
            return Vec::new();
        };
        let (_, identity) = spf.property();
        let (rule, score, says) = match spf.result {
            SpfResult::Pass => ("SPF_PASS", PASS, "allows"),
            SpfResult::Fail => ("SPF_FAIL", FAIL, "forbids"),
            SpfResult::SoftFail => ("SPF_SOFTFAIL", SOFTFAIL, "discourages"),
            _ => return Vec::new(),
        };
        vec![Hit::new(
            rule,
            score,
            format!(
                "SPF of {} {says} {} sending for {identity}",
                spf.domain, spf.ip
            ),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::checks::auth::Authentication;

    fn judged(result: SpfResult) -> Vec<Hit> {
        let lookups = Lookups {
            auth: Some(Authentication {
                spf: Some(Spf {
                    result,
                    ip: "192.0.2.7".parse().unwrap(),
                    identity: Identity::MailFrom("a@sender.test".into()),
                    domain: "sender.test".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        SpfCheck.lookups(&lookups)
    }

    #[test]
    fn results_score() {
        let fail = judged(SpfResult::Fail);
        assert_eq!(fail[0].rule, "SPF_FAIL");
        assert_eq!(
            fail[0].reason,
            "SPF of sender.test forbids 192.0.2.7 sending for a@sender.test"
        );
        assert_eq!(judged(SpfResult::SoftFail)[0].rule, "SPF_SOFTFAIL");
        assert_eq!(judged(SpfResult::Pass)[0].score, PASS);
        assert!(judged(SpfResult::TempError).is_empty());
        assert!(judged(SpfResult::None).is_empty());
        assert!(SpfCheck.lookups(&Lookups::default()).is_empty());
    }
}
