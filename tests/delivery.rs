//! Delivery to the customer's server: what arrives, per-recipient outcomes,
//! and the bounce (DSN) to the sender's MX.

mod common;

use common::{after_verdict, queue_id, wait_for, with_sender_mx, DomainRoute, Node, Setup, Sink};
use std::time::Duration;

const MESSAGE: &str = "From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: hello\r\nMessage-ID: <1@sender.test>\r\n\r\nHello Bob,\r\n.leading dot\r\n\r\nbye\r\n";

#[test]
fn message_arrives_with_a_received_header_and_otherwise_unchanged() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let id = queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], MESSAGE));
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(messages.len(), 1);
    let text = String::from_utf8_lossy(after_verdict(&messages[0].data)).into_owned();
    assert!(text.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.antemx.test (antemx) with ESMTP id "), "{text}");
    assert!(
        text.contains(&format!("id {id}\r\n\tfor <bob@example.com>; ")),
        "{text}"
    );
    let body_start = text.find("From: Alice").unwrap();
    assert_eq!(
        &text[body_start..],
        MESSAGE,
        "the message itself must arrive byte for byte"
    );
    assert_eq!(messages[0].from, "alice@sender.test");
    assert!(wait_for(Duration::from_secs(5), || node.queue().is_empty()));
    assert!(node.log().contains(&format!(
        "{id}: to=<bob@example.com> relay={} ",
        sink.address
    )));
}

#[test]
fn recipients_of_two_domains_go_to_their_own_servers() {
    let first = Sink::start();
    let second = Sink::start();
    let mut setup = Setup::routed_to(first.address);
    setup.domains.push(DomainRoute {
        name: "example.net".into(),
        deliver_to: second.address,
        tls: "opportunistic",
    });
    let node = Node::start(setup);
    let mut client = node.client();
    client.cmd("EHLO client.test");
    queue_id(&client.send_message(
        "alice@sender.test",
        &["a@example.com", "b@example.net", "c@example.com"],
        MESSAGE,
    ));
    let one = first.wait_messages(1, Duration::from_secs(20));
    let two = second.wait_messages(1, Duration::from_secs(20));
    assert_eq!(one[0].to, vec!["a@example.com", "c@example.com"]);
    assert_eq!(two[0].to, vec!["b@example.net"]);
    // Only one Received header from us, and no "for" naming one of several recipients.
    assert_eq!(one[0].text().matches("Received: ").count(), 1);
    assert!(!one[0].text().contains("\tfor <"));
}

#[test]
fn one_refused_recipient_bounces_alone_to_the_senders_mx() {
    let customer = Sink::start();
    customer.refuse("nobody@example.com");
    let mut setup = Setup::routed_to(customer.address);
    let (sender_mx, _dns) = with_sender_mx(&mut setup);
    let node = Node::start(setup);

    let mut client = node.client();
    client.cmd("EHLO client.test");
    let id = queue_id(&client.send_message(
        "alice@sender.test",
        &["bob@example.com", "nobody@example.com", "carol@example.com"],
        MESSAGE,
    ));
    let delivered = customer.wait_messages(1, Duration::from_secs(20));
    assert_eq!(
        delivered[0].to,
        vec!["bob@example.com", "carol@example.com"]
    );

    let bounces = sender_mx.wait_messages(1, Duration::from_secs(20));
    assert_eq!(bounces.len(), 1, "one DSN for the one failed recipient");
    let dsn = &bounces[0];
    assert_eq!(dsn.from, "", "a DSN has the null sender");
    assert_eq!(dsn.to, vec!["alice@sender.test"]);
    let text = dsn.text();
    assert!(
        text.contains("From: Mail Delivery System <MAILER-DAEMON@mx.antemx.test>"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: multipart/report; report-type=delivery-status;"),
        "{text}"
    );
    assert!(
        text.contains(
            "Final-Recipient: rfc822; nobody@example.com\r\nAction: failed\r\nStatus: 5.1.1"
        ),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; bob@example.com"),
        "{text}"
    );
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    assert!(
        text.contains("Subject: hello\r\n"),
        "original headers attached: {text}"
    );
    assert!(
        !text.contains("Hello Bob"),
        "the body is not returned: {text}"
    );
    assert!(text.contains(&format!("X-Antemx-Queue-ID: {id}")), "{text}");
    assert!(
        wait_for(Duration::from_secs(10), || node.queue().is_empty()),
        "{:?}",
        node.queue()
    );
    let log = node.log();
    assert!(
        log.contains(&format!("{id}: to=<nobody@example.com>")) && log.contains("status=bounced"),
        "{log}"
    );
}

#[test]
fn a_bounce_is_never_sent_to_the_null_sender() {
    let customer = Sink::start();
    customer.refuse("nobody@example.com");
    let node = Node::start(Setup::routed_to(customer.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let id = queue_id(&client.send_message("", &["nobody@example.com"], MESSAGE));
    assert!(wait_for(Duration::from_secs(20), || node
        .log()
        .contains(&format!("{id}: removed"))));
    assert!(
        node.queue().is_empty(),
        "no DSN queued for <>: {:?}",
        node.queue()
    );
    assert!(!node.log().contains("non-delivery notification"));
}

#[test]
fn connections_per_destination_are_capped_and_reused() {
    let sink = Sink::start();
    let mut setup = Setup::routed_to(sink.address);
    setup.retry = "max_connections = 2\n".into();
    let node = Node::start(setup);
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let address = node.smtp;
            std::thread::spawn(move || {
                let mut client = common::Client::connect(address);
                client.cmd("EHLO client.test");
                for n in 0..10 {
                    queue_id(&client.send_message(
                        "alice@sender.test",
                        &[&format!("u{t}-{n}@example.com")],
                        MESSAGE,
                    ));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    assert_eq!(sink.wait_messages(80, Duration::from_secs(30)).len(), 80);
    assert!(
        sink.max_concurrent() <= 2,
        "at most 2 connections at once, saw {}",
        sink.max_concurrent()
    );
    assert!(
        sink.connections() < 80,
        "connections are reused: {} for 80 messages",
        sink.connections()
    );
}

#[test]
fn tls_required_defers_when_the_server_offers_no_starttls() {
    let sink = Sink::start();
    let mut setup = Setup::routed_to(sink.address);
    setup.domains[0].tls = "required";
    let node = Node::start(setup);
    let mut client = node.client();
    client.cmd("EHLO client.test");
    queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], MESSAGE));
    assert!(node.wait_attempted(1));
    let error = node.queue()[0]["last_error"].as_str().unwrap().to_string();
    assert!(error.contains("TLS is required"), "{error}");
    assert!(sink.messages().is_empty());
}

#[test]
fn delivery_uses_starttls_when_the_customer_server_offers_it() {
    let sink = Sink::start();
    // The customer's server is a second antemx with a certificate.
    let dir = common::temp_dir("tls");
    let (cert, key) = common::self_signed_cert(&dir, "customer.example.com");
    let mut customer = Setup::routed_to(sink.address);
    customer.smtp_extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let customer = Node::start(customer);

    for tls in ["opportunistic", "required"] {
        let mut setup = Setup::routed_to(customer.smtp);
        setup.domains[0].tls = tls;
        let node = Node::start(setup);
        let mut client = node.client();
        client.cmd("EHLO client.test");
        queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], MESSAGE));
        let n = if tls == "opportunistic" { 1 } else { 2 };
        let messages = sink.wait_messages(n, Duration::from_secs(20));
        assert_eq!(messages.len(), n, "{tls}: log:\n{}", node.log());
        let text = String::from_utf8_lossy(after_verdict(&messages[n - 1].data)).into_owned();
        let first = text.split("\r\nReceived: ").next().unwrap();
        assert!(first.contains("with ESMTPS"), "{tls}: {text}");
        assert!(first.contains("version=TLSv1.3"), "{tls}: {text}");
        assert!(
            text.contains("by mx.antemx.test (antemx) with ESMTP id"),
            "the first hop was plain: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
