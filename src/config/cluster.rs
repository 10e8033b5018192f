//! `[cluster]`: the nodes that share this config file, the secret their peer
//! calls are signed with, and how many of them keep each sidelined message.

use super::units::Span;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct Cluster {
    /// Every node by name, with the address its peers reach its web server
    /// at (an IP: a node must reach its peers without DNS).
    pub nodes: BTreeMap<String, SocketAddr>,
    pub secret: String,
    /// How many nodes keep each sidelined message.
    pub copies: usize,
    /// How often a node retries what it could not tell its peers and brings
    /// sidelined messages back to `copies` nodes.
    pub heal_interval: Duration,
}

/// Below this the secret could be guessed offline from one signed request.
const MIN_SECRET_LEN: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    nodes: Spanned<BTreeMap<String, Spanned<String>>>,
    secret: Spanned<String>,
    #[serde(default = "default_copies")]
    copies: Spanned<usize>,
    #[serde(default = "default_heal_interval")]
    heal_interval: Span,
}

fn default_copies() -> Spanned<usize> {
    Spanned::new(0..0, 2)
}

fn default_heal_interval() -> Span {
    Span(Duration::from_secs(60))
}

type Error = (std::ops::Range<usize>, String);

impl RawCluster {
    pub(super) fn validate(self) -> Result<Cluster, Error> {
        let nodes_span = self.nodes.span();
        let mut nodes = BTreeMap::new();
        for (name, address) in self.nodes.into_inner() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err((
                    address.span(),
                    format!(
                        "[cluster] nodes: {name:?} is not a node name (letters, digits, - _ .)"
                    ),
                ));
            }
            let parsed: SocketAddr = address.get_ref().parse().map_err(|_| {
                (
                    address.span(),
                    format!(
                        "[cluster] nodes: {name} = {:?} is not ip:port (peers are reached without DNS)",
                        address.get_ref()
                    ),
                )
            })?;
            nodes.insert(name, parsed);
        }
        if nodes.is_empty() {
            return Err((nodes_span, "[cluster] nodes lists no node".into()));
        }
        if self.secret.get_ref().len() < MIN_SECRET_LEN {
            return Err((
                self.secret.span(),
                format!("[cluster] secret must be at least {MIN_SECRET_LEN} characters (e.g. from `openssl rand -hex 32`)"),
            ));
        }
        let copies = *self.copies.get_ref();
        if copies == 0 || copies > nodes.len() {
            return Err((
                self.copies.span(),
                format!(
                    "[cluster] copies must be between 1 and the number of nodes ({})",
                    nodes.len()
                ),
            ));
        }
        if self.heal_interval.0.is_zero() {
            return Err((0..0, "[cluster] heal_interval must not be zero".into()));
        }
        Ok(Cluster {
            nodes,
            secret: self.secret.into_inner(),
            copies,
            heal_interval: self.heal_interval.0,
        })
    }
}
