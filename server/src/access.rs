//! Who may call what: the one route table, and the middleware that enforces it.
//!
//! Every request passes [`authorize`]. It finds the route in [`ROUTES`] (a path not listed
//! there is refused even if some router would answer it, so a new route cannot be
//! reachable by accident), verifies the bearer token (or `Basic` credentials whose password
//! is the token, for clients such as Grafana that only speak Basic), checks the role, and
//! puts the [`Principal`] into the request's extensions. Handlers read it from there to
//! scope what they return; the supplier scope itself is enforced below the query
//! languages, in the table providers.
//!
//! Browsers of the portal authenticate with a session cookie instead (see
//! [`rigwatch_dashboards::session`]): `POST /portal/login` with a bearer token starts one.
//! A request that changes state and is authenticated by the cookie must carry the session's
//! CSRF token in `X-Rigwatch-CSRF` and, when it sends `Origin`, come from this server's own
//! origin; otherwise it is refused before any handler runs.
//!
//! Failed token and session checks are counted per client address (an IPv4 address or an
//! IPv6 /64): after [`AUTH_FAILURES_PER_WINDOW`] distinct wrong credentials within
//! [`AUTH_FAILURE_WINDOW`], the address is answered 429 with `Retry-After`, without any
//! credential being verified, until the oldest failure leaves the window. Guessing tokens
//! is slow; a client retrying one stale token is one failure, not many.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rigwatch_common::http_error::ErrorBody;
use rigwatch_dashboards::session::{self, Credential, SessionError, Sessions};
use rigwatch_dashboards::throttle::{Throttle, retry_after_secs};
use rigwatch_storage::auth::{AuthStore, Principal, Role};
use sha2::{Digest, Sha256};

/// What a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (liveness only: it reveals nothing).
    Public,
    /// A valid token of one of these roles.
    Roles(&'static [Role]),
}

const READERS: &[Role] = &[Role::Admin, Role::Analyst, Role::Supplier];
const ADMIN: &[Role] = &[Role::Admin];
const OPERATORS: &[Role] = &[Role::Admin, Role::Analyst];
const AGENT: &[Role] = &[Role::Agent];
const AGENT_OR_READERS: &[Role] = &[Role::Agent, Role::Admin, Role::Analyst, Role::Supplier];
const ISSUERS: &[Role] = &[Role::Admin, Role::Supplier];

/// A route: its path (a trailing `*` matches any rest), its methods, and who may call it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub access: Access,
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const GET_POST: &[&str] = &["GET", "POST"];

/// Every route the server answers. The tenancy tests walk this table.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/health",
        methods: GET,
        access: Access::Public,
    },
    // A browser opening the server's address: sent on to the portal (which asks it to sign
    // in). Carries no data.
    Route {
        path: "/",
        methods: GET,
        access: Access::Public,
    },
    Route {
        path: "/metrics",
        methods: GET,
        access: Access::Roles(OPERATORS),
    },
    // Shard owners, leases, WAL heads of the nodes sharing a catalog: operators only.
    Route {
        path: "/api/v1/cluster",
        methods: GET,
        access: Access::Roles(OPERATORS),
    },
    // Alerting rules and alerts span suppliers: operators only.
    Route {
        path: "/api/v1/rules",
        methods: GET,
        access: Access::Roles(OPERATORS),
    },
    Route {
        path: "/api/v1/alerts",
        methods: GET,
        access: Access::Roles(OPERATORS),
    },
    // Generic write routes store rows as given, tags included: operators only. Agents write
    // through /api/v1/agent/*, where the server stamps their supplier.
    Route {
        path: "/api/v2/write",
        methods: POST,
        access: Access::Roles(ADMIN),
    },
    Route {
        path: "/write",
        methods: POST,
        access: Access::Roles(ADMIN),
    },
    Route {
        path: "/api/v1/import/prometheus",
        methods: POST,
        access: Access::Roles(ADMIN),
    },
    Route {
        path: "/api/v1/write",
        methods: POST,
        access: Access::Roles(ADMIN),
    },
    Route {
        path: "/api/v1/agent/register",
        methods: POST,
        access: Access::Roles(AGENT),
    },
    Route {
        path: "/api/v1/agent/write",
        methods: POST,
        access: Access::Roles(AGENT),
    },
    Route {
        path: "/api/v1/agent/inventory",
        methods: GET,
        access: Access::Roles(AGENT_OR_READERS),
    },
    // Releasing a GPU's claim (ingest/src/agent/routes.rs): an operator, or the GPU's own
    // supplier (its read or agent token); another supplier's GPU answers 404, like an
    // unknown one.
    Route {
        path: "/api/v1/agent/gpus/*",
        methods: &["DELETE"],
        access: Access::Roles(&[Role::Admin, Role::Supplier, Role::Agent]),
    },
    Route {
        path: "/api/v1/sql",
        methods: GET_POST,
        access: Access::Roles(READERS),
    },
    // The pipe DSL lowers to SQL run in the caller's scoped session: the SQL route's roles.
    Route {
        path: "/api/v1/dsl",
        methods: GET_POST,
        access: Access::Roles(READERS),
    },
    // The DSL's words for an editor's completion: static, no data, the same readers.
    Route {
        path: "/api/v1/dsl/vocabulary",
        methods: GET,
        access: Access::Roles(READERS),
    },
    // The Prometheus HTTP API.
    Route {
        path: "/api/v1/query",
        methods: GET_POST,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/api/v1/query_range",
        methods: GET_POST,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/api/v1/series",
        methods: GET_POST,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/api/v1/labels",
        methods: GET_POST,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/api/v1/label/*",
        methods: GET,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/api/v1/metadata",
        methods: GET,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/api/v1/status/buildinfo",
        methods: GET,
        access: Access::Roles(READERS),
    },
    // The supplier portal (rigwatch-dashboards). The page shell, the sign-in page and the
    // static assets carry no data; everything else needs a token or a session.
    Route {
        path: "/portal",
        methods: GET,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/portal/login",
        methods: GET,
        access: Access::Public,
    },
    // Signing in: the bearer token is verified here like on any route; agents get 403.
    Route {
        path: "/portal/login",
        methods: POST,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/portal/logout",
        methods: POST,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/portal/assets/*",
        methods: GET,
        access: Access::Public,
    },
    Route {
        path: "/portal/api/me",
        methods: GET,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/portal/api/agent-token",
        methods: POST,
        access: Access::Roles(ISSUERS),
    },
    Route {
        path: "/portal/api/dashboards",
        methods: GET,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/portal/api/dashboards/*",
        methods: GET,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/portal/events",
        methods: GET,
        access: Access::Roles(READERS),
    },
    // The allocator's jobs API (rigwatch-scheduler-service's `allocator`): operators submit and end jobs; analysts
    // read. Suppliers see their leases and earnings through the `lease` and `earnings`
    // tables, scoped like every other table.
    Route {
        path: "/api/v1/jobs",
        methods: GET,
        access: Access::Roles(OPERATORS),
    },
    Route {
        path: "/api/v1/jobs",
        methods: POST,
        access: Access::Roles(ADMIN),
    },
    Route {
        path: "/api/v1/jobs/*",
        methods: GET,
        access: Access::Roles(OPERATORS),
    },
    Route {
        path: "/api/v1/jobs/*",
        methods: &["POST", "DELETE"],
        access: Access::Roles(ADMIN),
    },
    // The Kubernetes scheduler extender (filter, prioritize, bind, unbind, renew), for a
    // supplier's own cluster: an `extender` token (in the path, as kube-scheduler sends no
    // headers; redacted from logs), its own GPUs only. It is valid nowhere else.
    Route {
        path: "/k8s/*",
        methods: POST,
        access: Access::Roles(&[Role::Extender]),
    },
    // Daily earnings statements and their reconciliation, scoped to the caller's supplier.
    Route {
        path: "/api/v1/earnings/statements",
        methods: GET,
        access: Access::Roles(READERS),
    },
    // Payouts: admins record them against settled statements; readers see their own.
    Route {
        path: "/api/v1/payouts",
        methods: GET,
        access: Access::Roles(READERS),
    },
    Route {
        path: "/api/v1/payouts",
        methods: POST,
        access: Access::Roles(ADMIN),
    },
    // Live earnings (the portal's ticker), scoped to the caller's supplier.
    Route {
        path: "/api/v1/earnings/live",
        methods: GET,
        access: Access::Roles(READERS),
    },
];

/// Routes anyone may call: liveness, and the portal's sign-in page and static assets.
#[cfg(test)]
pub const PUBLIC: &[&str] = &["/health", "/", "/portal/login", "/portal/assets/*"];

fn path_matches(r: &Route, path: &str) -> bool {
    match r.path.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix) && path.len() > prefix.len(),
        None => r.path == path,
    }
}

fn method_matches(r: &Route, method: &Method) -> bool {
    r.methods.iter().any(|m| method.as_str() == *m)
        || (*method == Method::HEAD && r.methods.contains(&"GET"))
}

/// The route `path` belongs to, if any (the first entry for it).
#[cfg(test)]
pub fn route(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| path_matches(r, path))
}

/// The entry for `path` and `method`; `Err` with every method the path accepts when the
/// path is known but the method is not; `Ok(None)` for an unknown path.
pub fn route_for(path: &str, method: &Method) -> Result<Option<&'static Route>, Vec<&'static str>> {
    let mut allowed = Vec::new();
    for r in ROUTES.iter().filter(|r| path_matches(r, path)) {
        if method_matches(r, method) {
            return Ok(Some(r));
        }
        allowed.extend_from_slice(r.methods);
    }
    if allowed.is_empty() {
        Ok(None)
    } else {
        Err(allowed)
    }
}

/// Distinct failed token or session checks one client address may make in
/// [`AUTH_FAILURE_WINDOW`]; past it the address gets 429 until the oldest leaves the window.
pub const AUTH_FAILURES_PER_WINDOW: usize = 20;
/// The window of [`AUTH_FAILURES_PER_WINDOW`].
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered at once (bounds the memory: 20 counts of
/// 16 bytes each per address).
pub const AUTH_FAILURE_ADDRESSES: usize = 10_000;

/// The token verifier shared by the middleware and the handlers.
#[derive(Debug, Clone)]
pub struct Gate {
    pub auth: Arc<AuthStore>,
    /// SHA-256 of the operator's `--admin-token`, kept only in memory.
    admin_sha256: Option<[u8; 32]>,
    /// The portal's browser sessions.
    sessions: Arc<Sessions>,
    /// Recent failed credential checks per client address.
    failures: Arc<Throttle<IpAddr>>,
}

/// Who a failure is counted against: an IPv4 address, or an IPv6 /64 (one host usually holds
/// a whole /64). A request without a known peer (no connect info) shares one key.
pub fn client_key(peer: Option<IpAddr>) -> IpAddr {
    match peer {
        None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// A short fingerprint of a presented credential, so one wrong credential sent again is
/// counted once.
fn fingerprint(kind: &str, secret: &str) -> u64 {
    let h = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(secret.as_bytes())
        .finalize();
    u64::from_le_bytes(h[..8].try_into().unwrap_or([0; 8]))
}

impl Gate {
    pub fn new(auth: Arc<AuthStore>, admin_token: Option<&str>) -> Self {
        Self {
            auth,
            admin_sha256: admin_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            sessions: Arc::new(Sessions::default()),
            failures: Arc::new(Throttle::new(
                AUTH_FAILURES_PER_WINDOW,
                AUTH_FAILURE_WINDOW,
                AUTH_FAILURE_ADDRESSES,
            )),
        }
    }

    /// The same gate allowing `limit` failed checks per client address in `window`
    /// (`--auth-failures-per-minute`).
    pub fn with_failure_limit(mut self, limit: usize, window: Duration) -> Self {
        self.failures = Arc::new(Throttle::new(limit, window, AUTH_FAILURE_ADDRESSES));
        self
    }

    /// Counts a failed check of `what` (a credential fingerprint) from `client`.
    fn failed(&self, client: IpAddr, what: u64) {
        if let Ok(n) = self.failures.record(client, Some(what))
            && n == self.failures.limit()
        {
            tracing::warn!(%client, failures = n, window_s = self.failures.window().as_secs(), "throttling a client after repeated authentication failures");
        }
    }

    /// The same gate with `sessions` as its session store (the server's session limits;
    /// tests use short lifetimes).
    pub fn with_sessions(mut self, sessions: Arc<Sessions>) -> Self {
        self.sessions = sessions;
        self
    }

    /// The session store the portal's sign-in writes to.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The principal of a session cookie, if the session is live and the token it was
    /// started with is still usable (a revoked token ends its sessions).
    fn session(&self, id: &str) -> Result<session::Session, &'static str> {
        let s = self.sessions.get(id).map_err(|e| match e {
            SessionError::Expired => "the portal session has expired: sign in again at /portal/login",
            SessionError::Unknown => {
                "the portal session is unknown (signed out, or the server restarted): sign in again at /portal/login"
            }
        })?;
        if !session::token_usable(&self.auth, &s.principal.token_id) {
            self.sessions.remove(id);
            return Err("the token this session was started with has been revoked or has expired");
        }
        Ok(s)
    }

    /// Verifies a presented token.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        if let Some(h) = &self.admin_sha256 {
            let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if got.iter().zip(h).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0 {
                return Some(Principal {
                    role: Role::Admin,
                    supplier: None,
                    token_id: "admin-token".into(),
                });
            }
        }
        self.auth.authenticate(token)
    }
}

/// kube-scheduler cannot send headers to an extender: its token is the path segment after
/// `/k8s/` (`urlPrefix: http://HOST:9800/k8s/<extender token>`).
fn k8s_path_token(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/k8s/")?;
    let (token, _) = rest.split_once('/')?;
    (!token.is_empty()).then(|| token.to_string())
}

/// `path` with the extender token (the segment after `/k8s/`) replaced, for logs.
pub fn redacted_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/k8s/") {
        Some(rest) => {
            let tail = rest.split_once('/').map_or("", |(_, t)| t);
            format!("/k8s/<redacted>/{tail}").into()
        }
        None => path.into(),
    }
}

/// The token a request presents: `Authorization: Bearer T`, or `Basic` with T as password.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// 401 (with `WWW-Authenticate`) or 403, in the one error body.
fn deny(status: StatusCode, message: String) -> Response {
    ErrorBody::for_status(status, message).response(status)
}

/// 503 with `Retry-After: 1`, in the same shape as the refusals above: this node cannot
/// serve the request now (no shard owner yet, or this node was deposed); another try, or
/// another node, can.
pub fn unavailable(message: &str) -> Response {
    ErrorBody::for_status(StatusCode::SERVICE_UNAVAILABLE, message)
        .response(StatusCode::SERVICE_UNAVAILABLE)
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::cookie_value)
}

/// Why a cookie-authenticated request that changes state is refused, if it is: it must
/// echo the session's CSRF token and, when it names an origin, come from this server.
pub fn csrf_refusal(headers: &HeaderMap, csrf: &str) -> Option<String> {
    let sent = headers
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if sent.is_empty() {
        return Some(format!(
            "a request signed in by the portal session must carry the `{}` header (the page's CSRF token)",
            session::CSRF_HEADER
        ));
    }
    if !session::constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
        return Some(format!(
            "the `{}` header does not match this session's CSRF token",
            session::CSRF_HEADER
        ));
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Some("cross-site requests may not use the portal session".into());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o == host);
        if !same {
            return Some(format!(
                "origin `{origin}` is not this server (`{host}`): cross-origin requests may not use the portal session"
            ));
        }
    }
    None
}

/// 429 for a client that failed authentication too often: when to come back, and why.
fn throttled(wait: Duration, limit: usize, window: Duration) -> Response {
    let secs = retry_after_secs(wait);
    ErrorBody::for_status(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many failed sign-ins from this address ({limit} wrong tokens or sessions within {} s, --auth-failures-per-minute): credentials are not checked for {secs} s",
            window.as_secs()
        ),
    )
    .with("retry_after_s", secs)
    .response(StatusCode::TOO_MANY_REQUESTS)
}

/// A browser opening the portal without a usable session goes to the sign-in page.
fn to_sign_in(req: &Request) -> Option<Response> {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    (req.uri().path() == "/portal" && req.method() == Method::GET && wants_html).then(|| {
        (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/portal/login".to_string()),
                (header::SET_COOKIE, session::clear_cookie()),
            ],
        )
            .into_response()
    })
}

/// The middleware: route lookup, token or session check (CSRF for session writes), role
/// check, principal into extensions.
pub async fn authorize(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    // For messages: never echo an extender token that sits in the path.
    let path = redacted_path(req.uri().path()).into_owned();
    let raw_path = req.uri().path().to_string();
    let method = req.method().clone();
    let route = match route_for(&raw_path, &method) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return ErrorBody::for_status(StatusCode::NOT_FOUND, format!("no route {path}"))
                .response(StatusCode::NOT_FOUND);
        }
        Err(allowed) => {
            let mut resp = ErrorBody::for_status(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} accepts {}, not {method}", allowed.join(" and ")),
            )
            .response(StatusCode::METHOD_NOT_ALLOWED);
            if let Ok(v) = header::HeaderValue::from_str(&allowed.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return resp;
        }
    };
    let roles = match route.access {
        Access::Public => return next.run(req).await,
        Access::Roles(roles) => roles,
    };
    let token = presented_token(req.headers()).or_else(|| k8s_path_token(req.uri().path()));
    let client = client_key(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    );
    if (token.is_some() || session_cookie(req.headers()).is_some())
        && let Some(wait) = gate.failures.wait(&client)
    {
        return throttled(wait, gate.failures.limit(), gate.failures.window());
    }
    let (principal, credential) = if let Some(token) = token {
        let Some(principal) = gate.verify(&token) else {
            gate.failed(client, fingerprint("token", &token));
            return deny(
                StatusCode::UNAUTHORIZED,
                "the token is unknown, revoked or expired".into(),
            );
        };
        (principal, Credential::Token)
    } else if let Some(id) = session_cookie(req.headers()) {
        let s = match gate.session(id) {
            Ok(s) => s,
            Err(why) => {
                gate.failed(client, fingerprint("session", id));
                if let Some(r) = to_sign_in(&req) {
                    return r;
                }
                return deny(StatusCode::UNAUTHORIZED, why.into());
            }
        };
        if method != Method::GET
            && method != Method::HEAD
            && let Some(why) = csrf_refusal(req.headers(), &s.csrf)
        {
            return deny(StatusCode::FORBIDDEN, why);
        }
        (s.principal, Credential::Session)
    } else {
        if let Some(r) = to_sign_in(&req) {
            return r;
        }
        return deny(
            StatusCode::UNAUTHORIZED,
            format!(
                "{path} needs a token: send `Authorization: Bearer <token>` (create one with `rigwatch supplier add` or start the server with --admin-token), or sign in at /portal/login"
            ),
        );
    };
    if !roles.contains(&principal.role) {
        let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return deny(
            StatusCode::FORBIDDEN,
            format!(
                "a {} token may not call {method} {path} (allowed: {})",
                principal.role,
                allowed.join(", ")
            ),
        );
    }
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(credential);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_but_health_needs_a_role() {
        for r in ROUTES {
            if PUBLIC.contains(&r.path) && r.methods == GET {
                assert_eq!(r.access, Access::Public);
            } else {
                assert!(
                    matches!(r.access, Access::Roles(roles) if !roles.is_empty()),
                    "{} must require a role",
                    r.path
                );
            }
        }
    }

    #[test]
    fn route_lookup_matches_exact_paths_and_prefixes() {
        assert_eq!(route("/api/v1/sql").unwrap().path, "/api/v1/sql");
        assert_eq!(
            route("/api/v1/label/job/values").unwrap().path,
            "/api/v1/label/*"
        );
        assert!(route("/api/v1/label/").is_none());
        assert!(route("/api/v1/sqlx").is_none());
        assert!(route("/admin").is_none());
        assert_eq!(
            route_for("/portal/login", &Method::POST)
                .unwrap()
                .unwrap()
                .access,
            Access::Roles(READERS)
        );
        assert_eq!(
            route_for("/portal/login", &Method::GET)
                .unwrap()
                .unwrap()
                .access,
            Access::Public
        );
        assert_eq!(
            route_for("/portal/login", &Method::DELETE).unwrap_err(),
            vec!["GET", "POST"]
        );
        assert!(matches!(route_for("/nope", &Method::GET), Ok(None)));
    }

    /// The middleware in front of a stub handler, on a loopback port.
    async fn serve_gate(gate: Gate) -> String {
        let app = axum::Router::new()
            .route(
                "/portal/api/me",
                axum::routing::get(|p: axum::Extension<Principal>| async move {
                    p.0.supplier.unwrap_or_default()
                }),
            )
            .route("/portal/logout", axum::routing::post(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(gate, authorize));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn repeated_failures_from_one_address_are_throttled_without_verifying() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(AuthStore::open(dir.path()).unwrap());
        auth.add_supplier("acme").unwrap();
        let good = auth.issue(Role::Supplier, Some("acme"), None, "t").unwrap();
        let gate = Gate::new(auth.clone(), None).with_failure_limit(3, Duration::from_secs(3));
        let base = serve_gate(gate).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let me = |token: String| {
            client
                .get(format!("{base}/portal/api/me"))
                .bearer_auth(token)
                .send()
        };
        // Successes are never counted, and one stale token retried is one failure.
        for _ in 0..3 {
            assert_eq!(me(good.token.clone()).await.unwrap().status(), 200);
            assert_eq!(me("rw_stale".into()).await.unwrap().status(), 401);
        }
        assert_eq!(me("rw_guess_1".into()).await.unwrap().status(), 401);
        assert_eq!(me("rw_guess_2".into()).await.unwrap().status(), 401);
        // Three distinct failures: now even the good token is not checked.
        for t in ["rw_guess_3".to_string(), good.token.clone()] {
            let r = me(t).await.unwrap();
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=3).contains(&retry), "{retry}");
            assert!(r.text().await.unwrap().contains("too many failed sign-ins"));
        }
        // Forged session cookies count the same way.
        let r = client
            .get(format!("{base}/portal/api/me"))
            .header("cookie", "rw_session=forged")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        // Once the window has passed, the good token works again.
        tokio::time::sleep(Duration::from_millis(3_100)).await;
        assert_eq!(me(good.token.clone()).await.unwrap().status(), 200);
    }

    #[test]
    fn failures_are_counted_per_ipv4_address_or_ipv6_64() {
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_key(v6("10.0.0.1")), v6("10.0.0.1").unwrap());
        assert_eq!(client_key(v6("::ffff:10.0.0.1")), v6("10.0.0.1").unwrap());
        assert_eq!(
            client_key(v6("2001:db8:1:2:aaaa::1")),
            client_key(v6("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            client_key(v6("2001:db8:1:2::1")),
            client_key(v6("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(None), client_key(v6("0.0.0.0")));
    }

    #[tokio::test]
    async fn sessions_expire_and_bad_cookies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(AuthStore::open(dir.path()).unwrap());
        auth.add_supplier("acme").unwrap();
        let issued = auth.issue(Role::Supplier, Some("acme"), None, "t").unwrap();
        let sessions = Arc::new(Sessions::new(std::time::Duration::from_millis(300)));
        let gate = Gate::new(auth.clone(), None).with_sessions(sessions.clone());
        let base = serve_gate(gate).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let me = |cookie: String| {
            client
                .get(format!("{base}/portal/api/me"))
                .header("cookie", cookie)
                .send()
        };
        let principal = auth.authenticate(&issued.token).unwrap();
        let s = sessions.create(principal.clone()).unwrap();
        let r = me(format!("rw_session={}", s.id)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "acme");

        let r = me("rw_session=forged".into()).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.text().await.unwrap().contains("unknown"));

        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
        let r = me(format!("rw_session={}", s.id)).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.text().await.unwrap().contains("expired"));

        // Revoking the token ends the sessions started with it.
        let s = sessions.create(principal).unwrap();
        assert_eq!(
            me(format!("rw_session={}", s.id)).await.unwrap().status(),
            200
        );
        auth.revoke(&issued.id).unwrap();
        let r = me(format!("rw_session={}", s.id)).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.text().await.unwrap().contains("revoked"));
    }

    #[test]
    fn session_writes_need_the_csrf_token_and_the_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9800".parse().unwrap());
        assert!(
            csrf_refusal(&h, "secret")
                .unwrap()
                .contains("x-rigwatch-csrf")
        );
        h.insert(session::CSRF_HEADER, "wrong".parse().unwrap());
        assert!(
            csrf_refusal(&h, "secret")
                .unwrap()
                .contains("does not match")
        );
        h.insert(session::CSRF_HEADER, "secret".parse().unwrap());
        assert_eq!(csrf_refusal(&h, "secret"), None);
        h.insert(header::ORIGIN, "http://127.0.0.1:9800".parse().unwrap());
        assert_eq!(csrf_refusal(&h, "secret"), None);
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(csrf_refusal(&h, "secret").unwrap().contains("evil.example"));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(csrf_refusal(&h, "secret").is_some());
    }

    #[test]
    fn tokens_are_read_from_bearer_and_basic() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("grafana:tok");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("tok"));
        h.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
        assert_eq!(presented_token(&h), None);
    }
}
