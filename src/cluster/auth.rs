//! Peer calls are signed, not sent with the secret: an HMAC-SHA256 over the
//! method, path, sending and receiving node, time and body, so the secret
//! never crosses the network, a call cannot be altered, sent to another
//! node, or replayed (a node remembers the calls of the last minutes). The
//! answer is signed too, over its status, body and the call's signature, so
//! that nobody on the path can answer in a peer's name (a forged "410 gone"
//! would make a node drop its copy of a message).

use ring::{digest, hmac};
use std::collections::HashMap;
use std::sync::Mutex;

pub const NODE_HEADER: &str = "x-antemx-node";
pub const TIME_HEADER: &str = "x-antemx-time";
pub const NONCE_HEADER: &str = "x-antemx-nonce";
pub const SIGNATURE_HEADER: &str = "x-antemx-signature";

/// How far a call's time may be from ours: clock skew plus transit.
const MAX_SKEW_SECS: u64 = 300;

/// Who calls whom, and a number of the caller's choosing, so that two
/// calls alike in every other way (the same second) are told apart.
#[derive(Clone, Copy)]
pub struct Stamp<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub nonce: u64,
}

fn message(method: &str, path: &str, stamp: Stamp, time: u64, body: &[u8]) -> Vec<u8> {
    let body_digest = digest::digest(&digest::SHA256, body);
    let Stamp { from, to, nonce } = stamp;
    let mut text = format!("{method}\n{path}\n{from}\n{to}\n{time}\n{nonce}\n").into_bytes();
    text.extend_from_slice(hex(body_digest.as_ref()).as_bytes());
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signature header's value for a call made at `time`.
pub fn sign(
    secret: &str,
    method: &str,
    path: &str,
    stamp: Stamp,
    time: u64,
    body: &[u8],
) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex(hmac::sign(&key, &message(method, path, stamp, time, body)).as_ref())
}

/// Whether a call's time is close enough to ours (`now`, seconds).
pub fn check_time(time: u64, now: u64) -> Result<(), String> {
    if time.abs_diff(now) > MAX_SKEW_SECS {
        return Err(format!(
            "the call's time is {}s off this node's clock (at most {MAX_SKEW_SECS}s)",
            time.abs_diff(now)
        ));
    }
    Ok(())
}

/// The signatures of the calls accepted lately: a call seen once is
/// refused the second time. Calls older than the skew allowed are refused
/// by their time, so that is all it keeps.
#[derive(Default)]
pub struct Replays(Mutex<HashMap<String, u64>>);

impl Replays {
    pub fn remember(&self, signature: &str, now: u64) -> Result<(), String> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= 1024 && seen.len().is_power_of_two() {
            seen.retain(|_, at| now.saturating_sub(*at) <= 2 * MAX_SKEW_SECS);
        }
        if seen.insert(signature.to_string(), now).is_some() {
            return Err("this call was made before (a replay)".into());
        }
        Ok(())
    }
}

/// The signature header's value for an answer to the call signed
/// `call_signature`.
pub fn sign_answer(secret: &str, status: u16, call_signature: &str, body: &[u8]) -> String {
    sign(
        secret,
        "ANSWER",
        call_signature,
        ANSWER,
        u64::from(status),
        body,
    )
}

/// Answers are bound to their call's signature, which names both nodes.
const ANSWER: Stamp = Stamp {
    from: "",
    to: "",
    nonce: 0,
};

/// Checks that an answer comes from a node holding the secret and answers
/// this very call.
pub fn verify_answer(
    secret: &str,
    status: u16,
    call_signature: &str,
    signature: &str,
    body: &[u8],
) -> Result<(), String> {
    let signature = unhex(signature).ok_or("the answer's signature is not hex")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let text = message("ANSWER", call_signature, ANSWER, u64::from(status), body);
    hmac::verify(&key, &text, &signature)
        .map_err(|_| "the answer is not signed with [cluster] secret".to_string())
}

/// Checks a call's signature and time; `now` in seconds since the epoch.
pub fn verify(
    secret: &str,
    request: (&str, &str),
    stamp: Stamp,
    time: u64,
    signature: &str,
    body: &[u8],
    now: u64,
) -> Result<(), String> {
    check_time(time, now)?;
    let signature = unhex(signature).ok_or("the signature is not hex")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let (method, path) = request;
    hmac::verify(&key, &message(method, path, stamp, time, body), &signature).map_err(|_| {
        "bad signature (is [cluster] secret the same on every node? was the call meant for this node?)"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";
    const MX1_TO_MX2: Stamp = Stamp {
        from: "mx1",
        to: "mx2",
        nonce: 7,
    };

    #[test]
    fn a_signed_call_verifies_and_any_change_breaks_it() {
        let signature = sign(SECRET, "PUT", "/peer/x?a=1", MX1_TO_MX2, 1000, b"body");
        let check = |method, path, stamp, time, body: &[u8], secret| {
            verify(secret, (method, path), stamp, time, &signature, body, 1010)
        };
        let to_mx3 = Stamp {
            to: "mx3",
            ..MX1_TO_MX2
        };
        let from_mx3 = Stamp {
            from: "mx3",
            ..MX1_TO_MX2
        };
        let other_nonce = Stamp {
            nonce: 8,
            ..MX1_TO_MX2
        };
        assert!(check("PUT", "/peer/x?a=1", MX1_TO_MX2, 1000, b"body", SECRET).is_ok());
        assert!(check("POST", "/peer/x?a=1", MX1_TO_MX2, 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=2", MX1_TO_MX2, 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", from_mx3, 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", to_mx3, 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", other_nonce, 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", MX1_TO_MX2, 1001, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", MX1_TO_MX2, 1000, b"bodY", SECRET).is_err());
        assert!(check(
            "PUT",
            "/peer/x?a=1",
            MX1_TO_MX2,
            1000,
            b"body",
            "another secret!!"
        )
        .is_err());
    }

    #[test]
    fn an_answer_verifies_only_for_its_call_status_and_body() {
        let call = sign(SECRET, "PUT", "/peer/x", MX1_TO_MX2, 1000, b"");
        let other_call = sign(SECRET, "PUT", "/peer/y", MX1_TO_MX2, 1000, b"");
        let answer = sign_answer(SECRET, 201, &call, b"{}");
        assert!(verify_answer(SECRET, 201, &call, &answer, b"{}").is_ok());
        assert!(verify_answer(SECRET, 410, &call, &answer, b"{}").is_err());
        assert!(verify_answer(SECRET, 201, &other_call, &answer, b"{}").is_err());
        assert!(verify_answer(SECRET, 201, &call, &answer, b"{ }").is_err());
        assert!(verify_answer("another secret!!", 201, &call, &answer, b"{}").is_err());
        assert!(verify_answer(SECRET, 201, &call, "", b"{}").is_err());
    }

    #[test]
    fn an_old_call_is_refused_even_when_signed() {
        let signature = sign(SECRET, "GET", "/peer/x", MX1_TO_MX2, 1000, b"");
        let late = verify(
            SECRET,
            ("GET", "/peer/x"),
            MX1_TO_MX2,
            1000,
            &signature,
            b"",
            1400,
        );
        assert!(late.unwrap_err().contains("off this node's clock"));
        assert!(verify(
            SECRET,
            ("GET", "/peer/x"),
            MX1_TO_MX2,
            1000,
            "zz",
            b"",
            1000
        )
        .is_err());
    }

    #[test]
    fn a_call_is_accepted_once() {
        let replays = Replays::default();
        assert!(replays.remember("aa", 1000).is_ok());
        assert!(replays.remember("bb", 1000).is_ok());
        assert!(replays.remember("aa", 1100).unwrap_err().contains("replay"));
        // Many calls later the old ones are forgotten, the recent kept.
        for n in 0..5000 {
            replays.remember(&format!("call{n}"), 2000).unwrap();
        }
        assert!(replays.remember("call4999", 2000).is_err());
        assert!(
            replays.remember("aa", 2000).is_ok(),
            "pruned: it is too old to pass the time check anyway"
        );
    }
}
