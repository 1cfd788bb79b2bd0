//! A query node (`--mode query`), like a standby (`--mode all` while another node owns the
//! shard), answers reads made with a token itself (SQL, PromQL, the DSL, the portal's
//! assets) and passes everything else — writes, agent registration, jobs, rules, and every
//! portal request made with a session, so that sessions live in one place — to the node that
//! owns the shard, found through the shard's lease in PostgreSQL. The owner authenticates and
//! authorizes the request again; this node adds nothing to it. Answers stream through (the
//! portal's live events included).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rigwatch_storage::lease;
use rigwatch_storage::pg::Pg;

/// How long the owner's address is reused before the lease is read again.
const OWNER_TTL: Duration = Duration::from_secs(1);
/// Longest a forwarded request may wait for a connection to the owner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a forwarded request may wait for its answer to start (an owner that is paused or
/// partitioned away accepts connections but never answers; its lease then moves on).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where requests that need the owner go.
#[derive(Debug)]
pub struct Forward {
    pg: Pg,
    shard: String,
    client: reqwest::Client,
    max_body: usize,
    owner: Mutex<Option<(Instant, String)>>,
}

impl Forward {
    pub fn new(pg: Pg, shard: &str, max_body: usize) -> anyhow::Result<Self> {
        Ok(Self {
            pg,
            shard: shard.to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                // No overall timeout: the portal's live events stream for as long as the
                // browser listens. The owner bounds every other request itself.
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            max_body,
            owner: Mutex::new(None),
        })
    }

    async fn owner(&self) -> Option<String> {
        if let Some((at, url)) = self.owner.lock().as_ref()
            && at.elapsed() < OWNER_TTL
        {
            return Some(url.clone());
        }
        let holder = lease::holder(&self.pg, &lease::shard_lease(&self.shard))
            .await
            .ok()
            .flatten()?;
        if holder.expires_in_ms <= 0 || holder.address.is_empty() {
            return None;
        }
        *self.owner.lock() = Some((Instant::now(), holder.address.clone()));
        Some(holder.address)
    }
}

/// Whether a query node answers this request from its own view of the data: `/health`, and
/// reads made with a token (tokens are shared by every node; sessions are the owner's).
pub fn is_local(path: &str, headers: &axum::http::HeaderMap) -> bool {
    path == "/health" || (crate::access::presented_token(headers).is_some() && is_read(path))
}

/// The read routes a query node can serve.
fn is_read(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "/metrics",
        "/api/v1/query",
        "/api/v1/query_range",
        "/api/v1/series",
        "/api/v1/labels",
        "/api/v1/metadata",
        "/api/v1/sql",
        "/api/v1/dsl",
        "/api/v1/dsl/vocabulary",
    ];
    EXACT.contains(&path)
        || path.starts_with("/api/v1/label/")
        || path.starts_with("/api/v1/status/")
        || path.starts_with("/portal/assets/")
}

/// The middleware: local reads go on, the rest to the owner.
pub async fn forward(State(f): State<Arc<Forward>>, req: Request, next: Next) -> Response {
    if is_local(req.uri().path(), req.headers()) {
        return next.run(req).await;
    }
    let Some(owner) = f.owner().await else {
        return crate::access::unavailable(
            "no node owns the shard right now (the owner died and no other has taken over yet); retry shortly",
        );
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, f.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {} bytes", f.max_body),
            )
                .into_response();
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = f
        .client
        .request(parts.method, format!("{owner}{path}"))
        .body(bytes);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            out = out.header(name, value);
        }
    }
    let resp = match tokio::time::timeout(ANSWER_TIMEOUT, out.send()).await {
        Ok(Ok(r)) => r,
        Err(_) => {
            *f.owner.lock() = None;
            return crate::access::unavailable(&format!(
                "the shard's owner at {owner} did not answer within {} s; retry",
                ANSWER_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => {
            *f.owner.lock() = None;
            return crate::access::unavailable(&format!(
                "the shard's owner at {owner} did not answer: {e}"
            ));
        }
    };
    let mut builder = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|_| crate::access::unavailable("bad answer from the shard's owner"))
}
