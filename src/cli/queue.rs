//! `antemx queue ...`: the delivery queue of the running node, through its
//! admin API on loopback.

use super::admin::{typed, Admin};
use crate::retry::{QueueEntry, QueueExtension};
use argh::FromArgs;
use std::path::PathBuf;

#[derive(FromArgs)]
/// Inspect and act on the delivery queue of the running node.
#[argh(subcommand, name = "queue")]
pub struct QueueArgs {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Action {
    List(ListArgs),
    Show(ShowArgs),
    Flush(FlushArgs),
    Delete(DeleteArgs),
    Extend(ExtendArgs),
}

#[derive(FromArgs)]
/// List queued messages.
#[argh(subcommand, name = "list")]
struct ListArgs {
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print one JSON array
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Show one queued message.
#[argh(subcommand, name = "show")]
struct ShowArgs {
    /// queue id
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
/// Try one queued message, or all, now.
#[argh(subcommand, name = "flush")]
struct FlushArgs {
    /// queue id (default: every message)
    #[argh(positional)]
    id: Option<String>,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Delete a queued message without notifying the sender.
#[argh(subcommand, name = "delete")]
struct DeleteArgs {
    /// queue id
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
/// Give a domain's queued mail more time before it expires.
#[argh(subcommand, name = "extend")]
struct ExtendArgs {
    /// customer domain
    #[argh(positional)]
    domain: String,
    /// how much longer, e.g. 2d
    #[argh(option)]
    by: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

fn when(ms: u64) -> String {
    crate::time::rfc5322(ms)
}

fn print_entry(entry: &QueueEntry) {
    println!(
        "{}  {}  {} bytes  arrived {}  attempts {}  next {}  expires {}",
        entry.id,
        entry.domain,
        entry.size,
        when(entry.received_ms),
        entry.attempts,
        when(entry.next_attempt_ms),
        when(entry.expires_ms)
    );
    println!(
        "    from <{}> to <{}>",
        entry.sender,
        entry.recipients.join(">, <")
    );
    if let Some(error) = &entry.last_error {
        println!("    last error: {error}");
    }
}

pub fn run(args: QueueArgs) -> i32 {
    let result = match args.action {
        Action::List(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call("GET", "/queue")?;
            if a.json {
                println!("{value}");
            } else {
                let entries: Vec<QueueEntry> = typed(value)?;
                for entry in &entries {
                    print_entry(entry);
                }
                println!("{} queued", entries.len());
            }
            Ok(())
        }),
        Action::Show(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call("GET", &format!("/queue/{}", a.id))?;
            if a.json {
                println!("{value}");
            } else {
                typed::<Vec<QueueEntry>>(value)?
                    .iter()
                    .for_each(print_entry);
            }
            Ok(())
        }),
        Action::Flush(a) => Admin::new(&a.config).and_then(|admin| {
            let path = match &a.id {
                Some(id) => format!("/queue/{id}/flush"),
                None => "/queue/flush".to_string(),
            };
            let value = admin.call("POST", &path)?;
            if a.json {
                println!("{value}");
            } else {
                println!("{} queue entries due now", value["flushed"]);
            }
            Ok(())
        }),
        Action::Delete(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call("DELETE", &format!("/queue/{}", a.id))?;
            if a.json {
                println!("{value}");
            } else {
                println!("{} deleted", a.id);
            }
            Ok(())
        }),
        Action::Extend(a) => Admin::new(&a.config).and_then(|admin| {
            crate::config::parse_duration(&a.by)?;
            let value = admin.call(
                "POST",
                &format!("/queue/extend?domain={}&by={}", a.domain, a.by),
            )?;
            if a.json {
                println!("{value}");
            } else {
                let extension: QueueExtension = typed(value)?;
                println!(
                    "{}: {}s added to the lifetime of mail received until {}",
                    extension.domain,
                    extension.extra_seconds,
                    when(extension.until_ms)
                );
            }
            Ok(())
        }),
    };
    super::report(result)
}
