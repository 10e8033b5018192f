//! IP lists about the client (`RCVD_IN_DNSBL`, `RCVD_IN_DNSWL`): each zone
//! of `[filter] dnsbl` is asked about the connecting address; a listing
//! weighs what the zone (or its return code) is configured to weigh, and a
//! negative weight makes the zone an allowlist.

use crate::config::DnsList;
use crate::dns::Resolver;
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

/// The address as DNS lists spell it: IPv4 octets reversed, IPv6 nibbles
/// reversed.
fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
            nibbles.join(".")
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_reversed_as_lists_expect() {
        assert_eq!(reversed("192.0.2.99".parse().unwrap()), "99.2.0.192");
        let v6 = reversed("2001:db8::1".parse().unwrap());
        assert_eq!(
            v6,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
    }
}
