//! Suppliers and access tokens, stored hashed in one JSON file in the data directory.
//!
//! A token looks like `rw_<id>_<secret>`: `id` is 10 hex digits (40 random bits) that
//! name the token in listings and logs, `secret` 32 hex digits (128 random bits). Only
//! the SHA-256 of the whole token is stored, so the file never holds a usable secret; the
//! token is shown once, when it is created.
//!
//! The file (`auth.json`) is shared by the server and the `rigwatch supplier ...` commands
//! run beside it: every change takes an exclusive lock on `auth.lock`, re-reads the file,
//! writes a new one to a temporary name, fsyncs it and renames it over the old one. A
//! reader notices a change by the file's modification time and length and reloads it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including managing suppliers and tokens.
    Admin,
    /// Reads every supplier's data; writes nothing.
    Analyst,
    /// Reads its own supplier's data only.
    Supplier,
    /// Writes telemetry for its own supplier only; reads nothing.
    Agent,
    /// The Kubernetes scheduler extender of one supplier's cluster: calls `/k8s/*` only
    /// (places that supplier's pods on its GPUs); reads nothing, cannot sign in or mint
    /// tokens.
    Extender,
}

impl Role {
    /// The role's name as written in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Supplier => "supplier",
            Role::Agent => "agent",
            Role::Extender => "extender",
        }
    }

    /// Whether a token of this role must name a supplier.
    pub fn is_scoped(self) -> bool {
        matches!(self, Role::Supplier | Role::Agent | Role::Extender)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "admin" => Ok(Role::Admin),
            "analyst" => Ok(Role::Analyst),
            "supplier" => Ok(Role::Supplier),
            "agent" => Ok(Role::Agent),
            "extender" => Ok(Role::Extender),
            other => Err(AuthError::Invalid(format!(
                "unknown role `{other}`: expected admin, analyst, supplier, agent or extender"
            ))),
        }
    }
}

/// Who a request comes from, once its token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// The supplier a supplier or agent token belongs to; `None` for admin and analyst.
    pub supplier: Option<String>,
    /// The token's public id (never the secret).
    pub token_id: String,
}

impl Principal {
    /// The supplier whose rows this principal is confined to, if any.
    pub fn scope(&self) -> Option<&str> {
        if self.role.is_scoped() {
            self.supplier.as_deref()
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth file {path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A supplier holds as many usable tokens as it may.
    #[error(
        "supplier `{supplier}` already holds {limit} usable tokens, the most one supplier may hold: revoke unused ones (`rigwatch supplier revoke <token-id>`) first"
    )]
    TooManyTokens { supplier: String, limit: usize },
}

/// Most usable (not revoked, not expired) tokens one supplier may hold: minting is a write
/// and an fsync of the auth file, and a read token can mint agent tokens.
pub const MAX_TOKENS_PER_SUPPLIER: usize = 100;

/// A supplier: a party that offers GPUs and is paid for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplierRecord {
    pub name: String,
    pub created_unix_s: u64,
    #[serde(default)]
    pub disabled: bool,
}

/// One token, as stored: its hash, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    pub created_unix_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_s: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub label: String,
}

impl TokenRecord {
    fn usable_at(&self, now: u64) -> bool {
        !self.revoked && self.expires_unix_s.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AuthFile {
    version: u32,
    suppliers: Vec<SupplierRecord>,
    tokens: Vec<TokenRecord>,
}

const FILE_VERSION: u32 = 1;

/// A freshly created token: the only time its secret exists outside the caller's hands.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
    pub role: Role,
    pub supplier: Option<String>,
}

/// The supplier and token registry backed by `auth.json`.
#[derive(Debug)]
pub struct AuthStore {
    path: PathBuf,
    lock_path: PathBuf,
    cached: RwLock<Cached>,
    /// Signalled after every change this process makes (the shared registry's exchange
    /// pushes it at once instead of at its next interval).
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Cached {
    stamp: Option<(SystemTime, u64)>,
    file: AuthFile,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of two equal-length ASCII strings.
fn ct_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A supplier name is what users type and what lands in the `supplier` tag: keep it to a
/// safe, URL- and label-friendly alphabet.
pub fn validate_supplier_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "invalid supplier name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// Splits `rw_<id>_<secret>` and returns the id, or `None` if the shape is wrong.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("rw_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 10 && secret.len() == 32).then_some(id)
}

impl AuthStore {
    /// Opens (or starts) the registry in `dir`. The file is created on the first change.
    pub fn open(dir: &Path) -> Result<Self, AuthError> {
        fs::create_dir_all(dir).map_err(|source| AuthError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = AuthStore {
            path: dir.join("auth.json"),
            lock_path: dir.join("auth.lock"),
            cached: RwLock::new(Cached::default()),
            changed: tokio::sync::Notify::new(),
        };
        store.refresh()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let meta = fs::metadata(&self.path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    fn read_file(&self) -> Result<AuthFile, AuthError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                let file: AuthFile =
                    serde_json::from_slice(&bytes).map_err(|e| AuthError::Corrupt {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.version != FILE_VERSION {
                    return Err(AuthError::Corrupt {
                        path: self.path.clone(),
                        reason: format!(
                            "version {} is not supported (this build reads version {FILE_VERSION})",
                            file.version
                        ),
                    });
                }
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile {
                version: FILE_VERSION,
                ..AuthFile::default()
            }),
            Err(source) => Err(AuthError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Reloads the file if it changed since it was last read.
    fn refresh(&self) -> Result<(), AuthError> {
        let stamp = self.stamp();
        if self.cached.read().stamp == stamp && stamp.is_some() {
            return Ok(());
        }
        let file = self.read_file()?;
        *self.cached.write() = Cached { stamp, file };
        Ok(())
    }

    /// Runs `change` on the current file under the exclusive lock and writes the result.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut AuthFile) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuthError::Io { path, source }
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io(&self.lock_path))?;
        lock.lock().map_err(io(&self.lock_path))?;
        let mut file = self.read_file()?;
        file.version = FILE_VERSION;
        let out = change(&mut file)?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&file).expect("auth file serializes");
        {
            let mut f = create_private(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        *self.cached.write() = Cached {
            stamp: self.stamp(),
            file,
        };
        drop(lock);
        self.changed.notify_one();
        Ok(out)
    }

    /// Notified after each change this process makes.
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Verifies a bearer token. Returns `None` for unknown, revoked, expired or malformed
    /// tokens and for tokens of a disabled supplier.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        if let Err(e) = self.refresh() {
            tracing::error!(error = %e, "cannot reload the auth file; keeping the last good copy");
        }
        let id = token_id(token)?;
        let hash = sha256_hex(token);
        let now = now_unix();
        let cached = self.cached.read();
        let rec = cached.file.tokens.iter().find(|t| t.id == id)?;
        if !ct_eq(&rec.sha256, &hash) || !rec.usable_at(now) {
            return None;
        }
        if let Some(s) = &rec.supplier
            && cached
                .file
                .suppliers
                .iter()
                .any(|r| &r.name == s && r.disabled)
        {
            return None;
        }
        Some(Principal {
            role: rec.role,
            supplier: rec.supplier.clone(),
            token_id: rec.id.clone(),
        })
    }

    /// Adds a supplier (an error if it exists) and issues its first agent token.
    pub fn add_supplier(&self, name: &str) -> Result<IssuedToken, AuthError> {
        validate_supplier_name(name)?;
        self.modify(|file| {
            if file.suppliers.iter().any(|s| s.name == name) {
                return Err(AuthError::Invalid(format!(
                    "supplier `{name}` already exists; use `rigwatch supplier token {name}` for another token"
                )));
            }
            file.suppliers.push(SupplierRecord {
                name: name.to_string(),
                created_unix_s: now_unix(),
                disabled: false,
            });
            Ok(issue_into(file, Role::Agent, Some(name), None, "agent"))
        })
    }

    /// Issues a new token. Supplier and agent tokens must name an existing supplier; admin
    /// and analyst tokens must not name one.
    pub fn issue(
        &self,
        role: Role,
        supplier: Option<&str>,
        ttl_s: Option<u64>,
        label: &str,
    ) -> Result<IssuedToken, AuthError> {
        self.modify(|file| {
            match (role.is_scoped(), supplier) {
                (true, None) => {
                    return Err(AuthError::Invalid(format!(
                        "a {role} token must name its supplier"
                    )));
                }
                (false, Some(s)) => {
                    return Err(AuthError::Invalid(format!(
                        "a {role} token sees every supplier; do not name one (got `{s}`)"
                    )));
                }
                (true, Some(s)) => {
                    if !file.suppliers.iter().any(|r| r.name == s && !r.disabled) {
                        return Err(AuthError::NotFound(format!(
                            "no active supplier `{s}`; add it with `rigwatch supplier add {s}`"
                        )));
                    }
                    let now = now_unix();
                    let usable = file
                        .tokens
                        .iter()
                        .filter(|t| {
                            t.supplier.as_deref() == Some(s)
                                && !t.revoked
                                && t.expires_unix_s.is_none_or(|e| now < e)
                        })
                        .count();
                    if usable >= MAX_TOKENS_PER_SUPPLIER {
                        return Err(AuthError::TooManyTokens {
                            supplier: s.to_string(),
                            limit: MAX_TOKENS_PER_SUPPLIER,
                        });
                    }
                }
                (false, None) => {}
            }
            let expires = ttl_s.map(|t| now_unix() + t);
            Ok(issue_into(file, role, supplier, expires, label))
        })
    }

    /// Revokes one token by id, or every token of a supplier (and disables the supplier)
    /// when `what` names a supplier. Returns how many tokens were revoked.
    pub fn revoke(&self, what: &str) -> Result<usize, AuthError> {
        self.modify(|file| {
            if let Some(t) = file.tokens.iter_mut().find(|t| t.id == what) {
                let was = !t.revoked;
                t.revoked = true;
                return Ok(usize::from(was));
            }
            let Some(s) = file.suppliers.iter_mut().find(|s| s.name == what) else {
                return Err(AuthError::NotFound(format!(
                    "`{what}` is neither a token id nor a supplier"
                )));
            };
            s.disabled = true;
            let mut n = 0;
            for t in file
                .tokens
                .iter_mut()
                .filter(|t| t.supplier.as_deref() == Some(what))
            {
                n += usize::from(!t.revoked);
                t.revoked = true;
            }
            Ok(n)
        })
    }

    /// Every supplier with its number of usable tokens.
    pub fn suppliers(&self) -> Vec<(SupplierRecord, usize)> {
        let _ = self.refresh();
        let now = now_unix();
        let cached = self.cached.read();
        cached
            .file
            .suppliers
            .iter()
            .map(|s| {
                let live = cached
                    .file
                    .tokens
                    .iter()
                    .filter(|t| t.supplier.as_deref() == Some(&s.name) && t.usable_at(now))
                    .count();
                (s.clone(), live)
            })
            .collect()
    }

    /// Every token record (hashes only).
    pub fn tokens(&self) -> Vec<TokenRecord> {
        let _ = self.refresh();
        self.cached.read().file.tokens.clone()
    }

    /// Whether any usable admin token exists.
    pub fn has_admin(&self) -> bool {
        let now = now_unix();
        self.tokens()
            .iter()
            .any(|t| t.role == Role::Admin && t.usable_at(now))
    }
}

fn issue_into(
    file: &mut AuthFile,
    role: Role,
    supplier: Option<&str>,
    expires_unix_s: Option<u64>,
    label: &str,
) -> IssuedToken {
    let mut rng = rand::rng();
    let (id, token) = loop {
        let mut idb = [0u8; 5];
        let mut secret = [0u8; 16];
        rng.fill_bytes(&mut idb);
        rng.fill_bytes(&mut secret);
        let id = hex::encode(idb);
        if !file.tokens.iter().any(|t| t.id == id) {
            let token = format!("rw_{id}_{}", hex::encode(secret));
            break (id, token);
        }
    };
    file.tokens.push(TokenRecord {
        id: id.clone(),
        role,
        supplier: supplier.map(str::to_string),
        sha256: sha256_hex(&token),
        created_unix_s: now_unix(),
        expires_unix_s,
        revoked: false,
        label: label.to_string(),
    });
    IssuedToken {
        id,
        token,
        role,
        supplier: supplier.map(str::to_string),
    }
}

/// `b`'s suppliers and tokens folded into `a`: the union by name and by id, where a disabled
/// supplier or a revoked token stays so and every other field keeps `a`'s value. Changes only
/// ever add records or set those flags, so merging in any order gives the same registry.
/// Answers whether `a` changed.
fn merge_into(a: &mut AuthFile, b: &AuthFile) -> bool {
    let mut changed = false;
    for s in &b.suppliers {
        match a.suppliers.iter_mut().find(|x| x.name == s.name) {
            Some(x) => {
                if s.disabled && !x.disabled {
                    x.disabled = true;
                    changed = true;
                }
            }
            None => {
                a.suppliers.push(s.clone());
                changed = true;
            }
        }
    }
    for t in &b.tokens {
        match a.tokens.iter_mut().find(|x| x.id == t.id) {
            Some(x) if x.sha256 != t.sha256 => {
                tracing::error!(id = %t.id, "two tokens share an id; keeping the first one seen");
            }
            Some(x) => {
                if t.revoked && !x.revoked {
                    x.revoked = true;
                    changed = true;
                }
            }
            None => {
                a.tokens.push(t.clone());
                changed = true;
            }
        }
    }
    changed
}

impl AuthStore {
    /// The registry (hashes only, never a secret) as JSON, for sharing with other nodes.
    pub fn export(&self) -> Result<serde_json::Value, AuthError> {
        self.refresh()?;
        let mut file = self.cached.read().file.clone();
        // One canonical order, so that equal registries compare equal across nodes.
        file.suppliers.sort_by(|a, b| a.name.cmp(&b.name));
        file.tokens.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(serde_json::to_value(&file).expect("auth file serializes"))
    }

    /// Folds another node's registry into this one (see [`AuthStore::export`]): new
    /// suppliers and tokens are added; disabling and revoking carry over, nothing is undone.
    /// Answers whether this registry changed.
    pub fn merge(&self, other: &serde_json::Value) -> Result<bool, AuthError> {
        let other: AuthFile =
            serde_json::from_value(other.clone()).map_err(|e| AuthError::Corrupt {
                path: self.path.clone(),
                reason: format!("the shared registry does not parse: {e}"),
            })?;
        self.refresh()?;
        let mut probe = self.cached.read().file.clone();
        if !merge_into(&mut probe, &other) {
            return Ok(false);
        }
        self.modify(|file| Ok(merge_into(file, &other)))
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<File> {
    File::create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        let t = store.add_supplier("acme").unwrap();
        assert_eq!(t.token.len(), "rw_".len() + 10 + 1 + 32);
        let p = store.authenticate(&t.token).unwrap();
        assert_eq!(p.role, Role::Agent);
        assert_eq!(p.scope(), Some("acme"));
        let raw = fs::read_to_string(store.path()).unwrap();
        assert!(!raw.contains(&t.token[14..]), "secret must not be stored");
        assert!(raw.contains(&sha256_hex(&t.token)));
        // One wrong character in the secret fails.
        let mut bad = t.token.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert!(store.authenticate(&bad).is_none());
        assert!(store.authenticate("garbage").is_none());
    }

    #[test]
    fn a_supplier_holds_at_most_the_cap_of_usable_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        store.add_supplier("acme").unwrap(); // its first agent token
        store.add_supplier("bolt").unwrap();
        let mut last = None;
        for _ in 1..MAX_TOKENS_PER_SUPPLIER {
            last = Some(store.issue(Role::Agent, Some("acme"), None, "t").unwrap());
        }
        let err = store
            .issue(Role::Supplier, Some("acme"), None, "t")
            .unwrap_err();
        assert!(matches!(
            err,
            AuthError::TooManyTokens {
                limit: MAX_TOKENS_PER_SUPPLIER,
                ..
            }
        ));
        assert!(err.to_string().contains("revoke"), "{err}");
        // Another supplier is not affected, and revoking one frees a place.
        store
            .issue(Role::Supplier, Some("bolt"), None, "t")
            .unwrap();
        store.revoke(&last.unwrap().id).unwrap();
        store
            .issue(Role::Supplier, Some("acme"), None, "t")
            .unwrap();
    }

    #[test]
    fn revocation_and_a_second_process_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let server = AuthStore::open(dir.path()).unwrap();
        let cli = AuthStore::open(dir.path()).unwrap();
        let t = cli.add_supplier("acme").unwrap();
        assert!(server.authenticate(&t.token).is_some());
        let s = cli
            .issue(Role::Supplier, Some("acme"), None, "portal")
            .unwrap();
        assert_eq!(cli.revoke(&s.id).unwrap(), 1);
        assert!(server.authenticate(&s.token).is_none());
        assert!(server.authenticate(&t.token).is_some());
        assert_eq!(cli.revoke("acme").unwrap(), 1);
        assert!(server.authenticate(&t.token).is_none());
        assert!(cli.revoke("nobody").is_err());
    }

    #[test]
    fn registries_merge_to_the_same_result_in_any_order_and_never_undo_a_revocation() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            AuthStore::open(da.path()).unwrap(),
            AuthStore::open(db.path()).unwrap(),
        );
        let ta = a.add_supplier("acme").unwrap();
        let tb = b.add_supplier("globex").unwrap();
        // Each learns the other's supplier and token.
        assert!(a.merge(&b.export().unwrap()).unwrap());
        assert!(b.merge(&a.export().unwrap()).unwrap());
        assert_eq!(a.export().unwrap(), b.export().unwrap());
        assert!(b.authenticate(&ta.token).is_some());
        // A revocation on one side survives a merge with the stale other side...
        a.revoke("globex").unwrap();
        let stale = b.export().unwrap();
        assert!(!a.merge(&stale).unwrap(), "nothing new in the stale copy");
        assert!(a.authenticate(&tb.token).is_none());
        // ...and reaches it.
        assert!(b.merge(&a.export().unwrap()).unwrap());
        assert!(b.authenticate(&tb.token).is_none());
        assert_eq!(a.export().unwrap(), b.export().unwrap());
    }

    #[test]
    fn scoping_rules_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        assert!(store.add_supplier("bad name").is_err());
        store.add_supplier("acme").unwrap();
        assert!(store.add_supplier("acme").is_err());
        assert!(store.issue(Role::Supplier, None, None, "").is_err());
        assert!(store.issue(Role::Admin, Some("acme"), None, "").is_err());
        assert!(store.issue(Role::Agent, Some("other"), None, "").is_err());
        let a = store.issue(Role::Analyst, None, None, "").unwrap();
        assert_eq!(store.authenticate(&a.token).unwrap().scope(), None);
        let e = store.issue(Role::Admin, None, Some(0), "").unwrap();
        assert!(store.authenticate(&e.token).is_none(), "expired at once");
    }
}
