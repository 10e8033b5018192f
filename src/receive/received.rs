//! The `Received:` header prepended to every message (RFC 5321 §4.4).

pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_ip: std::net::IpAddr,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub utf8: bool,
    pub tls: Option<String>,
    pub id: &'a str,
    pub recipients: &'a [String],
    pub date: &'a str,
}

impl Trace<'_> {
    pub fn header(&self) -> String {
        let with = match (self.utf8, self.esmtp, self.tls.is_some()) {
            (true, _, true) => "UTF8SMTPS",
            (true, _, false) => "UTF8SMTP",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, true) => "SMTPS",
            (false, false, false) => "SMTP",
        };
        let mut header = format!(
            "Received: from {} ([{}])\r\n\tby {} (antemx) with {} id {}",
            self.helo, self.client_ip, self.hostname, with, self.id
        );
        if let Some(tls) = &self.tls {
            header.push_str(&format!("\r\n\t({tls})"));
        }
        // Naming the recipient of a multi-recipient message would leak the
        // others' envelope to each of them.
        if let [only] = self.recipients {
            header.push_str(&format!("\r\n\tfor <{only}>"));
        }
        header.push_str(&format!("; {}\r\n", self.date));
        header
    }
}

/// How many `Received:` headers a message carries already: each relay adds
/// one, so a message going round in circles (a `deliver_to` pointing back
/// at the filter, say) piles them up.
pub fn hops(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .filter(|line| {
            line.get(..9)
                .is_some_and(|name| name.eq_ignore_ascii_case(b"received:"))
        })
        .count()
}

#[cfg(test)]
mod hop_tests {
    use super::hops;

    #[test]
    fn only_received_headers_of_the_header_section_count() {
        let message = b"Received: from a\r\n\tby b\r\nRECEIVED: from c\r\nSubject: x\r\nX-Received: no\r\n\r\nReceived: in the body\r\n";
        assert_eq!(hops(message), 2);
        assert_eq!(hops(b""), 0);
        assert_eq!(hops(b"\r\nReceived: body only\r\n"), 0);
    }
}
