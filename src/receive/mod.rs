//! The SMTP server: one task per connection, limits per client IP and in
//! total, the session state machine in [`session`].

mod address;
mod data;
mod ehlo;
mod received;
mod session;
mod tls;

use crate::config::Live;
use crate::retry::Queue;
use crate::store::Store;
use futures_rustls::TlsAcceptor;
use smol::io::AsyncWriteExt;
use smol::net::{TcpListener, TcpStream};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct Receiver {
    live: Live,
    store: Store,
    queue: Queue,
    tls: Option<TlsAcceptor>,
    connections: Mutex<HashMap<IpAddr, usize>>,
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
    pub fn new(live: Live, store: Store, queue: Queue) -> Result<Receiver, String> {
        let config = live.current();
        let tls = config.smtp.tls.as_ref().map(tls::acceptor).transpose()?;
        Ok(Receiver {
            live,
            store,
            queue,
            tls,
            connections: Mutex::new(HashMap::new()),
        })
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
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let receiver = self.clone();
                    smol::spawn(async move { receiver.handle(stream, peer.ip()).await }).detach();
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    smol::Timer::after(std::time::Duration::from_millis(100)).await;
                }
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
