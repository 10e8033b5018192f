//! IP lists about the client (`RCVD_IN_DNSBL`, `RCVD_IN_DNSWL`): each zone
//! of `[filter] dnsbl` is asked about the connecting address; a listing
//! weighs what the zone (or its return code) is configured to weigh, and a
//! negative weight makes the zone an allowlist.

use crate::config::DnsList;
use crate::dns::{reversed, Resolver};
use crate::filter::lookups::{ask_lists, Listing, Lookups};
use crate::filter::{Check, Hit};
use std::net::IpAddr;
use std::time::Instant;

pub struct Dnsbl;

/// Asks every zone about the client's address.
pub async fn lookup(
    resolver: &Resolver,
    lists: &[DnsList],
    client: Option<IpAddr>,
    deadline: Instant,
) -> Vec<Listing> {
    let Some(client) = client else {
        return Vec::new();
    };
    let reversed = reversed(client);
    let questions = lists
        .iter()
        .map(|list| {
            (
                list,
                client.to_string(),
                format!("{reversed}.{}", list.zone),
            )
        })
        .collect();
    ask_lists(resolver, questions, deadline).await
}

impl Check for Dnsbl {
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        lookups
            .client_listings
            .iter()
            .map(|l| {
                let rule = if l.weight < 0.0 {
                    "RCVD_IN_DNSWL"
                } else {
                    "RCVD_IN_DNSBL"
                };
                Hit::new(
                    rule,
                    l.weight,
                    format!("client {} is listed in {} ({})", l.listed, l.zone, l.code),
                )
            })
            .collect()
    }
}
