//! `[filter] autolearn`: the classifier learns, on the mail path, from
//! messages the other rules judged with confidence, and keeps what it
//! learned across a restart.

mod common;

use common::dns::DnsServer;
use common::{http_get, queue_id, wait_for, Node, Setup, Sink};
use std::net::Ipv4Addr;
use std::time::Duration;

const GTUBE: &str =
    "Subject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";

/// (learned spam, learned ham) from /metrics.
fn learned(node: &Node) -> (f64, f64) {
    let (status, page) = http_get(node.web, "/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    (
        value("antemx_classifier_learned_spam "),
        value("antemx_classifier_learned_ham "),
    )
}

/// The client is on a DNS allowlist (-2.0): negative evidence from a rule
/// other than the classifier, which is what auto-learning takes as ham.
fn node(autolearn: bool) -> (Node, Sink, DnsServer) {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_a("1.0.0.127.wl.test", Ipv4Addr::new(127, 0, 10, 2));
    let mut setup = Setup::routed_to(sink.address);
    setup.dns = Some(dns.address);
    setup.extra = format!(
        "\n[filter]\nautolearn = {autolearn}\ntrusted_networks = []\nreverse_dns = false\ndnsbl = [{{ zone = \"wl.test\", weight = -2.0 }}]\n"
    );
    (Node::start(setup), sink, dns)
}

fn send_both(node: &Node) {
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    for i in 0..3 {
        let (code, _) = client.send_message("a@sender.test", &["bob@example.com"], GTUBE);
        assert_eq!(code, 550);
        let clean = format!(
            "From: a@sender.test\r\nDate: {}\r\nMessage-ID: <{i}@sender.test>\r\nSubject: notes {i}\r\n\r\nthe minutes\r\n",
            common::date_now()
        );
        queue_id(&client.send_message("a@sender.test", &["bob@example.com"], &clean));
    }
}

#[test]
fn confident_verdicts_are_learned_and_kept_across_a_restart() {
    let (mut node, sink, _dns) = node(true);
    assert_eq!(learned(&node), (0.0, 0.0));
    send_both(&node);
    assert_eq!(learned(&node), (3.0, 3.0));
    assert_eq!(sink.wait_messages(3, Duration::from_secs(20)).len(), 3);
    // SIGTERM saves what was learned; a restart reads it back.
    let status = std::process::Command::new("kill")
        .args(["-s", "TERM", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(node.wait_exit(Duration::from_secs(30)).is_some());
    node.restart();
    assert!(wait_for(Duration::from_secs(10), || learned(&node) == (3.0, 3.0)));
}

#[test]
fn without_autolearn_nothing_is_learned() {
    let (node, _sink, _dns) = node(false);
    send_both(&node);
    assert_eq!(learned(&node), (0.0, 0.0));
}
