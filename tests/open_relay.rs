//! antemx is never an open relay: RCPT is accepted only for a configured
//! customer domain, and never with sender-specified routing through it.

mod common;

use common::{queue_id, wait_for, Client, Node, Setup, Sink};
use std::time::Duration;

/// A session that has sent EHLO and `MAIL FROM`.
fn in_transaction(node: &Node) -> Client {
    let mut client = node.client();
    assert_eq!(client.cmd("EHLO client.test").0, 250);
    assert_eq!(client.cmd("MAIL FROM:<alice@sender.test>").0, 250);
    client
}

#[test]
fn recipients_outside_the_customer_domains_are_refused() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    // (forward-path, expected code, expected enhanced status)
    let refused = [
        // A domain that is not configured.
        ("<victim@other.example>", 550, "5.7.1"),
        // A subdomain of a customer domain is not that domain.
        ("<u@sub.example.com>", 550, "5.7.1"),
        // A customer domain as a prefix of a foreign one.
        ("<u@example.com.other.example>", 550, "5.7.1"),
        // The trailing dot of a fully qualified name changes nothing.
        ("<u@other.example.>", 550, "5.7.1"),
        // The percent hack and bang paths ask us to route further.
        ("<user%other@example.com>", 550, "5.7.1"),
        ("<user%other.example@example.com>", 550, "5.7.1"),
        ("<other.example!user@example.com>", 550, "5.7.1"),
        // A quoted local part hiding a second address.
        ("<\"u@other.example\"@example.com>", 550, "5.7.1"),
        // A source route is stripped (RFC 5321 §3.6.1 / C); what remains is
        // judged: here a foreign domain.
        ("<@a.example:u@other.example>", 550, "5.7.1"),
        ("<@example.com:u@other.example>", 550, "5.7.1"),
        ("<@a.example,@b.example:u@other.example>", 550, "5.7.1"),
        // An address literal names no customer domain; smtp-proto already
        // refuses the syntax.
        ("<u@[127.0.0.1]>", 501, "5.1.3"),
        // Two at-signs without quotes.
        ("<u@other.example@example.com>", 501, "5.1.3"),
    ];
    // Refusals count as errors (max_errors = 10): a few per session.
    for group in refused.chunks(4) {
        let mut client = in_transaction(&node);
        for (path, code, status) in group {
            let (got, text) = client.cmd(&format!("RCPT TO:{path}"));
            assert_eq!(got, *code, "{path}: {text}");
            assert!(text.starts_with(status), "{path}: {text}");
        }
        // Nothing to send: no recipient was accepted.
        let (code, text) = client.cmd("DATA");
        assert_eq!(code, 554, "{text}");
        assert_eq!(client.cmd("QUIT").0, 221);
    }
    let log = node.log();
    assert!(
        log.contains("NOQUEUE: reject: RCPT from [127.0.0.1]: 550 5.7.1 Relaying denied"),
        "{log}"
    );
    assert!(node.queue().is_empty());
    assert_eq!(sink.messages().len(), 0);
}

#[test]
fn customer_domain_in_any_form_is_accepted_and_normalised() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = in_transaction(&node);
    // Mixed case and the trailing dot of a fully qualified name: our domain.
    let (code, text) = client.cmd("RCPT TO:<Upper@EXAMPLE.COM.>");
    assert_eq!(code, 250, "{text}");
    client.cmd("DATA");
    client.send_raw(b"Subject: one\r\n\r\nx\r\n.\r\n");
    let one = queue_id(&client.reply());

    // A source route to our own domain: the route is stripped and ignored,
    // as RFC 5321 §3.6.1 tells servers to do; the mail stays with the
    // customer domain it names, so nothing is relayed anywhere else.
    assert_eq!(client.cmd("MAIL FROM:<alice@sender.test>").0, 250);
    let (code, text) = client.cmd("RCPT TO:<@relay.other.example:routed@example.com>");
    assert_eq!(code, 250, "{text}");
    client.cmd("DATA");
    client.send_raw(b"Subject: two\r\n\r\nx\r\n.\r\n");
    let two = queue_id(&client.reply());

    // A quoted local part without routing characters is an ordinary user.
    assert_eq!(client.cmd("MAIL FROM:<alice@sender.test>").0, 250);
    let (code, text) = client.cmd("RCPT TO:<\"first.last\"@example.com>");
    assert_eq!(code, 250, "{text}");
    client.cmd("DATA");
    client.send_raw(b"Subject: three\r\n\r\nx\r\n.\r\n");
    let three = queue_id(&client.reply());

    let messages = sink.wait_messages(3, Duration::from_secs(20));
    assert_eq!(messages.len(), 3);
    let to_of = |id: &str| {
        messages
            .iter()
            .find(|m| m.text().contains(&format!(" id {id}")))
            .unwrap_or_else(|| panic!("{id} not delivered"))
            .to
            .clone()
    };
    // The domain is normalised; the local part is the sender's to keep.
    assert_eq!(to_of(&one), vec!["Upper@example.com"]);
    assert_eq!(to_of(&two), vec!["routed@example.com"]);
    assert_eq!(to_of(&three), vec!["first.last@example.com"]);
    let text = messages
        .iter()
        .find(|m| m.text().contains(&one))
        .unwrap()
        .text();
    assert!(text.contains("\tfor <Upper@example.com>; "), "{text}");
}

#[test]
fn refused_recipients_do_not_spoil_the_accepted_ones() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = in_transaction(&node);
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 250);
    assert_eq!(client.cmd("RCPT TO:<victim@other.example>").0, 550);
    assert_eq!(client.cmd("RCPT TO:<bob%victim@example.com>").0, 550);
    // The same recipient twice is one delivery.
    assert_eq!(client.cmd("RCPT TO:<BOB@example.com>").0, 250);
    assert_eq!(client.cmd("RCPT TO:<bob@Example.Com>").0, 250);
    assert_eq!(client.cmd("DATA").0, 354);
    client.send_raw(b"Subject: x\r\n\r\nx\r\n.\r\n");
    queue_id(&client.reply());
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    let mut to = messages[0].to.clone();
    to.sort();
    assert_eq!(to, vec!["BOB@example.com", "bob@example.com"]);
    assert!(wait_for(Duration::from_secs(10), || node
        .queue()
        .is_empty()));
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn at_most_max_recipients_per_message() {
    let sink = Sink::start();
    let mut setup = Setup::routed_to(sink.address);
    setup.smtp_extra = "max_recipients = 3\n".into();
    let node = Node::start(setup);
    let mut client = in_transaction(&node);
    for n in 1..=3 {
        let (code, text) = client.cmd(&format!("RCPT TO:<user{n}@example.com>"));
        assert_eq!(code, 250, "recipient {n}: {text}");
    }
    for n in 4..=6 {
        let (code, text) = client.cmd(&format!("RCPT TO:<user{n}@example.com>"));
        assert_eq!(code, 452, "recipient {n}: {text}");
        assert!(text.starts_with("4.5.3 "), "{text}");
    }
    assert_eq!(client.cmd("DATA").0, 354);
    client.send_raw(b"Subject: many\r\n\r\nx\r\n.\r\n");
    queue_id(&client.reply());

    // The limit is per message: the next transaction starts from zero, and
    // 452 is not counted as an error that ends the session.
    assert_eq!(client.cmd("MAIL FROM:<alice@sender.test>").0, 250);
    for n in 7..=9 {
        assert_eq!(client.cmd(&format!("RCPT TO:<user{n}@example.com>")).0, 250);
    }
    for _ in 0..12 {
        assert_eq!(client.cmd("RCPT TO:<more@example.com>").0, 452);
    }
    assert_eq!(client.cmd("DATA").0, 354);
    client.send_raw(b"Subject: more\r\n\r\nx\r\n.\r\n");
    queue_id(&client.reply());

    let messages = sink.wait_messages(2, Duration::from_secs(20));
    assert_eq!(messages.len(), 2);
    let mut all: Vec<String> = messages.iter().flat_map(|m| m.to.clone()).collect();
    all.sort();
    let expected: Vec<String> = (1..=3)
        .chain(7..=9)
        .map(|n| format!("user{n}@example.com"))
        .collect();
    assert_eq!(all, expected);
}

#[test]
fn postmaster_without_a_domain_reaches_the_operator() {
    let customer = Sink::start();
    let mut setup = Setup::routed_to(customer.address);
    let (operator, _dns) = common::with_sender_mx(&mut setup);
    setup.node_extra = "postmaster = \"noc@sender.test\"\n".into();
    let node = Node::start(setup);
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let reply = client.send_message(
        "someone@elsewhere.test",
        &["Postmaster"],
        &format!("From: <someone@elsewhere.test>\r\nTo: <postmaster>\r\nSubject: your filter\r\nDate: {}\r\nMessage-ID: <pm@elsewhere.test>\r\n\r\nHello postmaster.\r\n", common::date_now()),
    );
    common::queue_id(&reply);
    // The empty path is no postmaster.
    assert_eq!(client.cmd("MAIL FROM:<someone@elsewhere.test>").0, 250);
    assert_eq!(client.cmd("RCPT TO:<>").0, 550);
    let delivered = operator.wait_messages(1, std::time::Duration::from_secs(20));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].to, vec!["noc@sender.test".to_string()]);
    assert!(customer.messages().is_empty());
}
