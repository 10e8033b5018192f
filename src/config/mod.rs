//! The one TOML file that configures a node. Parsing is strict: unknown keys
//! and bad values are errors that name the line, so a typo never silently
//! changes how mail flows.

mod cluster;
mod network;
mod units;
mod users;

pub use cluster::Cluster;
pub use units::{parse_duration, Size, Span};
pub use users::{Scope, User};

use crate::filter::checks::sender_lists::SenderPattern;
pub use network::Network;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/antemx/antemx.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub node: Node,
    pub smtp: Smtp,
    pub web: Web,
    pub retry: Retry,
    pub dns: Dns,
    pub filter: Filter,
    pub sideline: Sideline,
    /// The nodes sharing this file; `None` for a node on its own.
    pub cluster: Option<Cluster>,
    /// Customer domains by lower-case name.
    pub domains: BTreeMap<String, Domain>,
    /// Accounts of the customers' API by lower-case email.
    pub users: BTreeMap<String, User>,
}

#[derive(Debug, Clone)]
pub struct Sideline {
    /// Sidelined messages older than this are purged.
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// Where mail to `<postmaster>` (no domain, RFC 5321 §4.5.1) goes.
    pub postmaster: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub listen: Vec<SocketAddr>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub command_timeout: Duration,
    pub session_timeout: Duration,
    /// How long the banner waits; a client that talks first is a bot
    /// (pregreet). Zero: the banner goes out at once.
    pub greet_pause: Duration,
    pub max_errors: u32,
    /// A message with this many `Received:` headers is looping.
    pub max_hops: usize,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Web {
    pub listen: SocketAddr,
    /// Where the customers' API answers, and nothing else; `None`: it is
    /// off. Apart from `listen`, so that a reverse proxy in front of it
    /// never reaches the admin API.
    pub api_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub lifetime: Duration,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Port used when delivering to a domain's MX hosts (DSNs to senders).
    pub mx_port: u16,
}

#[derive(Debug, Clone)]
pub struct Dns {
    /// Asked in order; those of /etc/resolv.conf when the file lists none.
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Filter {
    /// `sideline_at` and `reject_at`, validated together.
    pub thresholds: crate::filter::Thresholds,
    /// IP lists asked about the client: positive weights block (DNSBL),
    /// negative ones vouch (DNSWL).
    pub dnsbl: Vec<DnsList>,
    /// Domain lists asked about the domains linked from the message.
    pub uribl: Vec<DnsList>,
    /// All DNS lookups of one message end by then; what has not answered
    /// counts as not listed.
    pub lookup_deadline: Duration,
    /// Envelope senders always accepted / refused, for every domain.
    pub allow: Vec<SenderPattern>,
    pub block: Vec<SenderPattern>,
    /// The least a message with a blocked attachment gets; `None`: the check
    /// is off.
    pub attachments: Option<crate::filter::Verdict>,
    /// File name extensions blocked in attachments, lower case, no dot.
    pub blocked_extensions: Vec<String>,
    /// Clients here are not judged by their address (DNS lists, reverse
    /// DNS): local relays and monitoring.
    pub trusted_networks: Vec<Network>,
    /// Whether clients without (forward-confirmed) reverse DNS score.
    pub reverse_dns: bool,
    /// Whether the classifier learns from messages the other rules judged
    /// with confidence.
    pub autolearn: bool,
    /// Recipient verification (`verify_recipients` domains): how long an
    /// answer of the customer's server is remembered, and how long one
    /// callout may take.
    pub verify_positive_ttl: Duration,
    pub verify_negative_ttl: Duration,
    pub verify_timeout: Duration,
    /// Greylisting (`greylist` domains): a new triplet must come back after
    /// `greylist_delay` and within `greylist_expiry` of its first attempt; a
    /// triplet that passed is remembered for `greylist_lifetime`.
    pub greylist_delay: Duration,
    pub greylist_expiry: Duration,
    pub greylist_lifetime: Duration,
    /// What a DMARC failure does when the From domain publishes `p=reject`.
    pub dmarc_reject: DmarcAction,
    /// What a DMARC failure does when the From domain publishes `p=quarantine`.
    pub dmarc_quarantine: DmarcAction,
}

/// What a DMARC failure under a domain's policy does to a message. It acts
/// through the score, like every other evidence: see `checks::dmarc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcAction {
    /// Scores enough to be refused with 550 5.7.1.
    Reject,
    /// Scores enough to be sidelined, not enough to be refused.
    Sideline,
    /// Counts as ordinary evidence, a few points.
    Score,
}

/// One DNS list zone and what its answers weigh.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsList {
    pub zone: String,
    /// Score of a listing whose return code has no weight of its own.
    pub weight: f64,
    /// Weights of particular return codes (all in 127.0.0.0/8).
    pub codes: Vec<(std::net::Ipv4Addr, f64)>,
}

#[derive(Debug, Clone)]
pub struct Domain {
    pub deliver_to: HostPort,
    pub tls: DownstreamTls,
    /// `sideline_at` / `reject_at` of this domain, when it has its own.
    pub thresholds: Option<crate::filter::Thresholds>,
    /// Envelope senders always accepted / refused for this domain.
    pub allow: Vec<SenderPattern>,
    pub block: Vec<SenderPattern>,
    /// Ask `deliver_to` at our RCPT whether it takes the recipient.
    pub verify_recipients: bool,
    pub greylist: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not host:port (e.g. \"mail.example.com:25\" or \"[2001:db8::1]:25\")"
            )
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DownstreamTls {
    /// STARTTLS when offered, certificate not verified (like Postfix's `may`).
    #[default]
    Opportunistic,
    /// Deliver only over TLS; a server without STARTTLS is a temporary failure.
    Required,
    /// Never STARTTLS.
    None,
}

/// A config error, with the line it comes from when known.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    smtp: RawSmtp,
    #[serde(default)]
    web: RawWeb,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    filter: RawFilter,
    #[serde(default)]
    sideline: RawSideline,
    cluster: Option<cluster::RawCluster>,
    #[serde(default)]
    domain: Vec<RawDomain>,
    #[serde(default)]
    user: Vec<users::RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    /// The machine's own hostname when left out, so that the nodes of a
    /// cluster can share one file.
    hostname: Option<String>,
    data_dir: PathBuf,
    postmaster: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    #[serde(default = "default_smtp_listen")]
    listen: Vec<Spanned<String>>,
    #[serde(default = "default_max_message_size")]
    max_message_size: Size,
    #[serde(default = "default_max_recipients")]
    max_recipients: usize,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    max_connections_per_ip: usize,
    #[serde(default = "default_command_timeout")]
    command_timeout: Span,
    #[serde(default = "default_session_timeout")]
    session_timeout: Span,
    #[serde(default)]
    greet_pause: Span,
    #[serde(default = "default_max_errors")]
    max_errors: u32,
    #[serde(default = "default_max_hops")]
    max_hops: usize,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Default for RawSmtp {
    fn default() -> Self {
        RawSmtp {
            listen: default_smtp_listen(),
            max_message_size: default_max_message_size(),
            max_recipients: default_max_recipients(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            command_timeout: default_command_timeout(),
            session_timeout: default_session_timeout(),
            greet_pause: Span::default(),
            max_errors: default_max_errors(),
            max_hops: default_max_hops(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn default_smtp_listen() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "0.0.0.0:25".to_string())]
}
fn default_max_message_size() -> Size {
    Size(25_000_000)
}
fn default_max_recipients() -> usize {
    100
}
fn default_max_connections() -> usize {
    2000
}
fn default_max_connections_per_ip() -> usize {
    50
}
fn default_command_timeout() -> Span {
    Span(Duration::from_secs(300))
}
fn default_session_timeout() -> Span {
    Span(Duration::from_secs(1800))
}
/// RFC 5321 §6.3: a loop threshold "normally at least 100".
fn default_max_hops() -> usize {
    100
}
fn default_max_errors() -> u32 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    #[serde(default = "default_web_listen")]
    listen: Spanned<String>,
    api_listen: Option<Spanned<String>>,
}

impl Default for RawWeb {
    fn default() -> Self {
        RawWeb {
            listen: default_web_listen(),
            api_listen: None,
        }
    }
}

fn default_web_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8443".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "default_min_interval")]
    min_interval: Span,
    #[serde(default = "default_max_interval")]
    max_interval: Span,
    #[serde(default = "default_lifetime")]
    lifetime: Span,
    #[serde(default = "default_delivery_connections")]
    max_connections: usize,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: Span,
    #[serde(default = "default_delivery_command_timeout")]
    command_timeout: Span,
    #[serde(default = "default_mx_port")]
    mx_port: u16,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            min_interval: default_min_interval(),
            max_interval: default_max_interval(),
            lifetime: default_lifetime(),
            max_connections: default_delivery_connections(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_delivery_command_timeout(),
            mx_port: default_mx_port(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSideline {
    #[serde(default = "default_retention")]
    retention: Span,
}

impl Default for RawSideline {
    fn default() -> Self {
        RawSideline {
            retention: default_retention(),
        }
    }
}

fn default_retention() -> Span {
    Span(Duration::from_secs(14 * 86400))
}

fn default_min_interval() -> Span {
    Span(Duration::from_secs(1000))
}
fn default_max_interval() -> Span {
    Span(Duration::from_secs(4000))
}
fn default_lifetime() -> Span {
    Span(Duration::from_secs(5 * 86400))
}
fn default_delivery_connections() -> usize {
    10
}
fn default_connect_timeout() -> Span {
    Span(Duration::from_secs(30))
}
fn default_delivery_command_timeout() -> Span {
    Span(Duration::from_secs(300))
}
fn default_mx_port() -> u16 {
    25
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    servers: Vec<Spanned<String>>,
    timeout: Option<Span>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default = "default_sideline_at")]
    sideline_at: Spanned<f64>,
    #[serde(default = "default_reject_at")]
    reject_at: Spanned<f64>,
    #[serde(default)]
    dnsbl: Vec<Spanned<RawDnsList>>,
    #[serde(default)]
    uribl: Vec<Spanned<RawDnsList>>,
    #[serde(default = "default_lookup_deadline")]
    lookup_deadline: Span,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    block: Vec<Spanned<String>>,
    #[serde(default)]
    attachments: AttachmentAction,
    blocked_extensions: Option<Vec<String>>,
    #[serde(default = "default_trusted_networks")]
    trusted_networks: Vec<Spanned<String>>,
    #[serde(default = "default_true")]
    reverse_dns: bool,
    #[serde(default)]
    autolearn: bool,
    #[serde(default = "default_verify_positive_ttl")]
    verify_positive_ttl: Span,
    #[serde(default = "default_verify_negative_ttl")]
    verify_negative_ttl: Span,
    #[serde(default = "default_verify_timeout")]
    verify_timeout: Spanned<Span>,
    #[serde(default = "default_greylist_delay")]
    greylist_delay: Spanned<Span>,
    #[serde(default = "default_greylist_expiry")]
    greylist_expiry: Spanned<Span>,
    #[serde(default = "default_greylist_lifetime")]
    greylist_lifetime: Span,
    #[serde(default = "default_dmarc_reject")]
    dmarc_reject: DmarcAction,
    #[serde(default = "default_dmarc_quarantine")]
    dmarc_quarantine: DmarcAction,
}

fn default_trusted_networks() -> Vec<Spanned<String>> {
    ["127.0.0.0/8", "::1"]
        .iter()
        .map(|n| Spanned::new(0..0, n.to_string()))
        .collect()
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum AttachmentAction {
    #[default]
    Sideline,
    Reject,
    Off,
}

// RFC 7489 §6.3: receivers are asked to refuse mail failing under p=reject
// and to treat it as suspicious under p=quarantine.
fn default_dmarc_reject() -> DmarcAction {
    DmarcAction::Reject
}
fn default_dmarc_quarantine() -> DmarcAction {
    DmarcAction::Sideline
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsList {
    zone: String,
    weight: f64,
    #[serde(default)]
    codes: BTreeMap<String, f64>,
}

fn default_lookup_deadline() -> Span {
    Span(Duration::from_secs(4))
}
fn default_verify_positive_ttl() -> Span {
    Span(Duration::from_secs(7 * 86400))
}
fn default_verify_negative_ttl() -> Span {
    Span(Duration::from_secs(3 * 3600))
}
fn default_verify_timeout() -> Spanned<Span> {
    Spanned::new(0..0, Span(Duration::from_secs(10)))
}
fn default_greylist_delay() -> Spanned<Span> {
    Spanned::new(0..0, Span(Duration::from_secs(300)))
}
fn default_greylist_expiry() -> Spanned<Span> {
    Spanned::new(0..0, Span(Duration::from_secs(4 * 3600)))
}
fn default_greylist_lifetime() -> Span {
    Span(Duration::from_secs(36 * 86400))
}

impl RawDnsList {
    fn validate(&self) -> Result<DnsList, String> {
        let zone = normalize_domain(&self.zone);
        if !zone.contains('.') {
            return Err(format!("zone {:?} is not a domain name", self.zone));
        }
        let weights = std::iter::once(self.weight).chain(self.codes.values().copied());
        if weights.clone().any(|w| !w.is_finite()) {
            return Err(format!("{zone}: weights must be numbers"));
        }
        let mut codes = Vec::new();
        for (code, &weight) in &self.codes {
            match code.parse::<std::net::Ipv4Addr>() {
                Ok(ip) if ip.octets()[0] == 127 => codes.push((ip, weight)),
                _ => {
                    return Err(format!(
                        "{zone}: return code {code:?} is not an address in 127.0.0.0/8"
                    ))
                }
            }
        }
        Ok(DnsList {
            zone,
            weight: self.weight,
            codes,
        })
    }
}

impl Default for RawFilter {
    fn default() -> Self {
        RawFilter {
            sideline_at: default_sideline_at(),
            reject_at: default_reject_at(),
            dnsbl: Vec::new(),
            uribl: Vec::new(),
            lookup_deadline: default_lookup_deadline(),
            allow: Vec::new(),
            block: Vec::new(),
            attachments: AttachmentAction::default(),
            blocked_extensions: None,
            trusted_networks: default_trusted_networks(),
            reverse_dns: true,
            autolearn: false,
            verify_positive_ttl: default_verify_positive_ttl(),
            verify_negative_ttl: default_verify_negative_ttl(),
            verify_timeout: default_verify_timeout(),
            greylist_delay: default_greylist_delay(),
            greylist_expiry: default_greylist_expiry(),
            greylist_lifetime: default_greylist_lifetime(),
            dmarc_reject: default_dmarc_reject(),
            dmarc_quarantine: default_dmarc_quarantine(),
        }
    }
}

fn default_sideline_at() -> Spanned<f64> {
    Spanned::new(0..0, crate::filter::Thresholds::default().sideline_at())
}
fn default_reject_at() -> Spanned<f64> {
    Spanned::new(0..0, crate::filter::Thresholds::default().reject_at())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    deliver_to: Spanned<String>,
    #[serde(default)]
    tls: DownstreamTls,
    sideline_at: Option<Spanned<f64>>,
    reject_at: Option<Spanned<f64>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    block: Vec<Spanned<String>>,
    #[serde(default)]
    verify_recipients: bool,
    #[serde(default)]
    greylist: bool,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text).map_err(|(line, message)| ConfigError {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Parses config text; an error carries its 1-based line when known.
    pub fn parse(text: &str) -> Result<Config, (Option<usize>, String)> {
        let line_of =
            |offset: usize| Some(text[..offset.min(text.len())].matches('\n').count() + 1);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().and_then(|span| line_of(span.start));
            (line, e.message().to_string())
        })?;
        let at = |span: std::ops::Range<usize>, message: String| {
            let line = if span.end == 0 {
                None
            } else {
                line_of(span.start)
            };
            (line, message)
        };
        let socket = |value: &Spanned<String>, what: &str| {
            value.get_ref().parse::<SocketAddr>().map_err(|_| {
                at(
                    value.span(),
                    format!("{what}: {:?} is not ip:port", value.get_ref()),
                )
            })
        };

        let hostname = match raw.node.hostname {
            Some(name) => name,
            None => machine_hostname().ok_or((
                None,
                "[node] hostname is not set and the machine's hostname cannot be read".to_string(),
            ))?,
        };
        if hostname.trim().is_empty() || hostname.contains(char::is_whitespace) {
            return Err((None, "[node] hostname must be a host name".into()));
        }
        let postmaster = match raw.node.postmaster {
            Some(address) => match address.get_ref().rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                    Some(format!("{local}@{}", normalize_domain(domain)))
                }
                _ => {
                    return Err(at(
                        address.span(),
                        format!(
                            "[node] postmaster: {:?} is not an address (user@domain)",
                            address.get_ref()
                        ),
                    ))
                }
            },
            None => None,
        };
        let cluster = raw
            .cluster
            .map(|c| c.validate().map_err(|(span, message)| at(span, message)))
            .transpose()?;
        let listen = raw
            .smtp
            .listen
            .iter()
            .map(|l| socket(l, "[smtp] listen"))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (raw.smtp.tls_cert, raw.smtp.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err((None, "[smtp] tls_cert and tls_key go together".into())),
        };
        if raw.retry.min_interval.0 > raw.retry.max_interval.0 {
            return Err((
                None,
                "[retry] min_interval is longer than max_interval".into(),
            ));
        }
        if raw.retry.max_connections == 0 || raw.smtp.max_recipients == 0 || raw.smtp.max_hops == 0
        {
            return Err((
                None,
                "[retry] max_connections, [smtp] max_recipients and max_hops must be at least 1"
                    .into(),
            ));
        }
        let servers = raw
            .dns
            .servers
            .iter()
            .map(|s| socket(s, "[dns] servers"))
            .collect::<Result<Vec<_>, _>>()?;
        // Read once here, at start and on reload, not at every lookup.
        let servers = if servers.is_empty() {
            crate::dns::system_servers()
        } else {
            servers
        };

        let thresholds = crate::filter::Thresholds::new(
            *raw.filter.sideline_at.get_ref(),
            *raw.filter.reject_at.get_ref(),
        )
        .map_err(|m| {
            // Point at whichever of the two the file set; reject_at first,
            // since most mistakes are a reject line set too low.
            let span = if raw.filter.reject_at.span().end > 0 {
                raw.filter.reject_at.span()
            } else {
                raw.filter.sideline_at.span()
            };
            at(span, format!("[filter] {m}"))
        })?;
        let dns_lists = |lists: &[Spanned<RawDnsList>], key: &str| {
            lists
                .iter()
                .map(|list| {
                    list.get_ref()
                        .validate()
                        .map_err(|m| at(list.span(), format!("[filter] {key}: {m}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let senders = |list: &[Spanned<String>], key: &str| {
            list.iter()
                .map(|entry| {
                    SenderPattern::parse(entry.get_ref())
                        .map_err(|m| at(entry.span(), format!("{key}: {m}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let dnsbl = dns_lists(&raw.filter.dnsbl, "dnsbl")?;
        let uribl = dns_lists(&raw.filter.uribl, "uribl")?;
        let f = &raw.filter;
        if f.verify_timeout.get_ref().0.is_zero() {
            return Err(at(
                f.verify_timeout.span(),
                "[filter] verify_timeout must be more than 0s".into(),
            ));
        }
        if f.greylist_expiry.get_ref().0 <= f.greylist_delay.get_ref().0 {
            // No retry could ever pass: all greylisted mail would be lost.
            let span = if f.greylist_expiry.span().end > 0 {
                f.greylist_expiry.span()
            } else {
                f.greylist_delay.span()
            };
            return Err(at(
                span,
                "[filter] greylist_expiry must be longer than greylist_delay".into(),
            ));
        }

        let mut domains = BTreeMap::new();
        for d in raw.domain {
            let name = normalize_domain(d.name.get_ref());
            if name.is_empty() || !name.contains('.') && name != "localhost" {
                return Err(at(
                    d.name.span(),
                    format!("domain name {:?} is not a domain", d.name.get_ref()),
                ));
            }
            let deliver_to =
                HostPort::parse(d.deliver_to.get_ref()).map_err(|m| at(d.deliver_to.span(), m))?;
            if domains.contains_key(&name) {
                return Err(at(
                    d.name.span(),
                    format!("domain {name} is configured twice"),
                ));
            }
            let thresholds = match (&d.sideline_at, &d.reject_at) {
                (None, None) => None,
                (sideline_at, reject_at) => {
                    let global = thresholds;
                    let value = |v: &Option<Spanned<f64>>, default: f64| {
                        v.as_ref().map_or(default, |v| *v.get_ref())
                    };
                    let span = reject_at
                        .as_ref()
                        .or(sideline_at.as_ref())
                        .map_or(0..0, |v| v.span());
                    Some(
                        crate::filter::Thresholds::new(
                            value(sideline_at, global.sideline_at()),
                            value(reject_at, global.reject_at()),
                        )
                        .map_err(|m| at(span, format!("[[domain]] {name}: {m}")))?,
                    )
                }
            };
            let key = format!("[[domain]] {name}");
            domains.insert(
                name,
                Domain {
                    deliver_to,
                    tls: d.tls,
                    thresholds,
                    allow: senders(&d.allow, &format!("{key} allow"))?,
                    block: senders(&d.block, &format!("{key} block"))?,
                    verify_recipients: d.verify_recipients,
                    greylist: d.greylist,
                },
            );
        }
        let users = users::validate(raw.user, |name| domains.contains_key(name))
            .map_err(|(span, message)| at(span, message))?;

        Ok(Config {
            node: Node {
                hostname,
                data_dir: raw.node.data_dir,
                postmaster,
            },
            smtp: Smtp {
                listen,
                max_message_size: raw.smtp.max_message_size.0,
                max_recipients: raw.smtp.max_recipients,
                max_connections: raw.smtp.max_connections,
                max_connections_per_ip: raw.smtp.max_connections_per_ip,
                command_timeout: raw.smtp.command_timeout.0,
                session_timeout: raw.smtp.session_timeout.0,
                greet_pause: raw.smtp.greet_pause.0,
                max_errors: raw.smtp.max_errors,
                max_hops: raw.smtp.max_hops,
                tls,
            },
            web: Web {
                listen: socket(&raw.web.listen, "[web] listen")?,
                api_listen: raw
                    .web
                    .api_listen
                    .as_ref()
                    .map(|a| socket(a, "[web] api_listen"))
                    .transpose()?,
            },
            retry: Retry {
                min_interval: raw.retry.min_interval.0,
                max_interval: raw.retry.max_interval.0,
                lifetime: raw.retry.lifetime.0,
                max_connections: raw.retry.max_connections,
                connect_timeout: raw.retry.connect_timeout.0,
                command_timeout: raw.retry.command_timeout.0,
                mx_port: raw.retry.mx_port,
            },
            dns: Dns {
                servers,
                timeout: raw
                    .dns
                    .timeout
                    .map(|s| s.0)
                    .unwrap_or(Duration::from_secs(5)),
            },
            filter: Filter {
                thresholds,
                dnsbl,
                uribl,
                lookup_deadline: raw.filter.lookup_deadline.0,
                allow: senders(&raw.filter.allow, "[filter] allow")?,
                block: senders(&raw.filter.block, "[filter] block")?,
                attachments: match raw.filter.attachments {
                    AttachmentAction::Sideline => Some(crate::filter::Verdict::Sideline),
                    AttachmentAction::Reject => Some(crate::filter::Verdict::Reject),
                    AttachmentAction::Off => None,
                },
                trusted_networks: raw
                    .filter
                    .trusted_networks
                    .iter()
                    .map(|n| {
                        Network::parse(n.get_ref())
                            .map_err(|m| at(n.span(), format!("[filter] trusted_networks: {m}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                reverse_dns: raw.filter.reverse_dns,
                autolearn: raw.filter.autolearn,
                blocked_extensions: raw.filter.blocked_extensions.map_or_else(
                    || {
                        crate::filter::checks::attachments::DEFAULT_BLOCKED
                            .iter()
                            .map(|e| e.to_string())
                            .collect()
                    },
                    |list| {
                        list.iter()
                            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                            .collect()
                    },
                ),
                verify_positive_ttl: raw.filter.verify_positive_ttl.0,
                verify_negative_ttl: raw.filter.verify_negative_ttl.0,
                verify_timeout: raw.filter.verify_timeout.get_ref().0,
                greylist_delay: raw.filter.greylist_delay.get_ref().0,
                greylist_expiry: raw.filter.greylist_expiry.get_ref().0,
                greylist_lifetime: raw.filter.greylist_lifetime.0,
                dmarc_reject: raw.filter.dmarc_reject,
                dmarc_quarantine: raw.filter.dmarc_quarantine,
            },
            sideline: Sideline {
                retention: raw.sideline.retention.0,
            },
            cluster,
            users,
            domains,
        })
    }

    /// The customer domain an address's domain belongs to, if any.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(&normalize_domain(name))
    }

    /// Address of this node's admin API, as seen from the same machine.
    pub fn admin_address(&self) -> SocketAddr {
        let mut address = self.web.listen;
        if address.ip().is_unspecified() {
            address.set_ip(if address.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        address
    }
}

/// The kernel's host name (what `hostname` prints).
pub fn machine_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Lower case, without the one trailing dot a fully qualified name may carry.
pub fn normalize_domain(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n";

    #[test]
    fn defaults_follow_the_design() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.retry.min_interval, Duration::from_secs(1000));
        assert_eq!(config.retry.max_interval, Duration::from_secs(4000));
        assert_eq!(config.retry.lifetime, Duration::from_secs(432_000));
        assert_eq!(config.smtp.max_recipients, 100);
        assert_eq!(config.retry.max_connections, 10);
    }

    #[test]
    fn unknown_key_names_its_line() {
        let text =
            format!("{MINIMAL}[smtp]\nlisten = [\"127.0.0.1:25\"]\nmax_mesage_size = \"1MB\"\n");
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(6), "{message}");
        assert!(message.contains("max_mesage_size"), "{message}");
    }

    #[test]
    fn bad_route_names_its_line() {
        let text = format!(
            "{MINIMAL}\n[[domain]]\nname = \"Example.COM.\"\ndeliver_to = \"mail.example.com\"\n"
        );
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(7), "{message}");
    }

    #[test]
    fn domains_are_case_and_dot_insensitive() {
        let text = format!(
            "{MINIMAL}\n[[domain]]\nname = \"Example.COM.\"\ndeliver_to = \"127.0.0.1:2526\"\n"
        );
        let config = Config::parse(&text).unwrap();
        assert!(config.domain("EXAMPLE.com").is_some());
        assert!(config.domain("example.com.").is_some());
        assert!(config.domain("other.com").is_none());
    }

    #[test]
    fn filter_thresholds() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.filter.thresholds.sideline_at(), 5.0);
        assert_eq!(config.filter.thresholds.reject_at(), 15.0);
        let text = format!("{MINIMAL}[filter]\nsideline_at = 4\nreject_at = 12.5\n");
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.filter.thresholds.sideline_at(), 4.0);
        assert_eq!(config.filter.thresholds.reject_at(), 12.5);
    }

    #[test]
    fn bad_filter_thresholds_name_their_line() {
        let text = format!("{MINIMAL}[filter]\nsideline_at = 8.0\nreject_at = 6.0\n");
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(6), "{message}");
        assert!(message.contains("reject_at"), "{message}");
        let text = format!("{MINIMAL}[filter]\nsideline_at = -1.0\n");
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(5), "{message}");
        let text = format!("{MINIMAL}[filter]\nsideline_at = 5.0\nrejct_at = 6.0\n");
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(6), "{message}");
    }

    #[test]
    fn recipient_verification_is_off_by_default_and_checked() {
        let text = format!(
            "{MINIMAL}[[domain]]\nname = \"a.test\"\ndeliver_to = \"127.0.0.1:25\"\n[[domain]]\nname = \"b.test\"\ndeliver_to = \"127.0.0.1:25\"\nverify_recipients = true\n"
        );
        let config = Config::parse(&text).unwrap();
        assert!(!config.domain("a.test").unwrap().verify_recipients);
        assert!(config.domain("b.test").unwrap().verify_recipients);
        assert_eq!(
            config.filter.verify_negative_ttl,
            Duration::from_secs(10800)
        );
        let text = format!("{MINIMAL}[filter]\nverify_timeout = \"0s\"\n");
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(5), "{message}");
        let text = format!("{MINIMAL}[[domain]]\nname = \"a.test\"\ndeliver_to = \"127.0.0.1:25\"\nverify_recipients = \"yes\"\n");
        let (line, _) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(7));
    }

    #[test]
    fn greylisting_is_off_by_default_and_checked() {
        let text = format!(
            "{MINIMAL}[[domain]]\nname = \"a.test\"\ndeliver_to = \"127.0.0.1:25\"\n[[domain]]\nname = \"b.test\"\ndeliver_to = \"127.0.0.1:25\"\ngreylist = true\n"
        );
        let config = Config::parse(&text).unwrap();
        assert!(!config.domain("a.test").unwrap().greylist);
        assert!(config.domain("b.test").unwrap().greylist);
        assert_eq!(config.filter.greylist_delay, Duration::from_secs(300));
        assert_eq!(config.filter.greylist_expiry, Duration::from_secs(4 * 3600));
        assert_eq!(
            config.filter.greylist_lifetime,
            Duration::from_secs(36 * 86400)
        );
        let text =
            format!("{MINIMAL}[filter]\ngreylist_delay = \"1h\"\ngreylist_expiry = \"30m\"\n");
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(6), "{message}");
        assert!(message.contains("greylist_expiry"), "{message}");
        let text = format!("{MINIMAL}[filter]\ngreylist_delay = \"5h\"\n");
        let (line, _) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(5));
    }

    #[test]
    fn dmarc_actions() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.filter.dmarc_reject, DmarcAction::Reject);
        assert_eq!(config.filter.dmarc_quarantine, DmarcAction::Sideline);
        let text = format!(
            "{MINIMAL}[filter]\ndmarc_reject = \"sideline\"\ndmarc_quarantine = \"score\"\n"
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.filter.dmarc_reject, DmarcAction::Sideline);
        assert_eq!(config.filter.dmarc_quarantine, DmarcAction::Score);
        let text = format!("{MINIMAL}[filter]\nsideline_at = 5.0\ndmarc_reject = \"bounce\"\n");
        let (line, message) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(6), "{message}");
        assert!(message.contains("bounce"), "{message}");
    }

    #[test]
    fn bad_duration_names_its_line() {
        let text = format!("{MINIMAL}[retry]\nlifetime = \"5 days\"\n");
        let (line, _) = Config::parse(&text).unwrap_err();
        assert_eq!(line, Some(5));
    }
}

/// The running node's config, replaced as a whole on reload; readers take a
/// snapshot so a session sees one consistent config from start to end.
#[derive(Clone)]
pub struct Live(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Config>>>);

impl Live {
    pub fn new(config: Config) -> Live {
        Live(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(config),
        )))
    }

    pub fn current(&self) -> std::sync::Arc<Config> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, config: Config) {
        let config = std::sync::Arc::new(config);
        match self.0.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}
