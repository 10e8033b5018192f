//! Sender authentication of one message, as [`crate::filter::lookups`]
//! gathers it before the checks judge: SPF for the client and the envelope
//! sender, every DKIM signature, the ARC chain, then DMARC for the header
//! From with what SPF and DKIM found. mail-auth does the protocols; its
//! resolver (hickory, on tokio) runs under `async-compat` inside smol and
//! asks only the node's `[dns] servers`. All of it ends by the message's
//! lookup deadline: what is late is absent, or a temporary error where
//! DMARC must know it (so that a failure is not acted on).
//!
//! The checks in `spf.rs`, `dkim.rs`, `arc.rs` and `dmarc.rs` turn the
//! results into score; [`Authentication::results`] writes them for the
//! `Authentication-Results:` header (RFC 8601).

use super::dkim::{Dkim, Signature};
use super::dmarc::{Dmarc, Outcome};
use super::{arc, spf};
use crate::config::Config;
use crate::filter::{Content, Envelope};
use async_compat::Compat;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, MessageAuthenticator, SpfOutput,
    SpfResult,
};
use smol::future::FutureExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What sender authentication found. Each part is `None` when it was not
/// evaluated (nothing to evaluate, or too late).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authentication {
    pub spf: Option<spf::Spf>,
    pub dkim: Option<Dkim>,
    pub arc: Option<arc::Arc>,
    pub dmarc: Option<Dmarc>,
}

/// The resolver mail-auth asks, for the node's DNS servers. One per process
/// (rebuilt when a reload changes the servers), so that its cache serves
/// every message.
pub async fn authenticator(config: &Config) -> Result<MessageAuthenticator, String> {
    type Cached = (Vec<SocketAddr>, Duration, MessageAuthenticator);
    static CACHED: Mutex<Option<Cached>> = Mutex::new(None);
    // mail-auth asks the servers the project's own resolver asks.
    let servers = config.dns.servers.clone();
    let timeout = config.dns.timeout;
    if let Some((s, t, authenticator)) = &*CACHED.lock().unwrap_or_else(|p| p.into_inner()) {
        if *s == servers && *t == timeout {
            return Ok(authenticator.clone());
        }
    }
    let name_servers = servers
        .iter()
        .map(|server| {
            let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
            udp.port = server.port();
            tcp.port = server.port();
            NameServerConfig::new(server.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut options = ResolverOpts::default();
    // Like the project's resolver: each server once, for `timeout`, in
    // the order configured, and never the hosts file.
    options.timeout = timeout;
    options.attempts = 1;
    options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    options.use_hosts_file = ResolveHosts::Never;
    // hickory builds its connection pool on the tokio runtime.
    let built = Compat::new(async {
        MessageAuthenticator::new(ResolverConfig::from_name_servers(name_servers), options)
    })
    .await
    .map_err(|e| format!("cannot set up the DNS resolver for SPF/DKIM/DMARC: {e}"))?;
    *CACHED.lock().unwrap_or_else(|p| p.into_inner()) = Some((servers, timeout, built.clone()));
    Ok(built)
}

/// `future`'s output, or `None` if `deadline` comes first.
async fn within<T>(deadline: Instant, future: impl std::future::Future<Output = T>) -> Option<T> {
    async { Some(future.await) }
        .or(async {
            smol::Timer::at(deadline).await;
            None
        })
        .await
}

/// SPF of a client and envelope, as the filter evaluates it: `None` when
/// there is no identity to check; a temporary error when the deadline came
/// first. `antemx check-spf` calls this too.
pub async fn check_spf(
    authenticator: &MessageAuthenticator,
    hostname: &str,
    ip: IpAddr,
    helo: &str,
    sender: Option<&str>,
    deadline: Instant,
) -> Option<spf::Spf> {
    let identity = spf::identity(helo, sender)?;
    // An IPv4 client on a dual-stack listener shows as ::ffff:a.b.c.d;
    // SPF must judge it as the IPv4 address it is (RFC 7208 §5).
    let ip = ip.to_canonical();
    // RFC 7208 §4.3: a malformed domain is "none" before any lookup
    // (mail-auth would ask the DNS about it, or call it permerror).
    if !well_formed(identity.domain()) {
        return Some(spf::Spf {
            result: SpfResult::None,
            ip,
            domain: identity.domain().to_string(),
            identity,
        });
    }
    let evaluated = within(
        deadline,
        spf::evaluate(authenticator, hostname, ip, helo, &identity),
    )
    .await;
    let (result, domain) = match &evaluated {
        Some(output) => (output.result(), output.domain().to_string()),
        None => (SpfResult::TempError, identity.domain().to_string()),
    };
    if result == SpfResult::TempError {
        log::warn!(
            "filter: SPF of {domain} for {ip}: {}; SPF counts as not checked",
            if evaluated.is_some() {
                "DNS lookup failed"
            } else {
                "no answer by the lookup deadline"
            }
        );
    }
    Some(spf::Spf {
        result,
        ip,
        identity,
        domain,
    })
}

/// A domain SPF can be asked about: several labels of 1 to 63 bytes, at
/// most 253 in all, not an address literal (`[192.0.2.1]`).
fn well_formed(domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let labels: Vec<&str> = domain.split('.').collect();
    !domain.starts_with('[')
        && domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| (1..=63).contains(&l.len()))
}

/// Evaluates SPF, DKIM, ARC and DMARC for a message received from a client
/// (`None` for a message that did not come over SMTP: `antemx scan` without
/// `--client`, where the envelope is not known).
pub async fn lookup(
    config: &Config,
    envelope: &Envelope,
    content: &Content<'_>,
    deadline: Instant,
) -> Option<Authentication> {
    let ip = envelope.client?;
    let authenticator = match authenticator(config).await {
        Ok(authenticator) => authenticator,
        Err(e) => {
            log::warn!("filter: {e}; SPF, DKIM and DMARC not checked");
            return None;
        }
    };
    let hostname = &config.node.hostname;
    let helo = envelope.helo.as_deref().unwrap_or("");
    let raw = content.raw();
    let message = AuthenticatedMessage::parse(raw);
    // The filter reads only the first part of a large message: its body
    // hashes cannot match, so its signatures are not verified at all.
    let cut = raw.len() >= crate::receive::FILTER_BYTES;
    let verifiable = message.as_ref().filter(|_| !cut);

    let spf = check_spf(
        &authenticator,
        hostname,
        ip,
        helo,
        envelope.sender.as_deref(),
        deadline,
    );
    let dkim = async {
        let message = verifiable?;
        Some(within(deadline, Compat::new(authenticator.verify_dkim(message))).await)
    };
    let arc = async {
        let message = verifiable?;
        Some(within(deadline, Compat::new(authenticator.verify_arc(message))).await)
    };
    let (spf, (dkim_outputs, arc_output)) =
        smol::future::zip(spf, smol::future::zip(dkim, arc)).await;

    let dkim = match (&message, &dkim_outputs) {
        (None, _) => None,
        (Some(_), Some(Some(outputs))) => Some(Dkim::Verified(
            outputs.iter().map(Signature::from_output).collect(),
        )),
        (Some(_), Some(None)) => {
            log::warn!("filter: DKIM keys: no answer by the lookup deadline; DKIM not checked");
            Some(Dkim::Late)
        }
        // An unsigned message has nothing to verify, however large.
        (Some(m), None) if m.dkim_headers.is_empty() => Some(Dkim::Verified(Vec::new())),
        (Some(_), None) => Some(Dkim::TooLarge),
    };
    if let Some(Dkim::Verified(signatures)) = &dkim {
        for s in signatures {
            if let DkimResult::TempError(e) = &s.result {
                log::warn!(
                    "filter: DKIM key {}._domainkey.{}: {e}",
                    s.selector,
                    s.domain
                );
            }
        }
    }
    let arc = match arc_output {
        Some(Some(output)) => Some(arc::Arc {
            result: output.result().clone(),
            sets: message.as_ref().map_or(0, |m| m.ams_headers.len()),
        }),
        Some(None) => {
            log::warn!("filter: ARC keys: no answer by the lookup deadline; ARC not checked");
            None
        }
        None => None,
    };

    let dmarc = match &message {
        Some(message) => {
            let outputs: &[DkimOutput] = match &dkim_outputs {
                Some(Some(outputs)) => outputs,
                _ => &[],
            };
            evaluate_dmarc(
                &authenticator,
                message,
                outputs,
                spf.as_ref(),
                &dkim,
                deadline,
            )
            .await
        }
        None => None,
    };
    Some(Authentication {
        spf,
        dkim,
        arc,
        dmarc,
    })
}

/// DMARC for the header From, from what SPF and DKIM found.
async fn evaluate_dmarc(
    authenticator: &MessageAuthenticator,
    message: &AuthenticatedMessage<'_>,
    dkim_outputs: &[DkimOutput<'_>],
    spf: Option<&spf::Spf>,
    dkim: &Option<Dkim>,
    deadline: Instant,
) -> Option<Dmarc> {
    let (spf_output, mail_from_domain) = match spf {
        Some(spf) => (
            SpfOutput::new(spf.domain.clone()).with_result(spf.result),
            spf.domain.as_str(),
        ),
        None => (
            SpfOutput::new(String::new()).with_result(SpfResult::None),
            "",
        ),
    };
    let parameters = DmarcParameters::new(message, dkim_outputs, mail_from_domain, &spf_output);
    let Some(output) = within(
        deadline,
        Compat::new(authenticator.verify_dmarc(parameters)),
    )
    .await
    else {
        log::warn!("filter: DMARC: no answer by the lookup deadline; DMARC not checked");
        return None;
    };
    // No From domain, or several: DMARC does not apply (RFC 7489 §6.6.1).
    if output.domain().is_empty() {
        return None;
    }
    let domain = output.domain().to_string();
    // A pass that was missed cannot be ruled out when a check could not be
    // completed: then a failure is not one (RFC 7489 §6.6.2 asks for
    // temperror when DNS fails).
    let unsure = spf.is_some_and(|s| s.result == SpfResult::TempError)
        || match dkim {
            Some(Dkim::Verified(signatures)) => signatures
                .iter()
                .any(|s| matches!(s.result, DkimResult::TempError(_))),
            Some(Dkim::Late) | Some(Dkim::TooLarge) => true,
            None => false,
        };
    let (result, why) = match output.result() {
        DmarcResult::Pass => (Outcome::Pass, None),
        DmarcResult::Fail(_) | DmarcResult::TempError(_) if unsure => (
            Outcome::TempError,
            Some("SPF or DKIM could not be checked, the policy is not applied".to_string()),
        ),
        DmarcResult::Fail(_) => (Outcome::Fail, Some(failure(&output, spf, dkim))),
        DmarcResult::TempError(e) => {
            log::warn!("filter: DMARC of {domain}: {e}; DMARC not applied");
            (Outcome::TempError, Some(e.to_string()))
        }
        DmarcResult::PermError(e) => (Outcome::PermError, Some(e.to_string())),
        DmarcResult::None => (Outcome::None, None),
    };
    Some(Dmarc {
        result,
        domain,
        policy: output.policy(),
        why,
    })
}

/// Why DMARC failed, in words: what passed and was not aligned, or that
/// nothing passed.
fn failure(output: &mail_auth::DmarcOutput, spf: Option<&spf::Spf>, dkim: &Option<Dkim>) -> String {
    let spf = match (spf, output.spf_result()) {
        (Some(spf), DmarcResult::Fail(_)) => format!("SPF passes for {}, not aligned", spf.domain),
        _ => "no SPF pass".to_string(),
    };
    let signed: Vec<&str> = match dkim {
        Some(Dkim::Verified(signatures)) => signatures
            .iter()
            .filter(|s| s.result == DkimResult::Pass)
            .map(|s| s.domain.as_str())
            .collect(),
        _ => Vec::new(),
    };
    let dkim = if signed.is_empty() {
        "no valid DKIM signature".to_string()
    } else {
        format!("DKIM passes for {}, not aligned", signed.join(", "))
    };
    format!("{spf}, {dkim}")
}

impl Authentication {
    /// The results for `Authentication-Results:` (RFC 8601), one method
    /// result each (`spf=pass smtp.mailfrom=...`); empty when nothing was
    /// evaluated. Every value from the message or the client is quoted or
    /// cleaned so that it cannot end the header or forge another result.
    pub fn results(&self) -> Vec<String> {
        let mut results = Vec::new();
        if let Some(spf) = &self.spf {
            let (property, value) = spf.property();
            results.push(format!(
                "spf={}{} {property}={}",
                spf.word(),
                comment(match spf.result {
                    SpfResult::TempError => Some("no answer from DNS"),
                    SpfResult::PermError => Some("the SPF record is invalid"),
                    _ => None,
                }),
                pvalue(value)
            ));
        }
        match &self.dkim {
            Some(Dkim::Verified(signatures)) if signatures.is_empty() => {
                results.push("dkim=none".into())
            }
            Some(Dkim::Verified(signatures)) => {
                for s in signatures {
                    let (word, why) = s.word();
                    let mut result = format!("dkim={word}{}", comment(why.as_deref()));
                    if !s.domain.is_empty() {
                        result.push_str(&format!(
                            " header.d={} header.s={}",
                            pvalue(&s.domain),
                            pvalue(&s.selector)
                        ));
                    }
                    results.push(result);
                }
            }
            Some(Dkim::Late) => results.push("dkim=temperror (no answer from DNS in time)".into()),
            Some(Dkim::TooLarge) => {
                results.push("dkim=neutral (message too large to verify)".into())
            }
            None => {}
        }
        if let Some(arc) = &self.arc {
            let (word, why) = arc.word();
            results.push(format!("arc={word}{}", comment(why.as_deref())));
        }
        if let Some(dmarc) = &self.dmarc {
            let mut result = format!(
                "dmarc={}{} header.from={}",
                dmarc.word(),
                comment(dmarc.why.as_deref()),
                pvalue(&dmarc.domain),
            );
            // Without a record there is no policy to name.
            if dmarc.result != Outcome::None {
                result.push_str(&format!(" policy.dmarc={}", dmarc.policy_word()));
            }
            results.push(result);
        }
        results
    }
}

/// ` (text)` as an RFC 5322 comment, or nothing.
fn comment(text: Option<&str>) -> String {
    match text {
        Some(text) => {
            let clean: String = text
                .chars()
                .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\'))
                .take(200)
                .collect();
            format!(" ({})", clean.trim())
        }
        None => String::new(),
    }
}

/// An RFC 8601 property value: an address or domain as is when it is plain,
/// otherwise a quoted string.
fn pvalue(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.@".contains(c));
    if plain {
        return text.to_string();
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars().filter(|c| !c.is_control()).take(300) {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_break_the_header() {
        assert_eq!(pvalue("alice@sender.test"), "alice@sender.test");
        assert_eq!(
            pvalue("a\r\n\tdkim=pass;\"x\"@evil.test"),
            "\"adkim=pass;\\\"x\\\"@evil.test\""
        );
        assert_eq!(pvalue(""), "\"\"");
        assert_eq!(comment(Some("bad (key)\r\nX: y")), " (bad keyX: y)");
        assert_eq!(comment(None), "");
    }

    #[test]
    fn malformed_identities_are_not_looked_up() {
        assert!(well_formed("sender.test"));
        assert!(well_formed("mail.sender.test."));
        assert!(!well_formed("localhost"));
        assert!(!well_formed("a...sender.test"));
        assert!(!well_formed("[192.0.2.1]"));
        assert!(!well_formed(&format!("{}.test", "a".repeat(64))));
        assert!(!well_formed(""));
    }

    #[test]
    fn results_name_each_method() {
        let auth = Authentication {
            spf: Some(spf::Spf {
                result: SpfResult::Pass,
                ip: "192.0.2.7".parse().unwrap(),
                identity: spf::Identity::MailFrom("alice@sender.test".into()),
                domain: "sender.test".into(),
            }),
            dkim: Some(Dkim::Verified(vec![Signature {
                result: DkimResult::Pass,
                domain: "sender.test".into(),
                selector: "s1".into(),
            }])),
            arc: None,
            dmarc: Some(Dmarc {
                result: Outcome::Pass,
                domain: "sender.test".into(),
                policy: mail_auth::dmarc::Policy::Reject,
                why: None,
            }),
        };
        assert_eq!(
            auth.results(),
            [
                "spf=pass smtp.mailfrom=alice@sender.test",
                "dkim=pass header.d=sender.test header.s=s1",
                "dmarc=pass header.from=sender.test policy.dmarc=reject"
            ]
        );
        assert!(Authentication::default().results().is_empty());
    }
}
