//! Allow and block lists of envelope senders (`ALLOWLISTED`, `BLOCKLISTED`):
//! `[filter] allow` / `block` for every domain, `[[domain]] allow` / `block`
//! for one. They override the score: an allowed sender is accepted, a
//! blocked one refused. An envelope sender can be forged; allow only
//! senders whose forgery the other checks (SPF, DMARC) would catch, or
//! partners connecting from known addresses.

use crate::config::{normalize_domain, Config};
use crate::filter::{Check, Force, Hit, Mail, Rcpt, Verdict};
use std::collections::BTreeMap;

/// One entry: `alice@example.org` (that address) or `example.org` /
/// `@example.org` (any address at that domain or below it).
#[derive(Debug, Clone, PartialEq)]
pub enum SenderPattern {
    Address(String),
    Domain(String),
}

impl SenderPattern {
    pub fn parse(text: &str) -> Result<SenderPattern, String> {
        let text = text.trim();
        let pattern = match text.split_once('@') {
            Some(("", domain)) => SenderPattern::Domain(normalize_domain(domain)),
            Some((local, domain)) if !local.is_empty() && !domain.contains('@') => {
                SenderPattern::Address(format!("{}@{}", local, normalize_domain(domain)))
            }
            Some(_) => return Err(format!("{text:?} is not an address or a domain")),
            None => SenderPattern::Domain(normalize_domain(text)),
        };
        let domain = match &pattern {
            SenderPattern::Domain(d) => d.as_str(),
            SenderPattern::Address(a) => a.rsplit_once('@').map_or("", |(_, d)| d),
        };
        if domain.contains('.') {
            Ok(pattern)
        } else {
            Err(format!("{text:?} is not an address or a domain"))
        }
    }

    pub fn matches(&self, sender: &str) -> bool {
        let Some((local, domain)) = sender.rsplit_once('@') else {
            return false;
        };
        let domain = normalize_domain(domain);
        match self {
            SenderPattern::Address(address) => {
                address.eq_ignore_ascii_case(&format!("{local}@{domain}"))
            }
            SenderPattern::Domain(listed) => {
                domain == *listed || domain.ends_with(&format!(".{listed}"))
            }
        }
    }
}

#[derive(Default)]
struct Lists {
    allow: Vec<SenderPattern>,
    block: Vec<SenderPattern>,
}

impl Lists {
    /// Block wins over allow when a sender is on both.
    fn judge(&self, sender: &str, whose: &str) -> Vec<Hit> {
        if let Some(p) = self.block.iter().find(|p| p.matches(sender)) {
            return vec![Hit::forcing(
                Force::AtLeast(Verdict::Reject),
                "BLOCKLISTED",
                0.0,
                format!("sender {sender} is on the {whose} block list ({p:?})"),
            )];
        }
        if let Some(p) = self.allow.iter().find(|p| p.matches(sender)) {
            return vec![Hit::forcing(
                Force::Allow,
                "ALLOWLISTED",
                0.0,
                format!("sender {sender} is on the {whose} allow list ({p:?})"),
            )];
        }
        Vec::new()
    }
}

pub struct SenderLists {
    global: Lists,
    by_domain: BTreeMap<String, Lists>,
}

impl SenderLists {
    pub fn new(config: &Config) -> SenderLists {
        SenderLists {
            global: Lists {
                allow: config.filter.allow.clone(),
                block: config.filter.block.clone(),
            },
            by_domain: config
                .domains
                .iter()
                .filter(|(_, d)| !d.allow.is_empty() || !d.block.is_empty())
                .map(|(name, d)| {
                    let lists = Lists {
                        allow: d.allow.clone(),
                        block: d.block.clone(),
                    };
                    (name.clone(), lists)
                })
                .collect(),
        }
    }
}

impl Check for SenderLists {
    fn mail(&self, mail: &Mail) -> Vec<Hit> {
        mail.sender
            .map(|s| self.global.judge(s, "global"))
            .unwrap_or_default()
    }

    fn rcpt(&self, rcpt: &Rcpt) -> Vec<Hit> {
        let (Some(sender), Some((_, domain))) = (rcpt.sender, rcpt.recipient.rsplit_once('@'))
        else {
            return Vec::new();
        };
        let domain = normalize_domain(domain);
        match self.by_domain.get(&domain) {
            Some(lists) => lists.judge(sender, &domain),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_match() {
        let address = SenderPattern::parse("Alice@Partner.Example").unwrap();
        assert!(address.matches("alice@partner.example"));
        assert!(!address.matches("bob@partner.example"));
        for text in ["partner.example", "@partner.example"] {
            let domain = SenderPattern::parse(text).unwrap();
            assert!(domain.matches("x@partner.example"));
            assert!(domain.matches("x@mail.Partner.example."));
            assert!(!domain.matches("x@notpartner.example"));
            assert!(!domain.matches("partner.example"));
        }
        for bad in ["", "@", "a@b@c.example", "localhost", "alice@"] {
            assert!(SenderPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
