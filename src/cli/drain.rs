//! `antemx drain`: before a node is removed from the cluster, it stops
//! taking mail and hands its queue and sidelined mail to its peers.

use super::admin::Admin;
use argh::FromArgs;
use std::path::PathBuf;
use std::time::Duration;

/// Moving a large queue takes a while; the node reports when it is done.
const DRAIN_WAIT: Duration = Duration::from_secs(3600);

#[derive(FromArgs)]
/// Stop taking mail and hand the queue and the sidelined mail to the peers
/// (remove the node from the MX records first).
#[argh(subcommand, name = "drain")]
pub struct DrainArgs {
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

pub fn run(args: DrainArgs) -> i32 {
    let result = Admin::waiting(&args.config, DRAIN_WAIT).and_then(|admin| {
        let value = admin.call("POST", "/drain")?;
        if args.json {
            println!("{value}");
        } else {
            println!(
                "queue: {} jobs handed over, {} left; sideline: {} messages moved, {} left",
                value["queue_moved"], value["queue_left"], value["sideline_moved"], value["sideline_left"]
            );
        }
        let left = value["queue_left"].as_u64().unwrap_or(0) + value["sideline_left"].as_u64().unwrap_or(0);
        if left > 0 {
            return Err(format!(
                "{left} not handed over (peers down?); run `antemx drain` again before removing the node"
            ));
        }
        Ok(())
    });
    super::report(result)
}
