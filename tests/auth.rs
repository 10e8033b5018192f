//! Sender authentication end to end against the running binary: SPF from
//! TXT records, DKIM signatures made here with fresh Ed25519 keys, ARC
//! seals, DMARC policies with relaxed and strict alignment and their
//! configured actions, all served by a DNS server on loopback; and a DNS
//! server that never answers, which must cost nothing but time.

mod common;

use common::dns::DnsServer;
use common::{queue_id, wait_for, Node, Setup, Sink};
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
use std::net::UdpSocket;
use std::time::Duration;

/// A signing key and the TXT record that publishes it.
struct Key {
    pkcs8: Vec<u8>,
    record: String,
}

impl Key {
    fn new() -> Key {
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let public = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap().public_key();
        Key {
            record: format!("v=DKIM1; k=ed25519; p={}", base64(&public)),
            pkcs8,
        }
    }

    /// Publishes the key as `selector._domainkey.domain`.
    fn publish(&self, dns: &DnsServer, domain: &str, selector: &str) {
        dns.add_txt(&format!("{selector}._domainkey.{domain}"), &self.record);
    }

    /// The message with a DKIM-Signature of `domain` on top.
    fn sign(&self, domain: &str, selector: &str, message: &str) -> String {
        let key = Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap();
        let signature = DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .sign(message.as_bytes())
            .unwrap();
        format!("{}{message}", signature.to_header())
    }

    /// The message with a first ARC set by `domain` on top, as a forwarder
    /// adds it.
    fn seal(&self, domain: &str, selector: &str, message: &str) -> String {
        let key = Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap();
        let parsed = AuthenticatedMessage::parse(message.as_bytes()).unwrap();
        let results = AuthenticationResults::new(domain);
        let set = ArcSealer::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .seal(&parsed, &results, &ArcOutput::default())
            .unwrap();
        format!("{}{message}", set.to_header())
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A complete message (no MISSING_* rule fires) from `from`.
fn message(from: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: bob@example.com\r\nSubject: invoice\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{}@test>\r\n\r\n{body}\r\n",
        fastrand_id()
    )
}

fn fastrand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn node(sink: &Sink, dns: &DnsServer, filter: &str) -> Node {
    let mut setup = Setup::routed_to(sink.address);
    setup.dns = Some(dns.address);
    // The test client is on loopback, trusted by default: trust nothing, so
    // that its mail is authenticated; reverse DNS has tests of its own.
    setup.extra = format!("\n[filter]\ntrusted_networks = []\nreverse_dns = false\n{filter}\n");
    Node::start(setup)
}

fn send(node: &Node, helo: &str, sender: &str, message: &str) -> (u16, String) {
    let mut client = node.client();
    client.cmd(&format!("EHLO {helo}"));
    client.send_message(sender, &["bob@example.com"], message)
}

/// The delivered message's verdict headers: (Authentication-Results with
/// its folded lines joined, X-Spam-Status).
fn verdict(text: &str) -> (String, String) {
    let header = |name: &str| {
        let start = text
            .find(name)
            .unwrap_or_else(|| panic!("no {name}: {text}"));
        let mut value = String::new();
        for (i, line) in text[start..].split("\r\n").enumerate() {
            if i > 0 && !line.starts_with('\t') && !line.starts_with(' ') {
                break;
            }
            value.push_str(line.trim_start());
            value.push(' ');
        }
        value
    };
    (
        header("Authentication-Results: "),
        header("X-Spam-Status: "),
    )
}

#[test]
fn a_dkim_signature_verifies_and_one_changed_byte_breaks_it() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    let key = Key::new();
    key.publish(&dns, "sender.test", "s1");
    let node = node(&sink, &dns, "");

    let signed = key.sign(
        "sender.test",
        "s1",
        &message("alice@sender.test", "Pay by Friday."),
    );
    queue_id(&send(
        &node,
        "mail.sender.test",
        "alice@sender.test",
        &signed,
    ));
    let changed = signed.replace("Pay by Friday.", "Pay by Fridax.");
    queue_id(&send(
        &node,
        "mail.sender.test",
        "alice@sender.test",
        &changed,
    ));

    let delivered = sink.wait_messages(2, Duration::from_secs(20));
    assert_eq!(delivered.len(), 2);
    let (results, status) = verdict(&delivered[0].text());
    assert!(
        results.contains("dkim=pass header.d=sender.test header.s=s1"),
        "{results}"
    );
    assert!(status.contains("DKIM_VALID"), "{status}");
    let (results, status) = verdict(&delivered[1].text());
    assert!(results.contains("dkim=fail ("), "{results}");
    assert!(
        results.contains("header.d=sender.test header.s=s1"),
        "{results}"
    );
    assert!(status.contains("DKIM_INVALID"), "{status}");
    assert!(!status.contains("DKIM_VALID"), "{status}");
    assert!(node.log().contains("DKIM_INVALID=1.0"), "{}", node.log());
}

#[test]
fn spf_pass_fail_and_softfail_come_from_txt_records() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_txt(
        "pass.test",
        "v=spf1 ip4:192.0.2.0/24 include:_spf.pass.test -all",
    );
    dns.add_txt("_spf.pass.test", "v=spf1 ip4:127.0.0.1 -all");
    dns.add_txt("fail.test", "v=spf1 ip4:192.0.2.1 -all");
    dns.add_txt("soft.test", "v=spf1 ~all");
    // A TXT record that is not SPF is no policy.
    dns.add_txt("none.test", "google-site-verification=abc");
    dns.add_txt("helo.pass.test", "v=spf1 a -all");
    dns.add_a("helo.pass.test", std::net::Ipv4Addr::LOCALHOST);
    let node = node(&sink, &dns, "");

    for domain in ["pass", "fail", "soft", "none"] {
        let sender = format!("a@{domain}.test");
        queue_id(&send(
            &node,
            "client.test",
            &sender,
            &message(&sender, "hello"),
        ));
    }
    // A bounce: the HELO name is the identity checked.
    queue_id(&send(
        &node,
        "helo.pass.test",
        "",
        &message("daemon@pass.test", "bounce"),
    ));

    let delivered = sink.wait_messages(5, Duration::from_secs(20));
    assert_eq!(delivered.len(), 5);
    let expected = [
        ("spf=pass smtp.mailfrom=a@pass.test", Some("SPF_PASS")),
        ("spf=fail smtp.mailfrom=a@fail.test", Some("SPF_FAIL")),
        (
            "spf=softfail smtp.mailfrom=a@soft.test",
            Some("SPF_SOFTFAIL"),
        ),
        ("spf=none smtp.mailfrom=a@none.test", None),
        ("spf=pass smtp.helo=helo.pass.test", Some("SPF_PASS")),
    ];
    for (message, (result, rule)) in delivered.iter().zip(expected) {
        let (results, status) = verdict(&message.text());
        assert!(results.contains(result), "{results}");
        match rule {
            Some(rule) => assert!(status.contains(rule), "{status}"),
            None => assert!(status.contains("tests=none"), "{status}"),
        }
    }
}

#[test]
fn dmarc_reject_refuses_what_fails_and_accepts_what_aligns() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    let key = Key::new();
    dns.add_txt("_dmarc.bank.test", "v=DMARC1; p=reject");
    dns.add_txt("bank.test", "v=spf1 ip4:192.0.2.1 -all");
    key.publish(&dns, "mail.bank.test", "k1");
    dns.add_txt("_dmarc.strict.test", "v=DMARC1; p=reject; adkim=s; aspf=s");
    key.publish(&dns, "mail.strict.test", "k1");
    dns.add_txt("_dmarc.spf.test", "v=DMARC1; p=reject");
    dns.add_txt("spf.test", "v=spf1 ip4:127.0.0.1 -all");
    let node = node(&sink, &dns, "");

    // Forged: SPF fails, no signature.
    let forged = message("ceo@bank.test", "Wire the money.");
    let (code, text) = send(&node, "client.test", "ceo@bank.test", &forged);
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.7.1 "), "{text}");
    assert!(text.contains("DMARC_REJECT"), "{text}");
    // Signed by a subdomain: relaxed alignment (the default) passes even
    // though SPF of the envelope sender fails.
    let signed = key.sign(
        "mail.bank.test",
        "k1",
        &message("ceo@bank.test", "Statement."),
    );
    queue_id(&send(&node, "client.test", "ceo@bank.test", &signed));
    // The same under strict alignment fails.
    let strict = key.sign(
        "mail.strict.test",
        "k1",
        &message("ceo@strict.test", "Statement."),
    );
    let (code, text) = send(&node, "client.test", "ceo@strict.test", &strict);
    assert_eq!(code, 550, "{text}");
    // SPF alone, aligned: passes.
    queue_id(&send(
        &node,
        "client.test",
        "news@spf.test",
        &message("news@spf.test", "News."),
    ));

    let delivered = sink.wait_messages(2, Duration::from_secs(20));
    assert_eq!(delivered.len(), 2);
    let (results, status) = verdict(&delivered[0].text());
    assert!(
        results.contains("spf=fail smtp.mailfrom=ceo@bank.test"),
        "{results}"
    );
    assert!(
        results.contains("dkim=pass header.d=mail.bank.test"),
        "{results}"
    );
    assert!(
        results.contains("dmarc=pass header.from=bank.test policy.dmarc=reject"),
        "{results}"
    );
    assert!(status.contains("DMARC_PASS"), "{status}");
    let (results, _) = verdict(&delivered[1].text());
    assert!(
        results.contains("spf=pass smtp.mailfrom=news@spf.test"),
        "{results}"
    );
    assert!(
        results.contains("dmarc=pass header.from=spf.test"),
        "{results}"
    );
    let log = node.log();
    assert!(
        log.contains("verdict=reject score=22.0 rules=SPF_FAIL=2.0,DMARC_REJECT=20.0"),
        "{log}"
    );
}

#[test]
fn dmarc_actions_are_configurable() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_txt("_dmarc.bank.test", "v=DMARC1; p=reject");
    dns.add_txt("_dmarc.shop.test", "v=DMARC1; p=quarantine");
    dns.add_txt("_dmarc.club.test", "v=DMARC1; p=reject");
    let node = node(
        &sink,
        &dns,
        "dmarc_reject = \"sideline\"\ndmarc_quarantine = \"score\"",
    );
    let bank = queue_id(&send(
        &node,
        "client.test",
        "ceo@bank.test",
        &message("ceo@bank.test", "Wire."),
    ));
    queue_id(&send(
        &node,
        "client.test",
        "sales@shop.test",
        &message("sales@shop.test", "Sale."),
    ));
    // A bounce whose HELO name has no SPF: DMARC still judges the From.
    let club = queue_id(&send(
        &node,
        "client.test",
        "",
        &message("boss@club.test", "Hi."),
    ));

    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(delivered.len(), 1);
    let (results, status) = verdict(&delivered[0].text());
    assert!(results.contains("dmarc=fail ("), "{results}");
    assert!(
        results.contains("header.from=shop.test policy.dmarc=quarantine"),
        "{results}"
    );
    assert!(
        status.contains("score=2.0") && status.contains("DMARC_QUARANTINE"),
        "{status}"
    );

    let out = node.cli(&["sideline", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = [bank.as_str(), club.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{entries:?}");
    let reasons = entries[0]["rules"].to_string();
    assert!(
        reasons.contains("DMARC_REJECT") && reasons.contains("fails DMARC"),
        "{reasons}"
    );
    // Sidelined, not refused: halfway between the lines.
    assert!(node.log().contains("DMARC_REJECT=10.0"), "{}", node.log());
}

#[test]
fn dmarc_is_not_applied_when_spf_could_not_be_checked() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    dns.add_txt("_dmarc.bank.test", "v=DMARC1; p=reject");
    dns.add_txt("bank.test", "v=spf1 include:slow.bank.test -all");
    dns.add_silent("slow.bank.test");
    // The DNS timeout (2 s in the harness) comes before the deadline.
    let node = node(&sink, &dns, "lookup_deadline = \"5s\"");
    queue_id(&send(
        &node,
        "client.test",
        "ceo@bank.test",
        &message("ceo@bank.test", "Hi."),
    ));
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    let (results, status) = verdict(&delivered[0].text());
    assert!(results.contains("spf=temperror"), "{results}");
    assert!(results.contains("dmarc=temperror ("), "{results}");
    assert!(status.contains("tests=none"), "{status}");
    assert!(
        node.log()
            .contains("filter: SPF of bank.test for 127.0.0.1"),
        "{}",
        node.log()
    );
}

#[test]
fn an_arc_seal_verifies_and_a_changed_body_breaks_it() {
    let (sink, dns) = (Sink::start(), DnsServer::start());
    let key = Key::new();
    key.publish(&dns, "lists.test", "arc");
    let node = node(&sink, &dns, "");
    let sealed = key.seal(
        "lists.test",
        "arc",
        &message("alice@sender.test", "Minutes."),
    );
    queue_id(&send(&node, "lists.test", "list@lists.test", &sealed));
    let changed = sealed.replace("Minutes.", "Minutez.");
    queue_id(&send(&node, "lists.test", "list@lists.test", &changed));

    let delivered = sink.wait_messages(2, Duration::from_secs(20));
    assert_eq!(delivered.len(), 2);
    let (results, status) = verdict(&delivered[0].text());
    assert!(results.contains("arc=pass"), "{results}");
    assert!(!status.contains("ARC_INVALID"), "{status}");
    let (results, status) = verdict(&delivered[1].text());
    assert!(results.contains("arc=fail ("), "{results}");
    assert!(status.contains("ARC_INVALID"), "{status}");
}

#[test]
fn a_dns_server_that_never_answers_costs_only_the_deadline() {
    let sink = Sink::start();
    // Bound, so the questions are not refused: they are never answered.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut setup = Setup::routed_to(sink.address);
    setup.dns = Some(silent.local_addr().unwrap());
    setup.extra =
        "\n[filter]\nlookup_deadline = \"1s\"\ntrusted_networks = []\nreverse_dns = false\n".into();
    let node = Node::start(setup);
    let started = std::time::Instant::now();
    let (code, text) = send(
        &node,
        "client.test",
        "ceo@bank.test",
        &message("ceo@bank.test", "Hi."),
    );
    assert_eq!(code, 250, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    let (results, status) = verdict(&delivered[0].text());
    assert!(results.contains("spf=temperror"), "{results}");
    assert!(
        status.contains("score=0.0") && status.contains("tests=none"),
        "{status}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || node
            .log()
            .contains("no answer by the lookup deadline")),
        "{}",
        node.log()
    );
}
