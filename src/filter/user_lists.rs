//! Each recipient's own allow and block lists of senders, kept in the store
//! (sled tree `filter.user_lists`, one entry per recipient address) so that
//! they can change while the node runs: `antemx lists`, and the customers'
//! portal later.

use super::checks::sender_lists::SenderPattern;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io;

/// One recipient's lists, as given (each entry a valid [`SenderPattern`]).
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct Lists {
    pub allow: Vec<String>,
    pub block: Vec<String>,
}

impl Lists {
    /// Whether `sender` is on the list of that kind.
    pub fn has(&self, kind: Kind, sender: &str) -> bool {
        let entries = match kind {
            Kind::Allow => &self.allow,
            Kind::Block => &self.block,
        };
        entries
            .iter()
            .filter_map(|e| SenderPattern::parse(e).ok())
            .any(|p| p.matches(sender))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Allow,
    Block,
}

#[derive(Clone)]
pub struct UserLists {
    tree: sled::Tree,
}

fn key(recipient: &str) -> String {
    match recipient.rsplit_once('@') {
        Some((local, domain)) => format!(
            "{}@{}",
            local.to_ascii_lowercase(),
            crate::config::normalize_domain(domain)
        ),
        None => recipient.to_ascii_lowercase(),
    }
}

impl UserLists {
    pub fn open(store: &Store) -> io::Result<UserLists> {
        Ok(UserLists {
            tree: store.tree("filter.user_lists")?,
        })
    }

    /// A recipient's lists (empty when it has none).
    pub fn get(&self, recipient: &str) -> Lists {
        self.tree
            .get(key(recipient))
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default()
    }

    /// Puts `pattern` on a recipient's list (off the other one); the
    /// caller makes it durable with a store flush.
    pub fn add(&self, recipient: &str, kind: Kind, pattern: &str) -> Result<Lists, String> {
        SenderPattern::parse(pattern)?;
        let pattern = pattern.trim().to_ascii_lowercase();
        self.update(recipient, |lists| {
            lists.allow.retain(|e| *e != pattern);
            lists.block.retain(|e| *e != pattern);
            match kind {
                Kind::Allow => lists.allow.push(pattern.clone()),
                Kind::Block => lists.block.push(pattern.clone()),
            }
        })
    }

    /// Takes `pattern` off both of a recipient's lists.
    pub fn remove(&self, recipient: &str, pattern: &str) -> Result<Lists, String> {
        let pattern = pattern.trim().to_ascii_lowercase();
        self.update(recipient, |lists| {
            lists.allow.retain(|e| *e != pattern);
            lists.block.retain(|e| *e != pattern);
        })
    }

    fn update(&self, recipient: &str, change: impl Fn(&mut Lists)) -> Result<Lists, String> {
        let mut result = Lists::default();
        self.tree
            .update_and_fetch(key(recipient), |old| {
                let mut lists: Lists = old
                    .and_then(|v| serde_json::from_slice(v).ok())
                    .unwrap_or_default();
                change(&mut lists);
                result = lists.clone();
                if lists == Lists::default() {
                    None
                } else {
                    serde_json::to_vec(&lists).ok()
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(result)
    }
}
