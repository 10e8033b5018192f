//! The filter's verdict at the end of DATA, before the final reply: so that
//! junk is refused during the session and nothing bounces to a forged
//! sender.

use super::Receiver;
use crate::config::Config;
use crate::filter::lookups::gather;
use crate::filter::{Content, Decision, Envelope, Lookups, Pipeline};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Bytes of a message the filter reads. Larger messages are judged on this
/// much (headers, text and the first attachments): spam is small, and the
/// whole of a 25 MB message is never held in memory.
pub const FILTER_BYTES: usize = 2 * 1024 * 1024;

/// A verdict and what the message's headers say, for the log and the
/// sideline.
pub struct Judged {
    pub decision: Decision,
    pub from: String,
    pub subject: String,
    pub date: String,
    /// SPF, DKIM, ARC and DMARC, for `Authentication-Results:`.
    pub auth: Option<crate::filter::checks::auth::Authentication>,
}

impl Receiver {
    /// Judges a received message (its first [`FILTER_BYTES`]). Parsing and
    /// the checks run on the session's own thread: they take tens of
    /// microseconds for common mail, less than handing the message to a
    /// blocking thread and back costs (measured: BENCHMARKS.md); the DNS
    /// lookups in between are awaited like any other I/O.
    pub(super) async fn judge(&self, envelope: Envelope, message: Vec<u8>) -> Judged {
        let (config, pipeline) = self.pipeline();
        let started = std::time::Instant::now();
        // The parser reads what any sender wrote; should it panic, the
        // message is judged on its envelope alone rather than lost.
        let judged = match catch_unwind(AssertUnwindSafe(|| Content::parse(&message))) {
            Ok(content) => {
                let lookups = gather(&config, &envelope, &content).await;
                catch_unwind(AssertUnwindSafe(|| {
                    self.decide(&config, &pipeline, &envelope, &content, &lookups)
                }))
                .ok()
            }
            Err(_) => None,
        };
        let judged = judged.unwrap_or_else(|| {
            log::error!("filter: the message could not be parsed; judged on its envelope only");
            Judged {
                decision: pipeline.judge(&envelope, &Content::parse(b""), &Lookups::default()),
                from: String::new(),
                subject: String::new(),
                date: String::new(),
                auth: None,
            }
        });
        crate::metrics::observe(
            crate::metrics::FILTER_SECONDS,
            started.elapsed().as_secs_f64(),
        );
        judged
    }

    fn decide(
        &self,
        config: &Config,
        pipeline: &Pipeline,
        envelope: &Envelope,
        content: &Content,
        lookups: &Lookups,
    ) -> Judged {
        let header = |name| {
            content
                .header_raw(name)
                .unwrap_or("")
                .trim()
                .chars()
                .take(300)
                .collect()
        };
        let decision = pipeline.judge(envelope, content, lookups);
        if config.filter.autolearn {
            if let Some(class) = self.bayes.autolearn(content, &decision) {
                log::debug!("filter: auto-learned as {class:?}");
            }
        }
        Judged {
            decision,
            from: header("From"),
            subject: header("Subject"),
            date: header("Date"),
            auth: lookups.auth.clone(),
        }
    }

    /// The current config and its checks, rebuilt when a reload changed it.
    fn pipeline(&self) -> (Arc<Config>, Arc<Pipeline>) {
        let config = self.live.current();
        let mut cached = self.pipeline.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((built_for, pipeline)) if Arc::ptr_eq(built_for, &config) => {
                (config, pipeline.clone())
            }
            _ => {
                let pipeline = Arc::new(
                    Pipeline::standard(&config, Some(self.bayes.clone()))
                        .with_user_lists(self.user_lists.clone()),
                );
                *cached = Some((config.clone(), pipeline.clone()));
                (config, pipeline)
            }
        }
    }
}

/// The one log line's rule list: `NAME=score,...`.
pub fn rules_for_log(decision: &Decision) -> String {
    let rules: Vec<String> = decision
        .hits()
        .iter()
        .map(|h| format!("{}={:.1}", h.rule, h.score))
        .collect();
    if rules.is_empty() {
        "none".into()
    } else {
        rules.join(",")
    }
}
