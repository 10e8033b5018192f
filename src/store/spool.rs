//! Message files. A file is written while the message streams in, synced, and
//! only then referenced from the database; files that nothing references
//! (a crash mid-DATA) are swept at start-up.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// A message file being written. Dropped without [`SpoolWriter::commit`], it
/// removes itself.
pub struct SpoolWriter {
    file: Option<io::BufWriter<File>>,
    path: PathBuf,
    written: u64,
}

impl Spool {
    pub fn open(dir: &Path) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    /// A message id names a file in this directory and nothing else (ids
    /// also arrive from peers).
    fn path(&self, id: &str) -> io::Result<PathBuf> {
        let valid = !id.is_empty()
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{id:?} is not a message id"),
            ));
        }
        Ok(self.dir.join(id))
    }

    pub fn create(&self, id: &str) -> io::Result<SpoolWriter> {
        let path = self.path(id)?;
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(SpoolWriter {
            file: Some(io::BufWriter::with_capacity(64 * 1024, file)),
            path,
            written: 0,
        })
    }

    pub fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        File::open(self.path(id)?)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The header section only (up to the first empty line), at most `limit` bytes.
    pub fn read_headers(&self, id: &str, limit: usize) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        File::open(self.path(id)?)?
            .take(limit as u64)
            .read_to_end(&mut bytes)?;
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            bytes.truncate(end + 2);
        }
        Ok(bytes)
    }

    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Removes every file for which `keep` says no; returns how many.
    pub fn sweep(&self, keep: impl Fn(&str) -> bool) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if !keep(id) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl SpoolWriter {
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.written += bytes.len() as u64;
        match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => Err(io::Error::other("spool file already committed")),
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Syncs the file and its directory entry to disk.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("spool file already committed"))?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
