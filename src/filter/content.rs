//! A message as the content checks see it: parsed once (mail-parser), its
//! text parts decoded (quoted-printable, base64, charsets) and HTML turned
//! into text, its links collected. Every end-of-DATA check reads this one
//! analysis instead of parsing the message again.

use mail_parser::{Message, MessageParser, PartType};

/// Decoded text kept per part and in total. Spam shows itself early; the caps
/// bound the CPU a hostile message can cost at the end of DATA.
const MAX_PART_TEXT: usize = 64 * 1024;
const MAX_TEXT: usize = 256 * 1024;
/// Nested messages (message/rfc822) followed this deep.
const MAX_DEPTH: usize = 3;
/// Links kept per message.
const MAX_LINKS: usize = 200;

/// An HTML link: where it goes and what it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Lower-case host of the target, without a trailing dot; empty when the
    /// target is not an absolute http(s) URL (`mailto:`, relative, ...).
    pub host: String,
    /// The visible text of the link, tags removed, whitespace collapsed.
    pub text: String,
}

pub struct Content<'a> {
    raw: &'a [u8],
    message: Message<'a>,
    /// Decoded text of every text part, HTML converted, parts separated by a
    /// blank line.
    text: String,
    /// Whether any part was HTML.
    has_html: bool,
    /// Whether any part was text/plain (or other non-HTML text).
    has_plain: bool,
    links: Vec<Link>,
    /// Hosts of every http(s) URL in links and text, lower case, in order of
    /// first appearance, without duplicates.
    url_hosts: Vec<String>,
}

/// What a message mail-parser cannot parse (an empty one, say) is judged
/// as: mail-parser's accessors index the first part, and its default
/// message has none.
const UNPARSEABLE: &[u8] = b"X-Unparseable: yes\r\n\r\n";

impl<'a> Content<'a> {
    /// Never fails: what mail-parser cannot parse is an empty message, and
    /// the checks judge what there is.
    pub fn parse(raw: &'a [u8]) -> Content<'a> {
        let message = MessageParser::default()
            .parse(raw)
            .or_else(|| MessageParser::default().parse(UNPARSEABLE))
            .unwrap_or_default();
        let mut content = Content {
            raw,
            message: Message::default(),
            text: String::new(),
            has_html: false,
            has_plain: false,
            links: Vec::new(),
            url_hosts: Vec::new(),
        };
        content.collect(&message, 0);
        let text_hosts: Vec<String> = url_hosts_in(&content.text);
        for host in text_hosts {
            content.add_host(host);
        }
        content.message = message;
        content
    }

    fn collect(&mut self, message: &Message, depth: usize) {
        for part in &message.parts {
            if self.text.len() >= MAX_TEXT {
                return;
            }
            match &part.body {
                PartType::Text(text) => {
                    self.has_plain = true;
                    self.push_text(text);
                }
                PartType::Html(html) => {
                    self.has_html = true;
                    let html = cap(html, MAX_PART_TEXT * 4);
                    for link in links_in(html) {
                        if self.links.len() < MAX_LINKS {
                            if !link.host.is_empty() {
                                self.add_host(link.host.clone());
                            }
                            self.links.push(link);
                        }
                    }
                    self.push_text(&mail_parser::decoders::html::html_to_text(html));
                }
                PartType::Message(inner) if depth < MAX_DEPTH => self.collect(inner, depth + 1),
                _ => {}
            }
        }
    }

    fn push_text(&mut self, text: &str) {
        let room = MAX_TEXT.saturating_sub(self.text.len()).min(MAX_PART_TEXT);
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.text.push_str(cap(text, room));
    }

    fn add_host(&mut self, host: String) {
        if !self.url_hosts.contains(&host) && self.url_hosts.len() < MAX_LINKS {
            self.url_hosts.push(host);
        }
    }

    pub fn raw(&self) -> &[u8] {
        self.raw
    }

    pub fn message(&self) -> &Message<'a> {
        &self.message
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// HTML and no plain-text part at all.
    pub fn html_only(&self) -> bool {
        self.has_html && !self.has_plain
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    pub fn url_hosts(&self) -> &[String] {
        &self.url_hosts
    }

    /// The raw value of the first header of this name in the top-level
    /// header block, as received (unfolded by mail-parser).
    pub fn header_raw(&self, name: &str) -> Option<&str> {
        self.message
            .headers_raw()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cap(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `<a href=...>text</a>` links of an HTML document, roughly: enough to
/// compare a link's target with what it shows, not a full HTML parser.
fn links_in(html: &str) -> Vec<Link> {
    let lower = html.to_ascii_lowercase();
    let mut links = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find("<a") {
        let start = at + found;
        at = start + 2;
        // `<abbr>`, `<article>`: the tag name must end right after the `a`.
        if !lower[at..].starts_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let Some(tag_len) = lower[at..].find('>') else {
            break;
        };
        let tag = &html[at..at + tag_len];
        let tag_lower = &lower[at..at + tag_len];
        at += tag_len + 1;
        let Some(href) = attribute(tag, tag_lower, "href") else {
            continue;
        };
        let end = lower[at..].find("</a").map_or(lower.len(), |e| at + e);
        let text = visible_text(&html[at..end]);
        links.push(Link {
            host: url_host(href.trim()).unwrap_or_default(),
            text,
        });
        at = end;
    }
    links
}

/// The value of attribute `name` in the inside of a tag, quoted or not.
fn attribute<'t>(tag: &'t str, tag_lower: &str, name: &str) -> Option<&'t str> {
    let mut from = 0;
    while let Some(found) = tag_lower[from..].find(name) {
        let start = from + found;
        from = start + name.len();
        let before_ok = start == 0
            || tag_lower.as_bytes()[start - 1].is_ascii_whitespace()
            || tag_lower.as_bytes()[start - 1] == b'"'
            || tag_lower.as_bytes()[start - 1] == b'\'';
        let rest = tag_lower[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let value = tag[value_start..].trim_start();
        let value_start = tag.len() - value.len();
        return Some(match value.as_bytes().first() {
            Some(&q @ (b'"' | b'\'')) => {
                let inner = &tag[value_start + 1..];
                inner.find(q as char).map_or(inner, |e| &inner[..e])
            }
            _ => value
                .find(|c: char| c.is_ascii_whitespace())
                .map_or(value, |e| &value[..e]),
        });
    }
    None
}

/// Text between tags, entities for `&amp;`, `&lt;`, `&gt;`, `&nbsp;` decoded,
/// whitespace collapsed.
fn visible_text(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The host of an absolute http(s) URL, or of a bare `www.` one.
pub fn url_host(url: &str) -> Option<String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url[7..]
    } else if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("www.") {
        url
    } else {
        return None;
    };
    let end = rest
        .find(|c: char| {
            matches!(
                c,
                '/' | '?' | '#' | '\\' | '"' | '\'' | '<' | '>' | '(' | ')' | ','
            ) || c.is_whitespace()
        })
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    // user:password@host:port
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = if host.starts_with('[') {
        host.split(']').next().map(|h| h.trim_start_matches('['))?
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let host = host.trim_end_matches('.').to_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    valid.then_some(host)
}

/// Hosts of the URLs written in plain text.
fn url_hosts_in(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut hosts = Vec::new();
    for pattern in ["http://", "https://", "www."] {
        let mut at = 0;
        while let Some(found) = lower[at..].find(pattern) {
            let start = at + found;
            at = start + pattern.len();
            // `www.` inside `http://www.` was already seen with its scheme.
            if pattern == "www." && lower[..start].ends_with("//") {
                continue;
            }
            if let Some(host) = url_host(&text[start..]) {
                if !hosts.contains(&host) && hosts.len() < MAX_LINKS {
                    hosts.push(host);
                }
            }
        }
    }
    hosts
}

/// The registered domain of a host, roughly: the last two labels, or three
/// under the common two-level public suffixes (`example.co.uk`). A full
/// public-suffix list would be exact; this is enough to group the hosts of
/// one sender and to compare a link's text with its target.
pub fn registered_domain(host: &str) -> &str {
    let labels: Vec<&str> = host.rsplitn(4, '.').collect();
    if labels.len() < 2 || host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    let two_level = matches!(
        labels[1],
        "co" | "com" | "net" | "org" | "gov" | "ac" | "edu" | "ne" | "or" | "go"
    ) && labels[0].len() == 2;
    let keep = if two_level && labels.len() >= 3 { 3 } else { 2 };
    let tail: usize = labels[..keep].iter().map(|l| l.len()).sum::<usize>() + keep - 1;
    &host[host.len() - tail..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_quoted_printable_and_base64() {
        let raw = b"From: a@b.test\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 cr=\r\n=C3=A8me\r\n--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n--XX--\r\n";
        let content = Content::parse(raw);
        assert!(content.text().contains("café crème"), "{}", content.text());
        assert!(content.text().contains("hello world"), "{}", content.text());
        assert!(!content.html_only());
    }

    #[test]
    fn html_links_and_text() {
        let raw = b"Content-Type: text/html\r\n\r\n<p>Hi <b>there</b></p><a class=x href=\"https://Login.Evil.example/x?y\">www.bank.example</a> <abbr>no</abbr> <A HREF=http://second.example>two</A>";
        let content = Content::parse(raw);
        assert!(content.html_only());
        assert_eq!(
            content.links(),
            &[
                Link {
                    host: "login.evil.example".into(),
                    text: "www.bank.example".into()
                },
                Link {
                    host: "second.example".into(),
                    text: "two".into()
                }
            ]
        );
        assert!(content.text().contains("there"));
        assert!(!content.text().contains("<b>"));
        assert!(content
            .url_hosts()
            .contains(&"login.evil.example".to_string()));
        assert!(content
            .url_hosts()
            .contains(&"www.bank.example".to_string()));
    }

    #[test]
    fn urls_in_plain_text() {
        let raw =
            b"\r\nsee http://user@Host.Example:8080/path and www.other.example, https://[::1]/\r\n";
        let content = Content::parse(raw);
        assert_eq!(
            content.url_hosts(),
            &["host.example", "::1", "www.other.example"]
        );
    }

    #[test]
    fn registered_domains() {
        assert_eq!(registered_domain("a.b.example.com"), "example.com");
        assert_eq!(registered_domain("example.com"), "example.com");
        assert_eq!(registered_domain("www.shop.co.uk"), "shop.co.uk");
        assert_eq!(registered_domain("localhost"), "localhost");
        assert_eq!(registered_domain("192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn garbage_is_an_empty_message() {
        for raw in [
            &b""[..],
            b"\xff\xfe\x00",
            b"--\r\n\r\n<a href",
            b"<a href='",
        ] {
            let content = Content::parse(raw);
            let _ = content.text();
            let message = content.message();
            let _ = (message.from(), message.date(), message.subject());
            let _ = content.header_raw("From");
        }
    }
}
