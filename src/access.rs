//! Who may call what: the one route table, and the middleware that enforces it.
//!
//! Every request passes [`authorize`]. It finds the route in [`ROUTES`] (a path not listed
//! there is refused even if some router would answer it, so a new route cannot be
//! reachable by accident), verifies the bearer token (or `Basic` credentials whose password
//! is the token, for clients such as Grafana that only speak Basic), checks the role, and
//! puts the [`Principal`] into the request's extensions. Handlers read it from there to
//! scope what they return; the supplier scope itself is enforced below the query
//! languages, in the table providers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
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
    Route {
        path: "/metrics",
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
    Route {
        path: "/api/v1/sql",
        methods: GET_POST,
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
    // The allocator's jobs API (src/alloc.rs): operators submit and end jobs; analysts
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
];

/// The route `path` belongs to, if any.
pub fn route(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| match r.path.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix) && path.len() > prefix.len(),
        None => r.path == path,
    })
}

/// The token verifier shared by the middleware and the handlers.
#[derive(Debug, Clone)]
pub struct Gate {
    pub auth: Arc<AuthStore>,
    /// SHA-256 of the operator's `--admin-token`, kept only in memory.
    admin_sha256: Option<[u8; 32]>,
}

impl Gate {
    pub fn new(auth: Arc<AuthStore>, admin_token: Option<&str>) -> Self {
        Self {
            auth,
            admin_sha256: admin_token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
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

fn deny(status: StatusCode, message: String) -> Response {
    let mut resp = (
        status,
        axum::Json(serde_json::json!({
            "status": "error",
            "errorType": if status == StatusCode::UNAUTHORIZED { "unauthorized" } else { "forbidden" },
            "error": message,
        })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"rigwatch\""),
        );
    }
    resp
}

/// The middleware: route lookup, token check, role check, principal into extensions.
pub async fn authorize(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some(route) = route(&path) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "status": "error", "errorType": "not_found",
                "error": format!("no route {path}"),
            })),
        )
            .into_response();
    };
    let method = req.method().clone();
    let method_ok = route.methods.iter().any(|m| method.as_str() == *m)
        || (method == Method::HEAD && route.methods.contains(&"GET"));
    if !method_ok {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, route.methods.join(", "))],
            axum::Json(serde_json::json!({
                "status": "error", "errorType": "bad_data",
                "error": format!("{path} accepts {}, not {method}", route.methods.join(" and ")),
            })),
        )
            .into_response();
    }
    let roles = match route.access {
        Access::Public => return next.run(req).await,
        Access::Roles(roles) => roles,
    };
    let Some(token) = presented_token(req.headers()) else {
        return deny(
            StatusCode::UNAUTHORIZED,
            format!(
                "{path} needs a token: send `Authorization: Bearer <token>` (create one with `rigwatch supplier add` or start the server with --admin-token)"
            ),
        );
    };
    let Some(principal) = gate.verify(&token) else {
        return deny(
            StatusCode::UNAUTHORIZED,
            "the token is unknown, revoked or expired".into(),
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
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_but_health_needs_a_role() {
        for r in ROUTES {
            if r.path == "/health" {
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
