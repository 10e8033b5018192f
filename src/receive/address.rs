//! Recipient policy at RCPT: only configured customer domains, and no
//! sender-specified routing, so antemx is never an open relay.

use crate::config::{normalize_domain, Config};

#[derive(Debug, PartialEq, Eq)]
pub enum RcptVerdict {
    /// The address to queue (domain normalised) and its customer domain.
    Accept {
        address: String,
        domain: String,
    },
    Refuse(&'static str),
}

/// Judges a forward-path as smtp-proto parsed it (source route already
/// stripped, quotes removed).
pub fn judge_recipient(config: &Config, address: &str) -> RcptVerdict {
    // RFC 5321 §4.5.1: `<Postmaster>` without a domain must be accepted; it
    // goes to the operator's mailbox.
    if address.eq_ignore_ascii_case("postmaster") {
        return match &config.node.postmaster {
            Some(postmaster) => RcptVerdict::Accept {
                address: postmaster.clone(),
                domain: postmaster
                    .rsplit_once('@')
                    .map_or_else(String::new, |(_, d)| d.to_string()),
            },
            None => RcptVerdict::Refuse(
                "550 5.1.1 No postmaster mailbox is set up here; write to postmaster@ the domain concerned",
            ),
        };
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return RcptVerdict::Refuse("550 5.1.3 Recipient address must be user@domain");
    };
    // `user%other@domain`, `user!other@domain` and a quoted `"a@b"@domain`
    // ask the next hop to route on; Postfix refuses them as relaying too.
    if local.is_empty() || local.contains(['@', '%', '!']) {
        return RcptVerdict::Refuse("550 5.7.1 Sender-specified routing is not allowed here");
    }
    let domain = normalize_domain(domain);
    if domain.starts_with('[') || config.domain(&domain).is_none() {
        return RcptVerdict::Refuse(
            "550 5.7.1 Relaying denied: not a domain this server accepts mail for",
        );
    }
    RcptVerdict::Accept {
        address: format!("{local}@{domain}"),
        domain,
    }
}

/// Whether a RCPT command's path is `<Postmaster>`, in any case.
pub fn names_postmaster(command: &[u8]) -> bool {
    command
        .windows(12)
        .any(|w| w.eq_ignore_ascii_case(b"<postmaster>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n[[domain]]\nname = \"example.com\"\ndeliver_to = \"127.0.0.1:25\"\n",
        )
        .unwrap()
    }

    #[test]
    fn customer_domain_in_any_case_and_with_trailing_dot() {
        for address in ["u@example.com", "u@EXAMPLE.Com", "u@example.com."] {
            assert_eq!(
                judge_recipient(&config(), address),
                RcptVerdict::Accept {
                    address: "u@example.com".into(),
                    domain: "example.com".into()
                },
                "{address}"
            );
        }
    }

    #[test]
    fn postmaster_without_a_domain_goes_to_the_operator() {
        let with = Config::parse(
            "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\npostmaster = \"noc@OPS.test\"\n",
        )
        .unwrap();
        for address in ["postmaster", "Postmaster", "POSTMASTER"] {
            assert_eq!(
                judge_recipient(&with, address),
                RcptVerdict::Accept {
                    address: "noc@ops.test".into(),
                    domain: "ops.test".into()
                }
            );
        }
        assert!(matches!(
            judge_recipient(&config(), "postmaster"),
            RcptVerdict::Refuse(reply) if reply.starts_with("550 5.1.1")
        ));
        // Only the bare name: postmaster of another domain is relaying.
        assert!(matches!(
            judge_recipient(&with, "postmaster@other.example"),
            RcptVerdict::Refuse(reply) if reply.starts_with("550 5.7.1")
        ));
    }

    #[test]
    fn relay_attempts_are_refused() {
        for address in [
            "u@other.example",
            "u%other.example@example.com",
            "u!other.example@example.com",
            "u@other.example@example.com",
            "u@[127.0.0.1]",
            "u@example.com.other.example",
            "u@sub.example.com",
            "example.com",
            "",
        ] {
            assert!(
                matches!(judge_recipient(&config(), address), RcptVerdict::Refuse(_)),
                "{address}"
            );
        }
    }
}
