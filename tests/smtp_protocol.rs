//! The SMTP dialogue as a client sees it, against the running binary.

mod common;

use common::{Node, Setup, Sink};
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
    for extension in ["PIPELINING", "SIZE 25000000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"] {
        assert!(text.lines().any(|l| l == extension), "{extension} missing in {text}");
    }
    assert!(!text.contains("STARTTLS"), "STARTTLS offered without a certificate");
    assert_eq!(client.cmd("HELO client.test").0, 250);
    assert_eq!(client.cmd("NOOP").0, 250);
    assert_eq!(client.cmd("RSET").0, 250);
    assert_eq!(client.cmd("VRFY someone").0, 252);
    assert_eq!(client.cmd("HELP").0, 214);
    assert_eq!(client.cmd("QUIT").0, 221);
}

#[test]
fn null_sender_is_accepted_and_delivered() {
    let sink = Sink::start();
    let node = Node::start(Setup::routed_to(sink.address));
    let mut client = node.client();
    client.cmd("EHLO client.test");
    let reply = client.send_message("", &["bob@example.com"], "Subject: bounce\r\n\r\nreport\r\n");
    assert_eq!(reply.0, 250, "{reply:?}");
    let messages = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(messages[0].from, "");
    assert_eq!(messages[0].to, vec!["bob@example.com"]);
}
