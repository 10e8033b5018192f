//! The customers' JSON API against the running binary: `[[user]]` accounts
//! with hashes made by `antemx hash-password`, HTTP Basic sign-in, each
//! user seeing and releasing only the sidelined mail of their domains, and
//! accounts changed by a reload.

mod common;

use common::{http_request, queue_id, wait_for, Node, Setup, Sink};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const SUSPECT: &str = "Subject: you won\r\n\r\nClaim your prize.\r\n";

/// `antemx hash-password` with the password on standard input.
fn hash_password(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_antemx"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

fn basic(email: &str, password: &str) -> (&'static str, String) {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{email}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    ("authorization", format!("Basic {out}"))
}

fn api(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    who: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let headers: Vec<(&str, String)> = who.map(|(e, p)| basic(e, p)).into_iter().collect();
    let (status, body) = http_request(address, method, path, &headers);
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// `[web] api_listen` on a free port of its own.
fn api_listener(setup: &mut Setup) -> std::net::SocketAddr {
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    setup.web_extra = format!("api_listen = \"{address}\"\n");
    address
}

fn sideline(node: &Node, to: &str) -> String {
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    queue_id(&client.send_message("spam@sender.test", &[to], SUSPECT))
}

fn ids(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn users_see_and_release_only_their_domains_mail() {
    let sink = Sink::start();
    let alice_hash = hash_password("alice's password");
    let admin_hash = hash_password("the admin's password");
    let users = format!(
        "\n[[user]]\nemail = \"Alice@Example.com\"\npassword_hash = \"{alice_hash}\"\ndomains = [\"example.com\"]\n\n[[user]]\nemail = \"ops@filter.test\"\npassword_hash = \"{admin_hash}\"\nadmin = true\n"
    );
    let mut setup = Setup::routed_to(sink.address);
    setup.domains.push(common::DomainRoute {
        name: "other.test".into(),
        deliver_to: sink.address,
        tls: "none",
    });
    setup.extra = format!("\n[filter]\nsideline_at = 2.0\nreject_at = 50.0\n{users}");
    let api_at = api_listener(&mut setup);
    let node = Node::start(setup);
    // Each listener answers its own: no admin API where a proxy points.
    assert_eq!(http_request(api_at, "GET", "/admin/queue", &[]).0, 404);
    assert_eq!(http_request(api_at, "GET", "/metrics", &[]).0, 404);
    assert_eq!(http_request(node.web, "GET", "/api/sideline", &[]).0, 404);
    let ours = sideline(&node, "bob@example.com");
    let theirs = sideline(&node, "carol@other.test");
    let both = {
        let mut client = node.client();
        client.cmd("EHLO client.sender.test");
        queue_id(&client.send_message(
            "spam@sender.test",
            &["dave@example.com", "erin@other.test"],
            SUSPECT,
        ))
    };
    let alice = Some(("alice@example.com", "alice's password"));
    let admin = Some(("ops@filter.test", "the admin's password"));

    let status =
        |method: &str, path: &str, who: Option<(&str, &str)>| api(api_at, method, path, who).0;
    let listed = |who| {
        let (code, listing) = api(api_at, "GET", "/api/sideline", who);
        assert_eq!(code, 200, "{listing}");
        ids(&listing)
    };
    let (theirs_path, theirs_release) = (
        format!("/api/sideline/{theirs}"),
        format!("/api/sideline/{theirs}/release"),
    );
    for (method, path, who, expected) in [
        ("GET", "/api/sideline", None, 401),
        (
            "GET",
            "/api/sideline",
            Some(("alice@example.com", "guess")),
            401,
        ),
        (
            "GET",
            "/api/sideline",
            Some(("nobody@example.com", "x")),
            401,
        ),
        ("GET", theirs_path.as_str(), alice, 404),
        ("GET", "/api/sideline?domain=other.test", alice, 403),
        ("POST", theirs_release.as_str(), alice, 404),
        ("DELETE", theirs_path.as_str(), alice, 404),
    ] {
        assert_eq!(
            status(method, path, who),
            expected,
            "{method} {path} as {who:?}"
        );
    }
    assert!(node
        .log()
        .contains("api: sign-in failed for \"alice@example.com\""));
    assert_eq!(
        listed(alice),
        vec![ours.clone(), both.clone()],
        "alice sees example.com's mail, also when it goes elsewhere too"
    );
    // A message that also goes to another customer is not hers to decide.
    assert_eq!(
        status("POST", &format!("/api/sideline/{both}/release"), alice),
        403
    );
    assert_eq!(
        status("DELETE", &format!("/api/sideline/{both}"), alice),
        403
    );

    let release_ours = format!("/api/sideline/{ours}/release");
    assert_eq!(status("POST", &release_ours, alice), 200);
    let delivered = sink.wait_messages(1, Duration::from_secs(20));
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0]
        .text()
        .contains("X-Antemx-Released: by alice@example.com"));
    assert_eq!(
        status("POST", &release_ours, alice),
        404,
        "released already"
    );

    // Her recipients' sender lists, and only theirs.
    let allow = "/api/lists/bob@example.com/allow?sender=friend%40partner.test";
    assert_eq!(status("POST", allow, alice), 200);
    let (code, lists) = api(api_at, "GET", "/api/lists/bob@example.com", alice);
    assert_eq!(code, 200);
    assert!(lists.to_string().contains("friend@partner.test"), "{lists}");
    let shown = node.cli(&["lists", "show", "bob@example.com", "--json"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("friend@partner.test"));
    assert_eq!(status("GET", "/api/lists/carol@other.test", alice), 403);
    assert_eq!(
        status(
            "POST",
            "/api/lists/carol@other.test/block?sender=x%40y.test",
            alice
        ),
        403
    );

    assert_eq!(
        listed(admin),
        vec![theirs.clone(), both.clone()],
        "the admin sees every domain"
    );
    assert_eq!(status("DELETE", &theirs_path, admin), 200);
    assert_eq!(
        status("DELETE", &format!("/api/sideline/{both}"), admin),
        200
    );
    assert!(node.sidelined().is_empty());

    // Alice's account removed from the file and reloaded: she is out.
    let config = std::fs::read_to_string(&node.config).unwrap();
    let without = config.replace(&format!("[[user]]\nemail = \"Alice@Example.com\"\npassword_hash = \"{alice_hash}\"\ndomains = [\"example.com\"]\n"), "");
    assert_ne!(config, without);
    std::fs::write(&node.config, without).unwrap();
    node.signal("HUP");
    assert!(wait_for(Duration::from_secs(10), || node
        .log()
        .contains("config reloaded")));
    assert_eq!(api(api_at, "GET", "/api/sideline", alice).0, 401);
    assert_eq!(api(api_at, "GET", "/api/sideline", admin).0, 200);
}

#[test]
fn user_mistakes_are_config_errors_with_their_line() {
    let hash = hash_password("pw");
    let base = "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/antemx-users\"\n\n[[domain]]\nname = \"example.com\"\ndeliver_to = \"127.0.0.1:25\"\n";
    let (ok, out, err) = common::check_config(&format!(
        "{base}\n[[user]]\nemail = \"it@example.com\"\npassword_hash = \"{hash}\"\ndomains = [\"example.com\"]\n"
    ));
    assert!(ok, "{err}");
    assert!(out.contains("1 user"), "{out}");
    for (user, wanted) in [
        ("email = \"it@example.com\"\npassword_hash = \"secret\"\ndomains = [\"example.com\"]\n".to_string(), ":11: [[user]] it@example.com: password_hash is not a hash from `antemx hash-password`"),
        (format!("email = \"it@example.com\"\npassword_hash = \"{hash}\"\ndomains = [\"elsewhere.test\"]\n"), ":12: [[user]] it@example.com: elsewhere.test is not a [[domain]] of this config"),
        (format!("email = \"it@example.com\"\npassword_hash = \"{hash}\"\n"), ":10: [[user]] it@example.com: give domains = [...] or admin = true"),
        (format!("email = \"it\"\npassword_hash = \"{hash}\"\nadmin = true\n"), ":10: [[user]] \"it\" is not an email address"),
    ] {
        let (ok, _, err) = common::check_config(&format!("{base}\n[[user]]\n{user}"));
        assert!(!ok && err.contains(wanted), "wanted {wanted:?}, got {err}");
    }
}

#[test]
fn guessing_passwords_is_stopped_after_ten_failures() {
    let sink = Sink::start();
    let hash = hash_password("right");
    let mut setup = Setup::routed_to(sink.address);
    setup.extra = format!(
        "\n[[user]]\nemail = \"it@example.com\"\npassword_hash = \"{hash}\"\ndomains = [\"example.com\"]\n"
    );
    let api_at = api_listener(&mut setup);
    let node = Node::start(setup);
    let sign_in = |password: &str| {
        api(
            api_at,
            "GET",
            "/api/sideline",
            Some(("it@example.com", password)),
        )
        .0
    };
    assert_eq!(sign_in("right"), 200);
    for n in 0..10 {
        assert_eq!(sign_in(&format!("guess {n}")), 401);
    }
    // Even the right password is refused now, from this address.
    assert_eq!(sign_in("right"), 401);
    assert!(node.log().contains("too many failures"));
}
