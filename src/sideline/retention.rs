//! `[sideline] retention`: sidelined messages older than it are purged, files
//! and entries, so that disk use comes back down.

use super::{decode, Sideline};
use std::time::Duration;

impl Sideline {
    /// Purges, now and then, for as long as the node runs.
    pub(super) async fn purge_forever(&self) {
        loop {
            let retention = self.0.live.current().sideline.retention;
            // Often enough that a message is not kept much past its time,
            // rarely enough to cost nothing; tests use retentions of seconds.
            let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            smol::Timer::after(every).await;
            let purged = self.purge(crate::time::now_ms()).await;
            if purged > 0 {
                log::info!("sideline: purged {purged} messages older than the retention");
            }
        }
    }

    /// Removes every held message that arrived more than the retention
    /// before `now_ms`; returns how many.
    pub async fn purge(&self, now_ms: u64) -> usize {
        let retention_ms = self.0.live.current().sideline.retention.as_millis() as u64;
        let cutoff = now_ms.saturating_sub(retention_ms);
        self.purge_tombstones(cutoff);
        let mut purged = Vec::new();
        for item in self.0.entries.iter() {
            let Ok((key, value)) = item else { continue };
            let Some(entry) = decode(&value) else {
                continue;
            };
            if entry.released.is_some() || entry.received_ms >= cutoff {
                continue;
            }
            // Only if unchanged: a release at this moment wins.
            if let Ok(Ok(())) = self
                .0
                .entries
                .compare_and_swap(&key, Some(value), None::<&[u8]>)
            {
                purged.push(entry.id);
            }
        }
        if purged.is_empty() {
            return 0;
        }
        if let Err(e) = self.0.store.flush().await {
            log::error!("sideline: purge not flushed: {e}");
        }
        for id in &purged {
            self.remove_file(id);
            log::info!("{id}: sideline: expired");
        }
        purged.len()
    }
}
