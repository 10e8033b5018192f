//! SMTP smuggling: only `<CRLF>.<CRLF>` ends a message. A dot between bare
//! LFs or CRs is content, so a message cannot carry a second, forged
//! transaction past the filter. Also: bare-LF normalisation and exact
//! dot-unstuffing, end to end through delivery.

mod common;

use common::{as_sent, queue_id, wait_for, Node, Setup, Sink};
use std::time::Duration;

const SMUGGLED: &[u8] = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n";

/// Each fake end of data, and how the text around it is stored and delivered:
/// bare LFs become CRLF, bare CRs are kept, and a dot that starts a line
/// after a real CRLF with more text on the line is unstuffed (RFC 5321
/// §4.5.2); a dot alone on a bare-LF line is kept.
const SEQUENCES: [(&str, &[u8], &[u8]); 6] = [
    ("<LF>.<LF>", b"\n.\n", b"\r\n.\r\n"),
    ("<LF>.<CRLF>", b"\n.\r\n", b"\r\n.\r\n"),
    ("<CR>.<CR>", b"\r.\r", b"\r.\r"),
    ("<CRLF>.<LF>", b"\r\n.\n", b"\r\n.\r\n"),
    ("<CR>.<CRLF>", b"\r.\r\n", b"\r.\r\n"),
    ("<CRLF>.<CR>", b"\r\n.\r", b"\r\n\r"),
];

#[test]
fn only_crlf_dot_crlf_ends_the_message() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut ids = Vec::new();
    for (name, sequence, _) in SEQUENCES {
        let mut client = node.client();
        assert_eq!(client.cmd("EHLO attacker.test").0, 250);
        client.start_data("sender@attacker.test", "bob@example.com");
        // The whole attack in one write, as a smuggler pipelines it, with a
        // command after the real end to see where the server thinks it is.
        let mut data = format!("Subject: {name}\r\n\r\nbefore").into_bytes();
        data.extend_from_slice(sequence);
        data.extend_from_slice(SMUGGLED);
        data.extend_from_slice(b"\r\n.\r\n");
        data.extend_from_slice(b"VRFY marker\r\n");
        client.send_raw(&data);
        // Exactly one 250 for the one message, then the VRFY's 252: had the
        // fake end counted, the smuggled MAIL, RCPT and DATA would answer
        // 250, 250 and 354 first.
        let reply = client.reply();
        assert_eq!(reply.0, 250, "{name}: {reply:?}");
        assert!(
            reply.1.starts_with("2.0.0 Ok: queued as "),
            "{name}: {reply:?}"
        );
        let vrfy = client.reply();
        assert_eq!(
            vrfy.0, 252,
            "{name}: the server saw commands in the message: {vrfy:?}"
        );
        assert_eq!(client.cmd("QUIT").0, 221);
        ids.push((name, queue_id(&reply)));
    }

    let messages = sink.wait_messages(SEQUENCES.len(), Duration::from_secs(30));
    assert!(wait_for(Duration::from_secs(10), || node
        .queue()
        .is_empty()));
    let messages_now = sink.messages();
    assert_eq!(
        messages_now.len(),
        SEQUENCES.len(),
        "one message per attempt, nothing smuggled: {:?}",
        messages_now.iter().map(|m| &m.from).collect::<Vec<_>>()
    );
    assert!(messages.iter().all(|m| m.from == "sender@attacker.test"));
    for ((name, id), (_, _, stored)) in ids.iter().zip(SEQUENCES) {
        let message = messages
            .iter()
            .find(|m| m.text().contains(&format!(" id {id}\r\n")))
            .unwrap_or_else(|| panic!("{name}: message {id} not delivered"));
        assert_eq!(message.to, vec!["bob@example.com"]);
        let mut expected = format!("Subject: {name}\r\n\r\nbefore").into_bytes();
        expected.extend_from_slice(stored);
        expected.extend_from_slice(SMUGGLED);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(
            String::from_utf8_lossy(as_sent(&message.data)),
            String::from_utf8_lossy(&expected),
            "{name}: the smuggled text must arrive as content"
        );
    }
}

/// The same attacks with the fake end split across TCP segments at every
/// byte, so the decoder's state must carry over between reads.
#[test]
fn smuggling_split_across_writes() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.set_nodelay();
    assert_eq!(client.cmd("EHLO attacker.test").0, 250);
    for (name, sequence, _) in SEQUENCES {
        client.start_data("sender@attacker.test", "bob@example.com");
        client.send_raw(format!("Subject: {name}\r\n\r\nbefore").as_bytes());
        for byte in sequence {
            client.send_raw(&[*byte]);
            // A short pause with TCP_NODELAY: each byte arrives on its own.
            std::thread::sleep(Duration::from_millis(5));
        }
        client.send_raw(SMUGGLED);
        client.send_raw(b"\r\n.\r\nNOOP\r\n");
        let reply = client.reply();
        assert!(
            reply.1.starts_with("2.0.0 Ok: queued as "),
            "{name}: {reply:?}"
        );
        assert_eq!(client.reply(), (250, "2.0.0 Ok".to_string()), "{name}");
    }
    assert_eq!(client.cmd("QUIT").0, 221);
    sink.wait_messages(SEQUENCES.len(), Duration::from_secs(30));
    assert!(wait_for(Duration::from_secs(10), || node
        .queue()
        .is_empty()));
    let messages = sink.messages();
    assert_eq!(messages.len(), SEQUENCES.len());
    assert!(messages.iter().all(|m| m.from == "sender@attacker.test"));
    assert!(messages
        .iter()
        .all(|m| m.text().contains("Subject: smuggled\r\n\r\nevil\r\n")));
}

#[test]
fn bare_lf_lines_arrive_as_crlf() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    client.start_data("alice@sender.test", "bob@example.com");
    // (`<LF>.<CRLF>` would not end it: the last line ends with CRLF.)
    client.send_raw(
        b"Subject: unix\nFrom: a@sender.test\n\nline one\nline two\r\nline three\n\nlast\r\n.\r\n",
    );
    queue_id(&client.reply());
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(
        as_sent(&messages[0].data),
        b"Subject: unix\r\nFrom: a@sender.test\r\n\r\nline one\r\nline two\r\nline three\r\n\r\nlast\r\n"
    );
}

#[test]
fn dot_unstuffing_is_exact() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    client.start_data("alice@sender.test", "bob@example.com");
    // What a client sends after stuffing the lines ".", "..x", ".y", "."
    // again, and an inner dot that is not at a line start.
    client.send_raw(b"Subject: dots\r\n\r\n..\r\n...x\r\n..y\r\na.b\r\n..\r\n.\r\n");
    queue_id(&client.reply());
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(
        String::from_utf8_lossy(as_sent(&messages[0].data)),
        "Subject: dots\r\n\r\n.\r\n..x\r\n.y\r\na.b\r\n.\r\n"
    );
}

#[test]
fn empty_message_is_delivered() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    client.start_data("alice@sender.test", "bob@example.com");
    // An empty message: the terminator right after 354.
    client.send_raw(b".\r\n");
    let id = queue_id(&client.reply());
    // The session is back in command mode.
    assert_eq!(client.cmd("NOOP").0, 250);
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    let text = messages[0].text();
    assert!(text.contains(&format!(" id {id}\r\n")), "{text}");
    assert_eq!(as_sent(&messages[0].data), b"");
}
