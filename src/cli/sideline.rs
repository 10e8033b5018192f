//! `antemx sideline ...`: the suspect messages the running node kept (in a
//! cluster, every node's), through its admin API on loopback.

use super::admin::{typed, Admin};
use crate::sideline::Entry;
use crate::web::percent_encode;
use argh::FromArgs;
use std::path::PathBuf;

#[derive(FromArgs)]
/// Inspect, release and delete sidelined messages (of the whole cluster).
#[argh(subcommand, name = "sideline")]
pub struct SidelineArgs {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Action {
    List(ListArgs),
    Show(ShowArgs),
    Release(ReleaseArgs),
    Delete(DeleteArgs),
}

#[derive(FromArgs)]
/// List sidelined messages, oldest first.
#[argh(subcommand, name = "list")]
struct ListArgs {
    /// only messages to this recipient domain
    #[argh(option)]
    domain: Option<String>,
    /// only messages to this recipient
    #[argh(option)]
    recipient: Option<String>,
    /// only messages from this envelope sender
    #[argh(option)]
    sender: Option<String>,
    /// only messages that arrived within this long, e.g. 2d
    #[argh(option)]
    since: Option<String>,
    /// only messages that arrived more than this long ago, e.g. 1h
    #[argh(option)]
    until: Option<String>,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print one JSON array
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Show a sidelined message: envelope, headers, and every rule that fired.
#[argh(subcommand, name = "show")]
struct ShowArgs {
    /// sideline id
    #[argh(positional)]
    id: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Deliver a sidelined message (once; it is not filtered again).
#[argh(subcommand, name = "release")]
struct ReleaseArgs {
    /// sideline id
    #[argh(positional)]
    id: String,
    /// who releases it, for the X-Antemx-Released header (default: admin)
    #[argh(option, default = "String::from(\"admin\")")]
    by: String,
    /// also teach the classifier that the message is ham
    #[argh(switch)]
    train: bool,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Delete a sidelined message for good.
#[argh(subcommand, name = "delete")]
struct DeleteArgs {
    /// sideline id
    #[argh(positional)]
    id: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

fn print_entry(entry: &Entry, rules: bool) {
    println!(
        "{}  score {:.1}  {} bytes  arrived {}  client [{}]",
        entry.id,
        entry.score,
        entry.size,
        crate::time::rfc5322(entry.received_ms),
        entry.client
    );
    println!(
        "    envelope from <{}> to <{}>",
        entry.sender,
        entry.recipients.join(">, <")
    );
    println!("    From: {}", entry.from);
    println!("    Subject: {}", entry.subject);
    if rules {
        println!("    Date: {}", entry.date);
        println!("    HELO: {}", entry.helo);
        if !entry.origin.is_empty() {
            println!(
                "    Received by {}, kept on {}",
                entry.origin,
                entry.holders.join(", ")
            );
        }
        for rule in &entry.rules {
            println!("    {:>6.1}  {}  {}", rule.score, rule.name, rule.reason);
        }
    }
}

/// `--since 2d` as milliseconds since the epoch: now minus the duration.
fn ago(duration: &str) -> Result<u64, String> {
    let span = crate::config::parse_duration(duration)?;
    Ok(crate::time::now_ms().saturating_sub(span.as_millis() as u64))
}

fn list_path(a: &ListArgs) -> Result<String, String> {
    let mut query = Vec::new();
    for (name, value) in [
        ("domain", &a.domain),
        ("recipient", &a.recipient),
        ("sender", &a.sender),
    ] {
        if let Some(value) = value {
            query.push(format!("{name}={}", percent_encode(value)));
        }
    }
    if let Some(since) = &a.since {
        query.push(format!("since_ms={}", ago(since)?));
    }
    if let Some(until) = &a.until {
        query.push(format!("until_ms={}", ago(until)?));
    }
    Ok(format!("/sideline?{}", query.join("&")))
}

pub fn run(args: SidelineArgs) -> i32 {
    let result = match args.action {
        Action::List(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call("GET", &list_path(&a)?)?;
            if a.json {
                println!("{value}");
            } else {
                let entries: Vec<Entry> = typed(value)?;
                for entry in &entries {
                    print_entry(entry, false);
                }
                println!("{} sidelined", entries.len());
            }
            Ok(())
        }),
        Action::Show(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call("GET", &format!("/sideline/{}", percent_encode(&a.id)))?;
            if a.json {
                println!("{value}");
            } else {
                print_entry(&typed(value)?, true);
            }
            Ok(())
        }),
        Action::Release(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call(
                "POST",
                &format!(
                    "/sideline/{}/release?by={}&train={}",
                    percent_encode(&a.id),
                    percent_encode(&a.by),
                    a.train
                ),
            )?;
            if a.json {
                println!("{value}");
            } else {
                println!("{} released for delivery", a.id);
            }
            Ok(())
        }),
        Action::Delete(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call("DELETE", &format!("/sideline/{}", percent_encode(&a.id)))?;
            if a.json {
                println!("{value}");
            } else {
                println!("{} deleted", a.id);
            }
            Ok(())
        }),
    };
    super::report(result)
}
