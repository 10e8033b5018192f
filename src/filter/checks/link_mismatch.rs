//! A link whose visible text is an address on one domain while it leads to
//! another: `<a href="https://login.evil.example">www.bank.example</a>`, the
//! core trick of phishing.

use crate::filter::content::{registered_domain, url_host};
use crate::filter::{Check, Content, Hit};

/// Newsletters' click-tracking redirects also show one domain and lead to
/// another, so this is strong but not decisive evidence.
const SCORE: f64 = 1.5;

pub struct LinkMismatch;

impl Check for LinkMismatch {
    fn data(&self, content: &Content) -> Vec<Hit> {
        for link in content.links() {
            if link.host.is_empty() {
                continue;
            }
            let Some(shown) = shown_host(&link.text) else {
                continue;
            };
            let shown = registered_domain(&shown);
            let target = registered_domain(&link.host);
            if shown != target {
                // One hit per message: ten mismatched links are one trick.
                return vec![Hit::new(
                    "LINK_TEXT_MISMATCH",
                    SCORE,
                    format!("a link shows {shown} but leads to {target}"),
                )];
            }
        }
        Vec::new()
    }
}

/// The host a link's text shows, when the text is an address: a URL, a
/// `www.` name, or a bare domain name (`bank.example`).
fn shown_host(text: &str) -> Option<String> {
    let text = text.trim();
    if text.contains(char::is_whitespace) {
        return None;
    }
    if let Some(host) = url_host(text) {
        return Some(host);
    }
    // A bare name: labels of letters, digits and hyphens, a top-level label
    // of letters only. "Click.here" would pass too, but its "top-level
    // label" is not a real one often enough to matter at this weight.
    let name = text.trim_end_matches('/').trim_end_matches('.');
    let labels: Vec<&str> = name.split('.').collect();
    let tld = labels.last()?;
    let plausible = labels.len() >= 2
        && tld.len() >= 2
        && tld.chars().all(|c| c.is_ascii_alphabetic())
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    plausible.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(html: &str) -> Vec<Hit> {
        let raw = format!("Content-Type: text/html\r\n\r\n{html}\r\n");
        LinkMismatch.data(&Content::parse(raw.as_bytes()))
    }

    #[test]
    fn fires_when_text_shows_another_domain() {
        for html in [
            r#"<a href="https://login.evil.example/x">www.bank.example</a>"#,
            r#"<a href="http://evil.example">https://bank.example/login</a>"#,
            r#"<a href=http://evil.example>Bank.Example</a>"#,
        ] {
            let hits = hits(html);
            assert_eq!(hits.len(), 1, "{html}");
            assert!(
                hits[0].reason.contains("bank.example"),
                "{}",
                hits[0].reason
            );
        }
    }

    #[test]
    fn quiet_for_honest_links() {
        for html in [
            r#"<a href="https://www.bank.example/login">bank.example</a>"#,
            r#"<a href="https://mail.bank.example/">https://www.bank.example</a>"#,
            r#"<a href="https://evil.example">click here</a>"#,
            r#"<a href="mailto:a@bank.example">www.other.example</a>"#,
            r#"<a href="https://shop.co.uk/a">www.shop.co.uk</a>"#,
        ] {
            assert!(hits(html).is_empty(), "{html}");
        }
    }
}
