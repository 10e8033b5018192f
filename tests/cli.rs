//! The command line: check-config and the errors operators see.

mod common;

use common::check_config;
use std::process::Command;

#[test]
fn the_example_configs_are_valid() {
    for (file, summary) in [
        ("antemx.toml", "ok (1 domain)"),
        (
            "cluster.toml",
            "ok (2 domains, cluster of 3 nodes, 2 copies)",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_antemx"))
            .args(["check-config", "--config"])
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("examples")
                    .join(file),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(summary),
            "{file}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn errors_name_the_file_and_line() {
    let base = "[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/antemx-cli\"\n";
    let cases = [
        (format!("{base}[smtp]\nlisten = [\"127.0.0.1:25\"]\nmax_mesage_size = \"1MB\"\n"), ":6:", "max_mesage_size"),
        (format!("{base}[retry]\nlifetime = \"five days\"\n"), ":5:", "invalid duration"),
        (format!("{base}\n[[domain]]\nname = \"example.com\"\ndeliver_to = \"mail.example.com\"\n"), ":7:", "host:port"),
        (format!("{base}[smtp]\nlisten = [\"localhost:25\"]\n"), ":5:", "ip:port"),
        (
            format!("{base}\n[[domain]]\nname = \"a.example\"\ndeliver_to = \"h:25\"\n[[domain]]\nname = \"A.example.\"\ndeliver_to = \"h:25\"\n"),
            ":9:",
            "configured twice",
        ),
        (format!("{base}[smtp\n"), ":4:", ""),
    ];
    for (text, line, words) in cases {
        let (ok, _, stderr) = check_config(&text);
        assert!(!ok, "accepted:\n{text}");
        assert!(
            stderr.contains(&format!("antemx.toml{line}")),
            "no line {line} in: {stderr}"
        );
        assert!(stderr.contains(words), "{words:?} not in: {stderr}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_antemx"))
        .args(["check-config", "--config", "/nonexistent/antemx.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/antemx.toml: cannot read"));
}

#[test]
fn queue_commands_say_when_the_node_is_not_running() {
    let dir = common::temp_dir("cli");
    let path = dir.join("antemx.toml");
    let port = common::free_port();
    std::fs::write(&path, format!("[node]\nhostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n[web]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_antemx"))
        .args(["queue", "list", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the node"));
}

#[test]
fn check_dns_tells_what_to_change() {
    use std::net::Ipv4Addr;
    let dns = common::dns::DnsServer::start();
    dns.add_a("mx.antemx.test", Ipv4Addr::new(127, 0, 0, 1));
    dns.add_mx("example.com", 10, "mx.antemx.test");
    dns.add_mx("moving.example", 10, "mx.antemx.test");
    dns.add_mx("moving.example", 20, "old-mx.moving.example");
    dns.add_a("old-mx.moving.example", Ipv4Addr::new(127, 0, 0, 9));
    let dir = common::temp_dir("cli");
    let path = dir.join("antemx.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nhostname = \"mx.antemx.test\"\ndata_dir = \"/tmp/x\"\n[dns]\nservers = [\"{}\"]\n[[domain]]\nname = \"example.com\"\ndeliver_to = \"127.0.0.1:2526\"\n",
            dns.address
        ),
    )
    .unwrap();
    let run = |domain: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_antemx"))
            .args(["check-dns", domain, "--json", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, report, _) = run("example.com");
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["mx"][0]["ours"], true);
    assert_eq!(report["deliver_to"], "127.0.0.1:2526");

    let (code, report, _) = run("moving.example");
    assert_eq!(code, Some(1));
    assert_eq!(report["configured"], false);
    let advice = report["advice"].to_string();
    assert!(advice.contains("add the domain to the config"), "{advice}");
    assert!(advice.contains("remove old-mx.moving.example"), "{advice}");

    let (code, _, stderr) = run("nowhere.example");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("does not exist"), "{stderr}");

    // A cluster: each node must be reached by an MX record.
    dns.add_a("mx1.filter.test", Ipv4Addr::new(127, 0, 0, 11));
    dns.add_a("mx2.filter.test", Ipv4Addr::new(127, 0, 0, 12));
    dns.add_a("relay.filter.test", Ipv4Addr::new(127, 0, 0, 13));
    dns.add_mx("shop.example", 10, "mx1.filter.test");
    dns.add_mx("shop.example", 10, "relay.filter.test");
    std::fs::write(
        &path,
        format!(
            "[node]\nhostname = \"mx1.filter.test\"\ndata_dir = \"/tmp/x\"\n[dns]\nservers = [\"{}\"]\n[cluster]\nnodes = {{ mx1 = \"10.0.0.1:8443\", mx2 = \"10.0.0.2:8443\", mx3 = \"127.0.0.13:8443\" }}\nsecret = \"0123456789abcdef0123\"\n[[domain]]\nname = \"shop.example\"\ndeliver_to = \"127.0.0.1:2526\"\n",
            dns.address
        ),
    )
    .unwrap();
    let (code, report, _) = run("shop.example");
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["mx"][0]["node"], "mx1", "{report}");
    assert_eq!(
        report["mx"][1]["node"], "mx3",
        "known by its address: {report}"
    );
    let advice = report["advice"].to_string();
    assert!(
        advice.contains(
            "no MX record reaches node mx2: publish shop.example. IN MX 10 mx2.filter.test."
        ),
        "{advice}"
    );
    assert!(
        !advice.contains("node mx1") && !advice.contains("node mx3"),
        "{advice}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
