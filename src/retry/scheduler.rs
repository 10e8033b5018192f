//! Takes due jobs off the index and hands them to per-destination workers;
//! records each attempt's outcome: done, deferred with backoff, or bounced.

use super::backoff::retry_delay;
use super::deliver::{self, Connection, Outcome, Target};
use super::dsn::{status_of, Failure, Report};
use super::{lock, Incoming, Job, Queue};
use crate::config::{Config, DownstreamTls, HostPort};
use crate::dns::{DnsError, Resolver};
use crate::time::now_ms;
use smol::future::FutureExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle workers close their connection after this long without work.
const IDLE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    /// A customer domain: its configured `deliver_to`.
    Relay { hop: HostPort, tls: DownstreamTls },
    /// Anything else (bounces to senders): the domain's MX hosts.
    Mx { domain: String },
}

impl Route {
    fn of(config: &Config, domain: &str) -> Route {
        match config.domain(domain) {
            Some(d) => Route::Relay {
                hop: d.deliver_to.clone(),
                tls: d.tls,
            },
            None => Route::Mx {
                domain: domain.to_string(),
            },
        }
    }

    fn key(&self) -> String {
        match self {
            Route::Relay { hop, .. } => hop.to_string(),
            Route::Mx { domain } => format!("mx:{domain}"),
        }
    }
}

pub struct Destination {
    route: Route,
    sender: async_channel::Sender<Job>,
    receiver: async_channel::Receiver<Job>,
    state: Mutex<DestinationState>,
}

#[derive(Default)]
struct DestinationState {
    workers: usize,
    /// Workers waiting for a job: a new job needs a new worker only when none is.
    idle: usize,
    /// The last attempt failed temporarily for every recipient: when one
    /// succeeds again, the destination's waiting mail goes out at once.
    deferred: bool,
}

pub async fn run(queue: &Queue) {
    loop {
        let next_due = dispatch_due(queue);
        let wait = next_due
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        let woken = async {
            let _ = queue.0.woken.recv().await;
        };
        let timer = async {
            smol::Timer::after(wait).await;
        };
        woken.or(timer).await;
    }
}

/// Dispatches every due job; returns when the next one falls due.
fn dispatch_due(queue: &Queue) -> Option<u64> {
    let now = now_ms();
    loop {
        let (at, key) = {
            let mut due = lock(&queue.0.due);
            let first = due.first()?.clone();
            if first.0 > now {
                return Some(first.0);
            }
            due.pop_first()?
        };
        if !lock(&queue.0.in_flight).insert(key.clone()) {
            continue;
        }
        match queue.get(&key) {
            Some(job) if job.next_attempt_ms == at => hand_to_worker(queue, job),
            _ => {
                lock(&queue.0.in_flight).remove(&key);
            }
        }
    }
}

fn hand_to_worker(queue: &Queue, job: Job) {
    let config = queue.0.live.current();
    let route = Route::of(&config, &job.domain);
    let destination = {
        let mut destinations = lock(&queue.0.destinations);
        destinations
            .entry(route.key())
            .or_insert_with(|| {
                let (sender, receiver) = async_channel::unbounded();
                Arc::new(Destination {
                    route: route.clone(),
                    sender,
                    receiver,
                    state: Mutex::new(DestinationState::default()),
                })
            })
            .clone()
    };
    let mut state = lock(&destination.state);
    if destination.sender.try_send(job).is_err() {
        return;
    }
    if state.idle == 0 && state.workers < config.retry.max_connections {
        state.workers += 1;
        let queue = queue.clone();
        let destination = destination.clone();
        smol::spawn(async move { worker(queue, destination).await }).detach();
    }
}

async fn worker(queue: Queue, destination: Arc<Destination>) {
    let mut connection: Option<Connection> = None;
    loop {
        lock(&destination.state).idle += 1;
        let next = async { destination.receiver.recv().await.ok() };
        let idle = async {
            smol::Timer::after(IDLE).await;
            None
        };
        let job = next.or(idle).await;
        let stop = {
            let mut state = lock(&destination.state);
            state.idle -= 1;
            // Exit only when nothing was queued meanwhile; the dispatcher
            // pushes under the same lock, so no job is left without a worker.
            let stop = job.is_none() && destination.receiver.is_empty();
            if stop {
                state.workers -= 1;
            }
            stop
        };
        if stop {
            break;
        }
        if let Some(job) = job {
            connection = attempt(&queue, &destination, job, connection).await;
        }
    }
    if let Some(connection) = connection {
        smol::unblock(move || connection.quit()).await;
    }
}

/// Delivers one job; returns the connection when it can carry another message.
async fn attempt(
    queue: &Queue,
    destination: &Destination,
    job: Job,
    connection: Option<Connection>,
) -> Option<Connection> {
    let config = queue.0.live.current();
    let spool = queue.0.store.spool().clone();
    let id = job.message.clone();
    let headers = job.headers.clone();
    let read = move || {
        spool
            .read(&id)
            .map(|body| crate::filter::stamp::stamp(&headers, &body))
    };
    let body = match smol::unblock(read).await {
        Ok(body) => body,
        Err(e) => {
            log::error!(
                "{}: message file unreadable ({e}); delivery deferred",
                job.message
            );
            let outcomes = job
                .recipients
                .iter()
                .map(|r| (r.clone(), Outcome::Temporary(format!("local error: {e}"))))
                .collect();
            finish(queue, destination, job, outcomes, "none").await;
            return connection;
        }
    };

    let started = std::time::Instant::now();
    let reused = connection.filter(|c| !c.has_broken());
    let was_reused = reused.is_some();
    let mut connection = match reused {
        Some(c) => c,
        None => match open(&config, &destination.route).await {
            Ok(c) => c,
            Err(outcome) => {
                let outcomes = job
                    .recipients
                    .iter()
                    .map(|r| (r.clone(), outcome.clone()))
                    .collect();
                finish(queue, destination, job, outcomes, "none").await;
                return None;
            }
        },
    };
    let (sender, recipients) = (job.sender.clone(), job.recipients.clone());
    let body = Arc::new(body);
    let message = body.clone();
    let (mut outcomes, mut reusable);
    (connection, outcomes, reusable) = smol::unblock(move || {
        let (outcomes, reusable) = connection.send(&sender, &recipients, &message);
        (connection, outcomes, reusable)
    })
    .await;
    // A reused connection may have been closed by the server while idle:
    // that is no reason to defer the message, so try once on a new one.
    let untouched = outcomes
        .iter()
        .all(|(_, o)| matches!(o, Outcome::Temporary(_)));
    if was_reused && !reusable && untouched {
        if let Ok(fresh) = open(&config, &destination.route).await {
            let (sender, recipients) = (job.sender.clone(), job.recipients.clone());
            let mut fresh = fresh;
            (connection, outcomes, reusable) = smol::unblock(move || {
                let (outcomes, reusable) = fresh.send(&sender, &recipients, &body);
                (fresh, outcomes, reusable)
            })
            .await;
        }
    }
    crate::metrics::observe(
        crate::metrics::DELIVERY_SECONDS,
        started.elapsed().as_secs_f64(),
    );
    let relay = connection.peer.to_string();
    finish(queue, destination, job, outcomes, &relay).await;
    reusable.then_some(connection)
}

/// Resolves the route and connects.
async fn open(config: &Config, route: &Route) -> Result<Connection, Outcome> {
    let resolver = Resolver::new(&config.dns.servers, config.dns.timeout);
    let dns_outcome = |host: &str, e: DnsError| match e {
        DnsError::NoSuchDomain => {
            Outcome::Permanent(format!("550 5.1.2 Host or domain name not found: {host}"))
        }
        DnsError::Temporary(why) => Outcome::Temporary(format!("451 4.4.3 {host}: {why}")),
    };
    let (hosts, port, tls) = match route {
        Route::Relay { hop, tls } => (vec![hop.host.clone()], hop.port, *tls),
        Route::Mx { domain } => {
            let hosts = resolver
                .mx(domain)
                .await
                .map_err(|e| dns_outcome(domain, e))?;
            if hosts.is_empty() {
                return Err(Outcome::Permanent(format!(
                    "556 5.1.10 {domain} accepts no mail (null MX)"
                )));
            }
            (hosts, config.retry.mx_port, DownstreamTls::Opportunistic)
        }
    };
    let mut last = Outcome::Temporary("no address".into());
    for host in hosts {
        let addresses: Vec<SocketAddr> = match resolver.addresses(&host).await {
            Ok(ips) => ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            Err(e) => {
                last = dns_outcome(&host, e);
                continue;
            }
        };
        let helo = config.node.hostname.clone();
        let (connect_timeout, command_timeout) =
            (config.retry.connect_timeout, config.retry.command_timeout);
        let result = smol::unblock(move || {
            deliver::connect(&Target {
                addresses: &addresses,
                server_name: &host,
                tls,
                helo: &helo,
                connect_timeout,
                command_timeout,
            })
        })
        .await;
        match result {
            Ok(connection) => return Ok(connection),
            Err(e) => last = Outcome::Temporary(format!("connect: {e}")),
        }
    }
    Err(last)
}

/// Records an attempt: delivered recipients are done, permanent failures and
/// expired ones are reported to the sender, the rest wait for the next try.
async fn finish(
    queue: &Queue,
    destination: &Destination,
    mut job: Job,
    outcomes: Vec<(String, Outcome)>,
    relay: &str,
) {
    let config = queue.0.live.current();
    let now = now_ms();
    let expires = queue.expiry_ms(&job);
    let delay = (now.saturating_sub(job.received_ms)) as f64 / 1000.0;
    let attempts = job.attempts + 1;
    let mut pending = Vec::new();
    let mut failures = Vec::new();
    let mut any_sent = false;
    let mut last_error = None;
    for (recipient, outcome) in outcomes {
        let (status, reply) = match &outcome {
            Outcome::Sent(reply) => {
                any_sent = true;
                ("sent", reply.clone())
            }
            Outcome::Permanent(reply) => {
                failures.push(Failure {
                    recipient: recipient.clone(),
                    status: status_of(reply, true),
                    diagnostic: reply.clone(),
                });
                ("bounced", reply.clone())
            }
            Outcome::Temporary(reply) if now >= expires => {
                failures.push(Failure {
                    recipient: recipient.clone(),
                    status: "4.4.7".into(),
                    diagnostic: format!("delivery time expired; last error: {reply}"),
                });
                ("expired", reply.clone())
            }
            Outcome::Temporary(reply) => {
                pending.push(recipient.clone());
                last_error = Some(reply.clone());
                ("deferred", reply.clone())
            }
        };
        log::info!(
            "{}: to=<{recipient}> relay={relay} delay={delay:.1}s attempts={attempts} status={status} ({reply})",
            job.message
        );
        crate::metrics::count(
            crate::metrics::DELIVERIES,
            &[
                ("destination", &destination.route.key()),
                ("status", status),
            ],
        );
    }

    if !failures.is_empty() && !job.sender.is_empty() {
        if let Err(e) = notify_sender(queue, &config, &job, &failures, now).await {
            log::error!(
                "{}: cannot queue the delivery status notification: {e}",
                job.message
            );
        }
    }

    let key = job.key();
    let still_queued = matches!(queue.0.jobs.contains_key(&key), Ok(true));
    let stored = if pending.is_empty() || !still_queued {
        queue
            .0
            .jobs
            .remove(&key)
            .map(|_| ())
            .map_err(std::io::Error::other)
    } else {
        let age = Duration::from_millis(now.saturating_sub(job.received_ms));
        let wait = retry_delay(age, config.retry.min_interval, config.retry.max_interval);
        job.recipients = pending.clone();
        job.attempts = attempts;
        job.last_error = last_error;
        job.next_attempt_ms = (now + wait.as_millis() as u64).min(expires.max(now));
        queue.put(&job)
    };
    if let Err(e) = stored.and(queue.0.store.flush().await) {
        log::error!("{}: cannot record the delivery attempt: {e}", job.message);
    }
    lock(&queue.0.in_flight).remove(&key);
    if pending.is_empty() || !still_queued {
        if !queue.holds(&job.message) {
            if let Err(e) = queue.0.store.spool().remove(&job.message) {
                log::error!("{}: cannot remove message file: {e}", job.message);
            }
            log::info!("{}: removed", job.message);
        }
    } else {
        queue.schedule(&job);
    }

    let recovered = {
        let mut state = lock(&destination.state);
        let was_deferred = state.deferred;
        state.deferred = !any_sent && !pending.is_empty();
        was_deferred && any_sent
    };
    if recovered {
        release_waiting(queue, &destination.route, &config);
    }
}

/// The destination answers again: its deferred mail goes now, not at each
/// message's next slot. Runs rarely (once per recovery), so a scan is fine.
fn release_waiting(queue: &Queue, route: &Route, config: &Config) {
    let now = now_ms();
    let waiting: Vec<Job> = queue
        .all_jobs()
        .filter(|job| job.next_attempt_ms > now && Route::of(config, &job.domain) == *route)
        .collect();
    let count = queue.make_due(waiting);
    if count > 0 {
        log::info!(
            "{}: accepting mail again; {count} waiting messages released",
            route.key()
        );
    }
}

async fn notify_sender(
    queue: &Queue,
    config: &Config,
    job: &Job,
    failures: &[Failure],
    now: u64,
) -> std::io::Result<()> {
    let spool = queue.0.store.spool().clone();
    let original = job.message.clone();
    let headers = smol::unblock(move || spool.read_headers(&original, 256 * 1024))
        .await
        .unwrap_or_default();
    let report = Report {
        hostname: &config.node.hostname,
        queue_id: &job.message,
        original_sender: &job.sender,
        arrival_ms: job.received_ms,
        now_ms: now,
        failures,
        original_headers: &headers,
    }
    .render();
    let id = queue.0.store.new_id()?;
    let mut writer = queue.0.store.spool().create(&id)?;
    writer.write(&report)?;
    let size = writer.written();
    smol::unblock(move || writer.commit()).await?;
    queue
        .enqueue(Incoming {
            id: id.clone(),
            sender: String::new(),
            recipients: vec![job.sender.clone()],
            received_ms: now,
            client: "127.0.0.1".into(),
            size,
            headers: String::new(),
        })
        .await?;
    log::info!(
        "{}: sender non-delivery notification: {id} to=<{}>",
        job.message,
        job.sender
    );
    Ok(())
}
