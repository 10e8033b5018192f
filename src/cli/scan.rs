//! `antemx scan PATH...`: judge message files the way the node would at the
//! end of DATA, and say why. Works offline on the node's data directory (its
//! Bayes statistics), so the node must not be running on it.

use crate::config::Config;
use crate::filter::checks::bayes::Bayes;
use crate::filter::{Content, Decision, Envelope, Pipeline};
use crate::store::Store;
use argh::FromArgs;
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(FromArgs)]
/// Score message files and show the rules that fired (offline: the node must
/// not be running on the same data_dir).
#[argh(subcommand, name = "scan")]
pub struct ScanArgs {
    /// message files or directories (searched recursively)
    #[argh(positional)]
    paths: Vec<PathBuf>,
    /// config file (default /etc/antemx/antemx.toml)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
    /// print one JSON object per message, one per line
    #[argh(switch)]
    json: bool,
    /// judge as if sent from this client address
    #[argh(option)]
    client: Option<IpAddr>,
    /// judge as if the client said this at HELO
    #[argh(option)]
    helo: Option<String>,
    /// judge as if this was the envelope sender (MAIL FROM)
    #[argh(option)]
    mail_from: Option<String>,
    /// judge as if sent to this recipient (RCPT TO); repeatable
    #[argh(option)]
    rcpt: Vec<String>,
}

#[derive(Serialize)]
struct Rule<'a> {
    name: &'a str,
    score: f64,
    reason: &'a str,
}

#[derive(Serialize)]
struct Report<'a> {
    file: String,
    score: f64,
    verdict: &'a str,
    rules: Vec<Rule<'a>>,
}

pub fn run(args: ScanArgs) -> i32 {
    if args.paths.is_empty() {
        eprintln!("antemx scan: name at least one message file or directory");
        return 2;
    }
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let bayes = match open_bayes(&config, false) {
        Ok(bayes) => bayes,
        Err(e) => {
            eprintln!("antemx scan: {e}");
            return 1;
        }
    };
    if bayes.is_none() && !args.json {
        println!(
            "(no database in {}: the Bayes classifier is not trained and takes no part)",
            config.node.data_dir.display()
        );
    }
    let pipeline = match bayes {
        Some((store, bayes)) => {
            let pipeline = Pipeline::standard(&config, Some(bayes));
            match crate::filter::user_lists::UserLists::open(&store) {
                Ok(lists) => pipeline.with_user_lists(lists),
                Err(e) => {
                    eprintln!("antemx scan: recipients' sender lists: {e}");
                    return 1;
                }
            }
        }
        None => Pipeline::standard(&config, None),
    };
    let envelope = Envelope {
        client: args.client,
        helo: args.helo,
        sender: args.mail_from.filter(|s| !s.is_empty() && s != "<>"),
        recipients: args.rcpt,
        pregreet: false,
    };
    let files = match message_files(&args.paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("antemx scan: {e}");
            return 1;
        }
    };
    let mut status = 0;
    for file in files {
        let raw = match read_message(&file) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("antemx scan: {}: {e}", file.display());
                status = 1;
                continue;
            }
        };
        let content = Content::parse(&raw);
        let lookups = smol::block_on(crate::filter::lookups::gather(&config, &envelope, &content));
        let decision = pipeline.judge(&envelope, &content, &lookups);
        if args.json {
            println!("{}", report_json(&file, &decision));
        } else {
            print!("{}", report_text(&file, &decision));
        }
    }
    status
}

fn report_json(file: &Path, decision: &Decision) -> String {
    let report = Report {
        file: file.display().to_string(),
        score: decision.score(),
        verdict: decision.verdict().as_str(),
        rules: decision
            .hits()
            .iter()
            .map(|h| Rule {
                name: h.rule,
                score: h.score,
                reason: &h.reason,
            })
            .collect(),
    };
    serde_json::to_string(&report).unwrap_or_default()
}

fn report_text(file: &Path, decision: &Decision) -> String {
    let mut text = format!(
        "{}: {} (score {:.2})\n",
        file.display(),
        decision.verdict().as_str(),
        decision.score()
    );
    if decision.hits().is_empty() {
        text.push_str("  no rule fired\n");
    }
    for hit in decision.hits() {
        text.push_str(&format!(
            "  {:<22} {:>+8.2}  {}\n",
            hit.rule, hit.score, hit.reason
        ));
    }
    text
}

/// Opens the node's store and its classifier, for the offline commands.
/// `create`: make the data directory when missing (training), instead of
/// answering `None` (scanning: an untrained node judges without Bayes).
pub fn open_bayes(config: &Config, create: bool) -> Result<Option<(Store, Arc<Bayes>)>, String> {
    let data_dir = &config.node.data_dir;
    if !create && !data_dir.join("db").exists() {
        return Ok(None);
    }
    let store = Store::open(data_dir).map_err(|e| {
        // sled locks the database of a running node; the message must say
        // what to do rather than only that the lock is taken.
        let locked = e.kind() == std::io::ErrorKind::WouldBlock
            || e.to_string().to_ascii_lowercase().contains("lock");
        if locked {
            format!(
                "cannot open {}: the database is locked, most likely by a running antemx node; stop the node, or use the running node's API (not available yet) ({e})",
                data_dir.display()
            )
        } else {
            format!("cannot open {}: {e}", data_dir.display())
        }
    })?;
    let bayes = Bayes::open(&store)
        .map_err(|e| format!("{}: Bayes statistics: {e}", data_dir.display()))?;
    Ok(Some((store, Arc::new(bayes))))
}

/// Every file under the given paths, directories searched recursively,
/// each directory's entries in name order so that runs are repeatable.
/// Hidden files (`.`) are skipped: editors and tools leave them beside mail.
pub fn message_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, files)?;
        } else {
            files.push(entry);
        }
    }
    Ok(())
}

/// A message file's bytes, without the mbox `From ` line many saved messages
/// start with: no SMTP client sends it, and it would be judged as a header.
pub fn read_message(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut raw = std::fs::read(path)?;
    if raw.starts_with(b"From ") {
        let end = memchr::memchr(b'\n', &raw).map_or(raw.len(), |e| e + 1);
        raw.drain(..end);
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_mbox_line_only() {
        let dir = std::env::temp_dir().join(format!("antemx-scan-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("a"),
            b"From x@y Mon Jan 1\nSubject: a\n\nFrom here\n",
        )
        .unwrap();
        std::fs::write(dir.join("sub/b"), b"Subject: b\n\nbody\n").unwrap();
        std::fs::write(dir.join(".hidden"), b"x").unwrap();
        let files = message_files(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(files, [dir.join("a"), dir.join("sub/b")]);
        assert_eq!(
            read_message(&files[0]).unwrap(),
            b"Subject: a\n\nFrom here\n"
        );
        assert_eq!(read_message(&files[1]).unwrap(), b"Subject: b\n\nbody\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
