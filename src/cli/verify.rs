//! `antemx verify clear`: forgets cached recipient verification answers of
//! the running node (a mailbox created or removed on the customer's server
//! counts at once), through its admin API on loopback.

use super::admin::Admin;
use crate::web::percent_encode;
use argh::FromArgs;
use std::path::PathBuf;

#[derive(FromArgs)]
/// Manage the recipient verification cache of the running node.
#[argh(subcommand, name = "verify")]
pub struct VerifyArgs {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Action {
    Clear(ClearArgs),
}

#[derive(FromArgs)]
/// Forget cached answers: of one address, of a domain, or all of them.
#[argh(subcommand, name = "clear")]
struct ClearArgs {
    /// the address whose answer to forget (default: every address)
    #[argh(positional)]
    address: Option<String>,
    /// forget the answers for this domain's addresses
    #[argh(option)]
    domain: Option<String>,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

pub fn run(args: VerifyArgs) -> i32 {
    let Action::Clear(a) = args.action;
    let query = match (&a.address, &a.domain) {
        (Some(_), Some(_)) => {
            eprintln!("antemx: give an address or --domain, not both");
            return 1;
        }
        (Some(address), None) => format!("?address={}", percent_encode(address)),
        (None, Some(domain)) => format!("?domain={}", percent_encode(domain)),
        (None, None) => String::new(),
    };
    let result = Admin::new(&a.config).and_then(|admin| {
        let value = admin.call("DELETE", &format!("/verify{query}"))?;
        if a.json {
            println!("{value}");
        } else {
            println!("{} cached answers cleared", value["cleared"]);
        }
        Ok(())
    });
    super::report(result)
}
