//! `antemx lists ...`: each recipient's own allow and block lists of
//! senders, on the running node through its admin API on loopback.

use super::admin::{typed, Admin};
use crate::filter::user_lists::Lists;
use crate::web::percent_encode;
use argh::FromArgs;
use std::path::PathBuf;

#[derive(FromArgs)]
/// Show and change a recipient's own sender lists.
#[argh(subcommand, name = "lists")]
pub struct ListsArgs {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Action {
    Show(ShowArgs),
    Add(AddArgs),
    Remove(RemoveArgs),
}

#[derive(FromArgs)]
/// A recipient's allow and block lists.
#[argh(subcommand, name = "show")]
struct ShowArgs {
    /// recipient address
    #[argh(positional)]
    recipient: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Put a sender (alice@partner.example, or partner.example for the whole
/// domain) on a recipient's allow or block list (and off the other).
#[argh(subcommand, name = "add")]
struct AddArgs {
    /// recipient address
    #[argh(positional)]
    recipient: String,
    /// allow or block
    #[argh(positional)]
    list: String,
    /// sender address or domain
    #[argh(positional)]
    sender: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

#[derive(FromArgs)]
/// Take a sender off the recipient's lists.
#[argh(subcommand, name = "remove")]
struct RemoveArgs {
    /// recipient address
    #[argh(positional)]
    recipient: String,
    /// sender address or domain
    #[argh(positional)]
    sender: String,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

fn print(recipient: &str, lists: &Lists) {
    println!("{recipient}");
    println!("    allow: {}", lists.allow.join(", "));
    println!("    block: {}", lists.block.join(", "));
}

/// Prints the answer: as it came with `--json`, else readable.
fn answer(value: serde_json::Value, json: bool, recipient: &str) -> Result<(), String> {
    if json {
        println!("{value}");
    } else {
        print(recipient, &typed(value)?);
    }
    Ok(())
}

pub fn run(args: ListsArgs) -> i32 {
    let result = match args.action {
        Action::Show(a) => Admin::new(&a.config).and_then(|admin| {
            let value = admin.call("GET", &format!("/lists/{}", percent_encode(&a.recipient)))?;
            answer(value, a.json, &a.recipient)
        }),
        Action::Add(a) => Admin::new(&a.config).and_then(|admin| {
            if a.list != "allow" && a.list != "block" {
                return Err(format!("{:?}: the list is allow or block", a.list));
            }
            let path = format!(
                "/lists/{}/{}?sender={}",
                percent_encode(&a.recipient),
                a.list,
                percent_encode(&a.sender)
            );
            answer(admin.call("POST", &path)?, a.json, &a.recipient)
        }),
        Action::Remove(a) => Admin::new(&a.config).and_then(|admin| {
            let path = format!(
                "/lists/{}?sender={}",
                percent_encode(&a.recipient),
                percent_encode(&a.sender)
            );
            answer(admin.call("DELETE", &path)?, a.json, &a.recipient)
        }),
    };
    super::report(result)
}
