//! The name a client gives at HELO/EHLO. Real mail servers give their fully
//! qualified name (RFC 5321 §4.1.1.1) or an address literal in brackets;
//! spam software gives bare IPs, single words, or — to look trusted — our
//! own name or the recipient's domain.

use crate::filter::{Check, Helo, Hit};
use std::net::IpAddr;

const BARE_IP: f64 = 1.0;
const LITERAL_MISMATCH: f64 = 1.0;
const NOT_FQDN: f64 = 1.0;
/// No outside server is this node or a customer's domain itself: a forgery.
const CLAIMS_US: f64 = 3.0;

pub struct HeloCheck {
    /// This node's hostname and the customer domains, lower case.
    ours: Vec<String>,
}

impl HeloCheck {
    pub fn new(hostname: &str, customer_domains: impl IntoIterator<Item = String>) -> HeloCheck {
        let mut ours: Vec<String> = customer_domains.into_iter().collect();
        ours.push(crate::config::normalize_domain(hostname));
        HeloCheck { ours }
    }
}

impl Check for HeloCheck {
    fn helo(&self, helo: &Helo) -> Vec<Hit> {
        let name = helo.name.trim();
        if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            let literal = literal
                .strip_prefix("IPv6:")
                .or_else(|| literal.strip_prefix("ipv6:"))
                .unwrap_or(literal);
            return match (literal.parse::<IpAddr>(), helo.client) {
                (Ok(ip), Some(client)) if ip != client => vec![Hit::new(
                    "HELO_LITERAL_MISMATCH",
                    LITERAL_MISMATCH,
                    format!("HELO [{ip}] from client {client}"),
                )],
                (Err(_), _) => vec![Hit::new(
                    "HELO_NOT_FQDN",
                    NOT_FQDN,
                    format!("HELO {name:?} is not an address literal"),
                )],
                _ => Vec::new(),
            };
        }
        if name.parse::<IpAddr>().is_ok() {
            return vec![Hit::new(
                "HELO_BARE_IP",
                BARE_IP,
                format!("HELO {name} is an address without brackets"),
            )];
        }
        let lower = crate::config::normalize_domain(name);
        if self.ours.contains(&lower) {
            return vec![Hit::new(
                "HELO_CLAIMS_US",
                CLAIMS_US,
                format!("HELO {name} is this node's or a customer's own name"),
            )];
        }
        let valid_labels = lower.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !lower.contains('.') || !valid_labels {
            return vec![Hit::new(
                "HELO_NOT_FQDN",
                NOT_FQDN,
                format!("HELO {:?} is not a fully qualified host name", short(name)),
            )];
        }
        Vec::new()
    }
}

fn short(name: &str) -> &str {
    match name.char_indices().nth(60) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(name: &str, client: Option<&str>) -> Vec<&'static str> {
        let check = HeloCheck::new("mx1.filter.test", ["example.com".to_string()]);
        check
            .helo(&Helo {
                client: client.map(|c| c.parse().unwrap()),
                name,
            })
            .into_iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn proper_names_fire_nothing() {
        for name in ["mail.sender.test", "MAIL.Sender.Test.", "mx-1.a_b.test"] {
            assert!(rules(name, Some("192.0.2.1")).is_empty(), "{name}");
        }
        assert!(rules("[192.0.2.1]", Some("192.0.2.1")).is_empty());
        assert!(rules("[IPv6:2001:db8::1]", Some("2001:db8::1")).is_empty());
        // A literal cannot be compared without a client: no evidence.
        assert!(rules("[192.0.2.1]", None).is_empty());
    }

    #[test]
    fn bad_names_fire() {
        assert_eq!(rules("192.0.2.1", None), ["HELO_BARE_IP"]);
        assert_eq!(
            rules("[192.0.2.9]", Some("192.0.2.1")),
            ["HELO_LITERAL_MISMATCH"]
        );
        assert_eq!(rules("[localhost]", None), ["HELO_NOT_FQDN"]);
        assert_eq!(rules("localhost", None), ["HELO_NOT_FQDN"]);
        assert_eq!(rules("bad..name.test", None), ["HELO_NOT_FQDN"]);
        assert_eq!(rules("Example.COM", None), ["HELO_CLAIMS_US"]);
        assert_eq!(rules("mx1.filter.test", None), ["HELO_CLAIMS_US"]);
    }
}
