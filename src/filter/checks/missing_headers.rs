//! Headers every real mail program writes (RFC 5322 §3.6 requires From and
//! Date, and Message-ID is universal): their absence, or a value no program
//! would write, marks mail made by hand-rolled bulk software.

use crate::filter::{Check, Content, Hit};

/// Small scores, as SpamAssassin gives them: each is weak evidence alone
/// (some scripts and old gateways omit these too), and only adds up.
const MISSING_FROM: f64 = 1.0;
const MALFORMED_FROM: f64 = 1.0;
const MISSING_DATE: f64 = 1.0;
const MALFORMED_DATE: f64 = 1.0;
const MISSING_MESSAGE_ID: f64 = 0.5;
const MALFORMED_MESSAGE_ID: f64 = 0.5;

pub struct MissingHeaders;

impl Check for MissingHeaders {
    fn data(&self, content: &Content) -> Vec<Hit> {
        let mut hits = Vec::new();
        let message = content.message();
        // An entry without an address is what a stray comma in a display
        // name makes (`From: Account team ,<a@b>`): no mail program writes
        // that, phishing kits often do.
        let (with_address, without) = message.from().map_or((0, 0), |from| {
            from.iter().fold((0, 0), |(with, without), addr| {
                if addr.address().is_some_and(|a| a.contains('@')) {
                    (with + 1, without)
                } else {
                    (with, without + 1)
                }
            })
        });
        if with_address == 0 {
            hits.push(Hit::new(
                "MISSING_FROM",
                MISSING_FROM,
                match content.header_raw("From") {
                    Some(_) => "the From: header has no address",
                    None => "no From: header",
                },
            ));
        } else if without > 0 {
            hits.push(Hit::new(
                "MALFORMED_FROM",
                MALFORMED_FROM,
                format!(
                    "From: {:?} has an entry without an address",
                    short(content.header_raw("From").unwrap_or("").trim())
                ),
            ));
        }
        match (content.header_raw("Date"), message.date()) {
            (None, _) => hits.push(Hit::new("MISSING_DATE", MISSING_DATE, "no Date: header")),
            (Some(raw), None) => hits.push(Hit::new(
                "MALFORMED_DATE",
                MALFORMED_DATE,
                format!("Date: {:?} is not an RFC 5322 date", short(raw.trim())),
            )),
            (Some(_), Some(date)) if !date.is_valid() => hits.push(Hit::new(
                "MALFORMED_DATE",
                MALFORMED_DATE,
                format!("Date: {date} is not a real date"),
            )),
            _ => {}
        }
        match content.header_raw("Message-ID") {
            None => hits.push(Hit::new(
                "MISSING_MESSAGE_ID",
                MISSING_MESSAGE_ID,
                "no Message-ID: header",
            )),
            Some(raw) => {
                let id = raw.trim();
                let well_formed = id.starts_with('<')
                    && id.ends_with('>')
                    && id.len() > 4
                    && id[1..id.len() - 1].contains('@');
                if !well_formed {
                    hits.push(Hit::new(
                        "MALFORMED_MESSAGE_ID",
                        MALFORMED_MESSAGE_ID,
                        format!("Message-ID: {:?} is not <left@right>", short(id)),
                    ));
                }
            }
        }
        hits
    }
}

/// A header value cut for a one-line reason.
fn short(value: &str) -> &str {
    match value.char_indices().nth(60) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(raw: &str) -> Vec<&'static str> {
        MissingHeaders
            .data(&Content::parse(raw.as_bytes()))
            .into_iter()
            .map(|h| h.rule)
            .collect()
    }

    const GOOD: &str = "From: Alice <alice@example.com>\r\nDate: Fri, 04 Dec 2026 13:54:21 +0000\r\nMessage-ID: <1234.5678@example.com>\r\nSubject: hi\r\n\r\nhello\r\n";

    #[test]
    fn a_proper_message_fires_nothing() {
        assert!(rules(GOOD).is_empty(), "{:?}", rules(GOOD));
    }

    #[test]
    fn each_missing_header_fires_alone() {
        let no_from = GOOD.replace("From: Alice <alice@example.com>\r\n", "");
        assert_eq!(rules(&no_from), ["MISSING_FROM"]);
        let no_date = GOOD.replace("Date: Fri, 04 Dec 2026 13:54:21 +0000\r\n", "");
        assert_eq!(rules(&no_date), ["MISSING_DATE"]);
        let no_id = GOOD.replace("Message-ID: <1234.5678@example.com>\r\n", "");
        assert_eq!(rules(&no_id), ["MISSING_MESSAGE_ID"]);
    }

    #[test]
    fn malformed_values_fire() {
        let bad_from = GOOD.replace("Alice <alice@example.com>", "undisclosed");
        assert_eq!(rules(&bad_from), ["MISSING_FROM"]);
        let comma = GOOD.replace(
            "Alice <alice@example.com>",
            "Account team ,_<no-reply@example.com>",
        );
        assert_eq!(rules(&comma), ["MALFORMED_FROM"]);
        let two = GOOD.replace("Alice <alice@example.com>", "a@example.com, b@example.com");
        assert!(rules(&two).is_empty());
        let bad_date = GOOD.replace("Fri, 04 Dec 2026 13:54:21 +0000", "yesterday");
        assert_eq!(rules(&bad_date), ["MALFORMED_DATE"]);
        let bad_id = GOOD.replace("<1234.5678@example.com>", "1234.5678");
        assert_eq!(rules(&bad_id), ["MALFORMED_MESSAGE_ID"]);
    }
}
