//! The SMTP server: one task per connection, limits per client IP and in
//! total, the session state machine in [`session`].

mod address;
mod data;
mod ehlo;
mod greylist;
mod judge;
mod policy;
mod received;
mod session;
mod tls;
mod verify;

pub use policy::Policies;
pub use verify::Selector;

pub use judge::FILTER_BYTES;

use crate::config::{Config, Live};
use crate::filter::checks::bayes::Bayes;
use crate::filter::user_lists::UserLists;
use crate::filter::Pipeline;
use crate::retry::Queue;
use crate::sideline::Sideline;
use crate::store::Store;
use futures_rustls::TlsAcceptor;
use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use smol::net::{TcpListener, TcpStream};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct Receiver {
    live: Live,
    store: Store,
    queue: Queue,
    sideline: Sideline,
    bayes: Arc<Bayes>,
    user_lists: UserLists,
    /// The filter built for a config, kept until a reload replaces it.
    pipeline: Mutex<Option<(Arc<Config>, Arc<Pipeline>)>>,
    /// Replaced by a reload, so that a renewed certificate is served
    /// without a restart.
    tls: std::sync::RwLock<Option<TlsAcceptor>>,
    /// Recipient verification and greylisting, for domains that want them.
    policies: Policies,
    connections: Mutex<HashMap<IpAddr, usize>>,
    /// Closed (never sent on) to tell listeners and idle sessions to stop.
    stop: async_channel::Sender<()>,
    stopped: async_channel::Receiver<()>,
}

/// Holds one connection's place in the limits until dropped.
struct Slot<'a> {
    receiver: &'a Receiver,
    ip: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut connections = self.receiver.lock_connections();
        if let Some(count) = connections.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                connections.remove(&self.ip);
            }
        }
    }
}

impl Receiver {
    /// Fails when the configured certificate cannot be loaded.
    pub fn new(
        live: Live,
        store: Store,
        queue: Queue,
        sideline: Sideline,
        bayes: Arc<Bayes>,
    ) -> Result<Receiver, String> {
        let config = live.current();
        let tls = config.smtp.tls.as_ref().map(tls::acceptor).transpose()?;
        let (stop, stopped) = async_channel::bounded(1);
        let policies =
            Policies::open(live.clone(), &store).map_err(|e| format!("recipient policies: {e}"))?;
        let user_lists =
            UserLists::open(&store).map_err(|e| format!("recipients' sender lists: {e}"))?;
        Ok(Receiver {
            policies,
            user_lists,
            stop,
            stopped,
            live,
            store,
            queue,
            sideline,
            bayes,
            pipeline: Mutex::new(None),
            tls: std::sync::RwLock::new(tls),
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// The STARTTLS acceptor now, if TLS is configured.
    fn tls(&self) -> Option<TlsAcceptor> {
        match self.tls.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the certificate of a reloaded config (a renewed one, say);
    /// on error the one served now stays.
    pub fn reload_tls(&self, config: &Config) -> Result<(), String> {
        let tls = config.smtp.tls.as_ref().map(tls::acceptor).transpose()?;
        match self.tls.write() {
            Ok(mut guard) => *guard = tls,
            Err(poisoned) => *poisoned.into_inner() = tls,
        }
        Ok(())
    }

    /// The RCPT policies, for the admin API and the purge task.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Stops accepting connections; sessions waiting for a command are told
    /// 421 and closed, a message being received is finished first.
    pub fn stop(&self) {
        self.stop.close();
    }

    /// Resolves once [`Receiver::stop`] has been called.
    async fn stopping(&self) {
        let _ = self.stopped.recv().await;
    }

    /// Waits until every session has ended, at most `limit`; returns how many
    /// are still open.
    pub async fn drain(&self, limit: std::time::Duration) -> usize {
        let end = std::time::Instant::now() + limit;
        while self.active_sessions() > 0 && std::time::Instant::now() < end {
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
        self.active_sessions()
    }

    /// SMTP sessions open now.
    pub fn active_sessions(&self) -> usize {
        self.lock_connections().values().sum()
    }

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_slot(&self, ip: IpAddr) -> Result<Slot<'_>, &'static str> {
        let config = self.live.current();
        let mut connections = self.lock_connections();
        let total: usize = connections.values().sum();
        if total >= config.smtp.max_connections {
            return Err("Too many connections, try again later");
        }
        let mine = connections.entry(ip).or_insert(0);
        if *mine >= config.smtp.max_connections_per_ip {
            return Err("Too many connections from your address, try again later");
        }
        *mine += 1;
        Ok(Slot { receiver: self, ip })
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = async { Some(listener.accept().await) };
            let stopped = async {
                self.stopping().await;
                None
            };
            match accepted.or(stopped).await {
                Some(Ok((stream, peer))) => {
                    let receiver = self.clone();
                    smol::spawn(async move { receiver.handle(stream, peer.ip()).await }).detach();
                }
                Some(Err(e)) => {
                    log::warn!("accept failed: {e}");
                    smol::Timer::after(std::time::Duration::from_millis(100)).await;
                }
                // Dropping the listener closes the port: senders go to
                // another MX or retry later.
                None => return,
            }
        }
    }

    async fn handle(&self, mut stream: TcpStream, ip: IpAddr) {
        let _ = stream.set_nodelay(true);
        let slot = match self.take_slot(ip) {
            Ok(slot) => slot,
            Err(reply) => {
                log::info!("connection refused: client=[{ip}] reason=limit");
                crate::metrics::count(crate::metrics::CONNECTIONS_REFUSED, &[("reason", "limit")]);
                let hostname = self.live.current().node.hostname.clone();
                let _ = stream
                    .write_all(format!("421 4.7.0 {hostname} {reply}\r\n").as_bytes())
                    .await;
                return;
            }
        };
        crate::metrics::count(crate::metrics::CONNECTIONS, &[]);
        session::Session::new(self, stream, ip).run().await;
        drop(slot);
    }
}
