//! The statistical classifier (`BAYES_SPAM` / `BAYES_HAM`): it learns from
//! mail the operator or the customers classified and says how likely a new
//! message is spam. The name is the one operators know from SpamAssassin; the
//! method is on-line logistic regression over hashed character 4-grams (as in
//! Goodman & Yih 2006 and the best filters of the TREC 2007 spam track),
//! because it measured best here. On the TREC 2007 on-line protocol
//! (BENCHMARKS.md) the (1-ROCA)% of the classifier alone was: Robinson's
//! chi-square combining over words, word pairs and header tokens 0.088;
//! logistic regression over those tokens 0.027; over character 4-grams 0.010
//! (bogofilter, chi-square over words: 0.024).
//!
//! Features: every 4-byte window of the header block (names, spelling,
//! relays, mailer, encodings: the fingerprints of the software that wrote the
//! message) and of the decoded text (MIME decoded, HTML turned into text),
//! each up to [`HEAD_BYTES`] / [`TEXT_BYTES`], plus the host name and
//! registered domain of every URL. A feature is its 64-bit FNV-1a hash
//! (stable across builds, unlike std's hasher) folded into a table of
//! 2^[`TABLE_BITS`] weights; collisions cost little accuracy and keep memory
//! and disk fixed (16 MiB) however much mail is learned.
//!
//! The weights live in memory for scoring and in the sled tree
//! `filter.bayes` in chunks, so that learning one message rewrites a few
//! chunks, not the table.

use crate::filter::content::{registered_domain, Content};
use crate::filter::{Check, Hit};
use crate::store::Store;
use std::collections::BTreeSet;
use std::io;
use std::sync::RwLock;

/// Messages of each class needed before the classifier says anything: with
/// fewer, a handful of features decides, and ham gets sidelined.
pub const MIN_TRAINED: u32 = 20;

const TABLE_BITS: u32 = 22;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
/// Weights per sled value: 64 KiB values, 256 of them.
const CHUNK: usize = 1 << 14;
/// Bytes of the header block and of the decoded text that are read. Spam
/// shows itself early, and the caps bound the time a message costs.
const HEAD_BYTES: usize = 3000;
const TEXT_BYTES: usize = 3000;
/// Gradient step per message. Measured on the TREC on-line protocol: 0.002
/// to 0.004 are equally good; larger steps forget too fast.
const RATE: f64 = 0.003;

/// Largest contributions, approached smoothly (see
/// [`Bayes::contribution`]), so that scores stay distinct (a ranking keeps
/// its resolution) and the classifier alone never reaches `reject_at` (15):
/// rejecting takes a second opinion.
const SPAM_MAX: f64 = 8.0;
pub const HAM_MAX: f64 = 4.0;
/// The margin (log-odds) at which the contribution is half its maximum: a
/// margin of 3.3 (probability 0.965) reaches `sideline_at` = 5 alone.
const HALF_AT: f64 = 2.0;
/// Auto-learning takes a message as ham only when the other rules say so
/// with negative evidence (allow lists, sender authentication): a message
/// that merely triggered nothing may be spam the rules missed, and learning
/// it as ham would teach the classifier to miss it too.
const AUTOLEARN_HAM_BELOW: f64 = -1.0;

/// Margin beyond which [`Bayes::reinforce`] leaves a message alone: the
/// classifier says it with probability 0.95.
const CONFIDENT: f64 = 3.0;

/// sled keys: per-class message counts, the table's format, and weight
/// chunks (`w` and the chunk number).
const TOTALS_KEY: &[u8] = b"messages";
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"lr-4gram-fnv1a-22";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Spam,
    Ham,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    spam: u32,
    ham: u32,
}

impl Totals {
    fn to_bytes(self) -> [u8; 8] {
        let mut bytes = [0; 8];
        bytes[..4].copy_from_slice(&self.spam.to_be_bytes());
        bytes[4..].copy_from_slice(&self.ham.to_be_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Totals> {
        let spam = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        let ham = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
        Some(Totals { spam, ham })
    }
}

struct Model {
    weights: Vec<f32>,
    totals: Totals,
    /// Chunks changed since the last [`Bayes::save`].
    dirty: BTreeSet<usize>,
}

impl Model {
    fn margin(&self, features: &[usize]) -> f64 {
        features.iter().map(|&i| f64::from(self.weights[i])).sum()
    }

    fn step(&mut self, features: &[usize], class: Class) {
        let target = match class {
            Class::Spam => 1.0,
            Class::Ham => 0.0,
        };
        let step = (RATE * (target - sigmoid(self.margin(features)))) as f32;
        for &i in features {
            self.weights[i] += step;
            self.dirty.insert(i / CHUNK);
        }
    }
}

/// What the classifier concluded about one message.
#[derive(Debug, Clone, Copy)]
pub struct Judgement {
    /// Spam probability.
    pub probability: f64,
    /// The log-odds behind it, which does not round to 0 or 1 however
    /// strong the evidence.
    pub margin: f64,
    /// Distinct features of the message.
    pub features: usize,
}

pub struct Bayes {
    tree: sled::Tree,
    model: RwLock<Model>,
}

impl Bayes {
    /// Opens the classifier's tree and loads its weights.
    pub fn open(store: &Store) -> io::Result<Bayes> {
        let tree = store.tree("filter.bayes")?;
        let mut model = Model {
            weights: vec![0.0; TABLE_SIZE],
            totals: Totals::default(),
            dirty: BTreeSet::new(),
        };
        match tree.get(FORMAT_KEY).map_err(io::Error::other)? {
            Some(format) if &*format != FORMAT => {
                return Err(io::Error::other(format!(
                    "the statistics were written in another format ({}); retrain from scratch",
                    String::from_utf8_lossy(&format)
                )))
            }
            _ => {}
        }
        for entry in tree.iter() {
            let (key, value) = entry.map_err(io::Error::other)?;
            if &*key == TOTALS_KEY {
                model.totals = Totals::from_bytes(&value).unwrap_or_default();
            } else if let Some(index) = chunk_index(&key) {
                let start = index * CHUNK;
                let Some(slot) = model.weights.get_mut(start..start + CHUNK) else {
                    continue;
                };
                for (weight, bytes) in slot.iter_mut().zip(value.chunks_exact(4)) {
                    *weight = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                }
            }
        }
        Ok(Bayes {
            tree,
            model: RwLock::new(model),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Model> {
        // A panic while holding the lock leaves weights that are still
        // weights: keep using them.
        self.model.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Model> {
        self.model.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages learned so far, (spam, ham).
    pub fn trained(&self) -> (u32, u32) {
        let totals = self.read().totals;
        (totals.spam, totals.ham)
    }

    /// Learns a message as spam or ham, in memory: one gradient step of the
    /// logistic loss. [`Bayes::save`] writes it.
    pub fn learn(&self, content: &Content, class: Class) {
        let features = features(content);
        let mut model = self.write();
        match class {
            Class::Spam => model.totals.spam = model.totals.spam.saturating_add(1),
            Class::Ham => model.totals.ham = model.totals.ham.saturating_add(1),
        }
        model.step(&features, class);
    }

    /// One more step on a message [`Bayes::learn`] already counted, unless
    /// the classifier is already confidently right about it. Batch training
    /// repeats passes over a small set with it: one pass of small steps
    /// learns little, and the class learned last would dominate. Returns
    /// whether it stepped.
    pub fn reinforce(&self, content: &Content, class: Class) -> bool {
        let features = features(content);
        let mut model = self.write();
        let margin = model.margin(&features);
        let confident = match class {
            Class::Spam => margin >= CONFIDENT,
            Class::Ham => margin <= -CONFIDENT,
        };
        if !confident {
            model.step(&features, class);
        }
        !confident
    }

    /// `[filter] autolearn`: learns a message the other rules judged with
    /// confidence (spam from `reject_at`, ham below [`AUTOLEARN_HAM_BELOW`]);
    /// the classifier's own opinion does not count, or it would only learn
    /// its mistakes. Returns what it learned.
    pub fn autolearn(
        &self,
        content: &Content,
        decision: &crate::filter::Decision,
    ) -> Option<Class> {
        let others: f64 = decision
            .hits()
            .iter()
            .filter(|h| !h.rule.starts_with("BAYES_"))
            .map(|h| h.score)
            .sum();
        let allowed = decision
            .hits()
            .iter()
            .any(|h| h.force == Some(crate::filter::Force::Allow));
        let class = if others >= decision.thresholds().reject_at() {
            Class::Spam
        } else if others < AUTOLEARN_HAM_BELOW && !allowed {
            Class::Ham
        } else {
            return None;
        };
        self.learn(content, class);
        Some(class)
    }

    /// Whether something was learned since the last save.
    pub fn unsaved(&self) -> bool {
        !self.read().dirty.is_empty()
    }

    /// Writes what was learned since the last save, and flushes it to disk.
    pub fn save(&self) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        {
            let mut model = self.write();
            for index in std::mem::take(&mut model.dirty) {
                let start = index * CHUNK;
                let bytes: Vec<u8> = model.weights[start..start + CHUNK]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                batch.insert(chunk_key(index).to_vec(), bytes);
            }
            batch.insert(TOTALS_KEY, &model.totals.to_bytes()[..]);
            batch.insert(FORMAT_KEY, FORMAT);
        }
        self.tree.apply_batch(batch).map_err(io::Error::other)?;
        self.tree.flush().map_err(io::Error::other)?;
        Ok(())
    }

    /// The classifier's view of a message; `None` until it has learned
    /// [`MIN_TRAINED`] messages of each class.
    pub fn judge(&self, content: &Content) -> Option<Judgement> {
        let (spam, ham) = self.trained();
        if spam < MIN_TRAINED || ham < MIN_TRAINED {
            return None;
        }
        let features = features(content);
        let model = self.read();
        let margin = model.margin(&features);
        Some(Judgement {
            probability: sigmoid(margin),
            margin,
            features: features.len(),
        })
    }

    /// Score contribution of a judgement: smooth and strictly increasing in
    /// the margin, so that more evidence always means a higher score and two
    /// messages rarely tie.
    pub fn contribution(judgement: &Judgement) -> f64 {
        let m = judgement.margin;
        if m >= 0.0 {
            SPAM_MAX * m / (m + HALF_AT)
        } else {
            HAM_MAX * m / (-m + HALF_AT)
        }
    }
}

impl Check for Bayes {
    fn data(&self, content: &Content) -> Vec<Hit> {
        let Some(judgement) = self.judge(content) else {
            return Vec::new();
        };
        let score = Bayes::contribution(&judgement);
        let rule = if score >= 0.0 {
            "BAYES_SPAM"
        } else {
            "BAYES_HAM"
        };
        vec![Hit::new(
            rule,
            score,
            format!(
                "spam probability {:.4} (log-odds {:.2}, {} features)",
                judgement.probability, judgement.margin, judgement.features
            ),
        )]
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn chunk_key(index: usize) -> [u8; 5] {
    let mut key = [b'w', 0, 0, 0, 0];
    key[1..].copy_from_slice(&(index as u32).to_be_bytes());
    key
}

fn chunk_index(key: &[u8]) -> Option<usize> {
    match key {
        [b'w', rest @ ..] => Some(u32::from_be_bytes(rest.try_into().ok()?) as usize),
        _ => None,
    }
}

/// 64-bit FNV-1a of a namespace byte and some bytes.
fn hash(namespace: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&namespace).chain(bytes) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The message's distinct features, as table indexes.
fn features(content: &Content) -> Vec<usize> {
    let raw = content.raw();
    let head_end = memchr::memmem::find(raw, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(raw, b"\n\n"))
        .unwrap_or(raw.len());
    let head = &raw[..head_end.min(HEAD_BYTES)];
    let text = content.text().as_bytes();
    let text = &text[..text.len().min(TEXT_BYTES)];
    let mut hashes: Vec<u64> = Vec::with_capacity(head.len() + text.len() + 16);
    // A namespace byte keeps "free" in a header apart from "free" in the
    // text: the same word is different evidence in each.
    hashes.extend(head.windows(4).map(|w| hash(b'h', w)));
    hashes.extend(text.windows(4).map(|w| hash(b't', w)));
    for host in content.url_hosts() {
        hashes.push(hash(b'u', host.as_bytes()));
        hashes.push(hash(b'd', registered_domain(host).as_bytes()));
    }
    let mut features: Vec<usize> = hashes
        .into_iter()
        .map(|h| (h >> (64 - TABLE_BITS)) as usize)
        .collect();
    features.sort_unstable();
    features.dedup();
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "antemx-bayes-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        (Store::open(&dir).unwrap(), dir)
    }

    fn spam(i: usize) -> String {
        format!("From: deals{i}@shop.example\r\nSubject: Cheap pills {i} now\r\n\r\nBuy cheap viagra pills online, best price {i}! Click http://pills{}.example/buy now.\r\n", i % 3)
    }

    fn ham(i: usize) -> String {
        format!("From: Alice <alice@work.example>\r\nSubject: Meeting notes {i}\r\nMessage-ID: <{i}@work.example>\r\n\r\nHi Bob, attached are the notes from the project meeting {i}; the build passes and the release is on track.\r\n")
    }

    #[test]
    fn learns_separates_and_persists() {
        let (store, dir) = store();
        let bayes = Bayes::open(&store).unwrap();
        assert!(bayes.judge(&Content::parse(spam(0).as_bytes())).is_none());
        for _ in 0..3 {
            for i in 0..30 {
                bayes.learn(&Content::parse(spam(i).as_bytes()), Class::Spam);
                bayes.learn(&Content::parse(ham(i).as_bytes()), Class::Ham);
            }
        }
        let s = bayes.judge(&Content::parse(spam(99).as_bytes())).unwrap();
        let h = bayes.judge(&Content::parse(ham(99).as_bytes())).unwrap();
        assert!(s.probability > 0.9, "{s:?}");
        assert!(h.probability < 0.1, "{h:?}");
        assert!(Bayes::contribution(&s) > 0.0 && Bayes::contribution(&s) < SPAM_MAX);
        assert!(Bayes::contribution(&h) < 0.0 && Bayes::contribution(&h) > -HAM_MAX);
        let hits = bayes.data(&Content::parse(spam(98).as_bytes()));
        assert_eq!(hits[0].rule, "BAYES_SPAM");

        // What was learned survives a restart once saved.
        bayes.save().unwrap();
        drop(bayes);
        let again = Bayes::open(&store).unwrap();
        assert_eq!(again.trained(), (90, 90));
        let s2 = again.judge(&Content::parse(spam(99).as_bytes())).unwrap();
        assert_eq!(s2.margin, s.margin);
        drop(again);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn contribution_is_monotonic_and_bounded() {
        let at = |margin| {
            Bayes::contribution(&Judgement {
                probability: sigmoid(margin),
                margin,
                features: 1,
            })
        };
        let mut previous = f64::NEG_INFINITY;
        for m in [-1e6, -50.0, -3.0, -0.1, 0.0, 0.1, 3.0, 50.0, 1e6] {
            let c = at(m);
            assert!(c > previous, "{m}: {c}");
            assert!(c > -HAM_MAX && c < SPAM_MAX);
            previous = c;
        }
        // A probability of about 0.97 is where the classifier alone
        // sidelines.
        assert!(at(3.2) < 5.0 && at(3.4) >= 5.0);
    }

    #[test]
    fn header_and_text_features_differ() {
        let a = features(&Content::parse(b"Subject: free\r\n\r\nhello\r\n"));
        let b = features(&Content::parse(b"Subject: hello\r\n\r\nfree\r\n"));
        assert_ne!(a, b);
        let fold = |h: u64| (h >> (64 - TABLE_BITS)) as usize;
        assert!(a.contains(&fold(hash(b'h', b"free"))));
        assert!(b.contains(&fold(hash(b't', b"free"))));
        assert!(!b.contains(&fold(hash(b'h', b"free"))));
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(chunk_index(&chunk_key(255)), Some(255));
        assert_eq!(chunk_index(TOTALS_KEY), None);
        assert_eq!(chunk_index(FORMAT_KEY), None);
    }
}
