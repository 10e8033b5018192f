//! GTUBE, the Generic Test for Unsolicited Bulk Email: a fixed string that
//! every spam filter treats as certain spam, so that operators and customers
//! can test the spam path end to end with a harmless message.

use crate::filter::{Check, Content, Force, Hit, Verdict};

/// The string, as SpamAssassin defines it.
const GTUBE: &[u8] = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// SpamAssassin's score for it; thresholds are capped far below (see
/// `Thresholds::new`), so no other evidence can pull a GTUBE message under
/// `reject_at`.
pub const SCORE: f64 = 1000.0;

pub struct Gtube;

impl Check for Gtube {
    fn data(&self, content: &Content) -> Vec<Hit> {
        // The decoded text catches it inside base64 or quoted-printable; the
        // raw bytes catch it in a part mail-parser did not take for text.
        let found = memchr::memmem::find(content.text().as_bytes(), GTUBE).is_some()
            || memchr::memmem::find(content.raw(), GTUBE).is_some();
        if found {
            // Forced as well: an allow list or a huge negative weight must
            // not let the test of the spam path pass.
            vec![Hit::forcing(
                Force::AtLeast(Verdict::Reject),
                "GTUBE",
                SCORE,
                "the GTUBE test string (a test of the spam path)",
            )]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(raw: &[u8]) -> Vec<Hit> {
        Gtube.data(&Content::parse(raw))
    }

    #[test]
    fn fires_on_the_string() {
        let raw = b"Subject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
        assert_eq!(hits(raw)[0].rule, "GTUBE");
    }

    #[test]
    fn fires_inside_base64() {
        let raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nWEpTKkM0SkRCUUFETjEuTlNCTjMqMklETkVOKkdUVUJFLVNUQU5EQVJELUFOVEktVUJFLVRFU1QtRU1BSUwqQy4zNFg=\r\n";
        assert_eq!(hits(raw).len(), 1);
    }

    #[test]
    fn does_not_fire_on_a_near_miss() {
        let raw = b"Subject: about GTUBE\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34\r\n";
        assert!(hits(raw).is_empty());
    }
}
