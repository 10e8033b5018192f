//! Three nodes of one cluster on loopback, each a real antemx process with
//! its own data directory, sharing one `[cluster]` section: sidelined mail
//! kept on two nodes, listed and released from any node exactly once (also
//! when the node that received it is dead, and when two nodes are asked at
//! once), list changes reaching a node that was down, `antemx drain`, and a
//! peer API that refuses calls not signed with the cluster secret.

mod common;

use common::{free_port, http_get, http_request, queue_id, wait_for, Mode, Node, Setup, Sink};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const SECRET: &str = "a-test-cluster-secret-0123456789";
const NAMES: [&str; 3] = ["mx1", "mx2", "mx3"];
/// A message missing From, Date and Message-ID scores 2.5: sidelined.
const FILTER: &str = "\n[filter]\nsideline_at = 2.0\nreject_at = 50.0\n";
const SUSPECT: &str = "Subject: you won\r\nTo: bob@example.com\r\n\r\nClaim your prize.\r\n";
const WAIT: Duration = Duration::from_secs(20);

fn clean(n: usize) -> String {
    format!("From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: note {n}\r\nDate: {}\r\nMessage-ID: <note{n}@sender.test>\r\n\r\nHello.\r\n", common::date_now())
}

/// The `[cluster]` section for nodes at these web addresses.
fn cluster_section(webs: &[SocketAddr], copies: usize) -> String {
    let nodes: Vec<String> = NAMES
        .iter()
        .zip(webs)
        .map(|(name, web)| format!("{name} = \"{web}\""))
        .collect();
    format!(
        "\n[cluster]\nnodes = {{ {} }}\nsecret = \"{SECRET}\"\ncopies = {copies}\nheal_interval = \"1s\"\n",
        nodes.join(", ")
    )
}

fn start_cluster(sink: &Sink, copies: usize) -> Vec<Node> {
    let webs: Vec<SocketAddr> = NAMES
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let section = cluster_section(&webs, copies);
    NAMES
        .iter()
        .zip(&webs)
        .map(|(name, web)| {
            let mut setup = Setup::routed_to(sink.address);
            setup.extra = format!("{FILTER}{section}");
            setup.retry = "min_interval = \"1s\"\nmax_interval = \"2s\"\n".into();
            setup.web = Some(*web);
            setup.node_name = Some(name.to_string());
            Node::start(setup)
        })
        .collect()
}

/// A gauge of this node's /metrics.
fn gauge(node: &Node, name: &str) -> f64 {
    let (_, page) = http_get(node.web, "/metrics");
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// How many sidelined messages this node keeps a copy of.
fn copies_on(node: &Node) -> usize {
    let copies = gauge(node, "antemx_sideline_messages");
    if copies.is_nan() {
        0
    } else {
        copies as usize
    }
}

fn total_copies(nodes: &[Node]) -> usize {
    nodes.iter().map(copies_on).sum()
}

fn sideline_suspect(node: &Node) -> String {
    let mut client = node.client();
    client.cmd("EHLO client.sender.test");
    let reply = client.send_message("alice@sender.test", &["bob@example.com"], SUSPECT);
    assert!(reply.1.contains("sidelined") || reply.0 == 250, "{reply:?}");
    queue_id(&reply)
}

fn listed_ids(node: &Node) -> Vec<String> {
    node.sidelined()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn release(node: &Node, id: &str) -> std::process::Output {
    node.cli(&["sideline", "release", id])
}

#[test]
fn sidelined_mail_is_kept_on_two_nodes_and_released_once_after_its_node_dies() {
    let sink = Sink::start();
    let mut nodes = start_cluster(&sink, 2);
    let id = sideline_suspect(&nodes[0]);
    assert!(id.starts_with("mx1-"), "ids carry the node's name: {id}");
    assert!(
        wait_for(WAIT, || total_copies(&nodes) == 2),
        "two copies expected, nodes hold {:?}",
        nodes.iter().map(copies_on).collect::<Vec<_>>()
    );
    assert_eq!(copies_on(&nodes[0]), 1, "the receiving node keeps its copy");
    for node in &nodes {
        assert_eq!(
            listed_ids(node),
            vec![id.clone()],
            "every node lists it once"
        );
    }
    let shown = nodes[2].cli(&["sideline", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("Received by mx1, kept on mx1, mx"),
        "{shown}"
    );

    // The node that received it dies; the message is still there.
    nodes[0].kill9();
    let survivors = &nodes[1..];
    for node in survivors {
        assert_eq!(listed_ids(node), vec![id.clone()]);
    }
    let released = release(&nodes[2], &id);
    assert!(
        released.status.success(),
        "release: {}",
        String::from_utf8_lossy(&released.stderr)
    );
    let delivered = sink.wait_messages(1, WAIT);
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].text().contains("X-Antemx-Released: by admin"));
    let again = release(&nodes[1], &id);
    assert!(!again.status.success(), "a second release must fail");
    assert!(wait_for(WAIT, || copies_on(&nodes[1])
        + copies_on(&nodes[2])
        == 0));

    // Back up, the dead node learns of the release and drops its copy; a
    // release asked of it now delivers nothing more.
    nodes[0].restart();
    assert!(
        wait_for(WAIT, || copies_on(&nodes[0]) == 0),
        "the returning node kept a released message; log:\n{}",
        nodes[0].log()
    );
    assert!(!release(&nodes[0], &id).status.success());
    assert!(listed_ids(&nodes[0]).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
}

#[test]
fn copies_and_calls_owed_to_a_dead_peer_survive_kill_9() {
    let sink = Sink::start();
    let mut nodes = start_cluster(&sink, 3);
    let id = sideline_suspect(&nodes[0]);
    assert!(wait_for(WAIT, || total_copies(&nodes) == 3));
    // Every copy is on disk: all three killed and back, all three hold it.
    for node in nodes.iter_mut() {
        node.kill9();
    }
    for node in nodes.iter_mut() {
        node.restart();
    }
    assert_eq!(total_copies(&nodes), 3);

    // Released while mx3 is down: the deciding node (mx1) owes mx3 a "drop
    // your copy", kept in its outbox. It dies before mx3 is back (once its
    // delivery is recorded: a delivery cut short by kill -9 is made again,
    // at least once, which is another test's matter); back up, it still
    // makes the call.
    nodes[2].kill9();
    let released = release(&nodes[1], &id);
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    assert_eq!(sink.wait_messages(1, WAIT).len(), 1);
    assert!(wait_for(WAIT, || nodes[0]
        .log()
        .contains(&format!("{id}: removed"))));
    nodes[0].kill9();
    nodes[0].restart();
    nodes[2].restart();
    assert!(
        wait_for(WAIT, || copies_on(&nodes[2]) == 0),
        "mx3 kept a released message; mx1 log:\n{}",
        nodes[0].log()
    );
    assert!(!release(&nodes[2], &id).status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
}

#[test]
fn two_nodes_releasing_at_once_deliver_once() {
    let sink = Sink::start();
    let nodes = start_cluster(&sink, 2);
    let ids: Vec<String> = (0..3).map(|_| sideline_suspect(&nodes[0])).collect();
    assert!(wait_for(WAIT, || total_copies(&nodes) == 6));
    for id in &ids {
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let racers: Vec<_> = nodes[1..]
                .iter()
                .map(|node| scope.spawn(move || release(node, id).status.success()))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(
            outcomes.iter().filter(|ok| **ok).count(),
            1,
            "{id}: exactly one release wins: {outcomes:?}"
        );
    }
    let delivered = sink.wait_messages(3, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered.len(), 3);
    assert_eq!(sink.messages().len(), 3, "each message delivered once");
    assert!(wait_for(WAIT, || total_copies(&nodes) == 0));
}

#[test]
fn deleting_drops_every_copy_and_training_reaches_every_node() {
    let sink = Sink::start();
    let nodes = start_cluster(&sink, 3);
    let id = sideline_suspect(&nodes[1]);
    assert!(wait_for(WAIT, || total_copies(&nodes) == 3));
    let deleted = nodes[2].cli(&["sideline", "delete", &id]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(wait_for(WAIT, || total_copies(&nodes) == 0));
    assert!(!release(&nodes[0], &id).status.success());
    assert!(sink.messages().is_empty());

    // A release with --train teaches every node's classifier.
    let id = sideline_suspect(&nodes[1]);
    assert!(wait_for(WAIT, || total_copies(&nodes) == 3));
    let trained = nodes[0].cli(&["sideline", "release", &id, "--train"]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    for node in &nodes {
        assert!(
            wait_for(WAIT, || gauge(node, "antemx_classifier_learned_ham") == 1.0),
            "a node did not learn the released message"
        );
    }
    assert_eq!(sink.wait_messages(1, WAIT).len(), 1);
}

#[test]
fn list_changes_reach_every_node_and_one_that_was_down() {
    let sink = Sink::start();
    let mut nodes = start_cluster(&sink, 2);
    let allowed = |node: &Node| {
        let out = node.cli(&["lists", "show", "bob@example.com", "--json"]);
        String::from_utf8_lossy(&out.stdout).contains("friend@partner.test")
    };
    let reachable = |node: &Node| gauge(node, "antemx_cluster_peers_reachable");
    assert_eq!(gauge(&nodes[0], "antemx_cluster_peers"), 2.0);
    assert!(wait_for(WAIT, || reachable(&nodes[0]) == 2.0));
    nodes[2].kill9();
    assert!(
        wait_for(WAIT, || reachable(&nodes[0]) == 1.0),
        "a dead peer shows in /metrics"
    );
    assert!(nodes[0].log().contains("cluster: peer mx3 is unreachable"));
    let added = nodes[0].cli(&[
        "lists",
        "add",
        "bob@example.com",
        "allow",
        "friend@partner.test",
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(wait_for(WAIT, || allowed(&nodes[1])));
    nodes[2].restart();
    assert!(wait_for(WAIT, || reachable(&nodes[0]) == 2.0));
    assert!(nodes[0].log().contains("cluster: peer mx3 answers again"));
    assert!(
        wait_for(WAIT, || allowed(&nodes[2])),
        "the node that was down never got the change; log:\n{}",
        nodes[0].log()
    );
    // And it decides with it: the suspect message from that sender passes.
    let mut client = nodes[2].client();
    client.cmd("EHLO client.partner.test");
    let reply = client.send_message("friend@partner.test", &["bob@example.com"], SUSPECT);
    assert_eq!(reply.0, 250);
    assert_eq!(sink.wait_messages(1, WAIT).len(), 1);
}

#[test]
fn drain_hands_the_queue_and_the_sidelined_mail_to_the_peers() {
    let sink = Sink::start();
    sink.set_mode(Mode::TempFail);
    let nodes = start_cluster(&sink, 2);
    let queued: Vec<String> = (0..5)
        .map(|n| {
            let mut client = nodes[0].client();
            client.cmd("EHLO client.sender.test");
            queue_id(&client.send_message("alice@sender.test", &["bob@example.com"], &clean(n)))
        })
        .collect();
    let sidelined: Vec<String> = (0..2).map(|_| sideline_suspect(&nodes[0])).collect();
    assert!(wait_for(WAIT, || total_copies(&nodes) == 4));
    assert_eq!(nodes[0].queue().len(), 5);

    let drained = nodes[0].cli(&["drain"]);
    assert!(
        drained.status.success(),
        "drain: {}{}",
        String::from_utf8_lossy(&drained.stdout),
        String::from_utf8_lossy(&drained.stderr)
    );
    assert!(
        nodes[0].queue().is_empty(),
        "the drained node's queue is empty"
    );
    assert_eq!(copies_on(&nodes[0]), 0);
    assert_eq!(
        copies_on(&nodes[1]) + copies_on(&nodes[2]),
        4,
        "two copies each, elsewhere"
    );
    let mut taken: Vec<String> = nodes[1..]
        .iter()
        .flat_map(|n| n.queue())
        .map(|job| job["id"].as_str().unwrap().to_string())
        .collect();
    taken.sort();
    let mut expected = queued.clone();
    expected.sort();
    assert_eq!(
        taken, expected,
        "each queued message is on exactly one peer"
    );
    let mut listed = listed_ids(&nodes[1]);
    listed.sort();
    let mut expected = sidelined.clone();
    expected.sort();
    assert_eq!(listed, expected);
    // The drained node takes no more mail.
    assert!(
        TcpStream::connect(nodes[0].smtp).is_err() || nodes[0].client().greeting.0 != 220,
        "a drained node must not take mail"
    );

    // Nor copies from its peers: theirs go to the node left.
    for _ in 0..4 {
        sideline_suspect(&nodes[1]);
    }
    assert!(wait_for(WAIT, || copies_on(&nodes[1])
        + copies_on(&nodes[2])
        == 12));
    assert_eq!(copies_on(&nodes[0]), 0);

    sink.set_mode(Mode::Accept);
    for node in &nodes[1..] {
        node.cli(&["queue", "flush"]);
    }
    let delivered = sink.wait_messages(5, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered.len(), 5);
    assert_eq!(
        sink.messages().len(),
        5,
        "each queued message delivered once"
    );
}

#[test]
fn a_reload_can_change_the_members_but_not_drop_this_node() {
    let sink = Sink::start();
    let nodes = start_cluster(&sink, 2);
    let config = std::fs::read_to_string(&nodes[0].config).unwrap();
    let mx3 = format!(", mx3 = \"{}\"", nodes[2].web);
    assert!(config.contains(&mx3));

    // Without this node: refused, the old config stays.
    let mx1 = format!("mx1 = \"{}\", ", nodes[0].web);
    std::fs::write(&nodes[0].config, config.replace(&mx1, "")).unwrap();
    nodes[0].signal("HUP");
    assert!(wait_for(WAIT, || nodes[0].log().contains(
        "this node (mx1) is not among the new [cluster] nodes (mx2, mx3)"
    )));
    let id = sideline_suspect(&nodes[0]);
    assert!(
        wait_for(WAIT, || total_copies(&nodes) == 2),
        "still in the cluster"
    );

    // Without mx3: accepted. mx2 is the only peer left: it gets the copy of
    // the next message, and of the first if that one was on mx3 (healed).
    std::fs::write(&nodes[0].config, config.replace(&mx3, "")).unwrap();
    nodes[0].signal("HUP");
    assert!(wait_for(WAIT, || nodes[0]
        .log()
        .contains("config reloaded")));
    let second = sideline_suspect(&nodes[0]);
    assert!(
        wait_for(WAIT, || copies_on(&nodes[1]) == 2),
        "mx2 should hold both; log:\n{}",
        nodes[0].log()
    );
    let mut listed = listed_ids(&nodes[0]);
    listed.sort();
    let mut expected = vec![id, second];
    expected.sort();
    assert_eq!(listed, expected);
}

/// A peer's call as src/cluster/auth.rs signs it.
struct Signed<'a> {
    secret: &'a str,
    from: &'a str,
    to: &'a str,
    time: u64,
    nonce: u64,
}

impl Signed<'_> {
    fn headers(&self, method: &str, path: &str) -> Vec<(&'static str, String)> {
        use ring::{digest, hmac};
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let body_digest = hex(digest::digest(&digest::SHA256, b"").as_ref());
        let (from, to, time, nonce) = (self.from, self.to, self.time, self.nonce);
        let text = format!("{method}\n{path}\n{from}\n{to}\n{time}\n{nonce}\n{body_digest}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.secret.as_bytes());
        vec![
            ("x-antemx-node", from.to_string()),
            ("x-antemx-time", time.to_string()),
            ("x-antemx-nonce", nonce.to_string()),
            (
                "x-antemx-signature",
                hex(hmac::sign(&key, text.as_bytes()).as_ref()),
            ),
        ]
    }
}

#[test]
fn the_peer_api_refuses_calls_not_signed_with_the_cluster_secret() {
    let sink = Sink::start();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let absent: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut setup = Setup::routed_to(sink.address);
    setup.extra = format!("{FILTER}{}", cluster_section(&[web, absent, absent], 1));
    setup.web = Some(web);
    setup.node_name = Some("mx1".into());
    let node = Node::start(setup);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = "/peer/sideline";
    let good = Signed {
        secret: SECRET,
        from: "mx2",
        to: "mx1",
        time: now,
        nonce: 1,
    };
    let call = |signed: Signed| http_request(node.web, "GET", path, &signed.headers("GET", path)).0;
    // The test's signing is right: a good call passes, once.
    assert_eq!(call(Signed { ..good }), 200);
    assert_eq!(call(Signed { ..good }), 401, "replayed");
    assert_eq!(call(Signed { nonce: 2, ..good }), 200, "another call");
    assert_eq!(http_get(node.web, path).0, 401, "unsigned");
    let wrong_secret = "another-secret-0123456789";
    assert_eq!(
        call(Signed {
            secret: wrong_secret,
            nonce: 3,
            ..good
        }),
        401,
        "wrong secret"
    );
    assert_eq!(
        call(Signed {
            from: "mx9",
            nonce: 4,
            ..good
        }),
        401,
        "not a node"
    );
    assert_eq!(
        call(Signed {
            from: "mx1",
            nonce: 5,
            ..good
        }),
        401,
        "itself"
    );
    assert_eq!(
        call(Signed {
            to: "mx3",
            nonce: 6,
            ..good
        }),
        401,
        "meant for another node"
    );
    assert_eq!(
        call(Signed {
            time: now - 600,
            nonce: 7,
            ..good
        }),
        401,
        "ten minutes old"
    );
    assert_eq!(call(Signed { nonce: 8, ..good }), 200);
    let log = node.log();
    assert!(
        log.contains("peer API: refused GET /peer/sideline"),
        "{log}"
    );
    assert!(log.contains("a replay"), "{log}");
}

/// Something at a peer's address that answers every call with an unsigned
/// "410 Gone", as someone on the path could; returns how many calls came.
fn forger() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buffer = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 410 Gone\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
        }
    });
    (address, calls)
}

#[test]
fn answers_not_signed_by_a_peer_are_not_believed() {
    let sink = Sink::start();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (forged, calls) = forger();
    let mut setup = Setup::routed_to(sink.address);
    setup.extra = format!("{FILTER}{}", cluster_section(&[web, forged, forged], 2));
    setup.web = Some(web);
    setup.node_name = Some("mx1".into());
    let node = Node::start(setup);
    let id = sideline_suspect(&node);
    // The copy is offered to mx2 and mx3 (both the forger) at once and at
    // each heal; "410 gone" unsigned must not make mx1 drop its own.
    assert!(wait_for(WAIT, || calls
        .load(std::sync::atomic::Ordering::SeqCst)
        >= 4));
    assert_eq!(copies_on(&node), 1, "log:\n{}", node.log());
    assert_eq!(listed_ids(&node), vec![id.clone()]);
    assert!(node
        .log()
        .contains("the answer is not signed with [cluster] secret"));
    let released = release(&node, &id);
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    assert_eq!(sink.wait_messages(1, WAIT).len(), 1);
}

#[test]
fn cluster_config_mistakes_are_refused_with_their_line() {
    let base = "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/antemx-cluster-config\"\n";
    let nodes =
        "nodes = { mx1 = \"10.0.0.1:8443\", mx2 = \"10.0.0.2:8443\", mx3 = \"10.0.0.3:8443\" }";
    let (ok, out, err) = common::check_config(&format!(
        "{base}\n[cluster]\n{nodes}\nsecret = \"{SECRET}\"\ncopies = 2\n"
    ));
    assert!(ok, "{err}");
    assert!(out.contains("3 nodes"), "{out}");
    for (section, wanted) in [
        (
            format!("{nodes}\nsecret = \"{SECRET}\"\ncopies = 4\n"),
            ":8: [cluster] copies must be between 1 and the number of nodes (3)",
        ),
        (
            format!("{nodes}\nsecret = \"short\"\n"),
            ":7: [cluster] secret must be at least 16",
        ),
        (
            format!("nodes = {{ mx1 = \"mx1.example:8443\" }}\nsecret = \"{SECRET}\"\n"),
            ":6: [cluster] nodes: mx1 = \"mx1.example:8443\" is not ip:port",
        ),
        (
            format!("{nodes}\nsecret = \"{SECRET}\"\nreplicas = 2\n"),
            ":8: unknown field `replicas`",
        ),
    ] {
        let (ok, _, err) = common::check_config(&format!("{base}\n[cluster]\n{section}"));
        assert!(!ok && err.contains(wanted), "wanted {wanted:?}, got {err}");
    }

    // A node must find itself among the nodes.
    let dir = common::temp_dir("cluster-config");
    let path = dir.join("antemx.toml");
    std::fs::write(
        &path,
        format!("{base}\n[cluster]\n{nodes}\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_antemx"))
        .args(["serve", "--node", "mx9", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--node mx9 is not among [cluster] nodes (mx1, mx2, mx3)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
