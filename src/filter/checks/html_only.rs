//! HTML without a plain-text alternative. Mail programs write both; bulk
//! senders often write only HTML. Weak evidence: some newsletters do too.

use crate::filter::{Check, Content, Hit};

const SCORE: f64 = 0.5;

pub struct HtmlOnly;

impl Check for HtmlOnly {
    fn data(&self, content: &Content) -> Vec<Hit> {
        if content.html_only() {
            vec![Hit::new(
                "HTML_ONLY",
                SCORE,
                "HTML only, no plain-text alternative",
            )]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fires(raw: &[u8]) -> bool {
        !HtmlOnly.data(&Content::parse(raw)).is_empty()
    }

    #[test]
    fn fires_on_html_alone() {
        assert!(fires(b"Content-Type: text/html\r\n\r\n<p>Buy</p>\r\n"));
    }

    #[test]
    fn quiet_with_a_text_alternative_or_plain_text() {
        let alternative = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nBuy\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>Buy</p>\r\n--b--\r\n";
        assert!(!fires(alternative));
        assert!(!fires(b"Subject: x\r\n\r\nplain\r\n"));
    }
}
