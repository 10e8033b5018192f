//! Handing queued mail over to peers when a node is drained (`antemx
//! drain`): each job goes, with its message and its delivery history
//! (attempts, next attempt, age), to the first peer in the message's
//! rendezvous order that stores it; only then is it removed here. A job
//! being delivered at that moment is waited for.

use super::{lock, Job, Queue};
use crate::cluster::Cluster;
use std::io;
use std::time::{Duration, Instant};

/// How long a drain waits for deliveries in progress to end.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);

/// A job on its way to a peer, as the peer API takes it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Handover(Job);

impl Queue {
    /// Hands every job over to peers; returns (moved, left). A job being
    /// delivered is tried again once that ends (up to [`IN_FLIGHT_WAIT`]);
    /// one no peer took is not tried again in this drain.
    pub async fn hand_over(&self, cluster: &Cluster) -> (usize, usize) {
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        let (mut moved, mut failed) = (0, 0);
        let mut keys: Vec<String> = self.all_jobs().map(|job| job.key()).collect();
        loop {
            let mut busy = Vec::new();
            for key in keys {
                if !lock(&self.0.in_flight).insert(key.clone()) {
                    busy.push(key);
                    continue;
                }
                let outcome = self.hand_over_job(cluster, &key).await;
                lock(&self.0.in_flight).remove(&key);
                match outcome {
                    Ok(true) => moved += 1,
                    Ok(false) => {}
                    Err(e) => {
                        log::warn!("{key}: not handed over: {e}");
                        failed += 1;
                        if let Some(job) = self.get(&key) {
                            self.schedule(&job);
                        }
                    }
                }
            }
            if busy.is_empty() || Instant::now() > deadline {
                return (moved, busy.len() + failed);
            }
            keys = busy;
            smol::Timer::after(Duration::from_millis(200)).await;
        }
    }

    /// One job to the first peer that takes it; false if it was gone.
    async fn hand_over_job(&self, cluster: &Cluster, key: &str) -> Result<bool, String> {
        let Some(job) = self.get(key) else {
            return Ok(false);
        };
        let spool = self.0.store.spool().clone();
        let id = job.message.clone();
        let message = smol::unblock(move || spool.read(&id))
            .await
            .map_err(|e| format!("cannot read the message: {e}"))?;
        let body =
            crate::cluster::frame(&Handover(job.clone()), &message).map_err(|e| e.to_string())?;
        let path = format!(
            "/peer/queue/{}/{}",
            crate::web::percent_encode(&job.message),
            crate::web::percent_encode(&job.domain)
        );
        let mut errors = Vec::new();
        for peer in cluster.ranked(&job.message) {
            if peer == cluster.me() {
                continue;
            }
            let mut answer = cluster.call(&peer, "PUT", &path, body.clone()).await;
            if answer.is_err() {
                // The job may have arrived and only the answer been lost:
                // this peer again (taking a job twice is harmless) before
                // another, which would make two nodes deliver it.
                answer = cluster.call(&peer, "PUT", &path, body.clone()).await;
            }
            match answer {
                Ok(answer) if answer.is_success() => {
                    self.forget_job(&job)
                        .await
                        .map_err(|e| format!("handed to {peer} but not removed here: {e}"))?;
                    log::info!(
                        "{}: handed over to {peer}: to=<{}>",
                        job.message,
                        job.recipients.join(">,<")
                    );
                    return Ok(true);
                }
                Ok(answer) => errors.push(format!(
                    "{peer}: {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                )),
                Err(e) => errors.push(e),
            }
        }
        Err(if errors.is_empty() {
            "no peer to hand it to".into()
        } else {
            errors.join("; ")
        })
    }

    /// Removes a job handed over; the message file goes with its last job.
    async fn forget_job(&self, job: &Job) -> io::Result<()> {
        self.0.jobs.remove(job.key()).map_err(io::Error::other)?;
        lock(&self.0.due).remove(&(job.next_attempt_ms, job.key()));
        self.0.store.flush().await?;
        if !self.holds(&job.message) {
            self.0.store.spool().remove(&job.message)?;
        }
        Ok(())
    }

    /// Takes a job a draining peer hands over: on disk when this returns.
    pub async fn take_over(&self, handover: Handover, message: &[u8]) -> io::Result<()> {
        let job = handover.0;
        let spool = self.0.store.spool().clone();
        let (id, bytes) = (job.message.clone(), message.to_vec());
        smol::unblock(move || {
            // Another job of the same message may have brought it already.
            match spool.create(&id) {
                Ok(mut file) => {
                    file.write(&bytes)?;
                    file.commit()
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await?;
        self.put(&job)?;
        self.0.store.flush().await?;
        self.schedule(&job);
        log::info!(
            "{}: taken over: from=<{}> to=<{}> attempts={}",
            job.message,
            job.sender,
            job.recipients.join(">,<"),
            job.attempts
        );
        Ok(())
    }
}
