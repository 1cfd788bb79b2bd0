//! The portal's HTTP routes. The server's access layer has already authenticated the
//! caller (bearer token or session cookie, CSRF checked) and put the [`Principal`] and the
//! [`Credential`] into the request's extensions; these handlers only scope what they answer.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rigwatch_query::QueryService;
use rigwatch_storage::auth::{AuthStore, Principal, Role};
use serde::Deserialize;

use crate::assets;
use crate::builtin;
use crate::error::{Error, Result};
use crate::live::{self, Live, StreamRefused};
use crate::session::{self, Credential, Sessions};
use crate::throttle::Throttle;

/// Largest body a portal route accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Agent tokens one supplier may be issued through the portal in [`MINT_WINDOW`].
pub const MINTS_PER_SUPPLIER: usize = 10;
/// The window of [`MINTS_PER_SUPPLIER`].
pub const MINT_WINDOW: Duration = Duration::from_secs(3600);
/// Suppliers whose recent mints are remembered at once (bounds the memory).
const MINT_KEYS: usize = 10_000;
/// `Retry-After` for a refused live stream: tabs close and reconnect within seconds.
const STREAM_RETRY: Duration = Duration::from_secs(5);

/// What the portal's handlers share.
#[derive(Debug, Clone)]
pub struct PortalState {
    pub sessions: Arc<Sessions>,
    pub auth: Arc<AuthStore>,
    pub query: QueryService,
    /// The live streams and their shared producers.
    pub live: Live,
    /// Recent agent-token mints per supplier.
    pub mints: Arc<Throttle<String>>,
}

/// The portal's per-principal limits (server flags; [`Default`] gives the constants).
#[derive(Debug, Clone, Copy)]
pub struct PortalLimits {
    /// Live event streams one token or session may hold open.
    pub streams_per_principal: usize,
    /// Live event streams open in all.
    pub streams: usize,
    /// Agent tokens one supplier may mint in the portal per hour.
    pub mints_per_supplier_per_hour: usize,
}

impl Default for PortalLimits {
    fn default() -> Self {
        Self {
            streams_per_principal: crate::live::MAX_STREAMS_PER_PRINCIPAL,
            streams: crate::live::MAX_STREAMS,
            mints_per_supplier_per_hour: MINTS_PER_SUPPLIER,
        }
    }
}

impl PortalState {
    /// The same portal with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: PortalLimits) -> Self {
        self.live = Live::with_limits(
            self.query.clone(),
            limits.streams_per_principal,
            limits.streams,
        );
        self.mints = Arc::new(Throttle::new(
            limits.mints_per_supplier_per_hour,
            MINT_WINDOW,
            MINT_KEYS,
        ));
        self
    }

    /// The portal over `sessions` (shared with the access layer), `auth` and `query`, with
    /// the default limits.
    pub fn new(sessions: Arc<Sessions>, auth: Arc<AuthStore>, query: QueryService) -> Self {
        Self {
            sessions,
            auth,
            live: Live::new(query.clone()),
            query,
            mints: Arc::new(Throttle::new(MINTS_PER_SUPPLIER, MINT_WINDOW, MINT_KEYS)),
        }
    }
}

/// Every portal route (each is also listed in the server's route table).
pub fn router(state: PortalState) -> Router {
    Router::new()
        .route("/portal", get(index))
        .route("/portal/login", get(login_page).post(login))
        .route("/portal/logout", post(logout))
        .route("/portal/assets/{*file}", get(asset))
        .route("/portal/api/me", get(me))
        .route("/portal/api/agent-token", post(agent_token))
        .route("/portal/api/dashboards", get(dashboards))
        .route("/portal/api/dashboards/{name}", get(dashboard))
        .route("/portal/api/dashboards/{name}/grafana", get(grafana))
        .route("/portal/events", get(events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    html(assets::INDEX_HTML)
}

async fn login_page() -> Response {
    html(assets::LOGIN_HTML)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = assets::get(&file) else {
        return rigwatch_common::http_error::ErrorBody::for_status(
            StatusCode::NOT_FOUND,
            format!(
                "no portal asset `{file}` (known: {})",
                assets::names().join(", ")
            ),
        )
        .response(StatusCode::NOT_FOUND);
    };
    let gzip_ok = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut resp = (
        [
            (header::CONTENT_TYPE, a.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "Accept-Encoding"),
        ],
        if gzip_ok { a.gzip } else { a.bytes },
    )
        .into_response();
    if gzip_ok {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

fn who(p: &Principal) -> serde_json::Value {
    serde_json::json!({ "role": p.role.as_str(), "supplier": p.supplier, "token_id": p.token_id })
}

/// `POST /portal/login` with `Authorization: Bearer <token>`: the access layer has verified
/// the token (agents are refused there); start a session and set its cookie.
async fn login(
    State(st): State<PortalState>,
    Extension(principal): Extension<Principal>,
    credential: Option<Extension<Credential>>,
    headers: HeaderMap,
) -> Result<Response> {
    if credential.map(|c| c.0) == Some(Credential::Session) {
        return Err(Error::BadRequest {
            what: "sign in with a token (Authorization: Bearer <token>), not with a session".into(),
        });
    }
    if principal.role == Role::Agent {
        return Err(Error::Forbidden {
            what: "agent tokens cannot sign in to the portal; use a supplier token".into(),
        });
    }
    let mut body = who(&principal);
    let new = st.sessions.create(principal)?;
    body["csrf"] = new.csrf.clone().into();
    body["expires_in_s"] = new.ttl.as_secs().into();
    let cookie = HeaderValue::from_str(&session::set_cookie(&new, session::via_https(&headers)))
        .map_err(|e| Error::Internal(format!("session cookie: {e}")))?;
    Ok((
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        axum::Json(body),
    )
        .into_response())
}

fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::cookie_value)
}

/// `POST /portal/logout`: ends the session (CSRF-checked by the access layer).
async fn logout(State(st): State<PortalState>, headers: HeaderMap) -> Response {
    let ended = cookie_id(&headers).is_some_and(|id| st.sessions.remove(id));
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        axum::Json(serde_json::json!({ "signed_out": ended })),
    )
        .into_response()
}

/// `GET /portal/api/me`: who is signed in, and the CSRF token of the session.
async fn me(
    State(st): State<PortalState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    let mut body = who(&principal);
    if let Some(s) = cookie_id(&headers).and_then(|id| st.sessions.get(id).ok()) {
        body["csrf"] = s.csrf.into();
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

#[derive(Debug, Deserialize, Default)]
struct AgentTokenRequest {
    /// Admins name the supplier; a supplier's token is always for itself.
    supplier: Option<String>,
    /// A label for the token (`portal` by default).
    label: Option<String>,
}

/// `POST /portal/api/agent-token`: a fresh agent token for the signed-in supplier, and the
/// command that adds a GPU with it.
async fn agent_token(
    State(st): State<PortalState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: AgentTokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        AgentTokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest {
            what: format!(
                "body must be JSON {{\"supplier\": .., \"label\": ..}}: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        })?
    };
    let supplier = match (principal.role, principal.scope(), req.supplier.as_deref()) {
        (Role::Supplier, Some(own), None) => own.to_string(),
        (Role::Supplier, Some(own), Some(asked)) if asked == own => own.to_string(),
        (Role::Supplier, _, Some(asked)) => {
            return Err(Error::Forbidden {
                what: format!("a supplier may issue agent tokens only for itself, not `{asked}`"),
            });
        }
        (Role::Admin, _, Some(asked)) => asked.to_string(),
        (Role::Admin, _, None) => {
            return Err(Error::BadRequest {
                what: "an admin must name the supplier: {\"supplier\": \"NAME\"}".into(),
            });
        }
        (role, _, _) => {
            return Err(Error::Forbidden {
                what: format!("a {role} may not issue agent tokens"),
            });
        }
    };
    let label = req.label.unwrap_or_else(|| "portal".into());
    if label.len() > 64 || label.chars().any(char::is_control) {
        return Err(Error::BadRequest {
            what: "label: at most 64 printable characters".into(),
        });
    }
    if let Err(wait) = st.mints.record(supplier.clone(), None) {
        return Err(Error::TooMany {
            what: format!(
                "at most {} agent tokens per supplier per {} minutes may be issued in the portal (--agent-token-mints-per-hour); `{supplier}` may have the next in {} s",
                st.mints.limit(),
                MINT_WINDOW.as_secs() / 60,
                crate::throttle::retry_after_secs(wait)
            ),
            retry_after: wait,
        });
    }
    let issued = st.auth.issue(Role::Agent, Some(&supplier), None, &label)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9800");
    let server = format!("http://{host}");
    let command = format!("rigwatch agent --server {server} --token {}", issued.token);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "supplier": supplier,
            "token_id": issued.id,
            "token": issued.token,
            "server": server,
            "command": command,
        })),
    )
        .into_response())
}

async fn dashboards() -> Result<Response> {
    let mut out = Vec::new();
    for n in builtin::names() {
        let d = builtin::get(n)?;
        out.push(serde_json::json!({ "name": n, "title": d.title, "description": d.description }));
    }
    Ok(axum::Json(out).into_response())
}

async fn dashboard(Path(name): Path<String>) -> Result<Response> {
    Ok(axum::Json(builtin::get(&name)?).into_response())
}

async fn grafana(Path(name): Path<String>) -> Result<Response> {
    let g = builtin::grafana(&name)?;
    let disposition = format!("attachment; filename=\"rigwatch-{name}.json\"");
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
        )],
        axum::Json(g),
    )
        .into_response())
}

#[derive(Debug, Deserialize, Default)]
struct EventParams {
    /// One snapshot, then the end of the stream (for scripts and tests).
    once: Option<String>,
}

/// `GET /portal/events`: server-sent `gpus` events with the caller's latest per-GPU values.
/// Capped per token and in all (429 beyond); a stream ends once its session is signed out or
/// expires, or its token is revoked.
async fn events(
    State(st): State<PortalState>,
    Extension(principal): Extension<Principal>,
    credential: Option<Extension<Credential>>,
    headers: HeaderMap,
    Query(params): Query<EventParams>,
) -> Result<Response> {
    let once = params
        .once
        .as_deref()
        .is_some_and(|v| !matches!(v, "0" | "false"));
    let scope = principal.scope().map(str::to_string);
    if once {
        return Ok(live::once(st.query, scope).into_response());
    }
    let sub = st
        .live
        .subscribe(&principal.token_id, scope)
        .map_err(|refused: StreamRefused| Error::TooMany {
            what: refused.to_string(),
            retry_after: STREAM_RETRY,
        })?;
    let session_id = match credential.map(|c| c.0) {
        Some(Credential::Session) => cookie_id(&headers).map(str::to_string),
        _ => None,
    };
    let (sessions, auth, token_id) = (st.sessions, st.auth, principal.token_id);
    let still_valid = move || {
        session_id
            .as_deref()
            .is_none_or(|id| sessions.get(id).is_ok())
            && session::token_usable(&auth, &token_id)
    };
    Ok(live::stream(sub, still_valid).into_response())
}
