//! The node's storage: one sled database for state and a spool directory of
//! message files beside it, both under `data_dir`. Each module opens its own
//! trees through [`Store::tree`] and keeps their keys private.

mod commit;
mod spool;

use commit::GroupCommit;

pub use spool::Spool;

use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    spool: Spool,
    commit: GroupCommit,
    data_dir: PathBuf,
    /// Put before every new id: a cluster node's name, so that ids are
    /// unique across the nodes that exchange messages.
    id_prefix: String,
}

impl Store {
    pub fn open(data_dir: &Path) -> io::Result<Store> {
        std::fs::create_dir_all(data_dir)?;
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            // We flush explicitly at each durability point; the background
            // flusher only adds work.
            .flush_every_ms(None)
            .open()
            .map_err(io::Error::other)?;
        let spool = Spool::open(&data_dir.join("spool"))?;
        let commit = GroupCommit::start(db.clone())?;
        Ok(Store {
            db,
            spool,
            commit,
            data_dir: data_dir.to_path_buf(),
            id_prefix: String::new(),
        })
    }

    /// New ids start with `prefix`.
    pub fn with_id_prefix(mut self, prefix: String) -> Store {
        self.id_prefix = prefix;
        self
    }

    pub fn tree(&self, name: &str) -> io::Result<sled::Tree> {
        self.db.open_tree(name).map_err(io::Error::other)
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// A new id, unique on this node across restarts (and in its cluster,
    /// with the node's prefix).
    pub fn new_id(&self) -> io::Result<String> {
        let n = self.db.generate_id().map_err(io::Error::other)?;
        Ok(format!("{}{n:012X}", self.id_prefix))
    }

    /// The durability point: returns once every write made before the call is
    /// on disk. Concurrent callers share one flush (group commit).
    pub async fn flush(&self) -> io::Result<()> {
        self.commit.flush().await
    }

    /// Bytes used under `data_dir`, database and spool.
    pub fn disk_usage(&self) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(path) else {
                return 0;
            };
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(m) if m.is_dir() => walk(&entry.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.data_dir)
    }
}
