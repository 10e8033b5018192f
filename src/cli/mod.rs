//! The command line: `antemx serve` runs a node; the other commands talk to a
//! running node's admin API or check files.

mod admin;
mod check_dns;
mod check_spf;
mod drain;
mod hash_password;
mod lists;
mod notify;
mod queue;
mod scan;
mod serve;
mod sideline;
mod train;
mod verify;

use argh::FromArgs;
use std::path::PathBuf;

/// The exit code of an operator command: 0, or 1 with the error on stderr.
fn report(result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("antemx: {e}");
            1
        }
    }
}

fn default_config() -> PathBuf {
    PathBuf::from(crate::config::DEFAULT_PATH)
}

#[derive(FromArgs)]
/// antemx: a spam-filtering MX gateway.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    CheckConfig(CheckConfigArgs),
    Queue(queue::QueueArgs),
    Sideline(sideline::SidelineArgs),
    Lists(lists::ListsArgs),
    CheckDns(check_dns::CheckDnsArgs),
    CheckSpf(check_spf::CheckSpfArgs),
    Scan(scan::ScanArgs),
    Train(train::TrainArgs),
    Verify(verify::VerifyArgs),
    Drain(drain::DrainArgs),
    HashPassword(hash_password::HashPasswordArgs),
}

#[derive(FromArgs)]
/// Validate a config file; errors name the line.
#[argh(subcommand, name = "check-config")]
struct CheckConfigArgs {
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "default_config()")]
    config: PathBuf,
}

pub fn main() -> i32 {
    let cli: Cli = argh::from_env();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => match crate::config::Config::load(&args.config) {
            Ok(config) => {
                let users = match config.users.len() {
                    0 => String::new(),
                    1 => ", 1 user".to_string(),
                    n => format!(", {n} users"),
                };
                let cluster = config.cluster.as_ref().map_or(String::new(), |c| {
                    format!(", cluster of {} nodes, {} copies", c.nodes.len(), c.copies)
                });
                println!(
                    "{}: ok ({} domain{}{users}{cluster})",
                    args.config.display(),
                    config.domains.len(),
                    if config.domains.len() == 1 { "" } else { "s" }
                );
                0
            }
            Err(e) => {
                eprintln!("{e}");
                2
            }
        },
        Command::Queue(args) => queue::run(args),
        Command::Sideline(args) => sideline::run(args),
        Command::Lists(args) => lists::run(args),
        Command::CheckDns(args) => check_dns::run(args),
        Command::CheckSpf(args) => check_spf::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Train(args) => train::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Drain(args) => drain::run(args),
        Command::HashPassword(args) => hash_password::run(args),
    }
}
