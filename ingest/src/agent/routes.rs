//! The server side of the agent: registration, inventory and telemetry writes.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /api/v1/agent/register` | agent token | JSON [`Registration`]: the worker and its GPUs, stored as `gpu_inventory` rows |
//! | `GET /api/v1/agent/inventory` | any token | the registered workers and GPUs the token may see |
//! | `POST /api/v1/agent/write?worker=W` | agent token | line protocol (gzip allowed), `precision=ns` by default |
//!
//! The server never trusts the payload for identity: every row gets `supplier` from the
//! token and `worker` from `?worker=`, which must be registered for that supplier. A row
//! that names another supplier (or another worker) fails the whole request with 403 and
//! nothing of it is stored. A request is acknowledged (204) only once the store has made
//! it durable. A batch the server already stored (a retry whose first acknowledgement was
//! lost) is acknowledged again without being stored twice (see `dedup`); the answer then
//! carries `x-rigwatch-duplicate: 1`.
//!
//! Registrations are also kept in `<data-dir>/agents.jsonl` (appended and fsynced), so the
//! `?worker=` check survives restarts without a query.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use rigwatch_storage::auth::{AuthStore, Principal, Role, validate_supplier_name};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, WriteOptions};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::dedup::{self, Begin};
use super::fields::GpuInfo;
use super::transport::Registration;
use crate::line_protocol::{self, Precision};
use crate::{gzip, utf8};

/// What the agent routes need.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub db: Arc<Db>,
    pub auth: Arc<AuthStore>,
    /// Largest accepted body, before and after decompression.
    pub max_body_bytes: usize,
    /// Batches stored before this start (from [`dedup::BATCH_TABLE`]), so a retry of one of
    /// them is recognised.
    pub seen_batches: Vec<dedup::Seen>,
}

#[derive(Debug)]
struct Shared {
    state: AgentState,
    registry: Registry,
    batches: dedup::Batches,
}

/// The agent routes.
pub fn router(mut state: AgentState) -> Router {
    let registry = Registry::open(state.db.config().data_dir.join("agents.jsonl"));
    let batches = dedup::Batches::seeded(std::mem::take(&mut state.seen_batches));
    Router::new()
        .route("/api/v1/agent/register", post(register))
        .route("/api/v1/agent/inventory", get(inventory))
        .route("/api/v1/agent/write", post(write))
        .with_state(Arc::new(Shared {
            state,
            registry,
            batches,
        }))
}

/// A registered worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub supplier: String,
    pub worker: String,
    pub registered_unix_ms: i64,
    #[serde(default)]
    pub agent_version: String,
    pub gpus: Vec<GpuInfo>,
}

/// Registered workers, backed by an append-only JSON-lines file: one line per
/// registration, the last line of a worker wins. Appending keeps a registration O(1)
/// however many workers there are; a torn last line (a crash mid-write) is ignored.
#[derive(Debug)]
struct Registry {
    path: PathBuf,
    /// Keyed by `supplier/worker`.
    workers: Mutex<BTreeMap<String, WorkerRecord>>,
    /// Serialises appends (held across the write and fsync, not while serving reads).
    append: Mutex<()>,
}

impl Registry {
    fn open(path: PathBuf) -> Self {
        let mut workers = BTreeMap::new();
        if let Ok(text) = fs::read_to_string(&path) {
            for (i, line) in text.lines().enumerate() {
                match serde_json::from_str::<WorkerRecord>(line) {
                    Ok(rec) => {
                        workers.insert(Self::key(&rec.supplier, &rec.worker), rec);
                    }
                    Err(e) => {
                        warn!(error = %e, path = %path.display(), line = i + 1, "skipping an unreadable agent registration");
                    }
                }
            }
        }
        Registry {
            path,
            workers: Mutex::new(workers),
            append: Mutex::new(()),
        }
    }

    fn key(supplier: &str, worker: &str) -> String {
        format!("{supplier}/{worker}")
    }

    fn contains(&self, supplier: &str, worker: &str) -> bool {
        self.workers
            .lock()
            .contains_key(&Self::key(supplier, worker))
    }

    /// Records a worker durably (append + fsync); an unchanged re-registration (an agent
    /// restart) writes nothing.
    fn put(&self, rec: WorkerRecord) -> std::io::Result<()> {
        let key = Self::key(&rec.supplier, &rec.worker);
        let unchanged = self
            .workers
            .lock()
            .get(&key)
            .is_some_and(|old| old.gpus == rec.gpus && old.agent_version == rec.agent_version);
        if !unchanged {
            let mut line = serde_json::to_vec(&rec).expect("registration serializes");
            line.push(b'\n');
            let _guard = self.append.lock();
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            f.write_all(&line)?;
            f.sync_data()?;
        }
        self.workers.lock().insert(key, rec);
        Ok(())
    }

    fn list(&self, supplier: Option<&str>) -> Vec<WorkerRecord> {
        self.workers
            .lock()
            .values()
            .filter(|w| supplier.is_none_or(|s| w.supplier == s))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let mut resp = (
        status,
        axum::Json(ErrorBody {
            code,
            message: message.into(),
        }),
    )
        .into_response();
    match status {
        StatusCode::UNAUTHORIZED => {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rigwatch\""),
            );
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}

/// An error answer on its way out of a helper (boxed: a `Response` is large).
type Reject = Box<Response>;

fn reject(status: StatusCode, code: &'static str, message: impl Into<String>) -> Reject {
    Box::new(error(status, code, message))
}

/// The principal of the request's bearer token, or the 401 to answer.
fn authenticate(auth: &AuthStore, headers: &HeaderMap) -> Result<Principal, Reject> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>` header; create an agent token with `rigwatch supplier add <name>` or `rigwatch supplier token <name>`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = token else {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the Authorization header must be `Bearer <token>`",
        ));
    };
    auth.authenticate(token).ok_or_else(|| {
        reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid token: unknown, revoked, expired, or its supplier is disabled",
        )
    })
}

/// The supplier of an agent token, or the 401/403 to answer.
fn agent_supplier(auth: &AuthStore, headers: &HeaderMap) -> Result<String, Reject> {
    let p = authenticate(auth, headers)?;
    match (p.role, p.supplier) {
        (Role::Agent, Some(s)) => Ok(s),
        (role, _) => Err(reject(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {} has role `{role}`; agent routes need an agent token (`rigwatch supplier token <name> --role agent`)",
                p.token_id
            ),
        )),
    }
}

fn now_ns() -> i64 {
    super::now_ns()
}

async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let supplier = match agent_supplier(&shared.state.auth, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let reg: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("registration is not valid JSON: {e}"),
            );
        }
    };
    if let Err(e) = validate_supplier_name(&reg.worker) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "worker name: {}",
                e.to_string().replace("supplier name", "name")
            ),
        );
    }
    let time = now_ns();
    let mut batch = WriteBatch::with_capacity(reg.gpus.len(), reg.gpus.len() * 256);
    for (i, g) in reg.gpus.iter().enumerate() {
        if g.uuid.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("gpus[{i}] has an empty uuid"),
            );
        }
        let idx = g.index.to_string();
        let mut row = batch.row("gpu_inventory", time);
        row.tag("supplier", &supplier)
            .tag("worker", &reg.worker)
            .tag("gpu_uuid", &g.uuid)
            .tag("gpu_index", &idx)
            .field("model", FieldValue::Str(&g.model))
            .field(
                "memory_total_mib",
                FieldValue::I64(g.memory_total_mib as i64),
            )
            .field("pci_bus_id", FieldValue::Str(&g.pci_bus_id))
            .field("driver_version", FieldValue::Str(&g.driver_version))
            .field("cuda_version", FieldValue::Str(&g.cuda_version))
            .field("agent_version", FieldValue::Str(&reg.agent_version));
        if let Some(p) = g.power_limit_watts {
            row.field("power_limit_watts", FieldValue::F64(p));
        }
        if let Some(m) = g.mig_enabled {
            row.field("mig_enabled", FieldValue::Bool(m));
        }
        if let Err(e) = row.finish(i as u32 + 1) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("gpus[{i}]: {e}"),
            );
        }
    }
    if let Err(r) = store(&shared.state.db, batch).await {
        return *r;
    }
    let rec = WorkerRecord {
        supplier: supplier.clone(),
        worker: reg.worker.clone(),
        registered_unix_ms: time / 1_000_000,
        agent_version: reg.agent_version,
        gpus: reg.gpus,
    };
    let gpus = rec.gpus.len();
    let registry = shared.clone();
    let saved = tokio::task::spawn_blocking(move || registry.registry.put(rec)).await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot save the agent registry: {e}"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
    axum::Json(serde_json::json!({
        "supplier": supplier,
        "worker": reg.worker,
        "gpus": gpus,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct InventoryParams {
    supplier: Option<String>,
}

async fn inventory(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<InventoryParams>,
    headers: HeaderMap,
) -> Response {
    let p = match authenticate(&shared.state.auth, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let filter = match (p.scope(), params.supplier.as_deref()) {
        (Some(own), Some(asked)) if own != asked => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {} belongs to supplier `{own}`, not `{asked}`",
                    p.token_id
                ),
            );
        }
        (Some(own), _) => Some(own.to_string()),
        (None, asked) => asked.map(str::to_string),
    };
    let workers = shared.registry.list(filter.as_deref());
    axum::Json(serde_json::json!({ "workers": workers })).into_response()
}

#[derive(Debug, Deserialize)]
struct WriteParams {
    worker: Option<String>,
    precision: Option<String>,
}

async fn write(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<WriteParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let supplier = match agent_supplier(&shared.state.auth, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(worker) = params.worker else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "missing `?worker=`: the worker this batch comes from",
        );
    };
    if !shared.registry.contains(&supplier, &worker) {
        return error(
            StatusCode::FORBIDDEN,
            "unregistered",
            format!(
                "worker `{worker}` is not registered for supplier `{supplier}`; POST /api/v1/agent/register first"
            ),
        );
    }
    let precision = match params.precision.as_deref().map(str::parse::<Precision>) {
        None => Precision::Ns,
        Some(Ok(p)) => p,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
    };
    let body = match read_body(shared.state.max_body_bytes, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let parsed = tokio::task::spawn_blocking(move || {
        let digest = dedup::digest(&body);
        stamp(&body, precision, &supplier, &worker).map(|b| (b, digest, supplier, worker))
    })
    .await;
    let (mut batch, digest, supplier, worker) = match parsed {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return *r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    match shared.batches.begin(&supplier, &worker, digest) {
        Begin::New => {}
        Begin::Duplicate => {
            tracing::debug!(%supplier, %worker, digest, "batch stored before: acknowledged again");
            return (
                StatusCode::NO_CONTENT,
                [("x-rigwatch-duplicate", HeaderValue::from_static("1"))],
            )
                .into_response();
        }
        Begin::InFlight => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                axum::Json(serde_json::json!({
                    "code": "unavailable",
                    "message": "the same batch is being stored by an earlier request; retry",
                })),
            )
                .into_response();
        }
    }
    let rows = batch.len() as i64;
    {
        let mut r = batch.row(dedup::BATCH_TABLE, now_ns());
        r.tag("supplier", &supplier)
            .tag("worker", &worker)
            .field("digest", FieldValue::I64(digest))
            .field("rows", FieldValue::I64(rows));
        // Two fixed tags and two integer fields: always a valid row.
        let _ = r.finish(0);
    }
    let res = store(&shared.state.db, batch).await;
    // A partial write (400) stored the rows it accepted, digest included: a retry must not
    // store them again. Only a write refused as a whole is forgotten.
    let stored = match &res {
        Ok(()) => true,
        Err(r) => r.status() == StatusCode::BAD_REQUEST,
    };
    shared.batches.finish(&supplier, &worker, digest, stored);
    match res {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => *r,
    }
}

/// The tables an agent may write: its telemetry. Everything else (leases, earnings, jobs,
/// health verdicts, alert state, batch digests) is the server's own account and must not
/// be forgeable by a supplier's machine.
pub const AGENT_TABLES: [&str; 3] = ["gpu", "gpu_fault", "heartbeat"];

/// Parses the body and rebuilds every row with `supplier` and `worker` stamped. Any bad
/// line fails the whole request (an agent's batch is all or nothing).
fn stamp(
    body: &[u8],
    precision: Precision,
    supplier: &str,
    worker: &str,
) -> Result<WriteBatch, Reject> {
    let text = utf8(body).map_err(|e| reject(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let mut parsed = WriteBatch::with_capacity(text.len() / 300, text.len());
    let errors = line_protocol::parse(text, precision, now_ns(), &mut parsed);
    if !errors.is_empty() {
        let listed: Vec<String> = errors.iter().take(10).map(|e| e.to_string()).collect();
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "{} bad line(s), nothing stored: {}",
                errors.len(),
                listed.join("; ")
            ),
        ));
    }
    let mut out = WriteBatch::with_capacity(parsed.len(), text.len() + parsed.len() * 32);
    for row in parsed.rows() {
        let line = row.line();
        if !AGENT_TABLES.contains(&row.table()) {
            return Err(reject(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "line {line}: agents write tables {}, not `{}`; nothing of this request was stored",
                    AGENT_TABLES.join(", "),
                    row.table()
                ),
            ));
        }
        let mut b = out.row(row.table(), row.time());
        for (k, v) in row.tags() {
            match k {
                "supplier" if v != supplier => {
                    drop(b);
                    return Err(reject(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "line {line}: row claims supplier `{v}` but the token belongs to supplier `{supplier}`; nothing of this request was stored"
                        ),
                    ));
                }
                "worker" if v != worker => {
                    drop(b);
                    return Err(reject(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "line {line}: row claims worker `{v}` but the request is for worker `{worker}`; nothing of this request was stored"
                        ),
                    ));
                }
                "supplier" | "worker" => {}
                _ => {
                    b.tag(k, v);
                }
            }
        }
        b.tag("supplier", supplier).tag("worker", worker);
        for (k, v) in row.fields() {
            b.field(k, v);
        }
        b.finish(line).map_err(|e| {
            reject(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("line {line}: {e}"),
            )
        })?;
    }
    Ok(out)
}

/// Writes a batch durably; any rejected row is reported as 400 (the rest is stored).
async fn store(db: &Db, batch: WriteBatch) -> Result<(), Reject> {
    match db.write(batch, WriteOptions { no_sync: false }).await {
        Ok(outcome) if outcome.rejected.is_empty() => Ok(()),
        Ok(outcome) => {
            let rejected: Vec<String> = outcome
                .rejected
                .iter()
                .take(10)
                .map(|r| format!("line {}: {}", r.line, r.error))
                .collect();
            Err(reject(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!(
                    "partial write: {} row(s) rejected, {} accepted: {}",
                    outcome.rejected.len(),
                    outcome.rows,
                    rejected.join("; ")
                ),
            ))
        }
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = if e.is_retryable() {
                "unavailable"
            } else {
                "internal"
            };
            Err(reject(status, code, e.to_string()))
        }
    }
}

async fn read_body(limit: usize, headers: &HeaderMap, body: Body) -> Result<Bytes, Reject> {
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
        reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
            format!("body over {limit} bytes"),
        )
    })?;
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let inflated = tokio::task::spawn_blocking(move || gzip::decompress(&raw, limit))
                .await
                .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
                .map_err(|e| {
                    let status =
                        StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::BAD_REQUEST);
                    reject(status, "invalid", e.to_string())
                })?;
            Ok(Bytes::from(inflated))
        }
        Some(other) => Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported",
            format!("Content-Encoding `{other}` is not supported; use gzip or none"),
        )),
    }
}
