//! DNS list checks against the running binary, with the lists served by a
//! DNS server on loopback: DNSBL weights per zone and per return code, the
//! "refused resolver" codes that must not count, DNSWL, URIBL on linked
//! domains, and a list that never answers.

mod common;

use common::dns::DnsServer;
use common::{queue_id, Node, Setup, Sink};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

/// Complete headers: the message scores 0 unless a list says otherwise.
fn message(body: &str) -> String {
    format!("From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: hello\r\nDate: {}\r\nMessage-ID: <m1@sender.test>\r\n\r\n{body}\r\n", common::date_now())
}

/// The test client connects from 127.0.0.1, which lists see as this.
const CLIENT: &str = "1.0.0.127";

fn node(sink: &Sink, dns: &DnsServer, filter: &str) -> Node {
    let mut setup = Setup::routed_to(sink.address);
    setup.dns = Some(dns.address);
    // The test client is on loopback, which is trusted by default: trust
    // nothing here; reverse DNS has tests of its own.
    setup.extra =
        format!("\n[filter]\nsideline_at = 3.0\nreject_at = 8.0\ntrusted_networks = []\n{filter}");
    Node::start(setup)
}

fn send(node: &Node, body: &str) -> (u16, String) {
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    client.send_message("alice@sender.test", &["bob@example.com"], &message(body))
}

#[test]
fn a_listed_client_scores_the_zone_weight_or_its_code_weight() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_a(&format!("{CLIENT}.bl.test"), Ipv4Addr::new(127, 0, 0, 2));
    dns.add_a(
        &format!("{CLIENT}.strict.test"),
        Ipv4Addr::new(127, 0, 0, 4),
    );
    let node = node(
        &sink,
        &dns,
        "reverse_dns = false\ndnsbl = [\n  { zone = \"bl.test\", weight = 3.5 },\n  { zone = \"strict.test\", weight = 1.0, codes = { \"127.0.0.4\" = 6.0 } },\n  { zone = \"clean.test\", weight = 9.0 },\n]\n",
    );
    // 3.5 + 6.0 = 9.5: refused.
    let (code, text) = send(&node, "hi");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("RCVD_IN_DNSBL"), "{text}");
    let log = node.log();
    assert!(
        log.contains("score=9.5 rules=RCVD_IN_DNSBL=3.5,RCVD_IN_DNSBL=6.0"),
        "{log}"
    );
}

#[test]
fn refused_resolver_answers_do_not_count() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_a(
        &format!("{CLIENT}.bl.test"),
        Ipv4Addr::new(127, 255, 255, 254),
    );
    dns.add_a(&format!("{CLIENT}.odd.test"), Ipv4Addr::new(10, 0, 0, 1));
    let node = node(
        &sink,
        &dns,
        "reverse_dns = false\ndnsbl = [{ zone = \"bl.test\", weight = 9.0 }, { zone = \"odd.test\", weight = 9.0 }]\n",
    );
    queue_id(&send(&node, "hi"));
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    assert!(delivered[0].text().contains("X-Spam-Status: No, score=0.0"));
    let log = node.log();
    assert!(
        log.contains("bl.test answered 127.255.255.254 for 127.0.0.1: a resolver problem"),
        "{log}"
    );
    assert!(log.contains("odd.test answered 10.0.0.1"), "{log}");
}

#[test]
fn an_allowlist_lowers_the_score() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_a(&format!("{CLIENT}.bl.test"), Ipv4Addr::new(127, 0, 0, 2));
    dns.add_a(&format!("{CLIENT}.wl.test"), Ipv4Addr::new(127, 0, 10, 3));
    let node = node(
        &sink,
        &dns,
        "reverse_dns = false\ndnsbl = [{ zone = \"bl.test\", weight = 4.0 }, { zone = \"wl.test\", weight = -2.0 }]\n",
    );
    queue_id(&send(&node, "hi"));
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    let text = delivered[0].text();
    assert!(
        text.contains(
            "X-Spam-Status: No, score=2.0 required=3.0 tests=RCVD_IN_DNSBL,RCVD_IN_DNSWL"
        ),
        "{text}"
    );
}

#[test]
fn linked_domains_are_asked_of_uribl_zones() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_a("evil.example.uribl.test", Ipv4Addr::new(127, 0, 0, 2));
    let node = node(
        &sink,
        &dns,
        "reverse_dns = false\nuribl = [{ zone = \"uribl.test\", weight = 4.0 }]\n",
    );
    let id = queue_id(&send(
        &node,
        "Click <http://www.EVIL.example/win> or http://fine.example/ now",
    ));
    let entries = node.sidelined();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["id"], id.as_str());
    assert_eq!(entries[0]["rules"][0]["name"], "URIBL_LISTED");
    assert_eq!(
        entries[0]["rules"][0]["reason"],
        "links to evil.example, listed in uribl.test (127.0.0.2)"
    );
    // A message without listed links goes through.
    queue_id(&send(&node, "see http://fine.example/"));
    assert_eq!(sink.wait_messages(1, Duration::from_secs(20)).len(), 1);
}

#[test]
fn a_list_that_never_answers_costs_the_deadline_and_nothing_else() {
    let sink = Sink::start();
    // Receives queries and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut setup = Setup::routed_to(sink.address);
    setup.dns = Some(silent.local_addr().unwrap());
    setup.extra =
        "\n[filter]\nlookup_deadline = \"1s\"\ntrusted_networks = []\ndnsbl = [{ zone = \"bl.test\", weight = 9.0 }]\n"
            .into();
    let node = Node::start(setup);
    let started = std::time::Instant::now();
    queue_id(&send(&node, "hi"));
    // Generous bound: the point is that the 2 s per-lookup timeout of the
    // test config is cut short, not the exact time.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(sink.wait_messages(1, Duration::from_secs(20)).len(), 1);
    let log = node.log();
    assert!(
        log.contains("bl.test: past the lookup deadline; bl.test counts as not listed"),
        "{log}"
    );
    assert!(
        log.contains(
            "reverse DNS of 127.0.0.1: DNS lookup failed: past the lookup deadline; not judged"
        ),
        "{log}"
    );
}

#[test]
fn bad_list_config_names_its_line() {
    let (ok, _, err) = common::check_config(
        "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n\n[filter]\ndnsbl = [\n  { zone = \"bl.test\", weight = 1.0, codes = { \"10.0.0.2\" = 3.0 } },\n]\n",
    );
    assert!(!ok);
    assert!(err.contains("antemx.toml:7: [filter] dnsbl: bl.test: return code \"10.0.0.2\" is not an address in 127.0.0.0/8"), "{err}");
}

#[test]
fn reverse_dns_must_exist_and_resolve_back() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    let arpa = format!("{CLIENT}.in-addr.arpa");
    // No PTR at all.
    let node_none = node(&sink, &dns, "");
    queue_id(&send(&node_none, "hi"));
    let text = sink.wait_messages(1, Duration::from_secs(20))[0].text();
    assert!(
        text.contains("X-Spam-Status: No, score=1.5 required=3.0 tests=RDNS_NONE"),
        "{text}"
    );
    drop(node_none);

    // A PTR whose name points elsewhere.
    dns.add_ptr(&arpa, "dyn-1-2-3-4.isp.test");
    dns.add_a("dyn-1-2-3-4.isp.test", Ipv4Addr::new(192, 0, 2, 1));
    let node_unconfirmed = node(&sink, &dns, "");
    let id = queue_id(&send(&node_unconfirmed, "hi"));
    let messages = sink.wait_messages(2, Duration::from_secs(20));
    let text = messages[1].text();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("tests=RDNS_NOT_CONFIRMED"), "{text}");
    drop(node_unconfirmed);

    // Forward-confirmed: nothing fires.
    dns.add_ptr(&arpa, "mx.sender.test");
    dns.add_a("mx.sender.test", Ipv4Addr::new(127, 0, 0, 1));
    let node_confirmed = node(&sink, &dns, "");
    queue_id(&send(&node_confirmed, "hi"));
    let messages = sink.wait_messages(3, Duration::from_secs(20));
    let text = messages[2].text();
    assert!(
        text.contains("X-Spam-Status: No, score=0.0 required=3.0 tests=none"),
        "{text}"
    );
}

#[test]
fn trusted_clients_are_not_asked_about() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_a(&format!("{CLIENT}.bl.test"), Ipv4Addr::new(127, 0, 0, 2));
    let mut setup = Setup::routed_to(sink.address);
    setup.dns = Some(dns.address);
    setup.extra = "\n[filter]\ndnsbl = [{ zone = \"bl.test\", weight = 9.0 }]\n".into();
    let node = Node::start(setup);
    queue_id(&send(&node, "hi"));
    let text = sink.wait_messages(1, Duration::from_secs(20))[0].text();
    assert!(text.contains("score=0.0"), "{text}");
}
