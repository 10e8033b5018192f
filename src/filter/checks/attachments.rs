//! Dangerous attachments (`ATTACH_BLOCKED_TYPE`, `ATTACH_DOUBLE_EXT`,
//! `ATTACH_EXECUTABLE`, `ATTACH_ARCHIVE_EXECUTABLE`): blocked types by file
//! name extension and by content (executables and scripts whatever they are
//! called), names that hide their type behind a document extension, and
//! archives (ZIP, RAR, tar) holding any of those. `[filter] attachments` says what
//! happens: the message is at least sidelined (default) or refused.

use crate::filter::{Check, Content, Force, Hit, Verdict};
use mail_parser::{MimeHeaders, PartType};

/// Score shown with the rule; the verdict comes from the action.
const SCORE: f64 = 5.0;

/// Extensions blocked when `[filter] blocked_extensions` is not set:
/// executables, scripts, shortcuts and installers Windows runs on a click,
/// and disk images that carry them past mail filters.
pub const DEFAULT_BLOCKED: &[&str] = &[
    "ade", "adp", "app", "bas", "bat", "cab", "chm", "cmd", "com", "cpl", "dll", "exe", "hta",
    "img", "inf", "ins", "iso", "isp", "jar", "js", "jse", "lnk", "msc", "msi", "msp", "mst",
    "pif", "ps1", "reg", "scr", "sct", "shb", "shs", "vb", "vbe", "vbs", "vhd", "wsc", "wsf",
    "wsh",
];

/// Extensions a double extension pretends to be.
const DOCUMENT_LIKE: &[&str] = &[
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "rtf", "jpg", "jpeg", "png", "gif",
    "zip", "htm", "html", "csv",
];

pub struct Attachments {
    blocked: Vec<String>,
    verdict: Verdict,
}

impl Attachments {
    /// `verdict`: the least a message with such an attachment gets.
    pub fn new(blocked: &[String], verdict: Verdict) -> Attachments {
        Attachments {
            blocked: blocked.iter().map(|e| e.to_ascii_lowercase()).collect(),
            verdict,
        }
    }

    fn is_blocked(&self, extension: &str) -> bool {
        self.blocked.iter().any(|b| b == extension)
    }

    /// What is wrong with one file, by name and content.
    fn judge_file(&self, name: &str, bytes: &[u8]) -> Option<(&'static str, String)> {
        let lower = name.to_ascii_lowercase();
        let extensions: Vec<&str> = lower.rsplit('.').take(2).collect();
        if lower.contains('.') {
            if let Some(&last) = extensions.first() {
                if self.is_blocked(last) {
                    let hidden = extensions
                        .get(1)
                        .is_some_and(|before| DOCUMENT_LIKE.contains(before));
                    return Some(if hidden {
                        (
                            "ATTACH_DOUBLE_EXT",
                            format!("{name} hides a .{last} file behind a document name"),
                        )
                    } else {
                        (
                            "ATTACH_BLOCKED_TYPE",
                            format!("{name}: .{last} files are blocked"),
                        )
                    });
                }
            }
        }
        if let Some(kind) = executable_kind(bytes) {
            return Some(("ATTACH_EXECUTABLE", format!("{name} is {kind}")));
        }
        if let Some(entries) = crate::filter::archive::entry_names(bytes) {
            let inside = entries.into_iter().find_map(|entry| {
                let ext = entry.rsplit_once('.')?.1.to_ascii_lowercase();
                self.is_blocked(&ext).then_some(entry)
            });
            if let Some(entry) = inside {
                return Some((
                    "ATTACH_ARCHIVE_EXECUTABLE",
                    format!("archive {name} holds {entry}"),
                ));
            }
        }
        None
    }
}

/// The kind of program the bytes are, if they are one.
fn executable_kind(bytes: &[u8]) -> Option<&'static str> {
    const KINDS: &[(&[u8], &str)] = &[
        (b"MZ", "a Windows executable"),
        (b"\x7fELF", "a Linux executable"),
        (b"\xcf\xfa\xed\xfe", "a macOS executable"),
        (b"\xce\xfa\xed\xfe", "a macOS executable"),
        (b"\xca\xfe\xba\xbe", "a macOS or Java executable"),
        (b"#!", "a script"),
    ];
    KINDS
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, kind)| *kind)
}

impl Check for Attachments {
    fn data(&self, content: &Content) -> Vec<Hit> {
        let mut hits = Vec::new();
        for part in &content.message().parts {
            let bytes: &[u8] = match &part.body {
                PartType::Binary(b) | PartType::InlineBinary(b) => b,
                PartType::Text(_) | PartType::Html(_) if part.attachment_name().is_some() => {
                    part.contents()
                }
                _ => continue,
            };
            let name = part.attachment_name().unwrap_or("(unnamed)");
            if let Some((rule, reason)) = self.judge_file(name, bytes) {
                hits.push(Hit::forcing(
                    Force::AtLeast(self.verdict),
                    rule,
                    SCORE,
                    reason,
                ));
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::archive::tests::zip_with;

    fn check() -> Attachments {
        let blocked: Vec<String> = DEFAULT_BLOCKED.iter().map(|s| s.to_string()).collect();
        Attachments::new(&blocked, Verdict::Sideline)
    }

    fn rule(name: &str, bytes: &[u8]) -> Option<&'static str> {
        check().judge_file(name, bytes).map(|(rule, _)| rule)
    }

    #[test]
    fn what_fires() {
        assert_eq!(rule("setup.EXE", b"x"), Some("ATTACH_BLOCKED_TYPE"));
        assert_eq!(rule("invoice.pdf.exe", b"x"), Some("ATTACH_DOUBLE_EXT"));
        assert_eq!(
            rule("invoice.pdf", b"MZ\x90\x00"),
            Some("ATTACH_EXECUTABLE")
        );
        assert_eq!(
            rule("run.txt", b"#!/bin/sh\nrm -rf ~\n"),
            Some("ATTACH_EXECUTABLE")
        );
        assert_eq!(
            rule("docs.zip", &zip_with("report.pdf.scr")),
            Some("ATTACH_ARCHIVE_EXECUTABLE")
        );
    }

    #[test]
    fn what_must_not_fire() {
        assert_eq!(rule("report.pdf", b"%PDF-1.7"), None);
        assert_eq!(rule("photo.jpg", b"\xff\xd8\xff"), None);
        assert_eq!(rule("exe", b"plain"), None);
        assert_eq!(rule("docs.zip", &zip_with("report.pdf")), None);
        assert_eq!(rule("truncated.zip", b"PK\x03\x04PK\x01\x02"), None);
    }

    #[test]
    fn a_message_with_an_executable_is_caught_and_a_plain_one_is_not() {
        let raw = b"From: a@b.example\r\nSubject: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: application/octet-stream; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--XX--\r\n";
        let hits = check().data(&Content::parse(raw));
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].rule, "ATTACH_EXECUTABLE");
        assert_eq!(hits[0].force, Some(Force::AtLeast(Verdict::Sideline)));
        let plain =
            b"From: a@b.example\r\nSubject: hi\r\n\r\nMZ is not a program in a text body\r\n";
        assert!(check().data(&Content::parse(plain)).is_empty());
    }
}
