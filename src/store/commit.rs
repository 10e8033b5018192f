//! Group commit. Every caller of [`GroupCommit::flush`] waits for one sled
//! flush that starts after its call; one thread runs those flushes back to
//! back, so however many sessions wait, the disk sees one fsync per round.
//!
//! sled 0.34's own `flush_async` runs each flush on sled's small thread
//! pool; when many sessions flush at once the pool fills with flushes that
//! wait for a log write that needs a pool thread too, and everything stops.

use std::io;
use std::sync::mpsc;

type Waiter = async_channel::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::Sender<Waiter>,
}

impl GroupCommit {
    pub fn start(db: sled::Db) -> io::Result<GroupCommit> {
        let (requests, incoming) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                while let Ok(first) = incoming.recv() {
                    let mut round = vec![first];
                    round.extend(incoming.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for waiter in round {
                        let _ = waiter.try_send(result.clone());
                    }
                }
            })?;
        Ok(GroupCommit { requests })
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (waiter, done) = async_channel::bounded(1);
        self.requests
            .send(waiter)
            .map_err(|_| io::Error::other("group commit thread has stopped"))?;
        match done.recv().await {
            Ok(result) => result.map_err(io::Error::other),
            Err(_) => Err(io::Error::other("group commit thread has stopped")),
        }
    }
}
