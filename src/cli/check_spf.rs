//! `antemx check-spf --ip IP --helo NAME --mail-from ADDRESS`: the SPF
//! result the filter would give a client, for an operator asking why a
//! sender got SPF_FAIL. It runs the filter's own code: mail-auth on the
//! node's `[dns] servers`, under `[filter] lookup_deadline`.

use crate::config::Config;
use crate::filter::checks::auth::{authenticator, check_spf};
use argh::FromArgs;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

#[derive(FromArgs)]
/// Show the SPF result the filter gives a client address and envelope.
#[argh(subcommand, name = "check-spf")]
pub struct CheckSpfArgs {
    /// the client's address
    #[argh(option)]
    ip: IpAddr,
    /// the name the client gave at HELO/EHLO
    #[argh(option, default = "String::new()")]
    helo: String,
    /// the envelope sender (MAIL FROM); empty or "<>" for a bounce, whose
    /// HELO name is checked instead
    #[argh(option, default = "String::new()")]
    mail_from: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`.
    result: &'static str,
    /// The domain whose policy was evaluated; empty when none was.
    domain: String,
    /// `smtp.mailfrom` or `smtp.helo`; empty when there was no identity.
    identity: &'static str,
}

pub fn run(args: CheckSpfArgs) -> i32 {
    // The filter's warnings (a DNS lookup that failed) say why a result
    // is temperror; RUST_LOG=debug shows every DNS question.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let sender = Some(args.mail_from.as_str()).filter(|s| !s.is_empty() && *s != "<>");
    let deadline = Instant::now() + config.filter.lookup_deadline;
    let checked = smol::block_on(async {
        let authenticator = authenticator(&config).await?;
        Ok::<_, String>(
            check_spf(
                &authenticator,
                &config.node.hostname,
                args.ip,
                &args.helo,
                sender,
                deadline,
            )
            .await,
        )
    });
    let report = match checked {
        Ok(Some(spf)) => Report {
            result: spf.word(),
            identity: spf.property().0,
            domain: spf.domain,
        },
        // A bounce from a client without a HELO name: nothing to check.
        Ok(None) => Report {
            result: "none",
            domain: String::new(),
            identity: "",
        },
        Err(e) => {
            eprintln!("antemx check-spf: {e}");
            return 1;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else if report.identity.is_empty() {
        println!("spf=none (a bounce without a HELO name: no identity to check)");
    } else {
        let value = if report.identity == "smtp.helo" {
            &args.helo
        } else {
            &args.mail_from
        };
        println!(
            "spf={} {}={value} (policy of {}, client {})",
            report.result, report.identity, report.domain, args.ip
        );
    }
    0
}
