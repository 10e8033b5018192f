//! Delivery status notifications (RFC 3464): the multipart/report sent to the
//! envelope sender when a recipient fails for good or its time runs out.

use crate::time::rfc5322;

pub struct Failure {
    pub recipient: String,
    /// Enhanced status code, e.g. `5.1.1`; `4.4.7` for expiry.
    pub status: String,
    /// The remote server's reply, or our own reason.
    pub diagnostic: String,
}

pub struct Report<'a> {
    pub hostname: &'a str,
    pub queue_id: &'a str,
    pub original_sender: &'a str,
    pub arrival_ms: u64,
    pub now_ms: u64,
    pub failures: &'a [Failure],
    /// The original message's header section, CRLF-terminated.
    pub original_headers: &'a [u8],
}

/// The enhanced status code in an SMTP reply text, or a default by class.
pub fn status_of(reply: &str, permanent: bool) -> String {
    let found = reply.split_whitespace().take(2).find(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    match found {
        Some(code) if permanent && code.starts_with('4') => format!("5{}", &code[1..]),
        Some(code) => code.to_string(),
        None if permanent => "5.0.0".to_string(),
        None => "4.0.0".to_string(),
    }
}

impl Report<'_> {
    pub fn render(&self) -> Vec<u8> {
        let boundary = format!("{}/{}", self.queue_id, self.hostname);
        let date = rfc5322(self.now_ms);
        let mut text = String::new();
        text.push_str(&format!(
            "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{to}>\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             Date: {date}\r\n\
             Message-ID: <{id}.dsn@{host}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Description: Notification\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n\
             This is the mail system at host {host}.\r\n\
             \r\n\
             Your message could not be delivered to one or more recipients.\r\n\
             The reasons are given below.\r\n\
             \r\n",
            host = self.hostname,
            to = self.original_sender,
            id = self.queue_id,
        ));
        for failure in self.failures {
            text.push_str(&format!(
                "<{}>: {}\r\n",
                failure.recipient,
                one_line(&failure.diagnostic)
            ));
        }
        text.push_str(&format!(
            "\r\n--{boundary}\r\n\
             Content-Description: Delivery report\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; {host}\r\n\
             X-Antemx-Queue-ID: {id}\r\n\
             Arrival-Date: {arrival}\r\n",
            host = self.hostname,
            id = self.queue_id,
            arrival = rfc5322(self.arrival_ms),
        ));
        for failure in self.failures {
            text.push_str(&format!(
                "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
                failure.recipient,
                failure.status,
                one_line(&failure.diagnostic)
            ));
        }
        text.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ));
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(self.original_headers);
        if !self.original_headers.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        bytes
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(status_of("550 5.1.1 No such user", true), "5.1.1");
        assert_eq!(status_of("5.1.1 No such user", true), "5.1.1");
        assert_eq!(status_of("550 No such user", true), "5.0.0");
        assert_eq!(status_of("451 4.3.0 try later", false), "4.3.0");
    }

    #[test]
    fn report_has_the_three_parts() {
        let failures = [Failure {
            recipient: "bob@example.com".into(),
            status: "5.1.1".into(),
            diagnostic: "550 5.1.1 unknown\r\n user".into(),
        }];
        let report = Report {
            hostname: "mx.test",
            queue_id: "ABC",
            original_sender: "alice@sender.test",
            arrival_ms: 0,
            now_ms: 0,
            failures: &failures,
            original_headers: b"Subject: hi\r\n",
        }
        .render();
        let text = String::from_utf8(report).unwrap();
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1"
        ));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 unknown user"));
        assert!(text.contains("text/rfc822-headers\r\n\r\nSubject: hi\r\n"));
        assert!(text.ends_with("--ABC/mx.test--\r\n"));
    }
}
