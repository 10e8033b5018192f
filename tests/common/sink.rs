//! A downstream SMTP server for tests: it records every message and every
//! attempt, refuses chosen recipients, and can answer 4xx on demand.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// 451 to every MAIL FROM.
    TempFail,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub from: String,
    pub to: Vec<String>,
    /// The bytes after DATA, dot-unstuffed, CRLF line ends.
    pub data: Vec<u8>,
    pub at: Instant,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Default)]
struct State {
    messages: Vec<Message>,
    /// When each MAIL FROM arrived, with the sender.
    attempts: Vec<(Instant, String)>,
    refuse: HashSet<String>,
    mode: Option<Mode>,
    /// How long each RCPT waits for its reply (a slow server).
    rcpt_delay: Duration,
    connections: usize,
    active: usize,
    max_active: usize,
}

#[derive(Clone)]
pub struct Sink {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Sink {
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = Sink {
            address: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(State {
                mode: Some(Mode::Accept),
                ..State::default()
            })),
        };
        let state = sink.state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || {
                    {
                        let mut s = state.lock().unwrap();
                        s.connections += 1;
                        s.active += 1;
                        s.max_active = s.max_active.max(s.active);
                    }
                    let _ = session(stream, &state);
                    state.lock().unwrap().active -= 1;
                });
            }
        });
        sink
    }

    pub fn refuse(&self, recipient: &str) {
        self.state
            .lock()
            .unwrap()
            .refuse
            .insert(recipient.to_string());
    }

    /// Takes mail for a recipient refused before.
    pub fn accept(&self, recipient: &str) {
        self.state.lock().unwrap().refuse.remove(recipient);
    }

    pub fn set_rcpt_delay(&self, delay: Duration) {
        self.state.lock().unwrap().rcpt_delay = delay;
    }

    /// Recipient callouts seen: transactions from the null sender.
    pub fn callouts(&self) -> usize {
        self.attempts()
            .iter()
            .filter(|(_, from)| from.is_empty())
            .count()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    pub fn messages(&self) -> Vec<Message> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn attempts(&self) -> Vec<(Instant, String)> {
        self.state.lock().unwrap().attempts.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// The most connections that were open at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state.lock().unwrap().max_active
    }

    /// Waits until at least `n` messages arrived; returns them.
    pub fn wait_messages(&self, n: usize, limit: Duration) -> Vec<Message> {
        super::wait_for(limit, || self.messages().len() >= n);
        self.messages()
    }
}

fn session(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(b"220 sink.test ESMTP test sink\r\n")?;
    let mut from = String::new();
    let mut to: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 sink.test\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            let mut s = state.lock().unwrap();
            from = address_of(&line);
            s.attempts.push((Instant::now(), from.clone()));
            to.clear();
            if s.mode == Some(Mode::TempFail) {
                "451 4.3.0 Temporarily unavailable, try later\r\n".into()
            } else {
                "250 2.1.0 Ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = address_of(&line);
            let delay = state.lock().unwrap().rcpt_delay;
            std::thread::sleep(delay);
            if state.lock().unwrap().refuse.contains(&rcpt) {
                "550 5.1.1 <recipient> User unknown\r\n".into()
            } else {
                to.push(rcpt);
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper.starts_with("DATA") {
            writer.write_all(b"354 go ahead\r\n")?;
            let mut data = Vec::new();
            loop {
                let mut raw = Vec::new();
                if reader.read_until(b'\n', &mut raw)? == 0 {
                    return Ok(());
                }
                if raw == b".\r\n" {
                    break;
                }
                let line = if raw.first() == Some(&b'.') {
                    &raw[1..]
                } else {
                    &raw[..]
                };
                data.extend_from_slice(line);
            }
            state.lock().unwrap().messages.push(Message {
                from: from.clone(),
                to: std::mem::take(&mut to),
                data,
                at: Instant::now(),
            });
            "250 2.0.0 Ok: stored\r\n".into()
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            to.clear();
            "250 2.0.0 Ok\r\n".into()
        } else if upper.starts_with("QUIT") {
            writer.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            "502 5.5.2 Unknown command\r\n".into()
        };
        writer.write_all(reply.as_bytes())?;
    }
}

fn address_of(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line[start..]
        .find('>')
        .map(|i| i + start)
        .unwrap_or(line.len());
    line[start..end].to_string()
}
