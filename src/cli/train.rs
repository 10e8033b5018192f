//! `antemx train --spam PATH --ham PATH`: teach the Bayes classifier from
//! classified mail, offline on the node's data directory.
//!
//! `--online INDEX` runs the TREC on-line protocol in one process, for
//! `bench/accuracy.sh`: each message of the index, in order, is scored, then
//! learned with its true label, and one JSON line per message says what the
//! filter thought before it learned. 20,000 process launches would measure
//! process start-up, not the filter.

use super::scan::{message_files, open_bayes, read_message};
use crate::config::Config;
use crate::filter::checks::bayes::Class;
use crate::filter::{Content, Envelope, Lookups, Pipeline};
use argh::FromArgs;
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(FromArgs)]
/// Train the Bayes classifier on spam and ham (offline: the node must not be
/// running on the same data_dir).
#[argh(subcommand, name = "train")]
pub struct TrainArgs {
    /// spam: a message file or a directory (recursive); repeatable
    #[argh(option)]
    spam: Vec<PathBuf>,
    /// ham: a message file or a directory (recursive); repeatable
    #[argh(option)]
    ham: Vec<PathBuf>,
    /// on-line protocol: read "spam|ham PATH" lines (paths relative to the
    /// index's directory), score each message, then train it with its label;
    /// prints one JSON line per message (see BENCHMARKS.md)
    #[argh(option)]
    online: Option<PathBuf>,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
}

pub fn run(args: TrainArgs) -> i32 {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let result = match &args.online {
        Some(index) => online(&config, index),
        None if args.spam.is_empty() && args.ham.is_empty() => {
            Err("name messages to learn: --spam PATH and/or --ham PATH".into())
        }
        None => batch(&config, &args.spam, &args.ham),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("antemx train: {e}");
            1
        }
    }
}

/// Passes over the training set after the first: each reinforces only what
/// the classifier is not yet confidently right about, so later passes are
/// short; the bound keeps a set that cannot be separated from looping.
const MAX_PASSES: usize = 10;

fn batch(config: &Config, spam: &[PathBuf], ham: &[PathBuf]) -> Result<(), String> {
    // Find every file before learning anything: a typo in a path must not
    // leave half a training run behind.
    let spam = message_files(spam)?;
    let ham = message_files(ham)?;
    let Some((_store, bayes)) = open_bayes(config, true)? else {
        return Err("no database".into());
    };
    let order = interleave(&spam, &ham);
    let mut learned = [0usize; 2];
    let mut unreadable = 0;
    let mut readable = Vec::with_capacity(order.len());
    for (file, class) in order {
        match read_message(file) {
            Ok(raw) => {
                bayes.learn(&Content::parse(&raw), class);
                learned[usize::from(class == Class::Ham)] += 1;
                readable.push((file, class));
            }
            Err(e) => {
                eprintln!("antemx train: {}: {e}", file.display());
                unreadable += 1;
            }
        }
    }
    for _ in 1..MAX_PASSES {
        let mut stepped = 0;
        for &(file, class) in &readable {
            // Read again rather than held: a training set can be larger
            // than memory.
            if let Ok(raw) = read_message(file) {
                stepped += usize::from(bayes.reinforce(&Content::parse(&raw), class));
            }
        }
        if stepped == 0 {
            break;
        }
    }
    bayes
        .save()
        .map_err(|e| format!("saving the statistics: {e}"))?;
    let (spam_total, ham_total) = bayes.trained();
    println!(
        "learned {} spam and {} ham; the classifier now knows {spam_total} spam and {ham_total} ham",
        learned[0], learned[1]
    );
    if unreadable > 0 {
        return Err(format!("{unreadable} files could not be read"));
    }
    Ok(())
}

/// Spam and ham mixed evenly, each in its own order: learned one class after
/// the other, the second would undo what the first taught about the
/// features they share.
fn interleave<'a>(spam: &'a [PathBuf], ham: &'a [PathBuf]) -> Vec<(&'a PathBuf, Class)> {
    let total = spam.len() + ham.len();
    let mut order = Vec::with_capacity(total);
    let (mut s, mut h) = (0, 0);
    while s + h < total {
        // Take spam while its share so far is below its share overall.
        if h == ham.len() || (s < spam.len() && s * total <= (s + h) * spam.len()) {
            order.push((&spam[s], Class::Spam));
            s += 1;
        } else {
            order.push((&ham[h], Class::Ham));
            h += 1;
        }
    }
    order
}

#[derive(Serialize)]
struct OnlineLine<'a> {
    file: &'a str,
    label: &'a str,
    score: f64,
    verdict: &'a str,
    /// Microseconds spent parsing and judging the message (one thread).
    filter_us: f64,
    /// Each rule that fired and its score.
    rules: Vec<(&'a str, f64)>,
}

fn online(config: &Config, index: &Path) -> Result<(), String> {
    let text = std::fs::File::open(index).map_err(|e| format!("{}: {e}", index.display()))?;
    let base = index.parent().unwrap_or(Path::new("."));
    let Some((_store, bayes)) = open_bayes(config, true)? else {
        return Err("no database".into());
    };
    let pipeline = Pipeline::standard(config, Some(bayes.clone()));
    let envelope = Envelope::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (number, line) in std::io::BufReader::new(text).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", index.display()))?;
        let Some((label, path)) = line.trim().split_once(char::is_whitespace) else {
            continue;
        };
        let class = match label.to_ascii_lowercase().as_str() {
            "spam" => Class::Spam,
            "ham" => Class::Ham,
            _ => {
                return Err(format!(
                    "{}:{}: label {label:?} is neither spam nor ham",
                    index.display(),
                    number + 1
                ))
            }
        };
        let path = base.join(path.trim());
        let raw = read_message(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let started = Instant::now();
        let content = Content::parse(&raw);
        // The on-line protocol measures the content: no DNS.
        let decision = pipeline.judge(&envelope, &content, &Lookups::default());
        let filter_us = started.elapsed().as_secs_f64() * 1e6;
        bayes.learn(&content, class);
        let record = OnlineLine {
            file: &path.to_string_lossy(),
            label,
            score: decision.score(),
            verdict: decision.verdict().as_str(),
            filter_us,
            rules: decision.hits().iter().map(|h| (h.rule, h.score)).collect(),
        };
        let json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        writeln!(out, "{json}").map_err(|e| e.to_string())?;
        // Whoever feeds the index through a pipe waits for each answer.
        out.flush().map_err(|e| e.to_string())?;
    }
    bayes
        .save()
        .map_err(|e| format!("saving the statistics: {e}"))
}
