//! Counters and histograms for `GET /metrics` (Prometheus text format).
//! Modules record events here; gauges that describe state (queue size, disk
//! use) are read from their owners when the page is rendered.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

pub const CONNECTIONS: &str = "antemx_smtp_connections_total";
pub const CONNECTIONS_REFUSED: &str = "antemx_smtp_connections_refused_total";
pub const MESSAGES: &str = "antemx_messages_received_total";
pub const REJECTIONS: &str = "antemx_smtp_rejections_total";
pub const DELIVERIES: &str = "antemx_delivery_attempts_total";
pub const ACCEPT_SECONDS: &str = "antemx_accept_duration_seconds";
pub const DELIVERY_SECONDS: &str = "antemx_delivery_duration_seconds";
pub const FILTER_SECONDS: &str = "antemx_filter_duration_seconds";
pub const PEER_CALLS: &str = "antemx_cluster_peer_calls_total";

const HELP: &[(&str, &str)] = &[
    (CONNECTIONS, "SMTP connections accepted"),
    (
        CONNECTIONS_REFUSED,
        "SMTP connections refused at connect, by reason",
    ),
    (MESSAGES, "Messages received, by verdict"),
    (REJECTIONS, "SMTP commands refused, by reason"),
    (
        DELIVERIES,
        "Delivery attempt outcomes per recipient, by destination and status",
    ),
    (
        ACCEPT_SECONDS,
        "From the final dot to the reply: storing (and later judging) a message",
    ),
    (
        FILTER_SECONDS,
        "Judging one message at the end of DATA: parsing and every check",
    ),
    (
        DELIVERY_SECONDS,
        "One delivery attempt: connect (if needed) to the final reply",
    ),
    (
        PEER_CALLS,
        "Calls to peer nodes, by peer and outcome (answered, unreachable)",
    ),
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<&'static str, Histogram>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

/// Label values as Prometheus wants them: quoted, escaped.
fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn count(name: &'static str, pairs: &[(&str, &str)]) {
    let key = (name, labels(pairs));
    with(|r| *r.counters.entry(key).or_insert(0) += 1);
}

pub fn observe(name: &'static str, seconds: f64) {
    with(|r| {
        let h = r.histograms.entry(name).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    });
}

fn help(name: &str) -> &'static str {
    HELP.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
        .unwrap_or("")
}

/// The metrics page; `gauges` are (name, help, value) read by the caller.
pub fn render(gauges: &[(&str, &str, f64)]) -> String {
    let mut out = String::new();
    with(|r| {
        let mut last = "";
        for ((name, labels), value) in &r.counters {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", help(name));
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        for (name, h) in &r.histograms {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", help(name));
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
    });
    for (name, text, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {text}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out
}
