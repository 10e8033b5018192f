//! The network evidence of one message: every DNS lookup the checks need runs
//! concurrently, all under one deadline (`[filter] lookup_deadline`), before
//! the checks judge. A lookup that fails or is late is logged and is simply
//! absent: its check contributes nothing and mail keeps flowing.

use super::checks::reverse_dns::{self, ReverseDns};
use super::checks::{auth, dnsbl, uribl};
use super::{Content, Envelope};
use crate::config::{Config, DnsList};
use crate::dns::{DnsError, Resolver};
use smol::future::FutureExt;
use std::net::Ipv4Addr;
use std::time::Instant;

/// What the DNS said about one message.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// DNSBL / DNSWL zones that list the client's address.
    pub client_listings: Vec<Listing>,
    /// URI blocklist zones that list a domain the message links to.
    pub link_listings: Vec<Listing>,
    /// The client and what its reverse DNS says, when it was asked and
    /// answered.
    pub reverse_dns: Option<(std::net::IpAddr, ReverseDns)>,
    /// SPF, DKIM, ARC and DMARC; `None` when not evaluated (no client).
    pub auth: Option<auth::Authentication>,
}

/// One zone listing one thing.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub zone: String,
    /// The address or domain that is listed.
    pub listed: String,
    pub code: Ipv4Addr,
    pub weight: f64,
}

/// Asks every configured list about the message, the client's reverse
/// DNS, and authenticates the sender (SPF, DKIM, ARC, DMARC), all
/// concurrently. Clients in `[filter] trusted_networks` are not judged by
/// their address, nor their mail authenticated: a local relay is not the
/// sender's server.
pub async fn gather(config: &Config, envelope: &Envelope, content: &Content<'_>) -> Lookups {
    let filter = &config.filter;
    let client = envelope
        .client
        .filter(|ip| !filter.trusted_networks.iter().any(|n| n.contains(*ip)));
    if client.is_none() && filter.uribl.is_empty() {
        return Lookups::default();
    }
    let resolver = Resolver::new(&config.dns.servers, config.dns.timeout);
    let deadline = Instant::now() + filter.lookup_deadline;
    let reverse = async {
        match client {
            Some(ip) if filter.reverse_dns => reverse_dns::lookup(&resolver, ip, deadline)
                .await
                .map(|answer| (ip, answer)),
            _ => None,
        }
    };
    let lists = smol::future::zip(
        dnsbl::lookup(&resolver, &filter.dnsbl, client, deadline),
        uribl::lookup(&resolver, &filter.uribl, content, deadline),
    );
    let untrusted = Envelope {
        client,
        ..envelope.clone()
    };
    let authenticate = auth::lookup(config, &untrusted, content, deadline);
    let (((client_listings, link_listings), reverse_dns), auth) =
        smol::future::zip(smol::future::zip(lists, reverse), authenticate).await;
    Lookups {
        client_listings,
        link_listings,
        reverse_dns,
        auth,
    }
}

/// Asks each `(list, name)` concurrently; returns the listings. Failures and
/// lists' error codes are logged, not counted.
pub async fn ask_lists(
    resolver: &Resolver,
    questions: Vec<(&DnsList, String, String)>,
    deadline: Instant,
) -> Vec<Listing> {
    let tasks: Vec<_> = questions
        .iter()
        .map(|(_, _, name)| {
            let (resolver, name) = (resolver.clone(), name.clone());
            smol::spawn(async move { resolver.ipv4(&name).await })
        })
        .collect();
    let mut listings = Vec::new();
    for ((list, listed, name), task) in questions.into_iter().zip(tasks) {
        let late = async {
            smol::Timer::at(deadline).await;
            Err(DnsError::Temporary("past the lookup deadline".into()))
        };
        match task.or(late).await {
            Ok(codes) => listings.extend(
                codes
                    .into_iter()
                    .filter_map(|code| listing(list, &listed, code)),
            ),
            Err(DnsError::NoSuchDomain) => {}
            Err(DnsError::Temporary(why)) => {
                log::warn!("filter: {name}: {why}; {} counts as not listed", list.zone)
            }
        }
    }
    listings
}

/// What one answer of a list means.
fn listing(list: &DnsList, listed: &str, code: Ipv4Addr) -> Option<Listing> {
    let [a, b, c, _] = code.octets();
    // 127.255.255.x: the list refuses our resolver (a public or
    // over-quota resolver); outside 127/8: an error code, not a listing.
    if a != 127 || (b, c) == (255, 255) {
        log::warn!(
            "filter: {} answered {code} for {listed}: a resolver problem or an error code, not a listing",
            list.zone
        );
        return None;
    }
    let weight = list
        .codes
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(list.weight, |(_, w)| *w);
    Some(Listing {
        zone: list.zone.clone(),
        listed: listed.to_string(),
        code,
        weight,
    })
}
