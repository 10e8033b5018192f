//! The per-domain RCPT policies end to end against the running binary:
//! recipient verification by callout to the customer's server (a real SMTP
//! sink), cached, cleared with `antemx verify clear`; greylisting by client
//! network, sender and recipient, with delays of a second.

mod common;

use common::{free_port, queue_id, Client, Mode, Node, Setup, Sink};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const MESSAGE: &str = "From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: hello\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <m@sender.test>\r\n\r\nhello\r\n";

/// A node whose domains are all in `domains` (TOML), with `filter` keys.
fn node(domains: &str, filter: &str) -> Node {
    let mut setup = Setup::routed_to(free_port_address());
    setup.domains.clear();
    setup.extra = format!("\n[filter]\n{filter}\n{domains}");
    Node::start(setup)
}

fn free_port_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn domain(name: &str, deliver_to: SocketAddr, keys: &str) -> String {
    format!(
        "\n[[domain]]\nname = \"{name}\"\ndeliver_to = \"{deliver_to}\"\ntls = \"none\"\n{keys}\n"
    )
}

/// A session with a transaction open from `sender`.
fn session(client: &mut Client, sender: &str) {
    assert_eq!(client.cmd("EHLO client.sender.test").0, 250);
    let (code, text) = client.cmd(&format!("MAIL FROM:<{sender}>"));
    assert_eq!(code, 250, "{text}");
}

fn rcpt(node: &Node, sender: &str, recipient: &str) -> (u16, String) {
    let mut client = node.client();
    session(&mut client, sender);
    client.cmd(&format!("RCPT TO:<{recipient}>"))
}

fn clear(node: &Node, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["verify", "clear", "--json"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metrics(node: &Node) -> String {
    let mut stream = std::net::TcpStream::connect(node.web).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: antemx\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

#[test]
fn verification_refuses_unknown_users_caches_answers_and_clears() {
    let sink = Sink::start();
    sink.refuse("nobody@example.com");
    let node = node(
        &domain("example.com", sink.address, "verify_recipients = true"),
        "",
    );

    let mut client = node.client();
    session(&mut client, "alice@sender.test");
    let (code, text) = client.cmd("RCPT TO:<nobody@example.com>");
    assert_eq!(
        (code, text.as_str()),
        (550, "5.1.1 Recipient address rejected: no such user here")
    );
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 250);
    assert_eq!(sink.callouts(), 2);
    assert_eq!(client.cmd("DATA").0, 354);
    client.send_raw(MESSAGE.as_bytes());
    queue_id(&client.cmd("."));
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].to, ["bob@example.com"]);
    let log = node.log();
    assert!(
        log.contains("NOQUEUE: reject: RCPT from [127.0.0.1]: 550 5.1.1 Recipient address rejected: no such user here; from=<alice@sender.test> to=<nobody@example.com> verify=callout ("),
        "{log}"
    );
    assert!(
        log.contains("said: 550 5.1.1 <recipient> User unknown)"),
        "{log}"
    );

    // Both answers come from the cache now, in any case.
    assert_eq!(
        rcpt(&node, "carol@sender.test", "NOBODY@example.com").0,
        550
    );
    assert_eq!(rcpt(&node, "carol@sender.test", "bob@example.com").0, 250);
    assert_eq!(sink.callouts(), 2);
    assert!(node.log().contains("to=<NOBODY@example.com> verify=cached"));

    // The customer created the mailbox: clearing its answer asks again.
    sink.accept("nobody@example.com");
    assert_eq!(
        clear(&node, &["nobody@example.com"]),
        serde_json::json!({ "cleared": 1 })
    );
    assert_eq!(
        rcpt(&node, "carol@sender.test", "nobody@example.com").0,
        250
    );
    assert_eq!(sink.callouts(), 3);
    assert_eq!(clear(&node, &["--domain", "Example.COM"])["cleared"], 2);
    assert_eq!(rcpt(&node, "carol@sender.test", "bob@example.com").0, 250);
    assert_eq!(sink.callouts(), 4);
    assert_eq!(clear(&node, &[])["cleared"], 1);

    assert!(metrics(&node).contains("antemx_smtp_rejections_total{code=\"5.1.1\"} 2"));
}

#[test]
fn an_unreachable_or_failing_customer_gives_450_and_nothing_is_cached() {
    let sink = Sink::start();
    let down = free_port_address();
    let node = node(
        &format!(
            "{}{}{}",
            domain("example.com", sink.address, "verify_recipients = true"),
            domain("down.test", down, "verify_recipients = true"),
            domain("tls.test", sink.address, "verify_recipients = true")
                .replace("tls = \"none\"", "tls = \"required\"")
        ),
        "verify_timeout = \"2s\"\n",
    );
    for _ in 0..2 {
        let (code, text) = rcpt(&node, "alice@sender.test", "bob@down.test");
        assert_eq!(code, 450, "{text}");
        assert!(text.starts_with("4.4.1 "), "{text}");
    }
    assert_eq!(
        node.log()
            .matches("to=<bob@down.test> verify=callout (")
            .count(),
        2
    );
    // Like delivery, a callout honours the domain's `tls`: this server
    // offers no STARTTLS.
    let (code, text) = rcpt(&node, "alice@sender.test", "bob@tls.test");
    assert_eq!(code, 450, "{text}");
    assert!(node.log().contains("does not offer STARTTLS"));

    // A server that answers 4xx: try again later, and ask again next time.
    sink.set_mode(Mode::TempFail);
    let (code, text) = rcpt(&node, "alice@sender.test", "bob@example.com");
    assert_eq!(code, 450, "{text}");
    assert!(text.starts_with("4.4.0 "), "{text}");
    sink.set_mode(Mode::Accept);
    assert_eq!(rcpt(&node, "alice@sender.test", "bob@example.com").0, 250);
    assert_eq!(sink.callouts(), 2);
    let log = node.log();
    assert!(log.contains("450 4.4.0 Recipient address cannot be verified now, try again later; from=<alice@sender.test> to=<bob@example.com> verify=callout (451 "), "{log}");

    // Many refused recipients that are not the client's fault do not close
    // the session (max_errors is 10).
    let mut client = node.client();
    session(&mut client, "alice@sender.test");
    for i in 0..12 {
        assert_eq!(client.cmd(&format!("RCPT TO:<u{i}@down.test>")).0, 450);
    }
    assert_eq!(client.cmd("NOOP").0, 250);
}

#[test]
fn negative_answers_expire_and_positive_ones_last() {
    let sink = Sink::start();
    sink.refuse("new@example.com");
    let node = node(
        &domain("example.com", sink.address, "verify_recipients = true"),
        "verify_negative_ttl = \"1s\"\nverify_positive_ttl = \"1h\"\n",
    );
    assert_eq!(rcpt(&node, "a@sender.test", "new@example.com").0, 550);
    assert_eq!(rcpt(&node, "a@sender.test", "bob@example.com").0, 250);
    sink.accept("new@example.com");
    assert_eq!(rcpt(&node, "a@sender.test", "new@example.com").0, 550);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(rcpt(&node, "a@sender.test", "new@example.com").0, 250);
    assert_eq!(rcpt(&node, "a@sender.test", "bob@example.com").0, 250);
    assert_eq!(sink.callouts(), 3);
}

#[test]
fn concurrent_rcpts_for_one_address_share_one_callout() {
    let sink = Sink::start();
    sink.set_rcpt_delay(Duration::from_millis(700));
    let node = node(
        &domain("example.com", sink.address, "verify_recipients = true"),
        "",
    );
    let mut clients: Vec<Client> = (0..4)
        .map(|_| {
            let mut client = node.client();
            session(&mut client, "a@sender.test");
            client
        })
        .collect();
    for client in &mut clients {
        client.send("RCPT TO:<bob@example.com>");
    }
    for client in &mut clients {
        assert_eq!(client.reply().0, 250);
    }
    assert_eq!(sink.callouts(), 1);
}

#[test]
fn greylisting_delays_a_new_triplet_once() {
    let sink = Sink::start();
    let node = node(
        &format!(
            "{}{}",
            domain("example.com", sink.address, "greylist = true"),
            domain("plain.test", sink.address, "")
        ),
        "greylist_delay = \"1s\"\ngreylist_expiry = \"1h\"\ntrusted_networks = [\"127.0.0.2\"]\n",
    );
    let mut client = node.client();
    session(&mut client, "alice@sender.test");
    let (code, text) = client.cmd("RCPT TO:<bob@example.com>");
    assert_eq!(code, 451, "{text}");
    assert!(text.starts_with("4.7.1 Greylisted"), "{text}");
    // Too soon: still greylisted, and the wait is not pushed back.
    let (code, text) = client.cmd("RCPT TO:<bob@example.com>");
    assert_eq!(code, 451, "{text}");
    // A domain without greylisting takes mail at once.
    assert_eq!(client.cmd("RCPT TO:<carol@plain.test>").0, 250);
    let log = node.log();
    assert!(
        log.contains("NOQUEUE: reject: RCPT from [127.0.0.1]: 451 4.7.1 Greylisted, please try again in 1s; from=<alice@sender.test> to=<bob@example.com> greylist=new"),
        "{log}"
    );
    assert!(
        log.contains("to=<bob@example.com> greylist=too-soon"),
        "{log}"
    );

    std::thread::sleep(Duration::from_millis(1100));
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], MESSAGE));
    assert_eq!(sink.wait_messages(1, Duration::from_secs(20)).len(), 1);
    // Remembered: the next message passes at once, from the same /24 too.
    let mut client = Client::connect_from(node.smtp, IpAddr::from([127, 0, 0, 3]));
    client.cmd("EHLO client.sender.test");
    queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], MESSAGE));
    // A client in trusted_networks is never greylisted.
    let mut client = Client::connect_from(node.smtp, IpAddr::from([127, 0, 0, 2]));
    session(&mut client, "monitor@sender.test");
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 250);

    // Another sender, another recipient, another /24, the null sender: new
    // triplets, greylisted.
    assert_eq!(rcpt(&node, "mallory@sender.test", "bob@example.com").0, 451);
    assert_eq!(rcpt(&node, "alice@sender.test", "dave@example.com").0, 451);
    assert_eq!(rcpt(&node, "", "bob@example.com").0, 451);
    let mut client = Client::connect_from(node.smtp, IpAddr::from([127, 0, 1, 1]));
    session(&mut client, "alice@sender.test");
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 451);
    assert!(node.log().contains("RCPT from [127.0.1.1]: 451 4.7.1"));

    assert!(metrics(&node).contains("antemx_smtp_rejections_total{code=\"4.7.1\"} 6"));
}

#[test]
fn a_greylisted_retry_after_the_window_starts_over() {
    let sink = Sink::start();
    let node = node(
        &domain("example.com", sink.address, "greylist = true"),
        "greylist_delay = \"1s\"\ngreylist_expiry = \"2s\"\ntrusted_networks = []\n",
    );
    assert_eq!(rcpt(&node, "a@sender.test", "bob@example.com").0, 451);
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(rcpt(&node, "a@sender.test", "bob@example.com").0, 451);
    assert_eq!(
        node.log()
            .matches("to=<bob@example.com> greylist=new")
            .count(),
        2
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(rcpt(&node, "a@sender.test", "bob@example.com").0, 250);
}

#[test]
fn greylisting_and_verification_together() {
    let sink = Sink::start();
    sink.refuse("nobody@example.com");
    let node = node(
        &domain(
            "example.com",
            sink.address,
            "verify_recipients = true\ngreylist = true",
        ),
        "greylist_delay = \"1s\"\ntrusted_networks = []\n",
    );
    // An unknown user is refused at once, not greylisted first.
    assert_eq!(rcpt(&node, "a@sender.test", "nobody@example.com").0, 550);
    assert_eq!(rcpt(&node, "a@sender.test", "bob@example.com").0, 451);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(rcpt(&node, "a@sender.test", "bob@example.com").0, 250);
    assert_eq!(sink.callouts(), 2);
}

#[test]
fn bad_policy_config_names_its_line() {
    let check = |text: &str| {
        let (ok, _, err) = common::check_config(text);
        assert!(!ok);
        err
    };
    let err = check(
        "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n\n[filter]\ngreylist_delay = \"10m\"\ngreylist_expiry = \"5m\"\n",
    );
    assert!(
        err.contains("antemx.toml:7: [filter] greylist_expiry must be longer than greylist_delay"),
        "{err}"
    );
    let err = check(
        "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n\n[[domain]]\nname = \"example.com\"\ndeliver_to = \"127.0.0.1:25\"\nverify_recipient = true\n",
    );
    assert!(
        err.contains("antemx.toml:8: unknown field `verify_recipient`"),
        "{err}"
    );
}
