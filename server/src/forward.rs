//! Where a request is answered when nodes share a catalog.
//!
//! Every node answers reads made with a token itself (SQL, PromQL, the DSL, the portal's
//! assets): it reads every shard. A supplier's writes (its agents' telemetry, registrations
//! and GPU releases) go to the owner of the supplier's shard ([`crate::cluster::shard_of`]);
//! an operator's writes (line protocol, Prometheus text, remote write) to this node's own
//! shard, or the primary shard's when it owns none. Everything else — jobs, rules, tokens,
//! and every portal request made with a session, so that sessions live in one place — goes
//! to the node running the singletons (the shard owner holding their lease). Nodes are
//! found through their leases in PostgreSQL.
//!
//! The target authenticates and authorizes the request again; this node adds nothing to it
//! but the number of times it was passed on. A request is passed on at most twice (a node
//! that has not yet learnt a new token sends the write on as an operator's, to shard 0's
//! owner, which knows the supplier's shard), so a moment when nodes disagree on who owns a shard gives a 503 to
//! retry, not a loop. Answers stream through (the portal's live events included).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rigwatch_storage::auth::AuthStore;
use rigwatch_storage::lease;
use rigwatch_storage::pg::Pg;

use crate::cluster::{PRIMARY_SHARD, shard_of};

/// How many times a request was passed on from node to node.
pub const FORWARDED: &str = "x-rigwatch-forwarded";

/// Most times a request is passed on.
const MAX_HOPS: u8 = 2;

/// How long the owner's address is reused before the lease is read again.
const OWNER_TTL: Duration = Duration::from_secs(1);
/// Longest a forwarded request may wait for a connection to the owner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a forwarded request may wait for its answer to start (an owner that is paused or
/// partitioned away accepts connections but never answers; its lease then moves on).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where requests this node does not answer go.
#[derive(Debug)]
pub struct Forward {
    pg: Pg,
    /// The cluster's shard count.
    shards: u32,
    /// The shard this node writes, if it owns one.
    own: Option<String>,
    /// Whether this node runs the singletons.
    singletons: bool,
    /// Finds the supplier of a write's token.
    auth: Arc<AuthStore>,
    client: reqwest::Client,
    max_body: usize,
    /// Each lease holder's address, as last read.
    owners: Mutex<std::collections::HashMap<String, (Instant, String)>>,
}

impl Forward {
    pub fn new(
        pg: Pg,
        shards: u32,
        own: Option<&str>,
        singletons: bool,
        auth: Arc<AuthStore>,
        max_body: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            pg,
            shards,
            own: own.map(str::to_string),
            singletons,
            auth,
            client: reqwest::Client::builder()
                .no_proxy()
                // No overall timeout: the portal's live events stream for as long as the
                // browser listens. The owner bounds every other request itself.
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            max_body,
            owners: Mutex::default(),
        })
    }

    /// Where the holder of `lease` serves, if it is live and said where.
    async fn owner(&self, lease: &str) -> Option<String> {
        if let Some((at, url)) = self.owners.lock().get(lease)
            && at.elapsed() < OWNER_TTL
        {
            return Some(url.clone());
        }
        let holder = lease::holder(&self.pg, lease).await.ok().flatten()?;
        if holder.expires_in_ms <= 0 || holder.address.is_empty() {
            return None;
        }
        self.owners
            .lock()
            .insert(lease.to_string(), (Instant::now(), holder.address.clone()));
        Some(holder.address)
    }

    /// The lease whose holder answers this request; `None`: this node.
    fn target(
        &self,
        method: &axum::http::Method,
        path: &str,
        headers: &axum::http::HeaderMap,
    ) -> Option<String> {
        // The owner of the one shard, running the singletons, answers everything itself (no
        // token to look up).
        if is_local(path, headers) || (self.shards == 1 && self.own.is_some() && self.singletons) {
            return None;
        }
        if !is_supplier_write(method, path) {
            return (!self.singletons).then(|| lease::SINGLETONS_LEASE.to_string());
        }
        let supplier = crate::access::presented_token(headers)
            .and_then(|t| self.auth.authenticate(&t))
            .and_then(|p| p.supplier);
        let shard = match supplier {
            Some(s) => shard_of(&s, self.shards),
            // An operator's write: this node's shard, if it has one.
            None => self
                .own
                .clone()
                .unwrap_or_else(|| PRIMARY_SHARD.to_string()),
        };
        (self.own.as_deref() != Some(shard.as_str())).then(|| lease::shard_lease(&shard))
    }

    /// Forgets `lease`'s holder (it did not answer).
    fn forget(&self, lease: &str) {
        self.owners.lock().remove(lease);
    }
}

/// What the holder of `lease` is, for messages.
fn holder_of(lease: &str) -> String {
    match lease.strip_prefix(lease::shard_lease("").as_str()) {
        Some(shard) => format!("the owner of shard {shard}"),
        None => "the node running the singletons (allocator, rules, tokens, sessions)".into(),
    }
}

/// The routes that write a supplier's data or its agents' records, answered by the owner of
/// the supplier's shard.
fn is_supplier_write(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    match *method {
        Method::POST => matches!(
            path,
            "/api/v2/write"
                | "/write"
                | "/api/v1/import/prometheus"
                | "/api/v1/write"
                | "/api/v1/agent/write"
                | "/api/v1/agent/register"
        ),
        Method::DELETE => path.starts_with("/api/v1/agent/gpus/"),
        _ => false,
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
        "/api/v1/cluster",
    ];
    EXACT.contains(&path)
        || path.starts_with("/api/v1/label/")
        || path.starts_with("/api/v1/status/")
        || path.starts_with("/portal/assets/")
}

/// The middleware: what this node answers goes on, the rest to the shard's owner.
pub async fn forward(State(f): State<Arc<Forward>>, req: Request, next: Next) -> Response {
    let Some(lease) = f.target(req.method(), req.uri().path(), req.headers()) else {
        return next.run(req).await;
    };
    let hops = req.headers().get(FORWARDED).map_or(0, |v| {
        v.to_str()
            .ok()
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(MAX_HOPS)
    });
    let who = holder_of(&lease);
    if hops >= MAX_HOPS {
        return crate::access::unavailable(&format!(
            "this node was passed a request for {who}, which it is not (that part just moved to another node); retry"
        ));
    }
    let Some(owner) = f.owner(&lease).await else {
        return crate::access::unavailable(&format!(
            "no node is {who} right now (its node died and no other has taken over yet); retry shortly"
        ));
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
        .header(FORWARDED, (hops + 1).to_string())
        .body(bytes);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding" | FORWARDED
        ) {
            out = out.header(name, value);
        }
    }
    let resp = match tokio::time::timeout(ANSWER_TIMEOUT, out.send()).await {
        Ok(Ok(r)) => r,
        Err(_) => {
            f.forget(&lease);
            return crate::access::unavailable(&format!(
                "{who} at {owner} did not answer within {} s; retry",
                ANSWER_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => {
            f.forget(&lease);
            return crate::access::unavailable(&format!("{who} at {owner} did not answer: {e}"));
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
        .unwrap_or_else(|_| crate::access::unavailable(&format!("bad answer from {who}")))
}
