//! The verdict headers a delivered message carries (`X-Spam-Status`,
//! `X-Spam-Score`, `Authentication-Results`), and the removal of headers of
//! those names that arrived from outside: a sender must not be able to
//! pre-set them and be trusted by the customer's mail server.

use super::checks::auth::Authentication;
use super::Decision;

/// Headers that only antemx may set on mail it delivers.
const OURS: &[&str] = &[
    "x-spam-status",
    "x-spam-score",
    "x-spam-flag",
    "authentication-results",
];

/// The verdict headers for a decision and the sender authentication it
/// was judged with, each line ending in CRLF.
pub fn headers(hostname: &str, decision: &Decision, auth: Option<&Authentication>) -> String {
    // `required` is the line the message was judged by: its recipients'.
    let sideline_at = decision.thresholds().sideline_at();
    let mut rules: Vec<&str> = decision.hits().iter().map(|h| h.rule).collect();
    rules.sort_unstable();
    rules.dedup();
    let tests = if rules.is_empty() {
        "none".to_string()
    } else {
        rules.join(",")
    };
    let spam = if decision.score() >= sideline_at {
        "Yes"
    } else {
        "No"
    };
    // One method result per folded line; RFC 8601 says "none" when no
    // method was evaluated.
    let results = auth.map(Authentication::results).unwrap_or_default();
    let results = if results.is_empty() {
        " none".to_string()
    } else {
        format!("\r\n\t{}", results.join(";\r\n\t"))
    };
    format!(
        "Authentication-Results: {hostname};{results}\r\n\
         X-Spam-Status: {spam}, score={:.1} required={sideline_at:.1} tests={tests}\r\n\
         X-Spam-Score: {:.1}\r\n",
        decision.score(),
        decision.score(),
    )
}

/// The message as delivered: `headers` first, then the message with every
/// header of [`OURS`]'s names removed from its header section (with their
/// folded continuation lines). The body is untouched.
pub fn stamp(headers: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() + message.len());
    out.extend_from_slice(headers.as_bytes());
    let mut rest = message;
    let mut dropping = false;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = line[0] == b' ' || line[0] == b'\t';
        if !continuation {
            dropping = is_ours(line);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    out
}

fn is_ours(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let name = line[..colon].trim_ascii();
    OURS.iter()
        .any(|ours| name.eq_ignore_ascii_case(ours.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_verdict_headers_are_removed_with_their_continuations() {
        let message = b"Received: from a\r\nX-Spam-Status: No, score=-100\r\n\tfolded=yes\r\nSubject: hi\r\nx-spam-score : -50\r\nAuthentication-Results: evil; dkim=pass\r\n\r\nX-Spam-Status: in the body stays\r\n";
        let out = stamp("X-Spam-Status: Yes\r\n", message);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Spam-Status: Yes\r\nReceived: from a\r\nSubject: hi\r\n\r\nX-Spam-Status: in the body stays\r\n"
        );
    }

    #[test]
    fn a_message_without_body_or_final_newline_is_kept() {
        assert_eq!(stamp("A: b\r\n", b"Subject: x"), b"A: b\r\nSubject: x");
        assert_eq!(stamp("", b""), b"");
    }
}
