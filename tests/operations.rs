//! Running a node: /metrics checked against what the test sent, config
//! reload under load, graceful shutdown under load.

mod common;

use common::{http_get, queue_id, wait_for, Client, Node, Setup, Sink};
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

const MESSAGE: &str = "From: alice@sender.test\r\nSubject: ops\r\n\r\nbody\r\n";

/// Parses the page with the reference parser (prometheus_client) and returns
/// `name{labels}` → value, labels sorted.
fn parse_metrics(page: &str) -> HashMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the page (pip install prometheus-client?): {}\n{page}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        })
        .collect()
}

#[test]
fn metrics_count_what_happened() {
    let sink = Sink::start();
    sink.refuse("nobody@example.com");
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    for _ in 0..5 {
        queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], MESSAGE));
    }
    queue_id(&client.send_message("", &["nobody@example.com"], MESSAGE));
    for _ in 0..3 {
        assert_eq!(client.cmd("MAIL FROM:<x@y.test>").0, 250);
        assert_eq!(client.cmd("RCPT TO:<victim@elsewhere.test>").0, 550);
        client.cmd("RSET");
    }
    client.cmd("QUIT");
    sink.wait_messages(5, Duration::from_secs(10));
    assert!(wait_for(Duration::from_secs(10), || node
        .queue()
        .is_empty()));

    let (status, page) = http_get(node.web, "/metrics");
    assert_eq!(status, 200, "{page}");
    let metrics = parse_metrics(&page);
    let get = |key: &str| {
        metrics
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("{key} missing from:\n{page}"))
    };
    assert_eq!(
        get("antemx_messages_received_total{verdict=\"accept\"}"),
        6.0
    );
    // The harness's readiness probe is the first connection, the client the second.
    assert_eq!(get("antemx_smtp_connections_total{}"), 2.0);
    assert_eq!(get("antemx_smtp_rejections_total{code=\"5.7.1\"}"), 3.0);
    let destination = sink.address.to_string();
    assert_eq!(
        get(&format!(
            "antemx_delivery_attempts_total{{destination=\"{destination}\",status=\"sent\"}}"
        )),
        5.0
    );
    assert_eq!(
        get(&format!(
            "antemx_delivery_attempts_total{{destination=\"{destination}\",status=\"bounced\"}}"
        )),
        1.0
    );
    assert_eq!(get("antemx_accept_duration_seconds_count{}"), 6.0);
    assert_eq!(get("antemx_delivery_duration_seconds_count{}"), 6.0);
    assert_eq!(get("antemx_queue_messages{}"), 0.0);
    assert!(get("antemx_disk_bytes{}") > 0.0);
    assert_eq!(get("antemx_smtp_sessions_active{}"), 0.0);
}

#[test]
fn metrics_show_the_queue() {
    let closed = common::free_port();
    let node = Node::start(Setup::routed_to(
        format!("127.0.0.1:{closed}").parse().unwrap(),
    ));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    for _ in 0..3 {
        queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], MESSAGE));
    }
    assert!(node.wait_attempted(3));
    std::thread::sleep(Duration::from_millis(1100));
    let metrics = parse_metrics(&http_get(node.web, "/metrics").1);
    assert_eq!(metrics["antemx_queue_messages{}"], 3.0);
    assert!(metrics["antemx_queue_oldest_age_seconds{}"] >= 1.0);
    let deferred = format!(
        "antemx_delivery_attempts_total{{destination=\"127.0.0.1:{closed}\",status=\"deferred\"}}"
    );
    assert_eq!(metrics[&deferred], 3.0);
    assert_eq!(
        metrics["antemx_smtp_sessions_active{}"], 1.0,
        "the test's own session is open"
    );
    drop(client);
}

fn send_load(
    address: SocketAddr,
    clients: usize,
    per_client: usize,
) -> Vec<std::thread::JoinHandle<Vec<(u16, String)>>> {
    (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = Client::connect(address);
                client.cmd("EHLO load.test");
                (0..per_client)
                    .map(|n| {
                        client.send_message(
                            "load@sender.test",
                            &[&format!("u{c}-{n}@example.com")],
                            MESSAGE,
                        )
                    })
                    .collect()
            })
        })
        .collect()
}

#[test]
fn reload_under_load_loses_and_refuses_nothing() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let original = std::fs::read_to_string(&node.config).unwrap();
    let load = send_load(node.smtp, 10, 500);
    for round in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        // Every other reload adds a domain, the others put the file back.
        let text = if round % 2 == 0 {
            format!("{original}\n[[domain]]\nname = \"added.example\"\ndeliver_to = \"{}\"\ntls = \"none\"\n", sink.address)
        } else {
            original.clone()
        };
        std::fs::write(&node.config, text).unwrap();
        node.signal("HUP");
    }
    let replies: Vec<(u16, String)> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(replies.len(), 5000);
    let refused: Vec<&(u16, String)> = replies.iter().filter(|r| r.0 != 250).collect();
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(
        sink.wait_messages(5000, Duration::from_secs(120)).len(),
        5000
    );
    assert!(wait_for(Duration::from_secs(10), || node
        .log()
        .matches("config reloaded")
        .count()
        == 10));

    // The last reload put the original back: added.example is refused again;
    // a reload that adds it makes it accepted without a restart.
    let mut client = node.client();
    client.cmd("EHLO client.test");
    client.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(client.cmd("RCPT TO:<x@added.example>").0, 550);
    std::fs::write(
        &node.config,
        format!("{original}\n[[domain]]\nname = \"added.example\"\ndeliver_to = \"{}\"\ntls = \"none\"\n", sink.address),
    )
    .unwrap();
    node.signal("HUP");
    assert!(wait_for(Duration::from_secs(5), || node
        .log()
        .matches("config reloaded")
        .count()
        == 11));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    client.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(client.cmd("RCPT TO:<x@added.example>").0, 250);
}

#[test]
fn an_invalid_config_is_refused_on_reload_and_the_old_one_kept() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let original = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, format!("{original}\n[smtp2]\n")).unwrap();
    node.signal("HUP");
    assert!(wait_for(Duration::from_secs(5), || node
        .log()
        .contains("config not reloaded")));
    assert!(
        node.log().contains("antemx.toml:"),
        "the error names the line: {}",
        node.log()
    );
    let mut client = node.client();
    client.cmd("EHLO client.test");
    queue_id(&client.send_message("a@sender.test", &["bob@example.com"], MESSAGE));
    assert_eq!(sink.wait_messages(1, Duration::from_secs(10)).len(), 1);
}

#[test]
fn sigterm_under_load_finishes_sessions_and_loses_nothing() {
    let sink = Sink::start();
    let mut node = Node::start(Setup::routed_to(sink.address));
    let address = node.smtp;
    let load: Vec<_> = (0..6)
        .map(|c| {
            std::thread::spawn(move || {
                // Sends until the server goes away; returns the subjects that got 250.
                let mut accepted = Vec::new();
                let Ok(stream) = TcpStream::connect(address) else {
                    return accepted;
                };
                drop(stream);
                let mut client = Client::connect(address);
                client.cmd("EHLO load.test");
                for n in 0..10_000 {
                    let subject = format!("graceful-{c}-{n}");
                    let reply = client.send_message(
                        "load@sender.test",
                        &["bob@example.com"],
                        &format!("Subject: {subject}\r\n\r\nx\r\n"),
                    );
                    match reply.0 {
                        250 => accepted.push(subject),
                        421 | 0 => break,
                        other => panic!("unexpected reply {other}: {}", reply.1),
                    }
                }
                accepted
            })
        })
        .collect();
    assert!(wait_for(Duration::from_secs(30), || sink.messages().len() >= 200));
    let started = std::time::Instant::now();
    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(40))
        .expect("antemx exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(35));
    assert!(node.log().contains("stopping"), "{}", node.log());
    let accepted: Vec<String> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(TcpStream::connect(address).is_err(), "no longer listening");

    // What got 250 and was not yet delivered is delivered after a restart.
    node.restart();
    let subject = |m: &common::sink::Message| {
        m.text()
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
    };
    assert!(
        wait_for(Duration::from_secs(30), || {
            let arrived: std::collections::HashSet<String> =
                sink.messages().iter().filter_map(subject).collect();
            accepted.iter().all(|s| arrived.contains(s))
        }),
        "accepted messages missing after a graceful restart"
    );
}

#[test]
fn the_web_server_holds_a_bounded_number_of_connections() {
    use std::io::Read;
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let idle: Vec<std::net::TcpStream> = (0..256)
        .map(|_| std::net::TcpStream::connect(node.web).unwrap())
        .collect();
    assert!(wait_for(Duration::from_secs(10), || {
        let mut extra = std::net::TcpStream::connect(node.web).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        matches!(extra.read(&mut [0u8; 1]), Ok(0))
    }));
    assert!(node.log().contains("web: 256 connections open"));
    drop(idle);
    assert!(wait_for(Duration::from_secs(10), || http_get(
        node.web, "/healthz"
    )
    .0 == 200));
}
