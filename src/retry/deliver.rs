//! One delivery over SMTP with lettre's connection API: MAIL, RCPT per
//! recipient (each with its own outcome), DATA. Blocking: run it inside
//! `smol::unblock`. A connection is kept for the next message to the same
//! destination.

use crate::config::DownstreamTls;
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::Data;
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::transport::smtp::response::Response;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent(String),
    Temporary(String),
    Permanent(String),
}

pub struct Connection {
    smtp: SmtpConnection,
    pub peer: SocketAddr,
    /// The last transaction failed midway; RSET before the next.
    dirty: bool,
}

pub struct Target<'a> {
    pub addresses: &'a [SocketAddr],
    pub server_name: &'a str,
    pub tls: DownstreamTls,
    pub helo: &'a str,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

fn reply_text(response: &Response) -> String {
    format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    )
}

fn error_outcome(error: &lettre::transport::smtp::Error) -> Outcome {
    let text = match error.status() {
        Some(code) => {
            let detail = error.to_string();
            let detail = detail
                .split_once("): ")
                .map(|(_, d)| d.to_string())
                .unwrap_or(detail);
            format!("{code} {detail}")
        }
        None => error.to_string(),
    };
    if error.is_permanent() {
        Outcome::Permanent(text)
    } else {
        Outcome::Temporary(text)
    }
}

fn tls_parameters(server_name: &str) -> Result<TlsParameters, String> {
    // Like Postfix's `may` and `encrypt` levels: encryption without
    // certificate checks, since MX certificates are rarely verifiable.
    TlsParameters::builder(server_name.to_string())
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
        .map_err(|e| e.to_string())
}

/// Opens a connection to the first address that answers.
pub fn connect(target: &Target) -> Result<Connection, String> {
    let helo = ClientId::Domain(target.helo.to_string());
    let mut last = "no address to connect to".to_string();
    for &address in target.addresses {
        match open(target, address, &helo) {
            Ok(connection) => return Ok(connection),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(last)
}

fn open(target: &Target, address: SocketAddr, helo: &ClientId) -> Result<Connection, String> {
    let mut smtp = SmtpConnection::connect(address, Some(target.connect_timeout), helo, None, None)
        .map_err(|e| e.to_string())?;
    smtp.set_timeout(Some(target.command_timeout))
        .map_err(|e| e.to_string())?;
    let wants_tls = target.tls != DownstreamTls::None;
    if wants_tls && smtp.can_starttls() {
        let parameters = tls_parameters(target.server_name)?;
        match smtp.starttls(&parameters, helo) {
            Ok(()) => {}
            Err(e) if target.tls == DownstreamTls::Opportunistic => {
                // A broken TLS stack must not stop mail: try again in clear.
                log::warn!("STARTTLS with {address} failed ({e}); retrying without TLS");
                let mut smtp = SmtpConnection::connect(
                    address,
                    Some(target.connect_timeout),
                    helo,
                    None,
                    None,
                )
                .map_err(|e| e.to_string())?;
                smtp.set_timeout(Some(target.command_timeout))
                    .map_err(|e| e.to_string())?;
                return Ok(Connection {
                    smtp,
                    peer: address,
                    dirty: false,
                });
            }
            Err(e) => return Err(format!("STARTTLS failed: {e}")),
        }
    } else if target.tls == DownstreamTls::Required {
        let _ = smtp.quit();
        return Err(
            "TLS is required for this domain and the server does not offer STARTTLS".into(),
        );
    }
    Ok(Connection {
        smtp,
        peer: address,
        dirty: false,
    })
}

impl Connection {
    pub fn has_broken(&self) -> bool {
        self.smtp.has_broken()
    }

    pub fn quit(mut self) {
        let _ = self.smtp.quit();
    }

    /// A recipient callout: `MAIL FROM:<>` and `RCPT TO`, then RSET, so
    /// nothing is delivered. `Sent` means the server would take the
    /// recipient; a refused `MAIL FROM:<>` is an error of its own (`Err`),
    /// since it says nothing about the recipient.
    pub fn probe(&mut self, recipient: &str) -> Result<Outcome, Outcome> {
        let utf8 = !recipient.is_ascii()
            && self
                .smtp
                .server_info()
                .supports_feature(Extension::SmtpUtfEight);
        let parameters = if utf8 { " SMTPUTF8" } else { "" };
        if let Err(e) = self.smtp.command(format!("MAIL FROM:<>{parameters}\r\n")) {
            return Err(error_outcome(&e));
        }
        let outcome = match self.smtp.command(format!("RCPT TO:<{recipient}>\r\n")) {
            Ok(response) => Outcome::Sent(reply_text(&response)),
            Err(e) => error_outcome(&e),
        };
        let _ = self.smtp.command("RSET\r\n");
        Ok(outcome)
    }

    /// Sends one message; returns each recipient's outcome, and whether the
    /// connection can carry another message.
    pub fn send(
        &mut self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> (Vec<(String, Outcome)>, bool) {
        let all = |outcome: Outcome| {
            recipients
                .iter()
                .map(|r| (r.clone(), outcome.clone()))
                .collect::<Vec<_>>()
        };
        if self.dirty {
            if let Err(e) = self.smtp.command("RSET\r\n") {
                return (all(Outcome::Temporary(format!("RSET: {e}"))), false);
            }
            self.dirty = false;
        }
        let info = self.smtp.server_info();
        let mut parameters = String::new();
        if !message.is_ascii() && info.supports_feature(Extension::EightBitMime) {
            parameters.push_str(" BODY=8BITMIME");
        }
        let utf8_envelope = !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
        if utf8_envelope {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return (
                    all(Outcome::Permanent(
                        "554 5.6.7 the destination does not support SMTPUTF8 for this address"
                            .into(),
                    )),
                    true,
                );
            }
            parameters.push_str(" SMTPUTF8");
        }

        self.dirty = true;
        if let Err(e) = self
            .smtp
            .command(format!("MAIL FROM:<{sender}>{parameters}\r\n"))
        {
            return (all(error_outcome(&e)), !self.smtp.has_broken());
        }
        let mut outcomes: Vec<(String, Outcome)> = Vec::with_capacity(recipients.len());
        let mut accepted = Vec::new();
        for recipient in recipients {
            match self.smtp.command(format!("RCPT TO:<{recipient}>\r\n")) {
                Ok(_) => accepted.push(recipient.clone()),
                Err(e) => {
                    if self.smtp.has_broken() {
                        let outcome = Outcome::Temporary(e.to_string());
                        let answered: Vec<String> =
                            outcomes.iter().map(|(r, _)| r.clone()).collect();
                        let rest = recipients.iter().filter(|r| !answered.contains(r));
                        outcomes.extend(rest.map(|r| (r.clone(), outcome.clone())));
                        return (outcomes, false);
                    }
                    outcomes.push((recipient.clone(), error_outcome(&e)));
                }
            }
        }
        if accepted.is_empty() {
            return (outcomes, true);
        }
        let data = self
            .smtp
            .command(Data)
            .and_then(|_| match std::str::from_utf8(message) {
                // One write for the message and its terminator: lettre's
                // `message` writes the final dot separately, and with Nagle and
                // delayed ACKs that costs 40 ms per message.
                Ok(text) => self.smtp.command(DotStuffed(text)),
                Err(_) => {
                    // lettre writes CRLF.CRLF itself; the message's own final
                    // CRLF is the first half of it.
                    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
                    self.smtp.message(body)
                }
            });
        let outcome = match data {
            Ok(response) => {
                self.dirty = false;
                Outcome::Sent(reply_text(&response))
            }
            Err(e) => error_outcome(&e),
        };
        outcomes.extend(accepted.into_iter().map(|r| (r, outcome.clone())));
        (outcomes, !self.smtp.has_broken())
    }
}

/// A CRLF message, dot-stuffed and terminated, written as one piece.
struct DotStuffed<'a>(&'a str);

impl std::fmt::Display for DotStuffed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in self.0.split_inclusive('\n') {
            if line.starts_with('.') {
                f.write_str(".")?;
            }
            f.write_str(line)?;
        }
        if !self.0.is_empty() && !self.0.ends_with("\r\n") {
            f.write_str("\r\n")?;
        }
        f.write_str(".\r\n")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_stuffing_for_the_wire() {
        let wire = super::DotStuffed("a\r\n.b\r\n..\r\n.\r\n").to_string();
        assert_eq!(wire, "a\r\n..b\r\n...\r\n..\r\n.\r\n");
        assert_eq!(super::DotStuffed("x").to_string(), "x\r\n.\r\n");
    }
}
