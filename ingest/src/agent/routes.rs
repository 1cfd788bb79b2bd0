//! The server side of the agent: registration, inventory, telemetry writes, GPU release.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /api/v1/agent/register` | agent token | JSON [`Registration`](super::transport::Registration): the worker and its GPUs, stored as `gpu_inventory` rows; claims the GPUs |
//! | `GET /api/v1/agent/inventory` | any token | the registered workers and GPUs the token may see |
//! | `POST /api/v1/agent/write?worker=W` | agent token | line protocol (gzip allowed), `precision=ns` by default; header `x-rigwatch-batch: <epoch>-<seq>` names the batch |
//! | `DELETE /api/v1/agent/gpus/{uuid}` | admin, or a supplier / agent token of the GPU's supplier | releases the GPU's claim |
//!
//! The server never trusts the payload for identity: every row gets `supplier` from the
//! token and `worker` from `?worker=`, which must be registered for that supplier. A row
//! that names another supplier, another worker, or a GPU not claimed by this worker (see
//! [`claims`](super::claims): the first supplier to register a GPU owns it) fails the whole
//! request with 403 and nothing of it is stored. Per-GPU rows get `model` and `gpu_index`
//! from the GPU's registration, whatever the row said (prices follow the model). Rows must
//! fit the fixed schema of their table ([`schema`](super::schema)), else 400. A request is
//! acknowledged (204) only once the store has made it durable.
//!
//! Every row's time must lie within [`AgentLimits::max_age`] before and
//! [`AgentLimits::max_future`] after the server's clock (`--agent-max-age`, default 7 days,
//! about what a full agent spool holds; `--agent-max-future`, default 5 minutes of clock
//! skew), and one request may touch at most [`AgentLimits::max_partitions`] time partitions
//! (`--agent-max-partitions`, default 48): else 400 naming the line and its time, and
//! nothing of the request is stored. (The generic write routes, `/api/v2/write` and the
//! like, are for operators and take any time.)
//!
//! A batch carries an id in header `x-rigwatch-batch: <epoch>-<seq>` (`epoch` 16 lowercase
//! hex digits, `seq` decimal; see [`dedup::BatchId`]), unique per worker. A batch the server
//! already stored under that id for this supplier and worker (a retry whose first
//! acknowledgement was lost, also across a server crash) is acknowledged again without being
//! stored twice; the answer then carries `x-rigwatch-duplicate: 1`. The same id with other
//! bytes is refused (409). A batch without the header (an older agent) is recognised by a
//! digest of its decompressed body instead. A malformed header is refused (400).
//!
//! A registration naming a GPU claimed by another supplier is refused as a whole (409,
//! naming the GPU but never its owner) and recorded for operators as a row of
//! [`SECURITY_EVENT_TABLE`], which has no `supplier` tag and so is invisible to suppliers.
//! [`AgentLimits`] bound what one supplier may register.
//!
//! Registrations are also kept in `<data-dir>/agents.jsonl` and claims in
//! `<data-dir>/gpu_claims.jsonl` (appended and fsynced), so both checks survive restarts
//! without a query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use parking_lot::Mutex;
use rigwatch_common::http_error::{ErrorBody, error_response};
use rigwatch_storage::auth::{AuthStore, Principal, Role};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, WriteOptions};
use serde::Deserialize;
use tracing::{info, warn};

use super::claims::{CLAIMS_FILE, Claim, ClaimError, Claims, validate_uuid};
use super::dedup::{self, BatchKey, Begin};
pub use super::registry::WorkerRecord;
use super::registry::{REGISTRY_FILE, Registry};
use super::schema::{self, GPU_UUID_TAG};
use crate::line_protocol::{self, Precision};
use crate::{gzip, utf8};

mod register;
mod window;

use window::Window;

/// Where refused attempts on another supplier's GPUs are recorded, for operators: tags
/// `kind` (`gpu_claim_conflict`), `claimant`, `owner` (suppliers), `gpu_uuid`; fields
/// `worker` (the claimant's), `owner_worker`. Deliberately without a `supplier` tag, so no
/// supplier-scoped token can see it.
pub const SECURITY_EVENT_TABLE: &str = rigwatch_common::tables::SECURITY_EVENT;

/// The same claimant refused for the same GPU is recorded at most once per this period (an
/// agent retries its registration with backoff; one row says enough).
const REPORT_EVERY_NS: i64 = 60 * 1_000_000_000;

/// How many (claimant, GPU) report times are remembered before old ones are forgotten.
const REPORTED_MAX: usize = 10_000;

/// What one supplier may register: bounds that keep one tenant from exhausting the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Registered workers per supplier (`rigwatch serve --max-workers-per-supplier`).
    pub max_workers_per_supplier: usize,
    /// GPUs claimed per supplier (`--max-gpus-per-supplier`).
    pub max_gpus_per_supplier: usize,
    /// GPUs in one registration (`--max-gpus-per-registration`).
    pub max_gpus_per_registration: usize,
    /// Oldest accepted row, before the server's clock (`--agent-max-age`): about what the
    /// agent's default spool (256 MiB, one batch a second) holds.
    pub max_age: Duration,
    /// Furthest accepted row after the server's clock (`--agent-max-future`): clock skew.
    pub max_future: Duration,
    /// Time partitions one request may touch (`--agent-max-partitions`): each is a Parquet
    /// file at persist, and an agent's batch holds one tick.
    pub max_partitions: usize,
    /// Distinct time partitions one supplier's agents together may write into per hour.
    pub max_partitions_per_hour: usize,
}

impl AgentLimits {
    pub const DEFAULT: AgentLimits = AgentLimits {
        max_workers_per_supplier: 1_000,
        max_gpus_per_supplier: 10_000,
        max_gpus_per_registration: 256,
        max_age: Duration::from_secs(7 * 86_400),
        max_future: Duration::from_secs(5 * 60),
        max_partitions: 48,
        max_partitions_per_hour: crate::partition_budget::DEFAULT_AGENT_PER_HOUR,
    };
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

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
    pub limits: AgentLimits,
    /// The write queue the agent write route shares with the generic write routes.
    pub admission: Arc<crate::admission::Admission>,
    /// With nodes sharing a catalog: where GPU claims and registrations are kept for all of
    /// them (the local files must have been restored from it first).
    pub shared: Option<rigwatch_storage::shared_lines::SharedLines>,
}

#[derive(Debug)]
struct Shared {
    state: AgentState,
    registry: Registry,
    claims: Claims,
    batches: dedup::Batches,
    /// Held by a registration or release from its checks to its last durable write, so that
    /// what was checked (claims, caps) still holds when it is stored.
    changing: tokio::sync::Mutex<()>,
    /// When a (claimant, GPU) conflict was last recorded.
    reported: Mutex<HashMap<(String, String), i64>>,
    /// Distinct `region` values each supplier's agents have written this run.
    regions: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    /// Time partitions each supplier's agents opened this hour.
    partitions: crate::partition_budget::PartitionBudget,
}

/// Admits a batch's `region` values for `supplier`, or says why not: at most
/// [`schema::MAX_REGIONS_PER_SUPPLIER`] distinct values per supplier.
fn admit_regions(
    seen: &Mutex<HashMap<String, std::collections::HashSet<String>>>,
    supplier: &str,
    regions: &[String],
) -> Result<(), String> {
    if regions.is_empty() {
        return Ok(());
    }
    let mut seen = seen.lock();
    let set = seen.entry(supplier.to_string()).or_default();
    let new = regions.iter().filter(|r| !set.contains(*r)).count();
    if set.len() + new > schema::MAX_REGIONS_PER_SUPPLIER {
        return Err(format!(
            "supplier `{supplier}` already writes {} regions, the most one supplier may use ({}); nothing of this request was stored",
            set.len(),
            schema::MAX_REGIONS_PER_SUPPLIER
        ));
    }
    set.extend(regions.iter().cloned());
    Ok(())
}

/// The agent routes. Fails if the GPU claims cannot be read (serving without them would
/// let any supplier take any GPU).
pub fn router(mut state: AgentState) -> std::io::Result<Router> {
    let dir = state.db.config().data_dir.clone();
    let registry = Registry::open(dir.join(REGISTRY_FILE)).with_mirror(state.shared.clone());
    let claims = Claims::open(dir.join(CLAIMS_FILE))?.with_mirror(state.shared.clone());
    adopt_registered(&registry, &claims)?;
    let batches = dedup::Batches::seeded(std::mem::take(&mut state.seen_batches));
    Ok(Router::new()
        // Registrations take a write slot too: each is a durable write, and a fleet
        // starting at once must be told "later" rather than left to time out.
        .route(
            "/api/v1/agent/register",
            post(register::register).layer(axum::middleware::from_fn_with_state(
                state.admission.clone(),
                crate::admission::admit,
            )),
        )
        .route("/api/v1/agent/inventory", get(inventory))
        .route(
            "/api/v1/agent/write",
            post(write).layer(axum::middleware::from_fn_with_state(
                state.admission.clone(),
                crate::admission::admit,
            )),
        )
        .route("/api/v1/agent/gpus/{uuid}", delete(register::release))
        .with_state(Arc::new(Shared {
            registry,
            claims,
            batches,
            changing: tokio::sync::Mutex::new(()),
            reported: Mutex::new(HashMap::new()),
            regions: Mutex::new(HashMap::new()),
            partitions: crate::partition_budget::PartitionBudget::new(
                state.limits.max_partitions_per_hour,
            ),
            state,
        })))
}

/// Claims the GPUs of workers registered before claims existed (oldest registration first),
/// so that an upgrade does not refuse every running agent's rows.
fn adopt_registered(registry: &Registry, claims: &Claims) -> std::io::Result<()> {
    let mut workers = registry.list(None);
    workers.sort_by_key(|w| w.registered_unix_ms);
    let mut adopted = 0;
    for w in &workers {
        let uuids: Vec<&str> = w
            .gpus
            .iter()
            .map(|g| g.uuid.as_str())
            .filter(|u| validate_uuid(u).is_ok())
            .collect();
        adopted += claims.adopt(&w.supplier, &w.worker, &uuids, w.registered_unix_ms)?;
        for uuid in uuids {
            if let Some(owner) = claims.owner(uuid).filter(|c| c.supplier != w.supplier) {
                warn!(gpu_uuid = uuid, supplier = %w.supplier, worker = %w.worker, owner = %owner.supplier,
                    "a GPU registered by two suppliers before GPU claims existed: the earlier registration keeps it");
            }
        }
    }
    if adopted > 0 {
        info!(
            adopted,
            "claimed the GPUs of workers registered before GPU claims existed"
        );
    }
    Ok(())
}

/// The one error body (`rigwatch_common::http_error`), its kind following from the status.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ErrorBody::for_status(status, message).response(status)
}

/// The one error body with a kind of its own that an agent or a script can act on
/// (`unregistered`, `limit`).
fn error_kind(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Response {
    ErrorBody::new(kind, message).response(status)
}

/// An error answer on its way out of a helper (boxed: a `Response` is large).
type Reject = Box<Response>;

fn reject(status: StatusCode, message: impl Into<String>) -> Reject {
    Box::new(error(status, message))
}

fn reject_kind(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Reject {
    Box::new(error_kind(status, kind, message))
}

/// The principal of the request's bearer token, or the 401 to answer.
fn authenticate(auth: &AuthStore, headers: &HeaderMap) -> Result<Principal, Reject> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
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
            "the Authorization header must be `Bearer <token>`",
        ));
    };
    auth.authenticate(token).ok_or_else(|| {
        reject(
            StatusCode::UNAUTHORIZED,
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

#[derive(Debug, Deserialize)]
struct InventoryParams {
    supplier: Option<String>,
}

async fn inventory(
    State(shared): State<Arc<Shared>>,
    principal: Option<axum::Extension<Principal>>,
    Query(params): Query<InventoryParams>,
    headers: HeaderMap,
) -> Response {
    // The access layer's principal where it ran (it knows the operator's `--admin-token`,
    // which is not in the registry).
    let p = match principal {
        Some(axum::Extension(p)) => p,
        None => match authenticate(&shared.state.auth, &headers) {
            Ok(p) => p,
            Err(r) => return *r,
        },
    };
    let filter = match (p.scope(), params.supplier.as_deref()) {
        (Some(own), Some(asked)) if own != asked => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "token {} belongs to supplier `{own}`, not `{asked}`",
                    p.token_id
                ),
            );
        }
        (Some(own), _) => Some(own.to_string()),
        (None, asked) => asked.map(str::to_string),
    };
    shared.registry.catch_up().await;
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
            "missing `?worker=`: the worker this batch comes from",
        );
    };
    let Some(registered) = shared.registry.get(&supplier, &worker) else {
        return error_kind(
            StatusCode::FORBIDDEN,
            "unregistered",
            format!(
                "worker `{worker}` is not registered for supplier `{supplier}`; POST /api/v1/agent/register first"
            ),
        );
    };
    // The GPUs this worker may write rows for: registered by it and claimed by it now.
    let gpus: HashMap<String, OwnedGpu> = registered
        .gpus
        .into_iter()
        .filter(|g| {
            shared
                .claims
                .owner(&g.uuid)
                .is_some_and(|c| c.supplier == supplier && c.worker == worker)
        })
        .map(|g| {
            let index = g.index.to_string();
            (
                g.uuid,
                OwnedGpu {
                    // The canonical model of the one model table ("unknown" for a name it
                    // does not know): what prices, limits and job constraints use, and a
                    // bounded set whatever names agents send.
                    model: rigwatch_common::gpu_model::canonical(&g.model).to_string(),
                    index,
                },
            )
        })
        .collect();
    let precision = match params.precision.as_deref().map(str::parse::<Precision>) {
        None => Precision::Ns,
        Some(Ok(p)) => p,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let id = match batch_id(&headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let body = match read_body(shared.state.max_body_bytes, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let window = Window {
        now: now_ns(),
        limits: shared.state.limits,
        partition_ns: shared.state.db.partition_ns(),
    };
    let parsed = tokio::task::spawn_blocking(move || {
        let digest = dedup::digest(&body);
        let mut regions = Vec::new();
        stamp(
            &body,
            precision,
            &supplier,
            &worker,
            &gpus,
            &window,
            &mut regions,
        )
        .map(|b| (b, digest, supplier, worker, regions))
    })
    .await;
    let (mut batch, digest, supplier, worker, regions) = match parsed {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return *r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Err(m) = admit_regions(&shared.regions, &supplier, &regions) {
        return error_kind(StatusCode::CONFLICT, "limit", m);
    }
    let partition_ns = shared.state.db.partition_ns().max(1);
    let mut partitions: Vec<i64> = batch
        .rows()
        .map(|r| r.time().div_euclid(partition_ns))
        .collect();
    partitions.dedup();
    if let Err(e) = shared
        .partitions
        .charge(&format!("supplier:{supplier}"), partitions)
    {
        let mut resp = error_kind(
            StatusCode::TOO_MANY_REQUESTS,
            "limit",
            format!(
                "supplier `{supplier}`'s agents have written into {} distinct time partitions \
                 this hour, the most they may (--agent-max-partitions-per-hour); nothing of this \
                 request was stored",
                e.limit
            ),
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(e.retry_after.as_secs().max(1)),
        );
        return resp;
    }
    let key = id.map_or(BatchKey::Digest(digest), BatchKey::Id);
    match shared.batches.begin(&supplier, &worker, key, digest) {
        Begin::New => {}
        Begin::Duplicate => {
            tracing::debug!(%supplier, %worker, ?key, "batch stored before: acknowledged again");
            return (
                StatusCode::NO_CONTENT,
                [("x-rigwatch-duplicate", HeaderValue::from_static("1"))],
            )
                .into_response();
        }
        Begin::InFlight => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the same batch is being stored by an earlier request; retry",
            );
        }
        Begin::Conflict => {
            let id = id.map(|i| i.to_string()).unwrap_or_default();
            warn!(%supplier, %worker, %id, "batch id reused with other content: refused");
            return error(
                StatusCode::CONFLICT,
                format!(
                    "batch `{id}` was stored before with other content; an agent must not reuse \
                     a batch id (its spool directory's `batch_ids` file numbers them); nothing of \
                     this request was stored"
                ),
            );
        }
    }
    let rows = batch.len() as i64;
    {
        let mut r = batch.row(dedup::BATCH_TABLE, now_ns());
        r.tag("supplier", &supplier)
            .tag("worker", &worker)
            .field("digest", FieldValue::I64(digest))
            .field("rows", FieldValue::I64(rows));
        let id = id.map(|i| i.to_string());
        if let Some(id) = &id {
            r.field(dedup::ID_FIELD, FieldValue::Str(id));
        }
        // Two fixed tags, two integer fields and a string: always a valid row.
        let _ = r.finish(0);
    }
    // The store and the end of the claim run to completion on their own task, even when
    // the client goes away meanwhile (its timeout): otherwise the claim would stay "in
    // flight" for ever and every retry of this batch would be told to come back later.
    let task = {
        let shared = shared.clone();
        // Detached on purpose (the one exception to `rigwatch_common::task::spawn`): it must
        // finish when the request that started it is dropped. It ends with its write.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let mut claim = ClaimGuard {
                batches: &shared.batches,
                supplier: &supplier,
                worker: &worker,
                key,
                digest,
                stored: false,
            };
            let res = store(&shared.state.db, batch).await;
            // A partial write (400) stored the rows it accepted, its batch row included: a
            // retry must not store them again. Only a write refused as a whole is forgotten.
            claim.stored = match &res {
                Ok(()) => true,
                Err(r) => r.status() == StatusCode::BAD_REQUEST,
            };
            drop(claim);
            res
        })
    };
    match task.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(r)) => *r,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Ends a [`Begin::New`] claim when dropped, also when the store panicked (then as not
/// stored, so a retry is taken).
struct ClaimGuard<'a> {
    batches: &'a dedup::Batches,
    supplier: &'a str,
    worker: &'a str,
    key: BatchKey,
    digest: i64,
    stored: bool,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.batches.finish(
            self.supplier,
            self.worker,
            self.key,
            self.digest,
            self.stored,
        );
    }
}

/// A GPU the writing worker holds, with what its rows are stamped with.
#[derive(Debug)]
struct OwnedGpu {
    model: String,
    index: String,
}

fn forbidden(message: String) -> Reject {
    reject(
        StatusCode::FORBIDDEN,
        format!("{message}; nothing of this request was stored"),
    )
}

fn invalid(message: String) -> Reject {
    reject(
        StatusCode::BAD_REQUEST,
        format!("{message}; nothing of this request was stored"),
    )
}

/// Parses the body and rebuilds every row with `supplier` and `worker` stamped, and for a
/// per-GPU row `model` and `gpu_index` from the GPU's registration. Any bad line fails the
/// whole request (an agent's batch is all or nothing): a row for another supplier, worker or
/// a GPU not in `gpus` (403), or outside its table's fixed schema (400).
fn stamp(
    body: &[u8],
    precision: Precision,
    supplier: &str,
    worker: &str,
    gpus: &HashMap<String, OwnedGpu>,
    window: &Window,
    regions: &mut Vec<String>,
) -> Result<WriteBatch, Reject> {
    let text = utf8(body).map_err(|e| reject(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut parsed = WriteBatch::reused(text.len() / 300, text.len());
    let errors = line_protocol::parse(text, precision, window.now, &mut parsed);
    if !errors.is_empty() {
        let listed: Vec<String> = errors.iter().take(10).map(|e| e.to_string()).collect();
        return Err(reject(
            StatusCode::BAD_REQUEST,
            format!(
                "{} bad line(s), nothing stored: {}",
                errors.len(),
                listed.join("; ")
            ),
        ));
    }
    let mut out = WriteBatch::reused(parsed.len(), text.len() + parsed.len() * 32);
    for row in parsed.rows() {
        let line = row.line();
        let Some(table) = schema::table(row.table()) else {
            return Err(forbidden(format!(
                "line {line}: agents write tables {}, not `{}`",
                schema::table_names(),
                row.table()
            )));
        };
        let mut b = out.row(table.name, row.time());
        let mut gpu = None;
        let mut unknown = None;
        for (k, v) in row.tags() {
            match k {
                "supplier" if v != supplier => {
                    return Err(forbidden(format!(
                        "line {line}: row claims supplier `{v}` but the token belongs to supplier `{supplier}`"
                    )));
                }
                "worker" if v != worker => {
                    return Err(forbidden(format!(
                        "line {line}: row claims worker `{v}` but the request is for worker `{worker}`"
                    )));
                }
                "supplier" | "worker" => {}
                GPU_UUID_TAG => gpu = Some(v),
                // Stamped from the registration below.
                "model" | "gpu_index" if table.per_gpu => {}
                _ if table.has_tag(k) => {
                    table.check_tag_value(line, k, v).map_err(invalid)?;
                    if k == schema::REGION_TAG && !regions.iter().any(|r| r == v) {
                        regions.push(v.to_string());
                    }
                    b.tag(k, v);
                }
                _ => {
                    unknown.get_or_insert(k);
                }
            }
        }
        if let Some(uuid) = gpu {
            // One answer for a GPU nobody registered and one another supplier holds.
            let Some(owned) = gpus.get(uuid) else {
                return Err(forbidden(format!(
                    "line {line}: GPU `{uuid}` is not registered to worker `{worker}` of supplier \
                     `{supplier}` (POST /api/v1/agent/register lists a worker's GPUs)"
                )));
            };
            if !table.has_tag(GPU_UUID_TAG) {
                unknown.get_or_insert(GPU_UUID_TAG);
            } else {
                b.tag(GPU_UUID_TAG, uuid).tag("gpu_index", &owned.index);
                if !owned.model.is_empty() {
                    b.tag("model", &owned.model);
                }
            }
        }
        if let Some(k) = unknown {
            return Err(invalid(table.unknown_tag(line, k).to_string()));
        }
        if table.per_gpu && gpu.is_none() {
            return Err(invalid(
                schema::SchemaError::MissingGpu {
                    line,
                    table: table.name,
                }
                .to_string(),
            ));
        }
        b.tag("supplier", supplier).tag("worker", worker);
        for (k, v) in row.fields() {
            let v = table
                .check_field(line, k, v)
                .map_err(|e| invalid(e.to_string()))?;
            b.field(k, v);
        }
        b.finish(line)
            .map_err(|e| invalid(format!("line {line}: {e}")))?;
    }
    // After the checks above, so that a row for another supplier is answered 403 whatever
    // its time.
    window.check(&parsed).map_err(|e| invalid(e.to_string()))?;
    parsed.recycle();
    Ok(out)
}

/// The batch id of a request's [`dedup::BATCH_HEADER`], `None` without one (an older agent).
fn batch_id(headers: &HeaderMap) -> Result<Option<dedup::BatchId>, Reject> {
    let Some(value) = headers.get(dedup::BATCH_HEADER) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e: dedup::BatchIdError| {
            reject(
                StatusCode::BAD_REQUEST,
                format!("header `{}`: {e}", dedup::BATCH_HEADER),
            )
        })
}

/// Writes a batch durably; any rejected row is reported as 400 (the rest is stored).
async fn store(db: &Db, batch: WriteBatch) -> Result<(), Reject> {
    match db.write(batch, WriteOptions::default()).await {
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
                format!(
                    "partial write: {} row(s) rejected, {} accepted: {}",
                    outcome.rejected.len(),
                    outcome.rows,
                    rejected.join("; ")
                ),
            ))
        }
        Err(e) => Err(Box::new(error_response(&e))),
    }
}

async fn read_body(limit: usize, headers: &HeaderMap, body: Body) -> Result<Bytes, Reject> {
    let timeout = crate::admission::BODY_READ_TIMEOUT;
    let raw = tokio::time::timeout(timeout, crate::routes::collect(body, limit))
        .await
        .map_err(|_| {
            reject(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s; nothing of it was stored",
                    timeout.as_secs()
                ),
            )
        })?
        .ok_or_else(|| {
            reject(
                StatusCode::PAYLOAD_TOO_LARGE,
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
                .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| Box::new(error_response(&e)))?;
            Ok(Bytes::from(inflated))
        }
        Some(other) => Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding `{other}` is not supported; use gzip or none"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_header_is_optional_but_must_parse() {
        let mut h = HeaderMap::new();
        assert_eq!(batch_id(&h).unwrap(), None);
        h.insert(
            dedup::BATCH_HEADER,
            HeaderValue::from_static("00000000000000ff-3"),
        );
        assert_eq!(
            batch_id(&h).unwrap(),
            Some(dedup::BatchId { epoch: 255, seq: 3 })
        );
        h.insert(dedup::BATCH_HEADER, HeaderValue::from_static("3"));
        assert_eq!(batch_id(&h).unwrap_err().status(), StatusCode::BAD_REQUEST);
    }
}
