//! An envelope sender in a customer's own domain (or this node's), arriving
//! from outside: the customer's own mail leaves through its own server, not
//! through its inbound MX, so this is mostly spoofing ("from yourself"
//! phishing). Moderate weight: some hosted services send as a customer's
//! domain; SPF, when it comes, tells them apart.

use crate::filter::{Check, Hit, Mail};

const SCORE: f64 = 1.5;

pub struct OwnSender {
    /// Customer domains and this node's hostname, lower case.
    ours: Vec<String>,
}

impl OwnSender {
    pub fn new(hostname: &str, customer_domains: impl IntoIterator<Item = String>) -> OwnSender {
        let mut ours: Vec<String> = customer_domains.into_iter().collect();
        ours.push(crate::config::normalize_domain(hostname));
        OwnSender { ours }
    }
}

impl Check for OwnSender {
    fn mail(&self, mail: &Mail) -> Vec<Hit> {
        let Some(domain) = mail.sender.and_then(|s| s.rsplit_once('@')).map(|(_, d)| d) else {
            return Vec::new();
        };
        let domain = crate::config::normalize_domain(domain);
        if !self.ours.contains(&domain) {
            return Vec::new();
        }
        let from = match mail.client {
            Some(client) => format!(" from client {client}"),
            None => String::new(),
        };
        vec![Hit::new(
            "OWN_DOMAIN_SENDER",
            SCORE,
            format!("envelope sender in our own domain {domain}, arriving at the MX{from}"),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(sender: Option<&str>) -> Vec<Hit> {
        OwnSender::new("mx.filter.test", ["example.com".to_string()]).mail(&Mail {
            client: Some("192.0.2.1".parse().unwrap()),
            sender,
        })
    }

    #[test]
    fn fires_for_our_domains() {
        let hit = &hits(Some("ceo@Example.COM"))[0];
        assert_eq!(hit.rule, "OWN_DOMAIN_SENDER");
        assert!(hit.reason.contains("192.0.2.1"), "{}", hit.reason);
        assert_eq!(hits(Some("x@mx.filter.test")).len(), 1);
    }

    #[test]
    fn quiet_for_others_and_bounces() {
        assert!(hits(Some("a@sender.test")).is_empty());
        assert!(hits(Some("a@sub.example.com")).is_empty());
        assert!(hits(None).is_empty());
        assert!(hits(Some("no-at-sign")).is_empty());
    }
}
