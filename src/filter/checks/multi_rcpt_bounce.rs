//! A bounce (`MAIL FROM:<>`) with more than one recipient. A delivery status
//! notification goes to the one return path of the message it reports on
//! (RFC 3464), so a null sender with several recipients is spam posing as a
//! bounce; Postfix refuses it outright (`reject_multi_recipient_bounce`).

use crate::filter::{Check, Hit, Rcpt};

const SCORE: f64 = 3.0;

pub struct MultiRcptBounce;

impl Check for MultiRcptBounce {
    fn rcpt(&self, rcpt: &Rcpt) -> Vec<Hit> {
        // Fires once, at the second recipient: the third adds nothing new.
        if rcpt.sender.is_none() && rcpt.before == 1 {
            vec![Hit::new(
                "MULTI_RCPT_BOUNCE",
                SCORE,
                format!(
                    "a bounce (MAIL FROM:<>) to a second recipient, {}",
                    rcpt.recipient
                ),
            )]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fires(sender: Option<&str>, before: usize) -> bool {
        !MultiRcptBounce
            .rcpt(&Rcpt {
                sender,
                recipient: "b@example.com",
                before,
            })
            .is_empty()
    }

    #[test]
    fn fires_once_for_a_bounce_to_several() {
        assert!(fires(None, 1));
        assert!(!fires(None, 2));
    }

    #[test]
    fn quiet_for_single_bounces_and_normal_mail() {
        assert!(!fires(None, 0));
        assert!(!fires(Some("a@sender.test"), 1));
        assert!(!fires(Some("a@sender.test"), 5));
    }
}
