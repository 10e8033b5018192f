//! 250 means on disk: clients send 2,000 messages while antemx is killed
//! with SIGKILL several times and restarted; every message that got 250
//! must arrive downstream.

mod common;

use common::{dot_stuff, wait_for, Node, Setup, Sink};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MESSAGES: usize = 2000;
const CLIENTS: usize = 8;
const KILLS: usize = 5;

fn reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// One session sending messages until the budget is spent or the server
/// goes away; returns the tokens that got 250.
fn session(
    address: SocketAddr,
    budget: &AtomicUsize,
    client: usize,
    accepted: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    reply(&mut reader)?;
    writer.write_all(b"EHLO durability.test\r\n")?;
    reply(&mut reader)?;
    loop {
        let n = budget.fetch_add(1, Ordering::SeqCst);
        if n >= MESSAGES {
            return Ok(());
        }
        let token = format!("token-{client}-{n}");
        let body = format!(
            "From: load@sender.test\r\nSubject: {token}\r\n\r\n{}\r\n",
            "durable ".repeat(64)
        );
        writer
            .write_all(b"MAIL FROM:<load@sender.test>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")?;
        for expected in [250, 250, 354] {
            if reply(&mut reader)? != expected {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
        }
        let mut data = dot_stuff(body.as_bytes());
        data.extend_from_slice(b".\r\n");
        writer.write_all(&data)?;
        if reply(&mut reader)? == 250 {
            accepted.lock().unwrap().push(token);
        }
    }
}

#[test]
fn every_accepted_message_survives_sigkill() {
    let sink = Sink::start();
    let mut node = Node::start(Setup::routed_to(sink.address));
    let address = node.smtp;
    let budget = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(240);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (budget, accepted) = (budget.clone(), accepted.clone());
            std::thread::spawn(move || {
                while budget.load(Ordering::SeqCst) < MESSAGES && Instant::now() < deadline {
                    if session(address, &budget, client, &accepted).is_err() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

    for kill in 0..KILLS {
        let target = MESSAGES * (kill + 1) / (KILLS + 1);
        wait_for(Duration::from_secs(60), || {
            budget.load(Ordering::SeqCst) >= target
        });
        node.kill9();
        std::thread::sleep(Duration::from_millis(50));
        node.restart();
    }
    for client in clients {
        client.join().unwrap();
    }

    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(
        accepted.len() > MESSAGES / 2,
        "only {} of {MESSAGES} accepted",
        accepted.len()
    );
    let subject = |m: &common::sink::Message| {
        m.text()
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap_or_default()
    };
    let all_arrived = wait_for(Duration::from_secs(60), || {
        let arrived: HashSet<String> = sink.messages().iter().map(subject).collect();
        accepted.is_subset(&arrived)
    });
    let arrived: Vec<String> = sink.messages().iter().map(subject).collect();
    let unique: HashSet<&String> = arrived.iter().collect();
    let missing: Vec<&String> = accepted.iter().filter(|t| !unique.contains(t)).collect();
    assert!(
        all_arrived,
        "{} accepted messages lost after {KILLS} SIGKILLs: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "durability: {} accepted, {} arrived ({} duplicates from deliveries cut by a kill), {KILLS} kills",
        accepted.len(),
        arrived.len(),
        arrived.len() - unique.len()
    );
}
