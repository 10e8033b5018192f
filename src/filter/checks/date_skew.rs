//! A Date: header far from when the message arrived (`DATE_IN_FUTURE`,
//! `DATE_IN_PAST`): mail programs stamp the time they send, so bulk software
//! with a fixed or random date stands out. Mail that waited in queues is
//! hours late, not days; clocks are minutes wrong, not a day.
//!
//! "Arrived" is now, or the time in the newest `Received:` header when the
//! Date is close to that: a message scanned or replayed long after it
//! arrived (`antemx scan` of old mail, the accuracy corpus) is judged
//! against its own arrival, not against today.

use crate::filter::{Check, Content, Hit};

const FUTURE: f64 = 1.5;
const PAST: f64 = 1.0;
const FUTURE_LIMIT_S: i64 = 24 * 3600;
const PAST_LIMIT_S: i64 = 7 * 24 * 3600;

pub struct DateSkew {
    /// Seconds since the epoch now; a parameter so tests can move the clock.
    now: fn() -> i64,
}

impl Default for DateSkew {
    fn default() -> Self {
        DateSkew {
            now: || (crate::time::now_ms() / 1000) as i64,
        }
    }
}

impl Check for DateSkew {
    fn data(&self, content: &Content) -> Vec<Hit> {
        let Some(date) = content.message().date().filter(|d| d.is_valid()) else {
            return Vec::new();
        };
        let sent = date.to_timestamp();
        let mut skew = sent - (self.now)();
        if let Some(arrived) = newest_received(content) {
            if (sent - arrived).abs() < skew.abs() {
                skew = sent - arrived;
            }
        }
        let days = |s: i64| s.abs() as f64 / 86400.0;
        if skew > FUTURE_LIMIT_S {
            vec![Hit::new(
                "DATE_IN_FUTURE",
                FUTURE,
                format!("Date: {date} is {:.1} days in the future", days(skew)),
            )]
        } else if -skew > PAST_LIMIT_S {
            vec![Hit::new(
                "DATE_IN_PAST",
                PAST,
                format!("Date: {date} is {:.1} days old", days(skew)),
            )]
        } else {
            Vec::new()
        }
    }
}

/// The time stamp of the newest `Received:` header (the first one).
fn newest_received(content: &Content) -> Option<i64> {
    let value = content.header_raw("Received")?;
    let stamp = value.rsplit_once(';')?.1.trim();
    let parsed = *mail_parser::MessageParser::default()
        .parse(format!("Date: {stamp}\r\n\r\n").as_bytes())?
        .date()?;
    parsed.is_valid().then(|| parsed.to_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-04 12:00:00 UTC.
    fn at_noon() -> i64 {
        1_796_385_600
    }

    fn rules(date: &str) -> Vec<&'static str> {
        let raw = format!("Date: {date}\r\nSubject: x\r\n\r\nbody\r\n");
        DateSkew { now: at_noon }
            .data(&Content::parse(raw.as_bytes()))
            .iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn far_dates_fire() {
        assert_eq!(rules("Sat, 06 Dec 2026 12:00:00 +0000"), ["DATE_IN_FUTURE"]);
        assert_eq!(rules("Fri, 01 Jan 2021 00:00:00 +0000"), ["DATE_IN_PAST"]);
    }

    #[test]
    fn near_dates_and_bad_dates_do_not() {
        assert!(rules("Fri, 04 Dec 2026 13:55:00 +0100").is_empty());
        assert!(rules("Thu, 03 Dec 2026 02:00:00 -0800").is_empty());
        assert!(rules("Sat, 05 Dec 2026 08:00:00 +0000").is_empty());
        // MALFORMED_DATE's business, not this check's.
        assert!(rules("yesterday").is_empty());
    }

    #[test]
    fn old_mail_is_judged_against_its_own_arrival() {
        let judge = |received: &str, date: &str| {
            let raw = format!("Received: from a by b; {received}\r\nDate: {date}\r\n\r\nx\r\n");
            DateSkew { now: at_noon }
                .data(&Content::parse(raw.as_bytes()))
                .iter()
                .map(|h| h.rule)
                .collect::<Vec<_>>()
        };
        let then = "Mon, 09 Apr 2007 10:00:00 +0000";
        assert!(judge(then, "Mon, 09 Apr 2007 09:58:00 +0000").is_empty());
        assert_eq!(
            judge(then, "Mon, 01 Jan 2001 00:00:00 +0000"),
            ["DATE_IN_PAST"]
        );
        // A Received stamp cannot make a far future date look right.
        assert_eq!(
            judge(
                "Fri, 04 Dec 2026 12:00:00 +0000",
                "Fri, 11 Dec 2026 12:00:00 +0000"
            ),
            ["DATE_IN_FUTURE"]
        );
    }
}
