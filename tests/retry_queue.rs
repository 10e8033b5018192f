//! The retry queue: backoff schedule, expiry with a DSN, extend, flush,
//! prompt release when a destination recovers, delete, restart.
//! Durations are seconds instead of days, through the config.

mod common;

use common::dns::DnsServer;
use common::{queue_id, wait_for, with_sender_mx, Mode, Node, Setup, Sink};
use std::time::{Duration, Instant};

const MESSAGE: &str = "From: alice@sender.test\r\nSubject: retry me\r\n\r\nbody\r\n";

fn send_one(node: &Node, to: &str) -> String {
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let reply = client.send_message("alice@sender.test", &[to], MESSAGE);
    client.cmd("QUIT");
    queue_id(&reply)
}

/// A customer server answering 451, and the sender's MX (for the DSN).
fn failing_setup(retry: &str) -> (Sink, Sink, DnsServer, Setup) {
    let customer = Sink::start();
    customer.set_mode(Mode::TempFail);
    let mut setup = Setup::routed_to(customer.address);
    setup.retry = retry.to_string();
    let (sender_mx, dns) = with_sender_mx(&mut setup);
    (customer, sender_mx, dns, setup)
}

#[test]
fn attempts_follow_the_backoff_formula_then_expire_with_a_dsn() {
    let (min, max, lifetime) = (1.0, 3.0, 9.0);
    let (customer, sender_mx, _dns, setup) =
        failing_setup("min_interval = \"1s\"\nmax_interval = \"3s\"\nlifetime = \"9s\"");
    let node = Node::start(setup);
    let sent = Instant::now();
    let id = send_one(&node, "bob@example.com");

    let bounces = sender_mx.wait_messages(1, Duration::from_secs(30));
    assert_eq!(
        bounces.len(),
        1,
        "expiry must send a DSN; log:\n{}",
        node.log()
    );
    let dsn = bounces[0].text();
    assert!(
        dsn.contains("Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 4.4.7"),
        "{dsn}"
    );
    assert!(
        dsn.contains("delivery time expired; last error: 451"),
        "{dsn}"
    );
    assert!(wait_for(Duration::from_secs(5), || node.queue().is_empty()));
    assert!(customer.messages().is_empty());

    // Attempt k happens after the previous one by the message's age at that
    // time, clamped to [min, max], plus at most 5% jitter; the last one is
    // held to the expiry time.
    let times: Vec<f64> = customer
        .attempts()
        .iter()
        .map(|(at, _)| at.duration_since(sent).as_secs_f64())
        .collect();
    assert!(times.len() >= 5, "attempts at {times:?}");
    let slack = 0.5;
    for pair in times.windows(2) {
        let (previous, this) = (pair[0], pair[1]);
        let wait = previous.clamp(min, max);
        let expected_latest = (previous + wait * 1.05 + slack).min(lifetime + slack);
        let expected_earliest = (previous + wait - 0.05).min(lifetime - 0.05);
        assert!(
            this >= expected_earliest && this <= expected_latest,
            "attempt at {this:.2}s after one at {previous:.2}s; expected within [{expected_earliest:.2}, {expected_latest:.2}]; all: {times:?}"
        );
    }
    let last = *times.last().unwrap();
    assert!(
        last <= lifetime + slack,
        "no attempt after expiry: {times:?}"
    );
    assert!(
        node.log().contains(&format!("{id}: to=<bob@example.com>"))
            && node.log().contains("status=expired")
    );
}

#[test]
fn extend_lengthens_a_domains_lifetime() {
    let (_customer, _mx, _dns, setup) =
        failing_setup("min_interval = \"100s\"\nmax_interval = \"100s\"\nlifetime = \"1h\"");
    let node = Node::start(setup);
    let id = send_one(&node, "bob@example.com");
    assert!(node.wait_attempted(1));
    let before = node.queue()[0]["expires_ms"].as_u64().unwrap();

    let out = node.cli(&["queue", "extend", "example.com", "--by", "2d", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let extension: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(extension["extra_seconds"], 172_800);

    let after = node.queue()[0]["expires_ms"].as_u64().unwrap();
    assert_eq!(
        after - before,
        172_800_000,
        "queued mail gets two more days"
    );
    let shown = node.cli(&["queue", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown[0]["expires_ms"].as_u64().unwrap(), after);

    let bad = node.cli(&["queue", "extend", "example.com", "--by", "two days"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid duration"));
}

#[test]
fn flush_delivers_now_instead_of_at_the_next_slot() {
    let (customer, _mx, _dns, setup) =
        failing_setup("min_interval = \"1000s\"\nmax_interval = \"4000s\"");
    let node = Node::start(setup);
    let id = send_one(&node, "bob@example.com");
    assert!(wait_for(Duration::from_secs(10), || customer
        .attempts()
        .len()
        == 1));
    assert!(node.wait_attempted(1));
    let entry = &node.queue()[0];
    let wait = entry["next_attempt_ms"].as_u64().unwrap() - entry["received_ms"].as_u64().unwrap();
    assert!(
        (1_000_000..=1_052_000).contains(&wait),
        "first retry after min_interval: {wait} ms"
    );

    customer.set_mode(Mode::Accept);
    let out = node.cli(&["queue", "flush", &id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(customer.wait_messages(1, Duration::from_secs(10)).len(), 1);
    assert!(wait_for(Duration::from_secs(5), || node.queue().is_empty()));

    let missing = node.cli(&["queue", "flush", "NOSUCHID"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no queued message NOSUCHID"));
}

#[test]
fn waiting_mail_goes_out_as_soon_as_the_destination_accepts_again() {
    let (customer, _mx, _dns, setup) =
        failing_setup("min_interval = \"1000s\"\nmax_interval = \"4000s\"");
    let node = Node::start(setup);
    for n in 0..3 {
        send_one(&node, &format!("user{n}@example.com"));
    }
    assert!(node.wait_attempted(3));

    customer.set_mode(Mode::Accept);
    send_one(&node, "fresh@example.com");
    let arrived = customer.wait_messages(4, Duration::from_secs(10));
    assert_eq!(
        arrived.len(),
        4,
        "the three waiting messages follow the new one; log:\n{}",
        node.log()
    );
    assert!(wait_for(Duration::from_secs(5), || node.queue().is_empty()));
    assert!(node
        .log()
        .contains("accepting mail again; 3 waiting messages released"));
}

#[test]
fn delete_removes_a_message_and_its_file() {
    let (customer, sender_mx, _dns, setup) =
        failing_setup("min_interval = \"1000s\"\nmax_interval = \"4000s\"");
    let node = Node::start(setup);
    let id = send_one(&node, "bob@example.com");
    let spool_file = node.dir.join("data/spool").join(&id);
    assert!(spool_file.exists());
    let out = node.cli(&["queue", "delete", &id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.queue().is_empty());
    assert!(!spool_file.exists());
    assert!(node.cli(&["queue", "show", &id]).status.code() == Some(1));
    customer.set_mode(Mode::Accept);
    node.cli(&["queue", "flush"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(customer.messages().is_empty() && sender_mx.messages().is_empty());
}

#[test]
fn a_restart_resumes_the_queue() {
    let (customer, _mx, _dns, setup) =
        failing_setup("min_interval = \"1s\"\nmax_interval = \"1s\"");
    let mut node = Node::start(setup);
    let id = send_one(&node, "bob@example.com");
    assert!(wait_for(Duration::from_secs(10), || !customer
        .attempts()
        .is_empty()));
    node.kill9();
    customer.set_mode(Mode::Accept);
    node.restart();
    let arrived = customer.wait_messages(1, Duration::from_secs(15));
    assert_eq!(arrived.len(), 1);
    assert!(arrived[0].text().contains(&format!("id {id}")));
    assert!(wait_for(Duration::from_secs(5), || node.queue().is_empty()));
}

#[test]
fn unreachable_server_is_a_temporary_failure() {
    let closed = common::free_port();
    let setup = Setup::routed_to(format!("127.0.0.1:{closed}").parse().unwrap());
    let node = Node::start(setup);
    let id = send_one(&node, "bob@example.com");
    assert!(node.wait_attempted(1));
    let entry = &node.queue()[0];
    assert_eq!(entry["id"], id.as_str());
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{entry}"
    );
    let listed = node.cli(&["queue", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&id) && text.contains("1 queued"), "{text}");
}
