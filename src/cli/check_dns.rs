//! `antemx check-dns DOMAIN`: the onboarding check for a customer domain.
//! Are its MX records pointing at this cluster, and is it configured here?

use crate::config::Config;
use crate::dns::{DnsError, Resolver};
use argh::FromArgs;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(FromArgs)]
/// Show a domain's MX records and whether they point at this cluster.
#[argh(subcommand, name = "check-dns")]
pub struct CheckDnsArgs {
    /// the customer domain
    #[argh(positional)]
    domain: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

#[derive(Serialize)]
struct MxHost {
    host: String,
    addresses: Vec<IpAddr>,
    ours: bool,
    /// The cluster node it is, when it can be told: by name (`mx2` or
    /// `mx2.filter.example.net`) or by its peer address.
    node: Option<String>,
}

/// The cluster node an MX host is, if any.
fn node_of(config: &Config, host: &str, addresses: &[IpAddr]) -> Option<String> {
    let cluster = config.cluster.as_ref()?;
    let first_label = host.split('.').next().unwrap_or(host);
    cluster
        .nodes
        .iter()
        .find(|(name, peer)| {
            name.eq_ignore_ascii_case(host)
                || name.eq_ignore_ascii_case(first_label)
                || addresses.contains(&peer.ip())
        })
        .map(|(name, _)| name.clone())
}

#[derive(Serialize)]
struct Report {
    domain: String,
    configured: bool,
    deliver_to: Option<String>,
    mx: Vec<MxHost>,
    ok: bool,
    advice: Vec<String>,
}

async fn check(config: &Config, domain: &str) -> Result<Report, String> {
    let resolver = Resolver::new(&config.dns.servers, config.dns.timeout);
    let domain = crate::config::normalize_domain(domain);
    let node = &config.node.hostname;
    let our_addresses = resolver.addresses(node).await.unwrap_or_default();
    let hosts = match resolver.mx(&domain).await {
        Ok(hosts) => hosts,
        Err(DnsError::NoSuchDomain) => return Err(format!("{domain} does not exist in DNS")),
        Err(e) => return Err(e.to_string()),
    };
    let mut mx = Vec::new();
    for host in hosts {
        let addresses = resolver.addresses(&host).await.unwrap_or_default();
        let cluster_node = node_of(config, &host, &addresses);
        let ours = host == *node
            || addresses.iter().any(|a| our_addresses.contains(a))
            || cluster_node.is_some();
        mx.push(MxHost {
            host,
            addresses,
            ours,
            node: cluster_node,
        });
    }
    let configured = config.domain(&domain);
    let mut advice = Vec::new();
    if configured.is_none() {
        advice.push(format!(
            "add the domain to the config: [[domain]] name = \"{domain}\" deliver_to = \"<customer server>:25\", then reload (systemctl reload antemx)"
        ));
    }
    if mx.is_empty() || !mx.iter().all(|m| m.ours) {
        let others: Vec<&str> = mx
            .iter()
            .filter(|m| !m.ours)
            .map(|m| m.host.as_str())
            .collect();
        if !others.is_empty() {
            advice.push(format!(
                "MX hosts that are not this cluster receive mail unfiltered: remove {}",
                others.join(", ")
            ));
        }
        if !mx.iter().any(|m| m.ours) && config.cluster.is_none() {
            advice.push(format!("publish: {domain}. IN MX 10 {node}."));
        }
    }
    // Every node at the same preference, so that any can fail.
    if let Some(cluster) = &config.cluster {
        let suffix = node.split_once('.').map(|(_, rest)| rest);
        for name in cluster.nodes.keys() {
            if !mx.iter().any(|m| m.node.as_ref() == Some(name)) {
                let host = suffix.map_or(name.clone(), |s| format!("{name}.{s}"));
                advice.push(format!(
                    "no MX record reaches node {name}: publish {domain}. IN MX 10 {host}. (the same preference as the other nodes)"
                ));
            }
        }
    }
    Ok(Report {
        ok: advice.is_empty(),
        deliver_to: configured.map(|d| d.deliver_to.to_string()),
        configured: configured.is_some(),
        domain,
        mx,
        advice,
    })
}

pub fn run(args: CheckDnsArgs) -> i32 {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let report = match smol::block_on(check(&config, &args.domain)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("antemx: {e}");
            return 1;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!("{}:", report.domain);
        for m in &report.mx {
            let addresses: Vec<String> = m.addresses.iter().map(IpAddr::to_string).collect();
            let whose = match (&m.node, m.ours) {
                (Some(node), _) => format!("this cluster (node {node})"),
                (None, true) => "this cluster".to_string(),
                (None, false) => "NOT this cluster".to_string(),
            };
            println!("  MX {}  [{}]  {whose}", m.host, addresses.join(", "));
        }
        match &report.deliver_to {
            Some(to) => println!("  configured here, delivered to {to}"),
            None => println!("  not configured here: mail for it is refused (550 5.7.1)"),
        }
        if report.ok {
            println!("ok: ready to receive mail for {}", report.domain);
        }
        for line in &report.advice {
            println!("to do: {line}");
        }
    }
    if report.ok {
        0
    } else {
        1
    }
}
