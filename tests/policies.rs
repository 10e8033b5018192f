//! Operator policies on the verdict, end to end against the running binary:
//! allow and block lists (global and per domain), thresholds per domain,
//! and blocked attachments.

mod common;

use common::{queue_id, DomainRoute, Node, Setup, Sink};
use std::time::Duration;

/// Missing From, Date and Message-ID: 2.5 points.
const SUSPECT: &str = "Subject: you won\r\n\r\nClaim your prize.\r\n";
const GTUBE: &str =
    "Subject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
/// A PDF name over a Windows program (base64 of "MZ\x90\0...").
fn exe_as_pdf() -> String {
    EXE_AS_PDF.replace("DATE", &common::date_now())
}
const EXE_AS_PDF: &str = "From: a@sender.test\r\nTo: bob@example.com\r\nSubject: invoice\r\nDate: DATE\r\nMessage-ID: <inv@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--XX--\r\n";

/// example.com (global thresholds 2.0 / 50.0) and example.net with its own
/// settings, both routed to the sink.
fn node(sink: &Sink, filter: &str, example_net: &str) -> Node {
    let mut setup = Setup::routed_to(sink.address);
    setup.domains.push(DomainRoute {
        name: "example.net".into(),
        deliver_to: sink.address,
        tls: "none",
    });
    // The [[domain]] tables come last in the generated file: the extra
    // keys of example.net follow its table directly.
    setup.extra = format!("{example_net}\n[filter]\nsideline_at = 2.0\nreject_at = 50.0\n{filter}");
    Node::start(setup)
}

fn send(node: &Node, from: &str, to: &[&str], message: &str) -> (u16, String) {
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    client.send_message(from, to, message)
}

#[test]
fn an_allowed_sender_is_accepted_whatever_the_score_but_not_gtube() {
    let sink = Sink::start();
    let node = node(&sink, "allow = [\"partner.test\", \"ceo@boss.test\"]\n", "");
    queue_id(&send(
        &node,
        "news@mail.partner.test",
        &["bob@example.com"],
        SUSPECT,
    ));
    queue_id(&send(&node, "CEO@Boss.test", &["bob@example.com"], SUSPECT));
    let delivered = sink.wait_messages(2, Duration::from_secs(20));
    assert_eq!(delivered.len(), 2);
    for message in &delivered {
        let text = message.text();
        assert!(
            text.contains("X-Spam-Status: Yes, score=2.5 required=2.0 tests=ALLOWLISTED,"),
            "{text}"
        );
    }
    // Not on the list: sidelined.
    queue_id(&send(
        &node,
        "intern@boss.test",
        &["bob@example.com"],
        SUSPECT,
    ));
    assert_eq!(node.sidelined().len(), 1);
    // The test string is refused whoever sends it.
    let (code, text) = send(&node, "ceo@boss.test", &["bob@example.com"], GTUBE);
    assert_eq!(code, 550, "{text}");
}

#[test]
fn a_domain_block_list_refuses_for_that_domain_only() {
    let sink = Sink::start();
    let node = node(&sink, "", "block = [\"@spam.test\"]\n");
    let clean = &format!(
        "From: x@spam.test\r\nSubject: hi\r\nDate: {}\r\nMessage-ID: <b@spam.test>\r\n\r\nhi\r\n",
        common::date_now()
    );
    let (code, text) = send(&node, "x@spam.test", &["eve@example.net"], clean);
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("BLOCKLISTED"), "{text}");
    queue_id(&send(&node, "x@spam.test", &["bob@example.com"], clean));
    assert_eq!(sink.wait_messages(1, Duration::from_secs(20)).len(), 1);
    assert!(node.log().contains("rules=BLOCKLISTED=0.0"));
}

#[test]
fn each_domain_judges_by_its_own_thresholds_and_mixed_messages_by_the_strictest() {
    let sink = Sink::start();
    let node = node(&sink, "", "sideline_at = 10.0\nreject_at = 20.0\n");
    queue_id(&send(&node, "a@sender.test", &["eve@example.net"], SUSPECT));
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    assert!(delivered[0]
        .text()
        .contains("X-Spam-Status: No, score=2.5 required=10.0"));
    let id = queue_id(&send(
        &node,
        "a@sender.test",
        &["bob@example.com", "eve@example.net"],
        SUSPECT,
    ));
    let entries = node.sidelined();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], id.as_str());
}

#[test]
fn blocked_attachments_are_sidelined_or_refused() {
    let sink = Sink::start();
    let node_sideline = node(&sink, "", "");
    queue_id(&send(
        &node_sideline,
        "a@sender.test",
        &["bob@example.com"],
        &exe_as_pdf(),
    ));
    let entries = node_sideline.sidelined();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["rules"][0]["name"], "ATTACH_EXECUTABLE");
    assert_eq!(
        entries[0]["rules"][0]["reason"],
        "invoice.pdf is a Windows executable"
    );

    let node_reject = node(&sink, "attachments = \"reject\"\n", "");
    let (code, text) = send(
        &node_reject,
        "a@sender.test",
        &["bob@example.com"],
        &exe_as_pdf(),
    );
    assert_eq!(code, 550, "{text}");

    let node_off = node(&sink, "attachments = \"off\"\n", "");
    queue_id(&send(
        &node_off,
        "a@sender.test",
        &["bob@example.com"],
        &exe_as_pdf(),
    ));
    assert_eq!(sink.wait_messages(1, Duration::from_secs(20)).len(), 1);
}

#[test]
fn bad_policies_name_their_line() {
    let check = |text: &str| {
        let (ok, _, err) = common::check_config(text);
        assert!(!ok);
        err
    };
    let head = "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n";
    let err = check(&format!(
        "{head}[filter]\nallow = [\n  \"ok.test\",\n  \"a@b@c\",\n]\n"
    ));
    assert!(
        err.contains("antemx.toml:7: [filter] allow: \"a@b@c\" is not an address or a domain"),
        "{err}"
    );
    let err = check(&format!("{head}[[domain]]\nname = \"example.com\"\ndeliver_to = \"127.0.0.1:25\"\nreject_at = 1.0\n"));
    assert!(
        err.contains(
            "antemx.toml:7: [[domain]] example.com: reject_at = 1 is below sideline_at = 5"
        ),
        "{err}"
    );
    let err = check(&format!("{head}[filter]\nattachments = \"quarantine\"\n"));
    assert!(err.contains("antemx.toml:5:"), "{err}");
}

#[test]
fn a_client_that_talks_before_the_banner_is_marked() {
    use std::io::{BufRead, BufReader, Write};
    let sink = Sink::start();
    let mut setup = Setup::routed_to(sink.address);
    setup.smtp_extra = "greet_pause = \"700ms\"\n".into();
    // Both messages are delivered, so that the headers can be compared.
    setup.extra = "\n[filter]\nsideline_at = 20.0\nreject_at = 50.0\n".into();
    let node = Node::start(setup);

    // A bot: the whole transaction at once, without waiting for the banner.
    let mut bot = std::net::TcpStream::connect(node.smtp).unwrap();
    bot.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    bot.write_all(
        b"EHLO bot.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(bot.try_clone().unwrap());
    let mut line = String::new();
    let mut read_reply = |prefix: &str| loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(prefix), "{line}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    // Answered in order, the banner first.
    for code in ["220", "250", "250", "250", "354"] {
        read_reply(code);
    }
    bot.write_all(b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        .unwrap();
    read_reply("250");

    // A polite client is not marked.
    let mut client = node.client();
    client.cmd("EHLO polite.test");
    queue_id(&client.send_message(
        "a@sender.test",
        &["bob@example.com"],
        "Subject: hi\r\n\r\nhello\r\n",
    ));

    let messages = sink.wait_messages(2, Duration::from_secs(20));
    let bot_text = messages
        .iter()
        .map(|m| m.text())
        .find(|t| t.contains("bot.test"))
        .unwrap();
    assert!(bot_text.contains("PREGREET"), "{bot_text}");
    let polite = messages
        .iter()
        .map(|m| m.text())
        .find(|t| t.contains("polite.test"))
        .unwrap();
    assert!(!polite.contains("PREGREET"), "{polite}");
    assert!(node
        .log()
        .contains("pregreet: client=[127.0.0.1] talked before the greeting"));
}

#[test]
fn a_recipients_own_lists_decide_for_mail_to_that_recipient() {
    let sink = Sink::start();
    let mut node = node(&sink, "", "");
    let lists = |node: &Node, args: &[&str]| {
        let mut all = vec!["lists"];
        all.extend_from_slice(args);
        let out = node.cli(&all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(lists(&node, &["add", "Bob@Example.com", "allow", "spam.test"]).0);
    let (ok, out, _) = lists(
        &node,
        &["add", "bob@example.com", "block", "a@evil.test", "--json"],
    );
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["allow"][0], "spam.test");
    assert_eq!(shown["block"][0], "a@evil.test");
    let (ok, _, err) = lists(&node, &["add", "bob@example.com", "allow", "a@b@c"]);
    assert!(!ok && err.contains("not an address or a domain"), "{err}");
    let (ok, _, err) = lists(&node, &["add", "bob@example.com", "maybe", "x.test"]);
    assert!(!ok && err.contains("allow or block"), "{err}");

    // The lists are on disk.
    node.kill9();
    node.restart();
    let (_, out, _) = lists(&node, &["show", "bob@example.com"]);
    assert!(out.contains("allow: spam.test"), "{out}");

    // Allowed by Bob: delivered to Bob alone, not when Carol gets it too.
    queue_id(&send(
        &node,
        "x@news.spam.test",
        &["bob@example.com"],
        SUSPECT,
    ));
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    assert!(delivered[0].text().contains("USER_ALLOWLISTED"));
    queue_id(&send(
        &node,
        "x@news.spam.test",
        &["bob@example.com", "carol@example.com"],
        SUSPECT,
    ));
    assert_eq!(node.sidelined().len(), 1);
    // Blocked by Bob.
    let (code, text) = send(&node, "a@evil.test", &["bob@example.com"], SUSPECT);
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("USER_BLOCKLISTED"), "{text}");
    // Off the list: judged by the score again.
    assert!(lists(&node, &["remove", "bob@example.com", "a@evil.test"]).0);
    queue_id(&send(&node, "a@evil.test", &["bob@example.com"], SUSPECT));
    assert_eq!(node.sidelined().len(), 2);
}
