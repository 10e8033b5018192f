//! Test harness: the real antemx binary on loopback, a real downstream SMTP
//! server that records what it receives, a DNS server on loopback, and a raw
//! SMTP client. Everything binds ephemeral ports on 127.0.0.1.

#![allow(dead_code)]

pub mod dns;
pub mod sink;
// The binary's own date formatting, so test messages carry today's date
// (a fixed date would grow "far in the past" and change scores).
#[path = "../../src/time.rs"]
mod time;

/// Now, as a `Date:` header value.
pub fn date_now() -> String {
    time::rfc5322(time::now_ms())
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use sink::{Mode, Sink};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "antemx-test-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `antemx ARGS... --config CONFIG` to its end.
pub fn antemx(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_antemx"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// `antemx check-config` of a config text: (success, stdout, stderr).
pub fn check_config(text: &str) -> (bool, String, String) {
    let dir = temp_dir("config");
    let path = dir.join("antemx.toml");
    std::fs::write(&path, text).unwrap();
    let out = antemx(&path, &["check-config"]);
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` until it is true or `limit` passes.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    check()
}

pub struct DomainRoute {
    pub name: String,
    pub deliver_to: SocketAddr,
    pub tls: &'static str,
}

/// What goes into a test node's config file.
pub struct Setup {
    pub domains: Vec<DomainRoute>,
    /// Extra TOML appended to the sections, e.g. `[smtp]` keys.
    pub smtp_extra: String,
    pub retry: String,
    pub dns: Option<SocketAddr>,
    /// More sections at the end of the file, e.g. `[filter]`.
    pub extra: String,
    /// The web address, when other nodes must know it before this one
    /// starts (a cluster); else a free port.
    pub web: Option<SocketAddr>,
    /// `serve --node NAME`.
    pub node_name: Option<String>,
    /// More `[node]` keys, e.g. `postmaster`.
    pub node_extra: String,
    /// More `[web]` keys, e.g. `api_listen`.
    pub web_extra: String,
}

impl Setup {
    /// One customer domain, `example.com`, routed to `deliver_to`.
    pub fn routed_to(deliver_to: SocketAddr) -> Setup {
        Setup {
            domains: vec![DomainRoute {
                name: "example.com".into(),
                deliver_to,
                tls: "none",
            }],
            smtp_extra: String::new(),
            retry: String::new(),
            dns: None,
            extra: String::new(),
            web: None,
            node_name: None,
            node_extra: String::new(),
            web_extra: String::new(),
        }
    }
}

/// A running antemx process with its own data directory and ports.
pub struct Node {
    pub smtp: SocketAddr,
    pub web: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    node_name: Option<String>,
    child: Option<Child>,
    /// The DNS server of a node whose test gave none: one that knows no
    /// name, so that no test asks the machine's resolver (SPF, DMARC).
    _dns: Option<dns::DnsServer>,
}

impl Node {
    pub fn start(mut setup: Setup) -> Node {
        let dir = temp_dir("node");
        let own_dns = setup.dns.is_none().then(dns::DnsServer::start);
        if let Some(dns) = &own_dns {
            setup.dns = Some(dns.address);
        }
        let mut node = Node {
            smtp: "127.0.0.1:0".parse().unwrap(),
            web: "127.0.0.1:0".parse().unwrap(),
            log: dir.join("antemx.log"),
            config: dir.join("antemx.toml"),
            dir,
            node_name: setup.node_name.clone(),
            child: None,
            _dns: own_dns,
        };
        // A port found free can be taken by a parallel test before antemx
        // binds it: then try other ports.
        for _ in 0..5 {
            node.smtp = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            node.web = setup
                .web
                .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
            std::fs::write(&node.config, node.config_text(&setup)).unwrap();
            match node.launch() {
                Ok(()) => return node,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("antemx did not start; log:\n{log}"),
            }
        }
        panic!("antemx found no free ports; log:\n{}", node.log());
    }

    fn config_text(&self, setup: &Setup) -> String {
        let mut text = format!(
            "[node]\nhostname = \"mx.antemx.test\"\ndata_dir = \"{}\"\n{}\n[smtp]\nlisten = [\"{}\"]\n{}\n\n[web]\nlisten = \"{}\"\n{}\n[retry]\n{}\n",
            self.dir.join("data").display(),
            setup.node_extra,
            self.smtp,
            setup.smtp_extra,
            self.web,
            setup.web_extra,
            setup.retry
        );
        if let Some(dns) = setup.dns {
            text.push_str(&format!(
                "\n[dns]\nservers = [\"{dns}\"]\ntimeout = \"2s\"\n"
            ));
        }
        for d in &setup.domains {
            text.push_str(&format!(
                "\n[[domain]]\nname = \"{}\"\ndeliver_to = \"{}\"\ntls = \"{}\"\n",
                d.name, d.deliver_to, d.tls
            ));
        }
        text.push_str(&setup.extra);
        text
    }

    /// Starts the process and waits until it listens; on failure, the log.
    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_antemx"));
        command.args(["serve", "--config"]).arg(&self.config);
        if let Some(name) = &self.node_name {
            command.args(["--node", name]);
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("antemx starts");
        self.child = Some(child);
        let (smtp, web) = (self.smtp, self.web);
        let mut exited = false;
        let ready = wait_for(Duration::from_secs(30), || {
            exited = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
            // web first: it is bound after smtp, so the SMTP probe connects once (the metrics test counts it).
            exited || TcpStream::connect(web).is_ok() && TcpStream::connect(smtp).is_ok()
        });
        if ready && !exited {
            return Ok(());
        }
        self.kill9();
        Err(self.log())
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself (after SIGTERM, say).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.as_mut()?.try_wait().ok()? {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    pub fn restart(&mut self) {
        self.kill9();
        if let Err(log) = self.launch() {
            panic!("antemx did not restart; log:\n{log}");
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`) to the running process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `antemx ARGS... --config <this node's config>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        antemx(&self.config, args)
    }

    /// `antemx queue list --json`, parsed.
    pub fn queue(&self) -> Vec<serde_json::Value> {
        self.listing("queue")
    }

    /// `antemx sideline list --json`, parsed.
    pub fn sidelined(&self) -> Vec<serde_json::Value> {
        self.listing("sideline")
    }

    fn listing(&self, what: &str) -> Vec<serde_json::Value> {
        let out = self.cli(&[what, "list", "--json"]);
        assert!(
            out.status.success(),
            "{what} list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.smtp)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("antemx log ({}):\n{}", self.log.display(), self.log());
        }
    }
}

/// A raw SMTP client: what it sends is exactly what the test writes.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub greeting: (u16, String),
}

impl Client {
    pub fn connect(address: SocketAddr) -> Client {
        Client::over(TcpStream::connect(address).unwrap())
    }

    /// Connects from a chosen loopback source address (127.0.1.1, say), to
    /// look like another client network.
    pub fn connect_from(address: SocketAddr, source: std::net::IpAddr) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
        socket.connect(&address.into()).unwrap();
        Client::over(socket.into())
    }

    fn over(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
            greeting: (0, String::new()),
        };
        client.greeting = client.reply();
        client
    }

    /// A write the server closed the connection on shows as reply code 0
    /// at the next read, as a real client would see it.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// Reads one reply, all lines of it: (code, text lines joined by \n).
    pub fn reply(&mut self) -> (u16, String) {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap_or(0);
            if n == 0 {
                return (0, text.join("\n"));
            }
            let line = line.trim_end();
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return (code, text.join("\n"));
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(line);
        self.reply()
    }

    /// Whether the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }

    /// MAIL, one RCPT and DATA, each accepted: the message text comes next.
    pub fn start_data(&mut self, from: &str, to: &str) {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).0, 250);
        assert_eq!(self.cmd(&format!("RCPT TO:<{to}>")).0, 250);
        assert_eq!(self.cmd("DATA").0, 354);
    }

    /// A whole transaction; the final reply to DATA (or the first failure).
    pub fn send_message(&mut self, from: &str, to: &[&str], message: &str) -> (u16, String) {
        let (code, text) = self.cmd(&format!("MAIL FROM:<{from}>"));
        if code != 250 {
            return (code, text);
        }
        let mut accepted = 0;
        for rcpt in to {
            match self.cmd(&format!("RCPT TO:<{rcpt}>")) {
                (250, _) => accepted += 1,
                // The server is closing the session: say so, send nothing more.
                (code @ (0 | 421), text) => return (code, text),
                _ => {}
            }
        }
        if accepted == 0 {
            self.cmd("RSET");
            return (550, "no recipient accepted".into());
        }
        let (code, text) = self.cmd("DATA");
        if code != 354 {
            return (code, text);
        }
        self.send_raw(&dot_stuff(message.as_bytes()));
        self.send_raw(b".\r\n");
        self.reply()
    }
}

/// Dot-stuffs a CRLF message and makes sure it ends with CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The id in `250 2.0.0 Ok: queued as ID`.
pub fn queue_id(reply: &(u16, String)) -> String {
    assert_eq!(reply.0, 250, "not accepted: {reply:?}");
    reply.1.rsplit(' ').next().unwrap().to_string()
}

/// A self-signed certificate and key (PEM) for `name`, made with openssl.
pub fn self_signed_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command is installed");
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

/// The verdict headers antemx puts on top of every message it delivers, in
/// this order.
pub const VERDICT_HEADERS: [&str; 3] = [
    "Authentication-Results: ",
    "X-Spam-Status: ",
    "X-Spam-Score: ",
];

/// Skips one header line and its folded continuation lines.
fn skip_header(data: &[u8]) -> &[u8] {
    let mut rest = data;
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("header line ends with CRLF");
        rest = &rest[end + 2..];
        if !rest.starts_with(b" ") && !rest.starts_with(b"\t") {
            return rest;
        }
    }
}

/// The delivered message after the verdict headers: it starts with the
/// `Received:` header. Panics when the verdict headers are not there.
pub fn after_verdict(data: &[u8]) -> &[u8] {
    let mut rest = data;
    for name in VERDICT_HEADERS {
        assert!(
            rest.starts_with(name.as_bytes()),
            "no {name} header where expected: {:?}",
            String::from_utf8_lossy(&data[..data.len().min(300)])
        );
        rest = skip_header(rest);
    }
    rest
}

/// The delivered message as the client sent it: without the verdict
/// headers and the `Received:` header antemx prepends.
pub fn as_sent(data: &[u8]) -> &[u8] {
    let rest = after_verdict(data);
    assert!(
        rest.starts_with(b"Received: "),
        "no Received header after the verdict: {:?}",
        String::from_utf8_lossy(&rest[..rest.len().min(200)])
    );
    skip_header(rest)
}

/// `[smtp]` keys that configure STARTTLS with a fresh self-signed certificate.
pub fn tls_config(dir: &std::path::Path) -> String {
    let (cert, key) = self_signed_cert(dir, "mx.antemx.test");
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

impl Client {
    /// Reads `n` replies.
    pub fn replies(&mut self, n: usize) -> Vec<(u16, String)> {
        (0..n).map(|_| self.reply()).collect()
    }

    /// Sends each write at once (no Nagle), so a test can split its input
    /// into separate TCP segments.
    pub fn set_nodelay(&mut self) {
        self.writer.set_nodelay(true).unwrap();
    }

    /// Another handle on the connection, for writing from another thread.
    pub fn clone_writer(&self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    /// Bounds how long a read waits (30 s by default).
    pub fn set_read_timeout(&mut self, limit: Duration) {
        self.writer.set_read_timeout(Some(limit)).unwrap();
    }
}

/// Serves MX records for `sender.test` pointing at a new sink, and points
/// the node's MX delivery (bounces) there: returns that sink and the DNS
/// server, which must live as long as the test.
pub fn with_sender_mx(setup: &mut Setup) -> (Sink, dns::DnsServer) {
    let sender_mx = Sink::start();
    let dns = dns::DnsServer::start();
    dns.add_mx("sender.test", 10, "mx.sender.test");
    dns.add_a("mx.sender.test", std::net::Ipv4Addr::LOCALHOST);
    setup.dns = Some(dns.address);
    setup
        .retry
        .push_str(&format!("\nmx_port = {}\n", sender_mx.address.port()));
    (sender_mx, dns)
}

impl Node {
    /// Waits until `count` messages are queued and each has been tried at
    /// least once.
    pub fn wait_attempted(&self, count: usize) -> bool {
        wait_for(Duration::from_secs(10), || {
            let queue = self.queue();
            queue.len() == count && queue.iter().all(|e| e["attempts"].as_u64() >= Some(1))
        })
    }
}

/// A plain HTTP GET: (status, body).
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    http_request(address, "GET", path, &[])
}

/// A plain HTTP/1.1 request without a body, with extra headers: (status,
/// body).
pub fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: antemx\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
