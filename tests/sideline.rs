//! The filter on the mail path and the sideline store, end to end against
//! the running binary: verdicts at the end of DATA, verdict headers on
//! delivered mail, sidelined mail kept on disk before 250, listed, released
//! exactly once, deleted, and purged by retention.

mod common;

use common::{queue_id, wait_for, Node, Setup, Sink};
use std::path::Path;
use std::time::Duration;

/// Sideline from 2.0: a message missing From, Date and Message-ID scores
/// 2.5; a complete one 0; GTUBE 1000.
const THRESHOLDS: &str = "\n[filter]\nsideline_at = 2.0\nreject_at = 50.0\n";

/// A complete message: it scores 0.
fn clean() -> String {
    format!("From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: lunch\r\nDate: {}\r\nMessage-ID: <clean@sender.test>\r\n\r\nSee you at noon.\r\n", common::date_now())
}
const SUSPECT: &str = "Subject: you won\r\nTo: bob@example.com\r\n\r\nClaim your prize.\r\n";
const GTUBE: &str =
    "Subject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";

fn node_with(sink: &Sink, extra: &str) -> Node {
    let mut setup = Setup::routed_to(sink.address);
    setup.extra = format!("{THRESHOLDS}{extra}");
    Node::start(setup)
}

fn send(node: &Node, message: &str) -> (u16, String) {
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    client.send_message("alice@sender.test", &["bob@example.com"], message)
}

fn sideline(node: &Node, args: &[&str]) -> std::process::Output {
    let mut all = vec!["sideline"];
    all.extend_from_slice(args);
    node.cli(&all)
}

fn spool_files(node: &Node) -> usize {
    std::fs::read_dir(node.dir.join("data/spool"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn verdicts_are_logged_and_stamped_and_foreign_verdicts_removed() {
    let sink = Sink::start();
    let node = node_with(&sink, "");
    let clean = clean();
    let forged = format!(
        "X-Spam-Status: No, score=-100.0\r\nAuthentication-Results: mx.antemx.test; dkim=pass\r\n\tdmarc=pass\r\nX-Spam-Score: -100\r\n{clean}"
    );
    let id = queue_id(&send(&node, &forged));
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    let text = messages[0].text();
    assert!(
        // The client is on loopback, trusted: not authenticated (tests/auth.rs
        // checks the results).
        text.starts_with("Authentication-Results: mx.antemx.test; none\r\nX-Spam-Status: No, score=0.0 required=2.0 tests=none\r\nX-Spam-Score: 0.0\r\nReceived: "),
        "{text}"
    );
    assert_eq!(text.matches("X-Spam-Status").count(), 1, "{text}");
    assert_eq!(text.matches("X-Spam-Score").count(), 1, "{text}");
    assert_eq!(text.matches("Authentication-Results").count(), 1, "{text}");
    assert!(!text.contains("dmarc=pass"), "{text}");
    assert!(text.ends_with(&clean), "{text}");
    let log = node.log();
    assert!(
        log.contains(&format!("{id}: accepted: client=[127.0.0.1] helo=client.sender.test from=<alice@sender.test> to=<bob@example.com> size=")),
        "{log}"
    );
    assert!(log.contains("verdict=accept score=0.0 rules=none"), "{log}");
}

#[test]
fn gtube_is_refused_and_nothing_is_kept() {
    let sink = Sink::start();
    let node = node_with(&sink, "");
    let (code, text) = send(&node, GTUBE);
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.7.1 "), "{text}");
    assert!(text.contains("GTUBE"), "{text}");
    // The session goes on after a refusal.
    let id = queue_id(&send(&node, &clean()));
    assert_eq!(sink.wait_messages(1, Duration::from_secs(20)).len(), 1);
    assert!(node.sidelined().is_empty());
    assert!(wait_for(Duration::from_secs(10), || node
        .queue()
        .is_empty()));
    assert_eq!(spool_files(&node), 0);
    let log = node.log();
    assert!(
        log.contains("verdict=reject score=1002.5 rules=GTUBE=1000.0,MISSING_FROM=1.0"),
        "{log}"
    );
    assert!(log.contains(&format!("{id}: accepted")), "{log}");
}

#[test]
fn suspect_mail_is_sidelined_explained_and_released_exactly_once() {
    let sink = Sink::start();
    let node = node_with(&sink, "");
    let id = queue_id(&send(&node, SUSPECT));
    // A clean message sent after it arrives; the suspect one does not.
    queue_id(&send(&node, &clean()));
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].text().contains("Subject: lunch"));

    let entries = node.sidelined();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["sender"], "alice@sender.test");
    assert_eq!(entry["recipients"][0], "bob@example.com");
    assert_eq!(entry["subject"], "you won");
    assert_eq!(entry["client"], "127.0.0.1");
    assert_eq!(entry["score"], 2.5);
    let rules: Vec<&str> = entry["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        ["MISSING_FROM", "MISSING_DATE", "MISSING_MESSAGE_ID"]
    );
    assert_eq!(entry["rules"][1]["reason"], "no Date: header");
    let log = node.log();
    assert!(
        log.contains(&format!("{id}: sidelined: client=[127.0.0.1]")),
        "{log}"
    );
    assert!(log.contains("verdict=sideline score=2.5 rules=MISSING_FROM=1.0,MISSING_DATE=1.0,MISSING_MESSAGE_ID=0.5"), "{log}");

    let show = sideline(&node, &["show", &id]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("MISSING_DATE  no Date: header"), "{shown}");

    // Four releases at the same moment: one wins, one delivery.
    let releases: Vec<_> = (0..4)
        .map(|i| {
            let (config, id) = (node.config.clone(), id.clone());
            std::thread::spawn(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_antemx"))
                    .args([
                        "sideline",
                        "release",
                        &id,
                        "--by",
                        &format!("carol{i}@example.com"),
                        "--config",
                    ])
                    .arg(config)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let outputs: Vec<_> = releases.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(won.len(), 1, "{outputs:?}");
    for lost in outputs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&lost.stderr);
        assert!(
            err.contains("already released") || err.contains("no sidelined message"),
            "{err}"
        );
    }
    let messages = sink.wait_messages(2, Duration::from_secs(20));
    assert!(wait_for(Duration::from_secs(10), || node
        .queue()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(300));
    let messages_after = sink.messages();
    assert_eq!(
        messages_after.len(),
        2,
        "one delivery of the released message"
    );
    let released = messages[1].text();
    assert!(
        released.starts_with("X-Antemx-Released: by carol"),
        "{released}"
    );
    assert!(
        released.contains("X-Spam-Status: Yes, score=2.5 required=2.0 tests=MISSING_DATE,MISSING_FROM,MISSING_MESSAGE_ID\r\n"),
        "{released}"
    );
    assert!(released.ends_with(SUSPECT), "{released}");
    assert!(node.sidelined().is_empty());
    assert_eq!(spool_files(&node), 0);

    let again = sideline(&node, &["release", &id]);
    assert!(!again.status.success());
}

#[test]
fn sidelined_mail_is_on_disk_before_250() {
    let sink = Sink::start();
    let mut node = node_with(&sink, "");
    let id = queue_id(&send(&node, SUSPECT));
    node.kill9();
    node.restart();
    let entries = node.sidelined();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["id"], id.as_str());
    // Released as a mistake: the classifier learns it as ham.
    let out = sideline(&node, &["release", &id, "--train", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["trained"], true);
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert!(messages[0].text().ends_with(SUSPECT));
    let (_, metrics) = common::http_get(node.web, "/metrics");
    assert!(
        metrics.contains("antemx_classifier_learned_ham 1\n"),
        "{metrics}"
    );
}

#[test]
fn list_filters_and_delete() {
    let sink = Sink::start();
    let mut setup = Setup::routed_to(sink.address);
    setup.domains.push(common::DomainRoute {
        name: "example.net".into(),
        deliver_to: sink.address,
        tls: "none",
    });
    setup.extra = THRESHOLDS.into();
    let node = Node::start(setup);
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    let first = queue_id(&client.send_message("x@spam.test", &["bob@example.com"], SUSPECT));
    let second = queue_id(&client.send_message("y@spam.test", &["eve@example.net"], SUSPECT));
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        let out = sideline(&node, &all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        entries
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&[]), [first.clone(), second.clone()]);
    assert_eq!(ids(&["--domain", "example.net"]), [second.as_str()]);
    assert_eq!(ids(&["--recipient", "BOB@example.com"]), [first.as_str()]);
    assert_eq!(ids(&["--sender", "y@spam.test"]), [second.as_str()]);
    assert_eq!(ids(&["--since", "1h"]).len(), 2);
    assert!(ids(&["--until", "1h"]).is_empty());
    let bad = sideline(&node, &["list", "--since", "yesterday"]);
    assert!(!bad.status.success());

    let out = sideline(&node, &["delete", &first]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ids(&[]), [second.as_str()]);
    assert_eq!(spool_files(&node), 1);
    let gone = sideline(&node, &["release", &first]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no sidelined message"));
    let gone = sideline(&node, &["show", &first]);
    assert!(!gone.status.success());
}

#[test]
fn retention_purges_and_frees_disk() {
    let sink = Sink::start();
    let node = node_with(&sink, "\n[sideline]\nretention = \"3s\"\n");
    let big = format!("{SUSPECT}{}\r\n", "spam ".repeat(40_000));
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    for _ in 0..10 {
        queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], &big));
    }
    let spool = node.dir.join("data/spool");
    assert!(dir_bytes(&spool) > 2_000_000);
    assert_eq!(node.sidelined().len(), 10);
    assert!(wait_for(Duration::from_secs(20), || node
        .sidelined()
        .is_empty()
        && spool_files(&node) == 0));
    assert!(node.log().contains("sideline: purged 10 messages"));
    assert!(sink.messages().is_empty());
}
