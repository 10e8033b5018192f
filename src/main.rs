//! antemx: a spam-filtering MX gateway.

mod cli;
mod cluster;
mod config;
mod dns;
mod filter;
mod metrics;
mod receive;
mod retry;
mod sideline;
mod store;
mod time;
mod web;

fn main() {
    std::process::exit(cli::main());
}
