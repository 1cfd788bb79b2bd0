//! Browser sessions: a random id in an HttpOnly cookie, only its SHA-256 kept server-side.
//!
//! A session is created by `POST /portal/login` after the bearer token it was sent with has
//! been verified; the cookie then stands for that token's [`Principal`] until it expires or
//! the user signs out. Requests that change state and are authenticated by the cookie must
//! also carry the session's CSRF token in [`CSRF_HEADER`] (the page reads it from
//! `/portal/api/me`; another site cannot).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngCore as _;
use rigwatch_storage::auth::{AuthStore, Principal};
use sha2::{Digest, Sha256};

/// The cookie that carries the session id.
pub const COOKIE: &str = "rw_session";
/// The header that must echo the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-rigwatch-csrf";
/// How long a session lives after sign-in.
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most live sessions one principal (one token) holds; signing in again past it ends that
/// principal's own oldest session, never anyone else's.
pub const MAX_SESSIONS_PER_PRINCIPAL: usize = 16;
/// Most live sessions held at once; a sign-in past it is refused (503) rather than ending
/// other people's sessions.
pub const MAX_SESSIONS: usize = 10_000;

/// The token id of the operator's `--admin-token` principal: kept in memory only, it cannot
/// be revoked while the server runs.
pub const OPERATOR_TOKEN_ID: &str = "admin-token";

/// Whether the token `token_id` is still usable (not revoked, not expired): a session or a
/// live stream started with it ends when it is not.
pub fn token_usable(auth: &AuthStore, token_id: &str) -> bool {
    if token_id == OPERATOR_TOKEN_ID {
        return true;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    auth.tokens()
        .iter()
        .any(|t| t.id == token_id && !t.revoked && t.expires_unix_s.is_none_or(|e| now < e))
}

/// How the access layer authenticated a request (put into its extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer` or `Basic`.
    Token,
    /// The session cookie.
    Session,
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// Echoed by the page in [`CSRF_HEADER`].
    pub csrf: String,
    pub expires: Instant,
}

/// A new session's secrets, returned once.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value (256 random bits, hex).
    pub id: String,
    pub csrf: String,
    pub ttl: Duration,
}

/// Why a session cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    Unknown,
    Expired,
}

/// A sign-in refused because the server holds its maximum of live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server holds its maximum of {max} portal sessions (--max-sessions); try again later, or call the API with the token itself"
)]
pub struct SessionsFull {
    pub max: usize,
}

/// The server-side session map, keyed by SHA-256 of the cookie value.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    per_principal: usize,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Equal without an early exit (for secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self::with_limits(ttl, MAX_SESSIONS_PER_PRINCIPAL, MAX_SESSIONS)
    }

    /// Sessions living `ttl`, at most `per_principal` for one token and `max` in all.
    pub fn with_limits(ttl: Duration, per_principal: usize, max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ttl,
            per_principal: per_principal.max(1),
            max: max.max(1),
        }
    }

    /// Starts a session for `principal`. At its own cap, the principal's oldest session
    /// ends; at the global cap, the sign-in is refused (nobody else's session ends).
    pub fn create(&self, principal: Principal) -> Result<NewSession, SessionsFull> {
        let now = Instant::now();
        let mut map = self.map.lock();
        map.retain(|_, s| s.expires > now);
        let mut own: Vec<([u8; 32], Instant)> = map
            .iter()
            .filter(|(_, s)| s.principal.token_id == principal.token_id)
            .map(|(k, s)| (*k, s.expires))
            .collect();
        if own.len() >= self.per_principal {
            own.sort_by_key(|(_, expires)| *expires);
            for (k, _) in &own[..=own.len() - self.per_principal] {
                map.remove(k);
            }
        }
        if map.len() >= self.max {
            return Err(SessionsFull { max: self.max });
        }
        let id = random_hex(32);
        let csrf = random_hex(32);
        map.insert(
            key(&id),
            Session {
                principal,
                csrf: csrf.clone(),
                expires: now + self.ttl,
            },
        );
        Ok(NewSession {
            id,
            csrf,
            ttl: self.ttl,
        })
    }

    /// The live session whose cookie value is `id`.
    pub fn get(&self, id: &str) -> Result<Session, SessionError> {
        let k = key(id);
        let mut map = self.map.lock();
        match map.get(&k) {
            None => Err(SessionError::Unknown),
            Some(s) if s.expires <= Instant::now() => {
                map.remove(&k);
                Err(SessionError::Expired)
            }
            Some(s) => Ok(s.clone()),
        }
    }

    /// Ends the session `id`; true if there was one.
    pub fn remove(&self, id: &str) -> bool {
        self.map.lock().remove(&key(id)).is_some()
    }

    /// Number of sessions held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id in a `Cookie` header value, if any.
pub fn cookie_value(cookie_header: &str) -> Option<&str> {
    cookie_header.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// `Set-Cookie` for a new session. `secure` adds `Secure` (the browser then sends the cookie
/// over HTTPS only): set it when the portal is reached through a TLS-terminating proxy.
pub fn set_cookie(s: &NewSession, secure: bool) -> String {
    format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        s.id,
        s.ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Whether the browser reached us over HTTPS, as a TLS-terminating proxy reports it
/// (`X-Forwarded-Proto: https` or `Forwarded: ...;proto=https`). Trusting the header is safe
/// here: all it can do is make a cookie stricter.
pub fn via_https(headers: &axum::http::HeaderMap) -> bool {
    let is_https = |v: &str| v.trim().eq_ignore_ascii_case("https");
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').next().is_some_and(is_https))
        || headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([';', ',']))
            .filter_map(|kv| kv.split_once('='))
            .any(|(k, v)| k.trim().eq_ignore_ascii_case("proto") && is_https(v.trim_matches('"')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigwatch_storage::auth::Role;

    fn supplier() -> Principal {
        Principal {
            role: Role::Supplier,
            supplier: Some("acme".into()),
            token_id: "t1".into(),
        }
    }

    #[test]
    fn sessions_are_found_by_id_only_and_expire() {
        let s = Sessions::new(Duration::from_millis(50));
        let n = s.create(supplier()).unwrap();
        assert_eq!(n.id.len(), 64);
        assert_ne!(n.id, n.csrf);
        assert_eq!(
            s.get(&n.id).unwrap().principal.supplier.as_deref(),
            Some("acme")
        );
        assert_eq!(s.get("nope").unwrap_err(), SessionError::Unknown);
        // The map holds hashes, not ids.
        assert!(!s.map.lock().keys().any(|k| hex::encode(k) == n.id));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.get(&n.id).unwrap_err(), SessionError::Expired);
        assert_eq!(s.get(&n.id).unwrap_err(), SessionError::Unknown);
    }

    #[test]
    fn ids_are_distinct_and_removal_ends_the_session() {
        let s = Sessions::default();
        let a = s.create(supplier()).unwrap();
        let b = s.create(supplier()).unwrap();
        assert_ne!(a.id, b.id);
        assert!(s.remove(&a.id));
        assert!(s.get(&a.id).is_err());
        assert!(s.get(&b.id).is_ok());
    }

    fn principal(token_id: &str) -> Principal {
        Principal {
            token_id: token_id.into(),
            ..supplier()
        }
    }

    #[test]
    fn a_principal_at_its_cap_loses_only_its_own_oldest_session() {
        let s = Sessions::with_limits(DEFAULT_TTL, 3, 100);
        let admin = s.create(principal("admin")).unwrap();
        let mut reader = Vec::new();
        for _ in 0..3 {
            reader.push(s.create(principal("reader")).unwrap());
            std::thread::sleep(Duration::from_millis(2));
        }
        // Signing in again, many times: the reader keeps 3, the admin keeps its one.
        for _ in 0..50 {
            reader.push(s.create(principal("reader")).unwrap());
        }
        assert_eq!(s.len(), 4);
        assert!(
            s.get(&admin.id).is_ok(),
            "another principal's session was evicted"
        );
        assert_eq!(
            s.get(&reader[0].id).unwrap_err(),
            SessionError::Unknown,
            "the reader's oldest session must go first"
        );
        assert!(s.get(&reader.last().unwrap().id).is_ok());
    }

    #[test]
    fn at_the_global_cap_new_sign_ins_are_refused_not_evicting() {
        let s = Sessions::with_limits(DEFAULT_TTL, 16, 5);
        let held: Vec<_> = (0..5)
            .map(|i| s.create(principal(&format!("t{i}"))).unwrap())
            .collect();
        let err = s.create(principal("newcomer")).unwrap_err();
        assert_eq!(err, SessionsFull { max: 5 });
        assert!(err.to_string().contains("maximum of 5"), "{err}");
        assert!(held.iter().all(|h| s.get(&h.id).is_ok()));
        // A principal already holding sessions may still sign in: its own oldest makes room.
        let s = Sessions::with_limits(DEFAULT_TTL, 1, 1);
        let first = s.create(principal("solo")).unwrap();
        let second = s.create(principal("solo")).unwrap();
        assert!(s.get(&first.id).is_err() && s.get(&second.id).is_ok());
        // Expired sessions do not count against the cap.
        let s = Sessions::with_limits(Duration::from_millis(20), 16, 1);
        s.create(principal("a")).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(s.create(principal("b")).is_ok());
    }

    #[test]
    fn cookie_header_parsing() {
        assert_eq!(cookie_value("a=1; rw_session=abc; b=2"), Some("abc"));
        assert_eq!(cookie_value("rw_session="), None);
        assert_eq!(cookie_value("xrw_session=abc"), None);
        let n = NewSession {
            id: "x".into(),
            csrf: "y".into(),
            ttl: Duration::from_secs(60),
        };
        let c = set_cookie(&n, false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"));
        assert!(!c.contains("Secure"), "{c}");
        assert!(set_cookie(&n, true).ends_with("; Secure"));
    }

    #[test]
    fn https_behind_a_proxy_is_recognised() {
        use axum::http::{HeaderMap, HeaderValue};
        let with = |k: &'static str, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(k, HeaderValue::from_static(v));
            h
        };
        assert!(!via_https(&HeaderMap::new()));
        assert!(via_https(&with("x-forwarded-proto", "https")));
        assert!(via_https(&with("x-forwarded-proto", "HTTPS, http")));
        assert!(!via_https(&with("x-forwarded-proto", "http")));
        assert!(via_https(&with(
            "forwarded",
            "for=10.0.0.1;proto=https;host=a"
        )));
        assert!(via_https(&with(
            "forwarded",
            "for=10.0.0.1; proto=\"https\""
        )));
        assert!(!via_https(&with("forwarded", "for=10.0.0.1;proto=http")));
    }
}
