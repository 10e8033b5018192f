//! Peer calls are signed, not sent with the secret: an HMAC-SHA256 over the
//! method, path, sending node, time and body, so the secret never crosses
//! the network and a call cannot be altered or replayed much later. The
//! answer is signed too, over its status, body and the call's signature, so
//! that nobody on the path can answer in a peer's name (a forged "410 gone"
//! would make a node drop its copy of a message).

use ring::{digest, hmac};

pub const NODE_HEADER: &str = "x-antemx-node";
pub const TIME_HEADER: &str = "x-antemx-time";
pub const SIGNATURE_HEADER: &str = "x-antemx-signature";

/// How far a call's time may be from ours: clock skew plus transit.
const MAX_SKEW_SECS: u64 = 300;

fn message(method: &str, path: &str, node: &str, time: u64, body: &[u8]) -> Vec<u8> {
    let body_digest = digest::digest(&digest::SHA256, body);
    let mut text = format!("{method}\n{path}\n{node}\n{time}\n").into_bytes();
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

/// The signature header's value for a call `node` makes at `time`.
pub fn sign(secret: &str, method: &str, path: &str, node: &str, time: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex(hmac::sign(&key, &message(method, path, node, time, body)).as_ref())
}

/// The signature header's value for an answer to the call signed
/// `call_signature`.
pub fn sign_answer(secret: &str, status: u16, call_signature: &str, body: &[u8]) -> String {
    sign(
        secret,
        "ANSWER",
        call_signature,
        "",
        u64::from(status),
        body,
    )
}

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
    let text = message("ANSWER", call_signature, "", u64::from(status), body);
    hmac::verify(&key, &text, &signature)
        .map_err(|_| "the answer is not signed with [cluster] secret".to_string())
}

/// Checks a call's signature and time; `now` in seconds since the epoch.
pub fn verify(
    secret: &str,
    request: (&str, &str),
    node: &str,
    time: u64,
    signature: &str,
    body: &[u8],
    now: u64,
) -> Result<(), String> {
    if time.abs_diff(now) > MAX_SKEW_SECS {
        return Err(format!(
            "the call's time is {}s off this node's clock (at most {MAX_SKEW_SECS}s)",
            time.abs_diff(now)
        ));
    }
    let signature = unhex(signature).ok_or("the signature is not hex")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let (method, path) = request;
    hmac::verify(&key, &message(method, path, node, time, body), &signature)
        .map_err(|_| "bad signature (is [cluster] secret the same on every node?)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";

    #[test]
    fn a_signed_call_verifies_and_any_change_breaks_it() {
        let signature = sign(SECRET, "PUT", "/peer/x?a=1", "mx1", 1000, b"body");
        let check = |method, path, node, time, body: &[u8], secret| {
            verify(secret, (method, path), node, time, &signature, body, 1010)
        };
        assert!(check("PUT", "/peer/x?a=1", "mx1", 1000, b"body", SECRET).is_ok());
        assert!(check("POST", "/peer/x?a=1", "mx1", 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=2", "mx1", 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", "mx2", 1000, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", "mx1", 1001, b"body", SECRET).is_err());
        assert!(check("PUT", "/peer/x?a=1", "mx1", 1000, b"bodY", SECRET).is_err());
        assert!(check(
            "PUT",
            "/peer/x?a=1",
            "mx1",
            1000,
            b"body",
            "another secret!!"
        )
        .is_err());
    }

    #[test]
    fn an_answer_verifies_only_for_its_call_status_and_body() {
        let call = sign(SECRET, "PUT", "/peer/x", "mx1", 1000, b"");
        let other_call = sign(SECRET, "PUT", "/peer/y", "mx1", 1000, b"");
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
        let signature = sign(SECRET, "GET", "/peer/x", "mx1", 1000, b"");
        let late = verify(
            SECRET,
            ("GET", "/peer/x"),
            "mx1",
            1000,
            &signature,
            b"",
            1400,
        );
        assert!(late.unwrap_err().contains("off this node's clock"));
        assert!(verify(SECRET, ("GET", "/peer/x"), "mx1", 1000, "zz", b"", 1000).is_err());
    }
}
