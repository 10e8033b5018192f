//! The project's own stub resolver. A static glibc binary cannot use NSS, so
//! names are resolved here: UDP to the configured servers (or those of
//! /etc/resolv.conf), TCP when an answer is truncated.

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN): a permanent answer.
    NoSuchDomain,
    /// No server gave an answer in time, or they answered SERVFAIL and the like.
    Temporary(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::NoSuchDomain => write!(f, "domain does not exist"),
            DnsError::Temporary(why) => write!(f, "DNS lookup failed: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Resolver {
    /// `servers` are asked in order (the config's `[dns] servers`, which
    /// are those of /etc/resolv.conf when it lists none).
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Resolver {
        Resolver {
            servers: servers.to_vec(),
            timeout,
        }
    }

    /// MX hosts by preference; a domain without MX records has its own name as
    /// the implicit MX (RFC 5321 §5.1). A null MX (".") yields an empty list.
    pub async fn mx(&self, domain: &str) -> Result<Vec<String>, DnsError> {
        let answer = self.query(domain, RecordType::MX).await?;
        let mut hosts: Vec<(u16, String)> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, name_text(&mx.exchange))),
                _ => None,
            })
            .collect();
        if hosts.is_empty() {
            return Ok(vec![domain.to_string()]);
        }
        hosts.sort();
        Ok(hosts
            .into_iter()
            .map(|(_, host)| host)
            .filter(|h| !h.is_empty())
            .collect())
    }

    /// IPv4 and IPv6 addresses of a host; an IP literal is returned as is.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        let (v4, v6) = smol::future::zip(
            self.query(host, RecordType::A),
            self.query(host, RecordType::AAAA),
        )
        .await;
        let mut out = Vec::new();
        let mut first_error = None;
        for result in [v4, v6] {
            match result {
                Ok(answer) => out.extend(answer.answers.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        match (out.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(DnsError::NoSuchDomain),
            _ => Ok(out),
        }
    }

    /// The IPv4 addresses of a name, as DNS lists answer: an empty list when
    /// the name exists without A records, `NoSuchDomain` when it does not.
    pub async fn ipv4(&self, name: &str) -> Result<Vec<std::net::Ipv4Addr>, DnsError> {
        let answer = self.query(name, RecordType::A).await?;
        Ok(answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    /// The names an address's reverse zone gives it (PTR).
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let zone = match ip {
            IpAddr::V4(_) => "in-addr.arpa",
            IpAddr::V6(_) => "ip6.arpa",
        };
        let answer = self
            .query(&format!("{}.{zone}", reversed(ip)), RecordType::PTR)
            .await?;
        Ok(answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(name) => Some(name_text(&name.0)),
                _ => None,
            })
            .filter(|name| !name.is_empty())
            .collect())
    }

    async fn query(&self, name: &str, kind: RecordType) -> Result<Message, DnsError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let name = Name::from_str(&fqdn).map_err(|_| DnsError::NoSuchDomain)?;
        let mut request = Message::query();
        request.add_query(Query::query(name, kind));
        request.metadata.recursion_desired = true;
        let id = request.metadata.id;
        let bytes = request
            .to_vec()
            .map_err(|e| DnsError::Temporary(e.to_string()))?;

        let mut last = DnsError::Temporary("no name servers configured".into());
        for server in &self.servers {
            let attempt = async {
                let mut answer = udp_exchange(*server, &bytes, id).await?;
                if answer.metadata.truncation {
                    answer = tcp_exchange(*server, &bytes, id).await?;
                }
                Ok::<_, std::io::Error>(answer)
            };
            let timeout = async {
                smol::Timer::after(self.timeout).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ))
            };
            match attempt.or(timeout).await {
                Ok(answer) => match answer.metadata.response_code {
                    ResponseCode::NoError => return Ok(answer),
                    ResponseCode::NXDomain => return Err(DnsError::NoSuchDomain),
                    code => last = DnsError::Temporary(format!("{server} answered {code}")),
                },
                Err(e) => last = DnsError::Temporary(format!("{server}: {e}")),
            }
        }
        Err(last)
    }
}

/// An address as reverse zones and DNS lists spell it: IPv4 octets
/// reversed, IPv6 nibbles reversed, dot-separated.
pub fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
            nibbles.join(".")
        }
    }
}

fn name_text(name: &Name) -> String {
    let text = name.to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_ascii_lowercase()
}

fn parse_answer(bytes: &[u8], id: u16) -> std::io::Result<Option<Message>> {
    let answer = Message::from_vec(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok((answer.metadata.id == id).then_some(answer))
}

async fn udp_exchange(server: SocketAddr, request: &[u8], id: u16) -> std::io::Result<Message> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| std::io::Error::other("bad local address"))?;
    let socket = smol::net::UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(request).await?;
    let mut buffer = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buffer).await?;
        // Answers with another id are stray or forged: keep waiting.
        if let Ok(Some(answer)) = parse_answer(&buffer[..n], id) {
            return Ok(answer);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, request: &[u8], id: u16) -> std::io::Result<Message> {
    let mut stream = smol::net::TcpStream::connect(server).await?;
    let length =
        u16::try_from(request.len()).map_err(|_| std::io::Error::other("request too long"))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    let mut buffer = vec![0u8; u16::from_be_bytes(length) as usize];
    stream.read_exact(&mut buffer).await?;
    parse_answer(&buffer, id)?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "answer id mismatch"))
}

/// The name servers of /etc/resolv.conf (127.0.0.1 when it lists none).
pub fn system_servers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<SocketAddr> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if servers.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 53))]
    } else {
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_reversed_as_reverse_zones_spell_them() {
        assert_eq!(reversed("192.0.2.99".parse().unwrap()), "99.2.0.192");
        assert_eq!(
            reversed("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
    }
}
