//! Domain lists about the links in the message (`URIBL_LISTED`): the
//! registered domain of every linked host, deduplicated and capped, is asked
//! of each zone of `[filter] uribl` (SURBL, URIBL, Spamhaus DBL style).

use crate::config::DnsList;
use crate::dns::Resolver;
use crate::filter::content::registered_domain;
use crate::filter::lookups::{ask_lists, Listing, Lookups};
use crate::filter::{Check, Content, Hit};
use std::time::Instant;

/// Domains asked about per message: spam links a few; a message with
/// hundreds of links must not cost hundreds of lookups.
const MAX_DOMAINS: usize = 20;

pub struct Uribl;

/// Asks every zone about the message's linked domains.
pub async fn lookup(
    resolver: &Resolver,
    lists: &[DnsList],
    content: &Content<'_>,
    deadline: Instant,
) -> Vec<Listing> {
    if lists.is_empty() {
        return Vec::new();
    }
    let domains = linked_domains(content);
    let questions = lists
        .iter()
        .flat_map(|list| {
            domains
                .iter()
                .map(move |d| (list, d.clone(), format!("{d}.{}", list.zone)))
        })
        .collect();
    ask_lists(resolver, questions, deadline).await
}

/// Registered domains of the linked hosts, in order of appearance, without
/// duplicates or IP literals, at most [`MAX_DOMAINS`].
fn linked_domains(content: &Content) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    for host in content.url_hosts() {
        if host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let domain = registered_domain(host).to_string();
        if domain.contains('.') && !domains.contains(&domain) {
            domains.push(domain);
            if domains.len() == MAX_DOMAINS {
                break;
            }
        }
    }
    domains
}

impl Check for Uribl {
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        lookups
            .link_listings
            .iter()
            .map(|l| {
                Hit::new(
                    "URIBL_LISTED",
                    l.weight,
                    format!("links to {}, listed in {} ({})", l.listed, l.zone, l.code),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_domains_are_registered_deduplicated_and_capped() {
        let mut body = String::from(
            "Subject: x\r\n\r\nhttp://www.Evil.example/a https://cdn.evil.example/b http://192.0.2.1/c\r\n",
        );
        for i in 0..30 {
            body.push_str(&format!("http://site{i}.test/\r\n"));
        }
        let content = Content::parse(body.as_bytes());
        let domains = linked_domains(&content);
        assert_eq!(domains[0], "evil.example");
        assert_eq!(domains[1], "site0.test");
        assert_eq!(domains.len(), MAX_DOMAINS);
    }
}
