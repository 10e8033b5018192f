//! The nodes of a cluster and the calls between them.
//!
//! Every node runs the same config; `[cluster] nodes` names them all with the
//! address of their web server, where the peer API (`/peer/...`) answers
//! signed calls only ([`auth`]). A node knows itself by `serve --node NAME`
//! or its hostname. What must reach a peer even when it is down (a release
//! elsewhere, a list change, training) goes through the [`outbox`], which
//! keeps it on disk and retries until the peer has it.
//!
//! Without `[cluster]` a node is a cluster of one: no peers, one copy.

mod auth;
mod outbox;

pub use auth::SIGNATURE_HEADER;

use crate::config::{self, Config, Live};
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A peer's answer: its HTTP status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether the peer decided on the call (whatever it said), so that it
    /// need not be made again: not a server error, not a refused signature.
    pub fn settles(&self) -> bool {
        self.status < 500 && self.status != 401
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("bad answer: {e}"))
    }
}

/// A peer call's largest answer: a message, or a listing of many entries.
const MAX_ANSWER_BYTES: u64 = 512 * 1024 * 1024;
/// A node that does not accept a connection in this time counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for a large message between data centres.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    me: String,
    live: Live,
    agent: ureq::Agent,
    outbox: outbox::Outbox,
    /// Whether each peer answered its last call; a change is logged.
    reachable: std::sync::Mutex<std::collections::BTreeMap<String, bool>>,
    /// Set by `antemx drain`: the node takes no copies or jobs from peers.
    draining: std::sync::atomic::AtomicBool,
    replays: auth::Replays,
}

impl Cluster {
    /// Finds this node among `[cluster] nodes`: `--node NAME`, else the
    /// machine's hostname or its first label.
    pub fn open(live: Live, store: &Store, node: Option<String>) -> Result<Cluster, String> {
        let config = live.current();
        let me = match (&config.cluster, node) {
            (None, Some(name)) => name,
            (None, None) => config.node.hostname.clone(),
            (Some(cluster), Some(name)) => {
                if !cluster.nodes.contains_key(&name) {
                    return Err(format!(
                        "--node {name} is not among [cluster] nodes ({})",
                        names(&config)
                    ));
                }
                name
            }
            (Some(cluster), None) => {
                let hostname = crate::config::machine_hostname().unwrap_or_default();
                let short = hostname.split('.').next().unwrap_or_default().to_string();
                [hostname.clone(), short]
                    .into_iter()
                    .find(|name| cluster.nodes.contains_key(name))
                    .ok_or_else(|| {
                        format!(
                            "this machine's hostname {hostname:?} is not among [cluster] nodes ({}): start with --node NAME",
                            names(&config)
                        )
                    })?
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .build()
            .into();
        let outbox = outbox::Outbox::open(store).map_err(|e| format!("cluster outbox: {e}"))?;
        Ok(Cluster(Arc::new(Inner {
            me,
            live,
            agent,
            outbox,
            reachable: Default::default(),
            draining: Default::default(),
            replays: Default::default(),
        })))
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.0.me
    }

    /// From now on (until a restart) this node is being emptied onto its
    /// peers and takes nothing more from them.
    pub fn start_draining(&self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a reloaded config can replace the running one: the cluster
    /// can change its members, but this node must stay one, and a node
    /// cannot join or leave a cluster without a restart (its message ids
    /// carry its name only in a cluster).
    pub fn accepts(&self, config: &Config) -> Result<(), String> {
        let running = self.0.live.current();
        match (&running.cluster, &config.cluster) {
            (None, None) => Ok(()),
            (Some(_), Some(cluster)) if cluster.nodes.contains_key(&self.0.me) => Ok(()),
            (Some(_), Some(_)) => Err(format!(
                "this node ({}) is not among the new [cluster] nodes ({})",
                self.0.me,
                names(config)
            )),
            _ => Err("[cluster] cannot be added or removed by a reload: restart the node".into()),
        }
    }

    /// `f` of the current `[cluster]` section; `None` outside a cluster.
    fn section<T>(&self, f: impl FnOnce(&config::Cluster) -> T) -> Option<T> {
        self.0.live.current().cluster.as_ref().map(f)
    }

    /// The other nodes, by name.
    pub fn peers(&self) -> Vec<String> {
        self.section(|c| {
            c.nodes
                .keys()
                .filter(|name| **name != self.0.me)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
    }

    /// Whether `name` is a node of the cluster now (this one included).
    pub fn is_member(&self, name: &str) -> bool {
        name == self.0.me || self.section(|c| c.nodes.contains_key(name)) == Some(true)
    }

    /// How many nodes keep each sidelined message.
    pub fn copies(&self) -> usize {
        self.section(|c| c.copies).unwrap_or(1)
    }

    pub fn heal_interval(&self) -> Duration {
        self.section(|c| c.heal_interval)
            .unwrap_or(Duration::from_secs(60))
    }

    fn secret(&self) -> Result<String, String> {
        self.section(|c| c.secret.clone())
            .ok_or_else(|| "this node is not in a cluster".to_string())
    }

    /// Every node, in the order `key` prefers them (rendezvous hashing):
    /// the same order on every node, and removing a node moves only the
    /// keys it had.
    pub fn ranked(&self, key: &str) -> Vec<String> {
        let mut nodes = self.peers();
        nodes.push(self.0.me.clone());
        let weight = |node: &String| {
            let digest =
                ring::digest::digest(&ring::digest::SHA256, format!("{node}\0{key}").as_bytes());
            digest.as_ref().to_vec()
        };
        nodes.sort_by_cached_key(|node| std::cmp::Reverse(weight(node)));
        nodes
    }

    fn address(&self, peer: &str) -> Result<SocketAddr, String> {
        self.section(|c| c.nodes.get(peer).copied())
            .flatten()
            .ok_or_else(|| format!("{peer} is not a node of the cluster"))
    }

    /// Calls a peer now; an error means it could not be reached (or gave
    /// no answer), not that it said no.
    pub async fn call(
        &self,
        peer: &str,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let answer = async {
            let (address, secret) = (self.address(peer)?, self.secret()?);
            let time = crate::time::now_ms() / 1000;
            let stamp = auth::Stamp {
                from: &self.0.me,
                to: peer,
                nonce: fastrand::u64(..),
            };
            let signature = auth::sign(&secret, method, path, stamp, time, &body);
            let request = ureq::http::Request::builder()
                .method(method)
                .uri(format!("http://{address}{path}"))
                .header(auth::NODE_HEADER, &self.0.me)
                .header(auth::TIME_HEADER, time.to_string())
                .header(auth::NONCE_HEADER, stamp.nonce.to_string())
                .header(auth::SIGNATURE_HEADER, &signature)
                .body(body)
                .map_err(|e| e.to_string())?;
            let agent = self.0.agent.clone();
            let peer = peer.to_string();
            smol::unblock(move || {
                let failed = |e: &dyn std::fmt::Display| format!("{peer} ({address}): {e}");
                let mut response = agent.run(request).map_err(|e| failed(&e))?;
                let status = response.status().as_u16();
                let answer_signature = response
                    .headers()
                    .get(auth::SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(MAX_ANSWER_BYTES)
                    .read_to_vec()
                    .map_err(|e| failed(&e))?;
                // An answer nobody can vouch for is no answer.
                auth::verify_answer(&secret, status, &signature, &answer_signature, &body)
                    .map_err(|e| {
                        let said =
                            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                        failed(&format!("{e} (status {status}: {})", said.trim()))
                    })?;
                Ok(Answer { status, body })
            })
            .await
        }
        .await;
        self.note_reachable(peer, &answer);
        answer
    }

    /// Counts a call's outcome and logs a peer going down or coming back.
    fn note_reachable(&self, peer: &str, answer: &Result<Answer, String>) {
        let up = answer.is_ok();
        let outcome = if up { "answered" } else { "unreachable" };
        crate::metrics::count(
            crate::metrics::PEER_CALLS,
            &[("peer", peer), ("outcome", outcome)],
        );
        let mut reachable = self.0.reachable.lock().unwrap_or_else(|p| p.into_inner());
        let was = reachable.insert(peer.to_string(), up);
        match (was, answer) {
            (Some(true) | None, Err(e)) => log::warn!("cluster: peer {peer} is unreachable: {e}"),
            (Some(false), Ok(_)) => log::info!("cluster: peer {peer} answers again"),
            _ => {}
        }
    }

    /// Peers that answered their last call (or were not called yet), and
    /// all peers.
    pub fn reachable_peers(&self) -> (usize, usize) {
        let peers = self.peers();
        let reachable = self.0.reachable.lock().unwrap_or_else(|p| p.into_inner());
        let up = peers
            .iter()
            .filter(|p| reachable.get(*p).copied().unwrap_or(true))
            .count();
        (up, peers.len())
    }

    /// Asks every peer whether it answers, so that a dead peer shows in the
    /// log and /metrics even when there is nothing to tell it.
    async fn ping_all(&self) {
        self.call_all("GET", "/peer/ping", Vec::new()).await;
    }

    /// Calls every peer at once; each answer or error by peer name.
    pub async fn call_all(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Vec<(String, Result<Answer, String>)> {
        let calls: Vec<_> = self
            .peers()
            .into_iter()
            .map(|peer| {
                let (cluster, method, path, body) = (
                    self.clone(),
                    method.to_string(),
                    path.to_string(),
                    body.clone(),
                );
                smol::spawn(async move {
                    let answer = cluster.call(&peer, &method, &path, body).await;
                    (peer, answer)
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            answers.push(call.await);
        }
        answers
    }

    /// Makes sure every peer gets this call: those in `now` at once (when
    /// they answer), the others, and those that do not, through the outbox,
    /// which is on disk when this returns.
    pub async fn tell_all(
        &self,
        now: &[String],
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut later = Vec::new();
        for peer in self.peers() {
            let told = now.contains(&peer)
                && self
                    .call(&peer, method, path, body.to_vec())
                    .await
                    .is_ok_and(|answer| answer.settles());
            if !told {
                later.push(peer);
            }
        }
        if later.is_empty() {
            return Ok(());
        }
        for peer in later {
            self.0.outbox.add(&peer, method, path, body)?;
        }
        self.0.outbox.flush().await?;
        self.0.outbox.wake();
        Ok(())
    }

    /// Signs this node's answer to a call (see [`auth`]); `None` outside a
    /// cluster.
    pub fn sign_answer(&self, status: u16, call_signature: &str, body: &[u8]) -> Option<String> {
        let secret = self.secret().ok()?;
        Some(auth::sign_answer(&secret, status, call_signature, body))
    }

    /// What a call to the peer API claims before its body is read: a peer
    /// of this node, a time close to ours, a signature.
    pub fn precheck(&self, header: impl Fn(&str) -> Option<String>) -> Result<Claim, String> {
        let node = header(auth::NODE_HEADER).ok_or("the call is not signed")?;
        let known = self.section(|c| c.nodes.contains_key(&node));
        if known.is_none() {
            return Err("this node is not in a cluster".into());
        }
        if node == self.0.me || known != Some(true) {
            return Err(format!("{node:?} is not a peer of this node"));
        }
        let time: u64 = header(auth::TIME_HEADER)
            .and_then(|t| t.parse().ok())
            .ok_or("the call has no time")?;
        auth::check_time(time, crate::time::now_ms() / 1000)?;
        let nonce: u64 = header(auth::NONCE_HEADER)
            .and_then(|n| n.parse().ok())
            .ok_or("the call has no nonce")?;
        let signature = header(auth::SIGNATURE_HEADER).ok_or("the call is not signed")?;
        Ok(Claim {
            node,
            time,
            nonce,
            signature,
        })
    }

    /// Who signed a call to this node's peer API, if the signature of its
    /// `claim` holds for the call and its body, and the call was not made
    /// before.
    pub fn authenticate(
        &self,
        claim: &Claim,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<String, String> {
        let now = crate::time::now_ms() / 1000;
        let stamp = auth::Stamp {
            from: &claim.node,
            to: &self.0.me,
            nonce: claim.nonce,
        };
        let request = (method, path);
        auth::verify(
            &self.secret()?,
            request,
            stamp,
            claim.time,
            &claim.signature,
            body,
            now,
        )?;
        self.0.replays.remember(&claim.signature, now)?;
        Ok(claim.node.clone())
    }

    /// Checks on the peers every `heal_interval` and delivers what the
    /// outbox holds, for as long as the node runs.
    pub async fn run(&self) {
        let watch = async {
            loop {
                self.ping_all().await;
                smol::Timer::after(self.heal_interval()).await;
            }
        };
        smol::future::zip(watch, self.0.outbox.run(self)).await;
    }

    /// Calls waiting in the outbox for peers that have not had them.
    pub fn undelivered(&self) -> usize {
        self.0.outbox.len()
    }
}

/// What a peer call says of itself in its headers (see [`auth`]).
pub struct Claim {
    node: String,
    time: u64,
    nonce: u64,
    signature: String,
}

impl Claim {
    /// The call's signature, which its answer is signed over.
    pub fn signature(&self) -> &str {
        &self.signature
    }
}

/// A record and the bytes that go with it in one body: the record's JSON,
/// a newline, the bytes (a message, say) as they are.
pub fn frame(record: &impl serde::Serialize, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut framed = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    framed.push(b'\n');
    framed.extend_from_slice(bytes);
    Ok(framed)
}

/// The record and bytes of a [`frame`]; `None` when it is not one.
pub fn unframe<T: serde::de::DeserializeOwned>(framed: &[u8]) -> Option<(T, &[u8])> {
    let split = framed.iter().position(|&b| b == b'\n')?;
    let record = serde_json::from_slice(&framed[..split]).ok()?;
    Some((record, &framed[split + 1..]))
}

fn names(config: &Config) -> String {
    config
        .cluster
        .as_ref()
        .map(|c| c.nodes.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}
