//! `antemx serve`: runs a node in the foreground until SIGTERM.

use crate::cluster::Cluster;
use crate::config::{Config, Live};
use crate::filter::checks::bayes::Bayes;
use crate::filter::user_lists::UserLists;
use crate::receive::Receiver;
use crate::retry::Queue;
use crate::sideline::Sideline;
use crate::store::Store;
use argh::FromArgs;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often what the classifier learned on the mail path (auto-learning,
/// releases) is written: saving rewrites whole chunks of its table, too
/// much to do per message; a crash loses at most this much learning.
const SAVE_LEARNED_EVERY: Duration = Duration::from_secs(60);

/// Writes the classifier's learning now and then, for as long as the node
/// runs (and once more at shutdown, in `start`).
async fn save_learned(bayes: Arc<Bayes>) {
    loop {
        smol::Timer::after(SAVE_LEARNED_EVERY).await;
        if bayes.unsaved() {
            let bayes = bayes.clone();
            if let Err(e) = smol::unblock(move || bayes.save()).await {
                log::error!("classifier statistics not saved: {e}");
            }
        }
    }
}

/// How long SIGTERM waits for sessions receiving a message.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(FromArgs)]
/// Run a node in the foreground; logs go to stderr (RUST_LOG).
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// this node's name among [cluster] nodes (default: the hostname)
    #[argh(option)]
    node: Option<String>,
}

pub fn run(args: ServeArgs) -> i32 {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if std::env::var_os("SMOL_THREADS").is_none() {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        std::env::set_var("SMOL_THREADS", threads.to_string());
    }
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            log::error!("{e}");
            return 2;
        }
    };
    match start(config, args.config, args.node) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn start(config: Config, path: PathBuf, node: Option<String>) -> Result<(), String> {
    let data_dir = config.node.data_dir.clone();
    let store = Store::open(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let live = Live::new(config.clone());
    let cluster = Cluster::open(live.clone(), &store, node)?;
    // Ids name messages across the cluster: they carry the node's name.
    let store = if config.cluster.is_some() {
        store.with_id_prefix(format!("{}-", cluster.me()))
    } else {
        store
    };
    let queue = Queue::open(live.clone(), store.clone()).map_err(|e| format!("queue: {e}"))?;
    let bayes = Arc::new(Bayes::open(&store).map_err(|e| format!("Bayes statistics: {e}"))?);
    let sideline = smol::block_on(Sideline::open(
        live.clone(),
        store.clone(),
        queue.clone(),
        bayes.clone(),
        cluster.clone(),
    ))
    .map_err(|e| format!("sideline: {e}"))?;
    let swept = store
        .spool()
        .sweep(|id| queue.holds(id) || sideline.holds(id))
        .map_err(|e| format!("spool: {e}"))?;
    if swept > 0 {
        log::info!("removed {swept} message files of unfinished sessions");
    }
    let receiver = Arc::new(Receiver::new(
        live.clone(),
        store.clone(),
        queue.clone(),
        sideline.clone(),
        bayes.clone(),
    )?);

    let mut smtp_listeners = Vec::new();
    for address in &config.smtp.listen {
        let listener = std::net::TcpListener::bind(address)
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        smtp_listeners.push(smol::net::TcpListener::try_from(listener).map_err(|e| e.to_string())?);
    }
    let web = std::net::TcpListener::bind(config.web.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.web.listen))?;
    let web = smol::net::TcpListener::try_from(web).map_err(|e| e.to_string())?;
    let api_listener = match config.web.api_listen {
        Some(address) => {
            let listener = std::net::TcpListener::bind(address)
                .map_err(|e| format!("cannot listen on {address}: {e}"))?;
            Some(smol::net::TcpListener::try_from(listener).map_err(|e| e.to_string())?)
        }
        None => None,
    };

    for listener in smtp_listeners {
        smol::spawn(receiver.clone().serve(listener)).detach();
    }
    let web_node = crate::web::Node {
        live: live.clone(),
        sign_in_failures: Default::default(),
        cluster: cluster.clone(),
        queue: queue.clone(),
        store: store.clone(),
        receiver: receiver.clone(),
        sideline: sideline.clone(),
        bayes: bayes.clone(),
        user_lists: UserLists::open(&store)
            .map_err(|e| format!("recipients' sender lists: {e}"))?,
    };
    if let Some(api) = api_listener {
        smol::spawn(crate::web::serve(
            api,
            web_node.clone(),
            crate::web::Role::Customers,
        ))
        .detach();
    }
    smol::spawn(crate::web::serve(web, web_node, crate::web::Role::Node)).detach();
    let learner = bayes.clone();
    smol::spawn(async move { save_learned(learner).await }).detach();
    smol::spawn(async move { sideline.run().await }).detach();
    let policies = receiver.clone();
    smol::spawn(async move { policies.policies().run().await }).detach();
    let scheduler = queue.clone();
    smol::spawn(async move { scheduler.run().await }).detach();
    let messenger = cluster.clone();
    smol::spawn(async move { messenger.run().await }).detach();
    log::info!(
        "antemx {} ready: node {}, {} peers, smtp {:?}, web {}, {} domains, data in {}",
        env!("CARGO_PKG_VERSION"),
        cluster.me(),
        cluster.peers().len(),
        config.smtp.listen,
        config.web.listen,
        config.domains.len(),
        data_dir.display()
    );

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| e.to_string())?;
    super::notify::notify("READY=1");
    for signal in signals.forever() {
        if signal == SIGHUP {
            match Config::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|config| cluster.accepts(&config).map(|()| config))
                .and_then(|config| receiver.reload_tls(&config).map(|()| config))
            {
                Ok(config) => {
                    live.replace(config);
                    log::info!("config reloaded from {}", path.display());
                }
                Err(e) => log::error!("config not reloaded, keeping the old one: {e}"),
            }
            continue;
        }
        log::info!("signal {signal}: stopping");
        break;
    }
    // Stop taking mail, let sessions in the middle of a message finish
    // (bounded), then make sure everything acknowledged is on disk.
    receiver.stop();
    let left = smol::block_on(receiver.drain(SHUTDOWN_GRACE));
    if left > 0 {
        log::warn!(
            "{left} sessions still open after {}s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    if bayes.unsaved() {
        if let Err(e) = bayes.save() {
            log::error!("classifier statistics not saved: {e}");
        }
    }
    smol::block_on(store.flush()).map_err(|e| format!("final flush: {e}"))?;
    log::info!("stopped");
    Ok(())
}
