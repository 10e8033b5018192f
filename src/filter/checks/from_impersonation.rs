//! A header From that pretends to come from a customer (`FROM_OWN_DOMAIN`,
//! `FROM_DISPLAY_IMPERSONATION`): "From: yourself" phishing, and display
//! names like `"it@customer.example" <x@elsewhere.example>` that show the
//! customer's domain while the address is another. Mail clients show the
//! display name, not the address.

use crate::config::normalize_domain;
use crate::filter::{Check, Content, Hit};

const OWN_DOMAIN: f64 = 1.0;
const DISPLAY_IMPERSONATION: f64 = 2.5;

pub struct FromImpersonation {
    /// Customer domains, lower case.
    customers: Vec<String>,
}

impl FromImpersonation {
    pub fn new(customer_domains: impl IntoIterator<Item = String>) -> FromImpersonation {
        FromImpersonation {
            customers: customer_domains.into_iter().collect(),
        }
    }

    /// A customer domain the text shows as a whole name (not the tail of
    /// `notexample.com` or the head of `example.com.evil.test`).
    fn customer_in(&self, text: &str) -> Option<&str> {
        let text = text.to_ascii_lowercase();
        let part_of_name =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        self.customers
            .iter()
            .find(|domain| {
                text.match_indices(domain.as_str()).any(|(at, _)| {
                    let before = text[..at].chars().next_back();
                    let after = text[at + domain.len()..].chars().next();
                    // A dot before is fine: `it.example.com` still shows it.
                    !part_of_name(before.filter(|c| *c != '.')) && !part_of_name(after)
                })
            })
            .map(String::as_str)
    }
}

impl Check for FromImpersonation {
    fn data(&self, content: &Content) -> Vec<Hit> {
        let Some(first) = content.message().from().and_then(|f| f.first()) else {
            return Vec::new();
        };
        let Some(address) = first.address() else {
            return Vec::new();
        };
        let domain = normalize_domain(address.rsplit_once('@').map_or("", |(_, d)| d));
        if self.customers.contains(&domain) {
            return vec![Hit::new(
                "FROM_OWN_DOMAIN",
                OWN_DOMAIN,
                format!("From: {address} is in the customer's own domain, arriving at the MX"),
            )];
        }
        let name = first.name().unwrap_or("");
        match self.customer_in(name) {
            Some(customer) => vec![Hit::new(
                "FROM_DISPLAY_IMPERSONATION",
                DISPLAY_IMPERSONATION,
                format!("From: the name {name:?} shows {customer}, the address is {address}"),
            )],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(from: &str) -> Vec<&'static str> {
        let raw = format!("From: {from}\r\nSubject: x\r\n\r\nbody\r\n");
        FromImpersonation::new(["example.com".to_string()])
            .data(&Content::parse(raw.as_bytes()))
            .iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn impersonation_fires() {
        assert_eq!(
            rules("\"IT <it@Example.com>\" <x@evil.test>"),
            ["FROM_DISPLAY_IMPERSONATION"]
        );
        assert_eq!(
            rules("Example.com Support <help@evil.test>"),
            ["FROM_DISPLAY_IMPERSONATION"]
        );
        assert_eq!(rules("Boss <ceo@example.com>"), ["FROM_OWN_DOMAIN"]);
    }

    #[test]
    fn others_do_not() {
        assert!(rules("Alice <alice@sender.test>").is_empty());
        assert!(rules("alice@sender.test").is_empty());
        assert!(rules("Bob <bob@notexample.com.evil.test>").is_empty());
        assert!(rules("notexample.com <x@evil.test>").is_empty());
        assert!(rules("example.com.evil.test <x@evil.test>").is_empty());
    }
}
