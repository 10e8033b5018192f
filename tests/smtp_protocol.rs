//! The SMTP dialogue as a client sees it, against the running binary.

mod common;

use common::{after_verdict, as_sent, queue_id, temp_dir, tls_config, wait_for, Node, Setup, Sink};
use std::time::Duration;

#[test]
fn ehlo_advertises_the_extensions() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    assert_eq!(client.greeting.0, 220);
    assert!(client.greeting.1.starts_with("mx.antemx.test"));
    let (code, text) = client.cmd("EHLO client.test");
    assert_eq!(code, 250);
    assert_eq!(
        text.lines().next(),
        Some("mx.antemx.test Hello client.test")
    );
    for extension in [
        "PIPELINING",
        "SIZE 25000000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(
            text.lines().any(|l| l == extension),
            "{extension} missing in {text}"
        );
    }
    assert!(
        !text.contains("STARTTLS"),
        "STARTTLS offered without a certificate"
    );
    assert_eq!(client.cmd("HELO client.test").0, 250);
    assert_eq!(client.cmd("NOOP").0, 250);
    assert_eq!(client.cmd("RSET").0, 250);
    assert_eq!(client.cmd("VRFY someone").0, 252);
    assert_eq!(client.cmd("HELP").0, 214);
    assert_eq!(client.cmd("QUIT").0, 221);
    assert!(client.is_closed(), "QUIT must close the connection");
}

#[test]
fn ehlo_offers_starttls_when_a_certificate_is_configured() {
    let sink = Sink::start();
    let mut setup = Setup::routed_to(sink.address);
    setup.smtp_extra = tls_config(&temp_dir("cert"));
    let node = Node::start(setup);
    let mut client = node.client();
    let (code, text) = client.cmd("EHLO client.test");
    assert_eq!(code, 250, "{text}");
    assert!(text.lines().any(|l| l == "STARTTLS"), "{text}");
    for extension in ["PIPELINING", "SIZE 25000000", "8BITMIME", "SMTPUTF8"] {
        assert!(text.lines().any(|l| l == extension), "{text}");
    }
    // HELO is plain SMTP: one line, no extensions.
    let (code, text) = client.cmd("HELO client.test");
    assert_eq!((code, text.as_str()), (250, "mx.antemx.test"));
}

#[test]
fn basic_commands_and_their_state_rules() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    // A transaction needs a greeting first.
    let (code, text) = client.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(code, 503, "{text}");
    assert!(text.starts_with("5.5.1"), "{text}");

    let (code, text) = client.cmd("HELO client.test");
    assert_eq!((code, text.as_str()), (250, "mx.antemx.test"));
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 503);
    assert_eq!(client.cmd("DATA").0, 503);
    let (code, text) = client.cmd("NOOP");
    assert_eq!((code, text.as_str()), (250, "2.0.0 Ok"));
    let (code, text) = client.cmd("VRFY bob@example.com");
    assert_eq!(code, 252, "{text}");
    assert!(text.starts_with("2.5.0 "), "{text}");
    let (code, text) = client.cmd("HELP");
    assert_eq!(code, 214, "{text}");
    assert!(text.contains("EHLO"), "{text}");

    // RSET abandons the transaction: no nested MAIL afterwards, DATA refused.
    assert_eq!(client.cmd("MAIL FROM:<a@sender.test>").0, 250);
    assert_eq!(client.cmd("MAIL FROM:<a@sender.test>").0, 503);
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 250);
    assert_eq!(client.cmd("RSET").0, 250);
    assert_eq!(client.cmd("DATA").0, 503);
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 503);

    // A message after HELO is received with plain SMTP.
    let reply = client.send_message(
        "a@sender.test",
        &["bob@example.com"],
        "Subject: x\r\n\r\nx\r\n",
    );
    let id = queue_id(&reply);
    let (code, text) = client.cmd("QUIT");
    assert_eq!((code, text.as_str()), (221, "2.0.0 mx.antemx.test Bye"));
    assert!(client.is_closed());
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(messages.len(), 1);
    let text = String::from_utf8_lossy(after_verdict(&messages[0].data)).into_owned();
    assert!(
        text.starts_with(&format!(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.antemx.test (antemx) with SMTP id {id}\r\n"
        )),
        "{text}"
    );
}

#[test]
fn unknown_and_unimplemented_commands_are_refused() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let (code, text) = client.cmd("FOO bar");
    assert_eq!(code, 500, "{text}");
    assert!(text.starts_with("5.5.2"), "{text}");
    for command in [
        "EXPN staff",
        "AUTH PLAIN AGJvYgBzZWNyZXQ=",
        "ETRN example.com",
    ] {
        let (code, text) = client.cmd(command);
        assert_eq!(code, 502, "{command}: {text}");
    }
    // STARTTLS without a certificate is not available.
    assert_eq!(client.cmd("STARTTLS").0, 502);
    // Still usable after those.
    assert_eq!(client.cmd("NOOP").0, 250);
    let reply = client.send_message(
        "a@sender.test",
        &["bob@example.com"],
        "Subject: x\r\n\r\nx\r\n",
    );
    assert_eq!(reply.0, 250, "{reply:?}");
}

#[test]
fn a_client_that_keeps_sending_errors_is_dropped() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    // max_errors defaults to 10: nine are answered, the tenth ends it.
    for i in 1..10 {
        let (code, text) = client.cmd(&format!("XYZZY {i}"));
        assert_eq!(code, 500, "error {i}: {text}");
    }
    assert_eq!(
        client.cmd("NOOP").0,
        250,
        "good commands do not reset the count"
    );
    let (code, _) = client.cmd("XYZZY 10");
    assert_eq!(code, 500);
    let (code, text) = client.reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("4.7.0 mx.antemx.test "), "{text}");
    assert!(client.is_closed(), "the session must end after the 421");
}

#[test]
fn max_errors_is_configurable() {
    let sink = Sink::start();
    let mut setup = Setup::routed_to(sink.address);
    setup.smtp_extra = "max_errors = 2\n".into();
    let node = Node::start(setup);
    let mut client = node.client();
    client.cmd("EHLO client.test");
    assert_eq!(client.cmd("BOGUS").0, 500);
    // A refused recipient is an error too.
    client.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(client.cmd("RCPT TO:<x@elsewhere.test>").0, 550);
    assert_eq!(client.reply().0, 421);
    assert!(client.is_closed());
}

#[test]
fn null_sender_is_accepted_and_delivered() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let reply = client.send_message(
        "",
        &["bob@example.com"],
        "Subject: bounce\r\n\r\nreport\r\n",
    );
    assert_eq!(reply.0, 250, "{reply:?}");
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(messages[0].from, "");
    assert_eq!(messages[0].to, vec!["bob@example.com"]);
}

#[test]
fn esmtp_parameters_are_accepted() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let (code, text) = client.cmd("MAIL FROM:<a@sender.test> SIZE=1000 BODY=8BITMIME");
    assert_eq!(code, 250, "{text}");
    let (code, text) = client.cmd("RCPT TO:<bob@example.com> NOTIFY=FAILURE");
    assert_eq!(code, 250, "{text}");
    assert_eq!(client.cmd("RSET").0, 250);
    let (code, text) = client.cmd("MAIL FROM:<jörg@sender.test> SMTPUTF8");
    assert_eq!(code, 250, "{text}");
    assert_eq!(client.cmd("RCPT TO:<bob@example.com>").0, 250);
    assert_eq!(client.cmd("DATA").0, 354);
    client.send_raw("Subject: grüße\r\n\r\nÄ\r\n.\r\n".as_bytes());
    let id = queue_id(&client.reply());
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(messages[0].from, "jörg@sender.test");
    let text = messages[0].text();
    assert!(text.contains(&format!("with UTF8SMTP id {id}")), "{text}");
    assert_eq!(
        as_sent(&messages[0].data),
        "Subject: grüße\r\n\r\nÄ\r\n".as_bytes()
    );
}

/// RFC 2920: the client sends a whole group of commands in one write; the
/// replies come back in order, and the session carries several transactions.
#[test]
fn pipelined_transactions_on_one_connection() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.send_raw(
        b"EHLO client.test\r\n\
          MAIL FROM:<alice@sender.test>\r\n\
          RCPT TO:<one@example.com>\r\n\
          RCPT TO:<nobody@elsewhere.test>\r\n\
          RCPT TO:<two@example.com>\r\n\
          DATA\r\n",
    );
    let replies = client.replies(6);
    assert_eq!(replies[0].0, 250);
    assert!(replies[0].1.contains("PIPELINING"), "{:?}", replies[0]);
    assert_eq!(replies[1], (250, "2.1.0 Ok".to_string()));
    assert_eq!(replies[2], (250, "2.1.5 Ok".to_string()));
    assert_eq!(replies[3].0, 550, "{:?}", replies[3]);
    assert!(replies[3].1.starts_with("5.7.1 "), "{:?}", replies[3]);
    assert_eq!(replies[4], (250, "2.1.5 Ok".to_string()));
    assert_eq!(replies[5].0, 354, "{:?}", replies[5]);

    // The first message, its end and the next transaction in one write.
    client.send_raw(
        b"Subject: first\r\n\r\none\r\n.\r\n\
          MAIL FROM:<bob@sender.test>\r\n\
          RCPT TO:<three@example.com>\r\n\
          DATA\r\n",
    );
    let replies = client.replies(4);
    let first = queue_id(&replies[0]);
    assert_eq!(replies[1], (250, "2.1.0 Ok".to_string()));
    assert_eq!(replies[2], (250, "2.1.5 Ok".to_string()));
    assert_eq!(replies[3].0, 354, "{:?}", replies[3]);

    client.send_raw(b"Subject: second\r\n\r\ntwo\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    let replies = client.replies(4);
    let second = queue_id(&replies[0]);
    assert_ne!(first, second);
    assert_eq!(replies[1], (250, "2.0.0 Ok".to_string()));
    assert_eq!(replies[2], (250, "2.0.0 Ok".to_string()));
    assert_eq!(replies[3].0, 221);
    assert!(client.is_closed());

    let mut messages = sink.wait_messages(2, Duration::from_secs(20));
    assert_eq!(messages.len(), 2, "both messages arrive");
    messages.sort_by_key(|m| m.from.clone());
    assert_eq!(messages[0].from, "alice@sender.test");
    let mut to = messages[0].to.clone();
    to.sort();
    assert_eq!(to, vec!["one@example.com", "two@example.com"]);
    assert_eq!(as_sent(&messages[0].data), b"Subject: first\r\n\r\none\r\n");
    assert!(
        messages[0].text().contains(&format!(" id {first};")),
        "{}",
        messages[0].text()
    );
    assert_eq!(messages[1].from, "bob@sender.test");
    assert_eq!(messages[1].to, vec!["three@example.com"]);
    assert_eq!(
        as_sent(&messages[1].data),
        b"Subject: second\r\n\r\ntwo\r\n"
    );
    assert!(messages[1].text().contains(&format!(" id {second}\r\n")));
    assert!(wait_for(Duration::from_secs(10), || node
        .queue()
        .is_empty()));
    assert_eq!(sink.messages().len(), 2);
}

#[test]
fn received_header_names_client_server_id_and_single_recipient() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let single = queue_id(&client.send_message(
        "alice@sender.test",
        &["bob@example.com"],
        "Subject: one\r\n\r\nbody\r\n",
    ));
    let multi = queue_id(&client.send_message(
        "alice@sender.test",
        &["bob@example.com", "carol@example.com"],
        "Subject: two\r\n\r\nbody\r\n",
    ));
    let messages = sink.wait_messages(2, Duration::from_secs(20));
    assert_eq!(messages.len(), 2);
    let find = |id: &str| {
        messages
            .iter()
            .find(|m| m.text().contains(&format!(" id {id}")))
            .map(|m| String::from_utf8_lossy(after_verdict(&m.data)).into_owned())
            .unwrap_or_else(|| panic!("no message with id {id}"))
    };

    let text = find(&single);
    let first_line = text.lines().next().unwrap();
    assert_eq!(first_line, "Received: from client.test ([127.0.0.1])");
    let header_end = text.find("\r\nSubject: one").unwrap();
    let header = &text[..header_end];
    assert!(
        header.starts_with(&format!(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.antemx.test (antemx) with ESMTP id {single}\r\n\tfor <bob@example.com>; "
        )),
        "{header}"
    );
    assert!(!header.contains("version="), "no TLS here: {header}");
    // Ends with an RFC 5322 date: `Thu, 01 Jan 2026 12:00:00 +0000`.
    let date = header.rsplit("; ").next().unwrap();
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 6, "{date}");
    assert!(parts[0].ends_with(',') && parts[0].len() == 4, "{date}");
    assert!(parts[3].parse::<u32>().is_ok_and(|y| y >= 2024), "{date}");
    assert_eq!(parts[4].len(), 8, "{date}");
    assert_eq!(parts[5], "+0000", "{date}");

    let text = find(&multi);
    let header_end = text.find("\r\nSubject: two").unwrap();
    let header = &text[..header_end];
    assert!(
        header.starts_with(&format!(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.antemx.test (antemx) with ESMTP id {multi}; "
        )),
        "{header}"
    );
    assert!(
        !header.contains("for <"),
        "would leak the other recipients: {header}"
    );
}

#[test]
fn helo_argument_cannot_inject_into_received() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    assert_eq!(client.cmd("EHLO evil(by)x;y").0, 250);
    queue_id(&client.send_message(
        "a@sender.test",
        &["bob@example.com"],
        "Subject: x\r\n\r\nx\r\n",
    ));
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    let text = String::from_utf8_lossy(after_verdict(&messages[0].data)).into_owned();
    assert!(
        text.starts_with("Received: from evilbyxy ([127.0.0.1])\r\n"),
        "{text}"
    );
}
