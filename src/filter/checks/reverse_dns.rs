//! The client's reverse DNS (`RDNS_NONE`, `RDNS_NOT_CONFIRMED`): real mail
//! servers have a PTR name that resolves back to their address
//! (forward-confirmed reverse DNS); botnets on home connections mostly do
//! not. Off with `[filter] reverse_dns = false`.

use crate::dns::{DnsError, Resolver};
use crate::filter::lookups::Lookups;
use crate::filter::{Check, Hit};
use smol::future::FutureExt;
use std::net::IpAddr;
use std::time::Instant;

const NONE: f64 = 1.5;
const NOT_CONFIRMED: f64 = 0.5;
/// PTR names whose forward lookup is tried: one is the norm, a few exist.
const MAX_NAMES: usize = 3;

/// What the DNS says about the client's name.
#[derive(Debug, Clone, PartialEq)]
pub enum ReverseDns {
    /// The address has no PTR name.
    None,
    /// A PTR name that resolves back to the address.
    Confirmed(String),
    /// PTR names, none of which resolves back to the address.
    NotConfirmed(Vec<String>),
}

/// The client's reverse DNS; `None` when a lookup failed or was late (then
/// nothing is concluded).
pub async fn lookup(resolver: &Resolver, client: IpAddr, deadline: Instant) -> Option<ReverseDns> {
    let late = async {
        smol::Timer::at(deadline).await;
        Err(DnsError::Temporary("past the lookup deadline".into()))
    };
    let answer = async { Ok(confirm(resolver, client).await) }.or(late).await;
    match answer {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(e)) | Err(e) => {
            log::warn!("filter: reverse DNS of {client}: {e}; not judged");
            None
        }
    }
}

async fn confirm(resolver: &Resolver, client: IpAddr) -> Result<ReverseDns, DnsError> {
    let names = match resolver.ptr(client).await {
        Ok(names) => names,
        Err(DnsError::NoSuchDomain) => Vec::new(),
        Err(e) => return Err(e),
    };
    if names.is_empty() {
        return Ok(ReverseDns::None);
    }
    for name in names.iter().take(MAX_NAMES) {
        match resolver.addresses(name).await {
            Ok(addresses) if addresses.contains(&client) => {
                return Ok(ReverseDns::Confirmed(name.clone()))
            }
            Ok(_) | Err(DnsError::NoSuchDomain) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReverseDns::NotConfirmed(names))
}

pub struct ReverseDnsCheck;

impl Check for ReverseDnsCheck {
    fn lookups(&self, lookups: &Lookups) -> Vec<Hit> {
        let Some((client, answer)) = &lookups.reverse_dns else {
            return Vec::new();
        };
        match answer {
            ReverseDns::None => vec![Hit::new(
                "RDNS_NONE",
                NONE,
                format!("the client {client} has no reverse DNS name"),
            )],
            ReverseDns::NotConfirmed(names) => vec![Hit::new(
                "RDNS_NOT_CONFIRMED",
                NOT_CONFIRMED,
                format!(
                    "the client's reverse DNS name {} does not resolve back to {client}",
                    names.join(", ")
                ),
            )],
            ReverseDns::Confirmed(_) => Vec::new(),
        }
    }
}
