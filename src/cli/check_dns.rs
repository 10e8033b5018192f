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
        let ours = host == *node || addresses.iter().any(|a| our_addresses.contains(a));
        mx.push(MxHost {
            host,
            addresses,
            ours,
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
        if !mx.iter().any(|m| m.ours) {
            advice.push(format!("publish: {domain}. IN MX 10 {node}."));
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
            let whose = if m.ours {
                "this cluster"
            } else {
                "NOT this cluster"
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
