//! The customers' JSON API. A `[[user]]` signs in with HTTP Basic (email
//! and password) on every call, and sees and acts on the sidelined mail of
//! their domains (all of them with `admin = true`); in a cluster, of every
//! node. Serve it to the Internet only through a TLS reverse proxy: Basic
//! sends the password with each call.
//!
//! - `GET /api/sideline?domain=&recipient=&sender=&since_ms=&until_ms=`
//! - `GET /api/sideline/ID`, `DELETE /api/sideline/ID`
//! - `POST /api/sideline/ID/release?train=1`
//! - `GET /api/lists/RECIPIENT`, `POST /api/lists/RECIPIENT/allow?sender=S`
//!   (or `block`), `DELETE /api/lists/RECIPIENT?sender=S`: a recipient's
//!   own sender lists, for recipients in the user's domains
//!
//! A message to recipients of several customers is visible to each, but
//! only an admin releases or deletes it: a release delivers it to all its
//! recipients (it has one verdict), which one customer must not decide for
//! another.

use super::{error_reply, json_reply, Node, Reply};
use crate::config::{Scope, User};
use crate::sideline::Entry;
use base64ct::{Base64, Encoding};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};

pub async fn handle(request: Request<Incoming>, remote: SocketAddr, node: &Node) -> Reply {
    let (email, scope) = match sign_in(&request, remote, node).await {
        Ok(user) => user,
        Err(Refusal::Busy) => {
            return error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sign-ins at once; try again",
            )
        }
        Err(Refusal::Credentials) => {
            let mut reply = error_reply(
                StatusCode::UNAUTHORIZED,
                "sign in with the email and password of a [[user]] (HTTP Basic)",
            );
            reply.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"antemx\""),
            );
            return reply;
        }
    };
    let path = request.uri().path().trim_start_matches("/api/").to_string();
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(super::percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let query = request.uri().query().unwrap_or("");
    let sideline = &node.sideline;
    let covered = |recipient: &String| {
        recipient
            .rsplit_once('@')
            .is_some_and(|(_, domain)| scope.covers(domain))
    };
    let visible = |entry: &Entry| entry.recipients.iter().any(covered);
    // Acting on a message decides for all its recipients: only a user whose
    // domains hold every one of them may (an admin always).
    let owned = |entry: &Entry| entry.recipients.iter().all(covered);
    let not_found =
        |id: &str| error_reply(StatusCode::NOT_FOUND, &format!("no sidelined message {id}"));
    let shared = |id: &str| {
        error_reply(
            StatusCode::FORBIDDEN,
            &format!("{id} also goes to other customers' recipients: ask the operator"),
        )
    };
    match (request.method(), parts.as_slice()) {
        (&Method::GET, ["sideline"]) => {
            let filter = match super::sideline::filter(query) {
                Ok(filter) => filter,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, &e),
            };
            if let Some(domain) = &filter.domain {
                if !scope.covers(domain) {
                    return error_reply(StatusCode::FORBIDDEN, &format!("{domain} is not yours"));
                }
            }
            let entries: Vec<Entry> = sideline
                .list_everywhere(filter, query)
                .await
                .into_iter()
                .filter(|e| visible(e))
                .collect();
            json_reply(StatusCode::OK, &entries)
        }
        (&Method::GET, ["sideline", id]) => match sideline.find(id).await {
            Some(entry) if visible(&entry) => json_reply(StatusCode::OK, &entry),
            _ => not_found(id),
        },
        (&Method::POST, ["sideline", id, "release"]) => match sideline.find(id).await {
            Some(entry) if owned(&entry) => {
                super::sideline::release(sideline, id, &email, query).await
            }
            Some(entry) if visible(&entry) => shared(id),
            _ => not_found(id),
        },
        (&Method::DELETE, ["sideline", id]) => {
            match sideline.find(id).await {
                Some(entry) if owned(&entry) => {}
                Some(entry) if visible(&entry) => return shared(id),
                _ => return not_found(id),
            }
            match sideline.delete(id, &email).await {
                Ok(true) => json_reply(StatusCode::OK, &json!({ "deleted": id })),
                Ok(false) => not_found(id),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (_, ["lists", recipient, ..]) => {
            let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
            if !scope.covers(domain) {
                return error_reply(
                    StatusCode::FORBIDDEN,
                    &format!("{recipient} is not in your domains"),
                );
            }
            super::lists::handle(
                request.method(),
                &parts[1..],
                query,
                &node.user_lists,
                &node.store,
                Some(&node.cluster),
            )
            .await
        }
        _ => error_reply(StatusCode::NOT_FOUND, "no such API call"),
    }
}

/// Sign-ins to one account from one client address in
/// [`FAILURE_WINDOW_MS`] that may fail; then they are refused without
/// checking (argon2 is costly on purpose, and passwords must not be guessed
/// at speed). By account too, because behind a reverse proxy every client
/// has the proxy's address: one guesser must not lock every customer out.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW_MS: u64 = 10 * 60 * 1000;
/// The longest address there is (RFC 5321's path limit less its brackets).
const MAX_EMAIL: usize = 254;
/// Password checks at once: each takes a core and 19 MiB; more callers get
/// 503 rather than a queue that grows.
static CHECKS: smol::lock::Semaphore = smol::lock::Semaphore::new(4);

/// Sign-ins by (client address, account) counted as failed until they
/// succeed: (count, first, ms). Counted before the check, so that parallel
/// guesses cannot all pass the limit.
#[derive(Default)]
pub struct SignInFailures(Mutex<Failures>);

type Failures = HashMap<(IpAddr, String), (u32, u64)>;

impl SignInFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt; false when the pair has failed too often.
    fn attempt(&self, ip: IpAddr, email: &str, now_ms: u64) -> bool {
        let mut failures = self.lock();
        if failures.len() >= 1024 && failures.len().is_power_of_two() {
            failures.retain(|_, (_, first)| now_ms.saturating_sub(*first) < FAILURE_WINDOW_MS);
        }
        let entry = failures
            .entry((ip, email.to_string()))
            .or_insert((0, now_ms));
        if now_ms.saturating_sub(entry.1) >= FAILURE_WINDOW_MS {
            *entry = (0, now_ms);
        }
        entry.0 += 1;
        entry.0 <= MAX_FAILURES
    }

    /// The attempt succeeded, or was not made: it does not count.
    fn forgive(&self, ip: IpAddr, email: &str) {
        let mut failures = self.lock();
        if let Some(entry) = failures.get_mut(&(ip, email.to_string())) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    fn succeeded(&self, ip: IpAddr, email: &str) {
        self.lock().remove(&(ip, email.to_string()));
    }
}

/// What an unknown email's password is checked against, so that it takes
/// as long as a known one's (no telling which accounts exist).
fn stand_in() -> &'static User {
    static STAND_IN: OnceLock<User> = OnceLock::new();
    STAND_IN.get_or_init(|| User {
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c3RhbmQtaW4tc2FsdA$2bXkZ6yH3nJYdA1M2a7oL1i0hZ3q4n5p6r7s8t9u0vw"
            .to_string(),
        scope: Scope::Domains(Vec::new()),
    })
}

/// The address failures are counted by: an IPv6 client's /64, which one
/// machine usually has whole (counting by address would let it rotate).
fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        other => other,
    }
}

/// Why a caller is not signed in.
enum Refusal {
    /// Wrong or missing credentials, or too many failures: 401.
    Credentials,
    /// Too many password checks at once: 503, try again.
    Busy,
}

/// The signed-in user's email and scope, if the Basic credentials hold.
async fn sign_in(
    request: &Request<Incoming>,
    remote: SocketAddr,
    node: &Node,
) -> Result<(String, Scope), Refusal> {
    let now = crate::time::now_ms();
    let (email, password) = credentials(request).ok_or(Refusal::Credentials)?;
    let (ip, network) = (remote.ip(), client_network(remote.ip()));
    let failures = &node.sign_in_failures;
    if !failures.attempt(network, &email, now) {
        log::warn!("api: sign-in refused for {email:?} from {ip}: too many failures");
        return Err(Refusal::Credentials);
    }
    let Some(_permit) = CHECKS.try_acquire() else {
        failures.forgive(network, &email);
        return Err(Refusal::Busy);
    };
    let user = node.live.current().users.get(&email).cloned();
    let checked = user.clone();
    let valid = smol::unblock(move || {
        let matches = checked
            .as_ref()
            .unwrap_or(stand_in())
            .has_password(&password);
        matches && checked.is_some()
    })
    .await;
    match user {
        Some(user) if valid => {
            failures.succeeded(network, &email);
            Ok((email, user.scope))
        }
        _ => {
            log::warn!("api: sign-in failed for {email:?} from {ip}");
            Err(Refusal::Credentials)
        }
    }
}

/// (email, password) of an `Authorization: Basic` header; the email lower
/// case and no longer than an address can be.
fn credentials(request: &Request<Incoming>) -> Option<(String, String)> {
    let value = request
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(Base64::decode_vec(encoded.trim()).ok()?).ok()?;
    let (email, password) = decoded.split_once(':')?;
    let email = email.trim().to_ascii_lowercase();
    (email.len() <= MAX_EMAIL && email.contains('@')).then(|| (email, password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_network(a), client_network(b));
        assert_ne!(client_network(a), client_network(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_network(v4), v4);
    }

    #[test]
    fn the_stand_in_costs_a_real_check_and_matches_nothing() {
        assert!(argon2::PasswordHash::new(&stand_in().password_hash).is_ok());
        assert!(!stand_in().has_password(""));
        assert!(!stand_in().has_password("stand-in"));
    }

    #[test]
    fn an_account_is_refused_to_a_client_after_ten_failures_for_ten_minutes() {
        let failures = SignInFailures::default();
        let (ip, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for n in 0..MAX_FAILURES {
            assert!(failures.attempt(ip, "a@x.test", 1000 + u64::from(n)));
        }
        assert!(!failures.attempt(ip, "a@x.test", 2000));
        assert!(failures.attempt(ip, "b@x.test", 2000), "other accounts");
        assert!(failures.attempt(other, "a@x.test", 2000), "other clients");
        assert!(
            failures.attempt(ip, "a@x.test", 1000 + FAILURE_WINDOW_MS),
            "a new window"
        );
        failures.succeeded(ip, "a@x.test");
        for _ in 0..MAX_FAILURES {
            assert!(failures.attempt(ip, "a@x.test", 1000 + FAILURE_WINDOW_MS));
        }
    }
}
