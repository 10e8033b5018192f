//! One SMTP session: reads pipelined commands, answers them in order, and
//! flushes the replies whenever no further input is buffered.

use super::address::{judge_recipient, names_postmaster, RcptVerdict};
use super::data::DataDecoder;
use super::ehlo::{ehlo_reply, sanitize_helo};
use super::judge::{rules_for_log, FILTER_BYTES};
use super::received::Trace;
use super::tls::Stream;
use super::Receiver;
use crate::config::Config;
use crate::filter::{Envelope, Verdict};
use crate::retry::Incoming;
use futures_rustls::TlsAcceptor;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smtp_proto::{Error as ParseError, Request, MAIL_SMTPUTF8};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Longest command line we read (RFC 5321 asks for at least 512).
const MAX_LINE: usize = 4096;

pub struct Session<'a> {
    receiver: &'a Receiver,
    config: Arc<Config>,
    stream: Stream,
    ip: IpAddr,
    input: Vec<u8>,
    output: Vec<u8>,
    /// A too-long line is being skipped up to its LF.
    skipping_line: bool,
    helo: Option<String>,
    esmtp: bool,
    transaction: Option<Transaction>,
    errors: u32,
    deadline: Instant,
    /// The client talked before the banner.
    pregreet: bool,
}

struct Transaction {
    sender: String,
    utf8: bool,
    recipients: Vec<String>,
}

/// What [`Session::next_line`] found in the input.
enum Input {
    Line(Vec<u8>),
    /// A line longer than `MAX_LINE`, already dropped.
    TooLong,
}

enum Next {
    Continue,
    Data,
    /// With the certificate the 220 was given under (a reload in between
    /// must not leave the client's handshake unanswered).
    StartTls(TlsAcceptor),
    Close,
}

impl<'a> Session<'a> {
    pub fn new(receiver: &'a Receiver, stream: TcpStream, ip: IpAddr) -> Session<'a> {
        let config = receiver.live.current();
        let deadline = Instant::now() + config.smtp.session_timeout;
        Session {
            receiver,
            config,
            stream: Stream::Plain(stream),
            ip,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(1024),
            skipping_line: false,
            helo: None,
            esmtp: false,
            transaction: None,
            errors: 0,
            deadline,
            pregreet: false,
        }
    }

    pub async fn run(mut self) {
        let pause = self.config.smtp.greet_pause;
        if !pause.is_zero() {
            // What the client says early stays in the input and is answered
            // after the banner, in order.
            let early = async { self.fill(false).await.map(|n| n > 0) };
            let quiet = async {
                smol::Timer::after(pause).await;
                Ok(false)
            };
            match early.or(quiet).await {
                Ok(talked) => self.pregreet = talked,
                Err(_) => return,
            }
            if self.pregreet {
                log::info!("pregreet: client=[{}] talked before the greeting", self.ip);
            }
        }
        let greeting = format!("220 {} ESMTP antemx\r\n", self.config.node.hostname);
        self.output.extend_from_slice(greeting.as_bytes());
        if let Err(e) = self.serve().await {
            if e.kind() == io::ErrorKind::Interrupted {
                let bye = format!(
                    "421 4.3.2 {} Service shutting down, try again later\r\n",
                    self.config.node.hostname
                );
                self.output.extend_from_slice(bye.as_bytes());
                let _ = self.flush().await;
            } else if e.kind() == io::ErrorKind::TimedOut {
                let bye = format!(
                    "421 4.4.2 {} Timeout, closing connection\r\n",
                    self.config.node.hostname
                );
                self.output.extend_from_slice(bye.as_bytes());
                let _ = self.flush().await;
            }
            log::debug!("session with [{}] ended: {e}", self.ip);
        }
        let _ = self.stream.close().await;
    }

    async fn serve(&mut self) -> io::Result<()> {
        loop {
            while let Some(input) = self.next_line() {
                let next = match input {
                    Input::Line(line) => self.command(&line).await,
                    Input::TooLong => self.error("500 5.5.2 Line too long"),
                };
                match next {
                    Next::Continue => {}
                    Next::Close => return self.flush().await,
                    Next::Data => {
                        self.flush().await?;
                        self.receive_message().await?;
                    }
                    Next::StartTls(acceptor) => {
                        self.flush().await?;
                        self.start_tls(&acceptor).await?;
                    }
                }
            }
            self.flush().await?;
            if self.fill(false).await? == 0 {
                return Ok(());
            }
        }
    }

    /// The next complete command line, if one is buffered.
    ///
    /// A line with more than `MAX_LINE` bytes of text (CRLF not counted) is
    /// refused with exactly one reply, whether it arrived in one read or in
    /// many: the limit must not depend on how the client's bytes were split
    /// into segments, and one line must never get two replies.
    fn next_line(&mut self) -> Option<Input> {
        loop {
            match memchr::memchr(b'\n', &self.input) {
                Some(end) if self.skipping_line => {
                    // The tail of a line already answered with 500.
                    self.input.drain(..=end);
                    self.skipping_line = false;
                }
                Some(end) if end - usize::from(self.input[..end].ends_with(b"\r")) > MAX_LINE => {
                    self.input.drain(..=end);
                    return Some(Input::TooLong);
                }
                Some(end) => return Some(Input::Line(self.input.drain(..=end).collect())),
                None if self.skipping_line => {
                    // Still the same over-long line: it got its one reply.
                    self.input.clear();
                    return None;
                }
                // MAX_LINE bytes of text and a CR may still be a good line.
                None if self.input.len() > MAX_LINE + 1 => {
                    self.input.clear();
                    self.skipping_line = true;
                    return Some(Input::TooLong);
                }
                None => return None,
            }
        }
    }

    fn reply(&mut self, text: &str) {
        self.output.extend_from_slice(text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            let output = std::mem::take(&mut self.output);
            self.stream.write_all(&output).await?;
            self.stream.flush().await?;
            self.output = output;
            self.output.clear();
        }
        Ok(())
    }

    /// Reads more input under the command and session timeouts; 0 at EOF.
    /// Between commands, a node that is stopping ends the wait (Interrupted);
    /// inside DATA the message is read to its end first.
    async fn fill(&mut self, in_data: bool) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Checked before reading: a client that keeps input always
            // ready would otherwise win every race against the timer below
            // and hold the session past its deadline.
            return Err(io::Error::new(io::ErrorKind::TimedOut, "session timeout"));
        }
        let wait = self.config.smtp.command_timeout.min(left);
        let mut chunk = [0u8; 16 * 1024];
        let read = async { self.stream.read(&mut chunk).await };
        let timeout = async {
            smol::Timer::after(wait).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "timeout"))
        };
        let stopping = async {
            if in_data {
                std::future::pending::<()>().await;
            }
            self.receiver.stopping().await;
            Err(io::Error::new(io::ErrorKind::Interrupted, "shutting down"))
        };
        let n = read.or(timeout).or(stopping).await?;
        self.input.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Counts a refusal by its enhanced status code.
    fn count_rejection(reply: &str) {
        let code = reply.split_whitespace().nth(1).unwrap_or("unknown");
        crate::metrics::count(crate::metrics::REJECTIONS, &[("code", code)]);
    }

    fn error(&mut self, reply: &str) -> Next {
        self.reply(reply);
        Self::count_rejection(reply);
        self.errors += 1;
        if self.errors >= self.config.smtp.max_errors {
            let bye = format!(
                "421 4.7.0 {} Too many errors, closing connection",
                self.config.node.hostname
            );
            self.reply(&bye);
            log::info!("disconnect: client=[{}] reason=too-many-errors", self.ip);
            return Next::Close;
        }
        Next::Continue
    }

    async fn command(&mut self, line: &[u8]) -> Next {
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(e) => return self.parse_error(e),
        };
        match request {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::Mail { from } => {
                if self.helo.is_none() {
                    return self.error("503 5.5.1 Send EHLO or HELO first");
                }
                if self.transaction.is_some() {
                    return self.error("503 5.5.1 Nested MAIL command");
                }
                if from.size as u64 > self.config.smtp.max_message_size {
                    return self
                        .error("552 5.3.4 Message size exceeds the fixed maximum message size");
                }
                self.transaction = Some(Transaction {
                    sender: from.address.to_string(),
                    utf8: from.flags & MAIL_SMTPUTF8 != 0,
                    recipients: Vec::new(),
                });
                self.reply("250 2.1.0 Ok");
                Next::Continue
            }
            Request::Rcpt { to } => {
                // smtp-proto reads `<Postmaster>` as the empty path, like `<>`.
                let postmaster = to.address.is_empty() && names_postmaster(line);
                let address = if postmaster {
                    "postmaster"
                } else {
                    &to.address
                };
                self.recipient(address).await
            }
            Request::Data => match &self.transaction {
                None => self.error("503 5.5.1 Send MAIL first"),
                Some(t) if t.recipients.is_empty() => self.error("554 5.5.1 No valid recipients"),
                Some(_) => {
                    self.reply("354 End data with <CR><LF>.<CR><LF>");
                    Next::Data
                }
            },
            Request::Rset => {
                self.transaction = None;
                self.reply("250 2.0.0 Ok");
                Next::Continue
            }
            Request::Noop { .. } => {
                self.reply("250 2.0.0 Ok");
                Next::Continue
            }
            Request::Quit => {
                let bye = format!("221 2.0.0 {} Bye", self.config.node.hostname);
                self.reply(&bye);
                Next::Close
            }
            Request::Vrfy { .. } => {
                self.reply("252 2.5.0 Cannot verify the user, but will accept the message and attempt delivery");
                Next::Continue
            }
            Request::Help { .. } => {
                self.reply("214 2.0.0 See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS");
                Next::Continue
            }
            Request::StartTls => match self.receiver.tls() {
                None => self.error("502 5.5.1 STARTTLS is not available"),
                Some(_) if matches!(self.stream, Stream::Tls(_)) => {
                    self.error("503 5.5.1 TLS is already active")
                }
                Some(acceptor) => {
                    self.reply("220 2.0.0 Ready to start TLS");
                    Next::StartTls(acceptor)
                }
            },
            Request::Bdat { .. } => {
                // The chunk that follows would be read as commands; the
                // client broke the protocol, so end the session.
                self.reply("502 5.5.1 BDAT is not supported here (no CHUNKING)");
                Next::Close
            }
            Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Lhlo { .. } => self.error("502 5.5.1 Command not implemented"),
        }
    }

    fn parse_error(&mut self, error: ParseError) -> Next {
        let reply = match error {
            ParseError::UnknownCommand
            | ParseError::NeedsMoreData { .. }
            | ParseError::ResponseTooLong => {
                "500 5.5.2 Syntax error, command unrecognized".to_string()
            }
            ParseError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax".to_string(),
            ParseError::InvalidRecipientAddress => {
                "501 5.1.3 Bad recipient address syntax".to_string()
            }
            ParseError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
            ParseError::InvalidParameter { param } => {
                format!("501 5.5.4 Invalid parameter {param}")
            }
            ParseError::UnsupportedParameter { param } => {
                format!("555 5.5.4 Unsupported parameter {}", sanitize_helo(&param))
            }
            ParseError::InvalidResponse { .. } => "500 5.5.2 Syntax error".to_string(),
        };
        self.error(&reply)
    }

    fn hello(&mut self, host: &str, esmtp: bool) -> Next {
        let name = sanitize_helo(host);
        self.transaction = None;
        self.esmtp = esmtp;
        let reply = if esmtp {
            let offer_tls = self.receiver.tls().is_some() && !matches!(self.stream, Stream::Tls(_));
            ehlo_reply(
                &self.config.node.hostname,
                &name,
                self.config.smtp.max_message_size,
                offer_tls,
            )
        } else {
            format!("250 {}\r\n", self.config.node.hostname)
        };
        self.output.extend_from_slice(reply.as_bytes());
        self.helo = Some(name);
        Next::Continue
    }

    async fn recipient(&mut self, address: &str) -> Next {
        let max = self.config.smtp.max_recipients;
        let verdict = judge_recipient(&self.config, address);
        let Some(transaction) = &mut self.transaction else {
            return self.error("503 5.5.1 Send MAIL first");
        };
        if transaction.recipients.len() >= max {
            self.reply("452 4.5.3 Too many recipients");
            return Next::Continue;
        }
        match verdict {
            RcptVerdict::Accept { address, domain } => {
                if !transaction.recipients.contains(&address) {
                    let sender = transaction.sender.clone();
                    let policies = self.receiver.policies();
                    let judged = policies
                        .judge(&self.config, self.ip, &sender, &address, &domain)
                        .await;
                    if let Err(refusal) = judged {
                        log::info!(
                            "NOQUEUE: reject: RCPT from [{}]: {}; from=<{sender}> to=<{address}> {}",
                            self.ip,
                            refusal.reply,
                            refusal.detail
                        );
                        // Try-again-later is no client error: a message to
                        // many recipients greylisted or not verifiable now
                        // must not end the session.
                        if refusal.reply.starts_with('4') {
                            self.reply(&refusal.reply);
                            Self::count_rejection(&refusal.reply);
                            return Next::Continue;
                        }
                        return self.error(&refusal.reply);
                    }
                    if let Some(transaction) = &mut self.transaction {
                        transaction.recipients.push(address);
                    }
                }
                self.reply("250 2.1.5 Ok");
                Next::Continue
            }
            RcptVerdict::Refuse(reply) => {
                log::info!(
                    "NOQUEUE: reject: RCPT from [{}]: {reply}; from=<{}> to=<{}>",
                    self.ip,
                    transaction.sender,
                    address
                );
                self.error(reply)
            }
        }
    }

    async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        // Anything pipelined after STARTTLS was sent in clear text and must
        // not be executed inside the TLS session (CVE-2011-0411).
        self.input.clear();
        let handshake = self.stream.start_tls(acceptor);
        let timeout = async {
            smol::Timer::after(self.config.smtp.command_timeout).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timeout",
            ))
        };
        handshake.or(timeout).await?;
        self.helo = None;
        self.esmtp = false;
        self.transaction = None;
        Ok(())
    }

    /// Reads the message after 354, stores it and answers the final dot.
    async fn receive_message(&mut self) -> io::Result<()> {
        let Some(transaction) = self.transaction.take() else {
            return Ok(());
        };
        let store = &self.receiver.store;
        let id = store.new_id()?;
        let mut spool = store.spool().create(&id)?;
        let received_ms = crate::time::now_ms();
        let trace = Trace {
            helo: self.helo.as_deref().unwrap_or("unknown"),
            client_ip: self.ip,
            hostname: &self.config.node.hostname,
            esmtp: self.esmtp,
            utf8: transaction.utf8,
            tls: self.stream.tls_description(),
            id: &id,
            recipients: &transaction.recipients,
            date: &crate::time::rfc5322(received_ms),
        };
        spool.write(trace.header().as_bytes())?;

        let max = self.config.smtp.max_message_size;
        let mut decoder = DataDecoder::default();
        let mut decoded = Vec::with_capacity(64 * 1024);
        let mut judged_part = Vec::with_capacity(16 * 1024);
        let mut size: u64 = 0;
        loop {
            let used = decoder.feed(&self.input, &mut decoded);
            self.input.drain(..used);
            size += decoded.len() as u64;
            if size <= max {
                spool.write(&decoded)?;
                let room = FILTER_BYTES.saturating_sub(judged_part.len());
                judged_part.extend_from_slice(&decoded[..decoded.len().min(room)]);
            }
            decoded.clear();
            if decoder.is_done() {
                break;
            }
            if self.fill(true).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during DATA",
                ));
            }
        }

        let who = format!(
            "client=[{}] helo={} from=<{}> to=<{}> size={size}",
            self.ip,
            self.helo.as_deref().unwrap_or("unknown"),
            transaction.sender,
            transaction.recipients.join(">,<"),
        );
        if size > max {
            log::info!("{id}: reject: {who}: message too big");
            self.reply("552 5.3.4 Message size exceeds the fixed maximum message size");
            crate::metrics::count(crate::metrics::REJECTIONS, &[("code", "5.3.4")]);
            return Ok(());
        }
        let hops = super::received::hops(&judged_part);
        if hops >= self.config.smtp.max_hops {
            log::info!("{id}: reject: {who}: mail loop: {hops} Received headers");
            self.reply(&format!(
                "554 5.4.6 Too many hops ({hops} Received headers): is mail looping?"
            ));
            crate::metrics::count(crate::metrics::REJECTIONS, &[("code", "5.4.6")]);
            return Ok(());
        }
        let final_dot = Instant::now();
        let envelope = Envelope {
            client: Some(self.ip),
            pregreet: self.pregreet,
            helo: self.helo.clone(),
            sender: (!transaction.sender.is_empty()).then(|| transaction.sender.clone()),
            recipients: transaction.recipients.clone(),
        };
        let judged = self.receiver.judge(envelope, judged_part).await;
        let decision = &judged.decision;
        let verdict = decision.verdict();
        let rules = rules_for_log(decision);
        let score = decision.score();
        if verdict == Verdict::Reject {
            // The spool file goes with `spool` when it is dropped uncommitted.
            log::info!("{id}: reject: {who} verdict=reject score={score:.1} rules={rules}");
            crate::metrics::count(crate::metrics::MESSAGES, &[("verdict", "reject")]);
            crate::metrics::count(crate::metrics::REJECTIONS, &[("code", "5.7.1")]);
            let mut names: Vec<&str> = decision.hits().iter().map(|h| h.rule).collect();
            names.dedup();
            self.reply(&format!(
                "550 5.7.1 Message refused as spam (score {score:.1}: {})",
                names.join(" ")
            ));
            return Ok(());
        }
        let headers = crate::filter::stamp::headers(
            &self.config.node.hostname,
            decision,
            judged.auth.as_ref(),
        );
        let stored = smol::unblock(move || spool.commit()).await;
        let kept = match (stored, verdict) {
            (Err(e), _) => Err(e),
            (Ok(()), Verdict::Sideline) => {
                let entry = crate::sideline::Entry {
                    id: id.clone(),
                    sender: transaction.sender.clone(),
                    recipients: transaction.recipients.clone(),
                    client: self.ip.to_string(),
                    helo: self.helo.clone().unwrap_or_default(),
                    received_ms,
                    size,
                    from: judged.from,
                    subject: judged.subject,
                    date: judged.date,
                    score,
                    rules: decision
                        .hits()
                        .iter()
                        .map(|h| crate::sideline::Rule {
                            name: h.rule.to_string(),
                            score: h.score,
                            reason: h.reason.clone(),
                        })
                        .collect(),
                    headers,
                    released: None,
                    origin: String::new(),
                    holders: Vec::new(),
                };
                self.receiver.sideline.put(entry).await
            }
            (Ok(()), _) => {
                self.receiver
                    .queue
                    .enqueue(Incoming {
                        id: id.clone(),
                        sender: transaction.sender.clone(),
                        recipients: transaction.recipients.clone(),
                        received_ms,
                        client: self.ip.to_string(),
                        size,
                        headers,
                    })
                    .await
            }
        };
        match kept {
            Ok(()) => {
                crate::metrics::count(crate::metrics::MESSAGES, &[("verdict", verdict.as_str())]);
                crate::metrics::observe(
                    crate::metrics::ACCEPT_SECONDS,
                    final_dot.elapsed().as_secs_f64(),
                );
                log::info!(
                    "{id}: {}: {who} verdict={} score={score:.1} rules={rules}",
                    if verdict == Verdict::Sideline {
                        "sidelined"
                    } else {
                        "accepted"
                    },
                    verdict.as_str()
                );
                self.reply(&format!("250 2.0.0 Ok: queued as {id}"));
            }
            Err(e) => {
                log::error!("{id}: cannot store message: {e}");
                let _ = store.spool().remove(&id);
                self.reply("451 4.3.0 Local error in processing, try again later");
            }
        }
        Ok(())
    }
}
