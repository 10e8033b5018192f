//! `[[user]]`: who may sign in to the customers' API, with what password
//! (an argon2 hash from `antemx hash-password`, never the password) and
//! over which domains.

use super::normalize_domain;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct User {
    /// The PHC string: `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
    pub password_hash: String,
    pub scope: Scope,
}

/// What a user sees and acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Every domain.
    Admin,
    /// These customer domains (lower case), at least one.
    Domains(Vec<String>),
}

impl Scope {
    pub fn covers(&self, domain: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Domains(domains) => domains.iter().any(|d| d.eq_ignore_ascii_case(domain)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    email: Spanned<String>,
    password_hash: Spanned<String>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    #[serde(default)]
    admin: bool,
}

type Error = (std::ops::Range<usize>, String);

/// Users by lower-case email; `is_customer_domain` tells the configured
/// domains.
pub(super) fn validate(
    raw: Vec<RawUser>,
    is_customer_domain: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, User>, Error> {
    let mut users = BTreeMap::new();
    for user in raw {
        let email = user.email.get_ref().trim().to_ascii_lowercase();
        let span = user.email.span();
        if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
            return Err((span, format!("[[user]] {email:?} is not an email address")));
        }
        let hash = user.password_hash.get_ref();
        let parsed = argon2::PasswordHash::new(hash).map_err(|e| {
            (
                user.password_hash.span(),
                format!("[[user]] {email}: password_hash is not a hash from `antemx hash-password` ({e})"),
            )
        })?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err((
                user.password_hash.span(),
                format!("[[user]] {email}: password_hash must be an argon2 hash (`antemx hash-password`)"),
            ));
        }
        let mut domains = Vec::new();
        for domain in &user.domains {
            let name = normalize_domain(domain.get_ref());
            if !is_customer_domain(&name) {
                return Err((
                    domain.span(),
                    format!("[[user]] {email}: {name} is not a [[domain]] of this config"),
                ));
            }
            domains.push(name);
        }
        let scope = match (user.admin, domains.is_empty()) {
            (true, true) => Scope::Admin,
            (true, false) => {
                return Err((
                    span,
                    format!("[[user]] {email}: admin = true sees every domain; leave domains out"),
                ))
            }
            (false, false) => Scope::Domains(domains),
            (false, true) => {
                return Err((
                    span,
                    format!("[[user]] {email}: give domains = [...] or admin = true"),
                ))
            }
        };
        let user = User {
            password_hash: hash.clone(),
            scope,
        };
        if users.insert(email.clone(), user).is_some() {
            return Err((span, format!("[[user]] {email} is configured twice")));
        }
    }
    Ok(users)
}

impl User {
    /// Whether `password` is this user's (argon2: tens of milliseconds, so
    /// call it off the async threads).
    pub fn has_password(&self, password: &str) -> bool {
        use argon2::password_hash::PasswordVerifier;
        argon2::PasswordHash::new(&self.password_hash).is_ok_and(|hash| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    }
}
