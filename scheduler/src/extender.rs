//! Kubernetes scheduler-extender endpoints: `POST /filter`, `/prioritize` and `/bind`.
//!
//! kube-scheduler sends `ExtenderArgs` (`{"Pod": v1.Pod, "Nodes": v1.NodeList}` or
//! `{"Pod": …, "NodeNames": [...]}` when `nodeCacheCapable`) and expects
//! `ExtenderFilterResult`, `HostPriorityList` and `ExtenderBindingResult` back, with Go's
//! field names. Keys are matched case-insensitively, as Go's `encoding/json` does.
//!
//! GPU demand comes from the pod: the sum of `nvidia.com/gpu` over its containers' limits
//! (or requests); the annotation `rigwatch.io/gpu-milli` (1..999) asks for a fraction of
//! one GPU instead. Optional annotations: `rigwatch.io/gpu-models` (comma list),
//! `rigwatch.io/min-gpu-memory-mib`, `rigwatch.io/price-cap` (currency units per GPU-hour, e.g. `"2.50"`).
//! A pod with no GPU demand passes every node and gets a neutral score. Host CPU and memory
//! stay kube-scheduler's business.
//!
//! `/bind` records the placement as leases (the pod must have been seen by `/filter` or
//! `/prioritize`). It does not itself create the `Binding` object in the API server.
//!
//! A bound pod's leases end: `POST /unbind` (`{"PodUID": …}`, sent by an in-cluster
//! controller or the agent when the pod ends) ends them as completed; `POST /renew`
//! (`{"PodUIDs": [...]}`) keeps them alive, and a binding not renewed within the host's
//! time to live ([`ExtenderState::expire`]) ends as cancelled, so a forgotten pod does not
//! hold GPUs, or earn, for ever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use crate::allocator::Allocator;
use crate::model::{EndReason, GpuDemand, Job, JobId, WHOLE_GPU};
use crate::rng::fnv1a;

/// Annotation asking for a fraction of one GPU, in thousandths.
pub const ANNOTATION_GPU_MILLI: &str = "rigwatch.io/gpu-milli";
/// Annotation listing acceptable GPU models.
pub const ANNOTATION_GPU_MODELS: &str = "rigwatch.io/gpu-models";
/// Annotation with the minimum GPU memory per GPU, MiB.
pub const ANNOTATION_MIN_GPU_MEMORY: &str = "rigwatch.io/min-gpu-memory-mib";
/// Annotation with a price cap per GPU-hour, in currency units with up to six decimals
/// (`"2.50"`).
pub const ANNOTATION_PRICE_CAP: &str = "rigwatch.io/price-cap";
/// Extended resource name of whole GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// kube-scheduler's MaxExtenderPriority.
pub const MAX_PRIORITY: i64 = 10;

/// Where the extender's allocator lives: its own (`Mutex<Allocator>`), or a server's live
/// allocator shared with everything else that places jobs.
pub trait AllocatorHost: Send + Sync {
    /// Runs `f` with the allocator locked.
    fn with_allocator(&self, f: &mut dyn FnMut(&mut Allocator));
    /// Leases `/bind` just started, for the host to persist. The default keeps nothing.
    fn leases_started(&self, _leases: &[crate::model::Lease]) {}
    /// The live view's name of the Kubernetes node `name` (the default: the same name).
    fn node_key(&self, name: &str) -> String {
        name.to_owned()
    }
    /// The job id a pod about to be bound gets (the default: a hash of its UID). A host
    /// shared by several clusters hands out ids of its own, so they cannot collide.
    fn job_id(&self, uid: &str) -> JobId {
        job_id_of(uid)
    }
    /// A bound pod's job ended (unbound, or its binding lapsed): end its leases. The
    /// default finishes the job in the allocator; a host that persists leases records it.
    fn job_ended(&self, job: JobId, reason: EndReason, now_ms: i64) {
        self.with_allocator(&mut |a| {
            let _ = a.finish(job, reason, now_ms);
        });
    }
    /// Resolves once the rows of every change reported so far ([`Self::leases_started`],
    /// [`Self::job_ended`]) are durable, or says why they are not yet: `/bind` and `/unbind`
    /// answer only after it. The default (a host that persists nothing): at once.
    fn durable(&self) -> DurableFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What [`AllocatorHost::durable`] returns.
pub type DurableFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// Most pods remembered between `/filter` and `/bind`, and most bindings held; past it the
/// oldest half is forgotten (a pod then has to pass `/filter` again).
pub const MAX_PODS: usize = 10_000;

/// A pod bound to a node.
#[derive(Debug, Clone)]
struct Binding {
    node: String,
    /// The job its leases belong to (none for a pod without GPU demand).
    job: Option<JobId>,
    /// When it was bound or last renewed, ms.
    renewed_ms: i64,
}

impl AllocatorHost for Mutex<Allocator> {
    fn with_allocator(&self, f: &mut dyn FnMut(&mut Allocator)) {
        f(&mut self.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// What the routes share.
pub struct ExtenderState {
    pub allocator: Box<dyn AllocatorHost>,
    /// Current time in ms since the epoch.
    pub clock: fn() -> i64,
    /// Pods seen by /filter or /prioritize, by UID, for /bind, with when they were seen.
    seen: Mutex<HashMap<String, (Job, i64)>>,
    /// Pods bound, by UID.
    bound: Mutex<HashMap<String, Binding>>,
}

impl std::fmt::Debug for ExtenderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtenderState").finish_non_exhaustive()
    }
}

impl ExtenderState {
    /// An extender with an allocator of its own.
    pub fn new(allocator: Allocator, clock: fn() -> i64) -> Arc<ExtenderState> {
        Self::with_host(Box::new(Mutex::new(allocator)), clock)
    }

    /// An extender placing through `host`'s allocator.
    pub fn with_host(host: Box<dyn AllocatorHost>, clock: fn() -> i64) -> Arc<ExtenderState> {
        Arc::new(ExtenderState {
            allocator: host,
            clock,
            seen: Mutex::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
        })
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The extender's routes.
pub fn extender_router(state: Arc<ExtenderState>) -> Router {
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .route("/bind", post(bind))
        .route("/unbind", post(unbind))
        .route("/renew", post(renew))
        .with_state(state)
}

/// A request that could not be understood: 400 with what was wrong.
#[derive(Debug)]
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "Error": self.0 })),
        )
            .into_response()
    }
}

/// `obj[key]`, matching the key case-insensitively like Go's encoding/json.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    o.get(key).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

fn parse_body(body: &Bytes) -> Result<Value, BadRequest> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "body is not JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if !v.is_object() {
        return Err(BadRequest("body must be a JSON object".into()));
    }
    Ok(v)
}

/// A Kubernetes quantity of whole devices ("2", 2, "2000m").
fn quantity(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_suffix('m') {
                Some(milli) => milli.parse::<u64>().ok().map(|m| m / 1000),
                None => s.parse().ok(),
            }
        }
        _ => None,
    }
}

/// The job a pod asks for (the job id is a hash of the pod's UID).
pub fn job_from_pod(pod: &Value) -> Result<(String, Job), String> {
    let meta = get(pod, "metadata").ok_or("pod has no metadata")?;
    let uid = get_str(meta, "uid")
        .or_else(|| get_str(meta, "name"))
        .ok_or("pod metadata has neither uid nor name")?
        .to_owned();
    let empty = Value::Object(Map::new());
    let ann = get(meta, "annotations").unwrap_or(&empty);
    let mut gpus = 0u64;
    if let Some(containers) = get(pod, "spec")
        .and_then(|s| get(s, "containers"))
        .and_then(Value::as_array)
    {
        for c in containers {
            let res = get(c, "resources");
            let q = res
                .and_then(|r| get(r, "limits"))
                .and_then(|l| get(l, GPU_RESOURCE))
                .or_else(|| {
                    res.and_then(|r| get(r, "requests"))
                        .and_then(|l| get(l, GPU_RESOURCE))
                });
            if let Some(q) = q {
                gpus += quantity(q)
                    .ok_or_else(|| format!("{GPU_RESOURCE} quantity {q} is not a whole number"))?;
            }
        }
    }
    let demand = match get_str(ann, ANNOTATION_GPU_MILLI) {
        Some(m) => {
            let m: u32 = m
                .trim()
                .parse()
                .map_err(|_| format!("annotation {ANNOTATION_GPU_MILLI}={m:?} is not a number"))?;
            match m {
                1..=999 => GpuDemand::Fraction(m as u16),
                WHOLE_GPU => GpuDemand::Whole(1),
                _ => {
                    return Err(format!(
                        "annotation {ANNOTATION_GPU_MILLI}={m} must be 1..=1000"
                    ));
                }
            }
        }
        None if gpus == 0 => GpuDemand::None,
        None if gpus <= 8 => GpuDemand::Whole(gpus as u8),
        None => {
            return Err(format!(
                "pod asks for {gpus} GPUs; one node holds at most 8"
            ));
        }
    };
    let models = get_str(ann, ANNOTATION_GPU_MODELS)
        .map(|s| {
            s.split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let num = |key: &str| -> Result<Option<i64>, String> {
        get_str(ann, key)
            .map(|s| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("annotation {key}={s:?} is not a number"))
            })
            .transpose()
    };
    let job = Job {
        models,
        min_gpu_memory_mib: num(ANNOTATION_MIN_GPU_MEMORY)?.unwrap_or(0).max(0) as u32,
        price_cap_micro_per_gpu_hour: get_str(ann, ANNOTATION_PRICE_CAP)
            .map(|s| {
                rigwatch_common::money::parse_micro(s).map_err(|e| {
                    format!("annotation {ANNOTATION_PRICE_CAP}={s:?} is not a price: {e}")
                })
            })
            .transpose()?,
        priority: get(pod, "spec")
            .and_then(|s| get(s, "priority"))
            .and_then(Value::as_i64)
            .unwrap_or(0) as i32,
        ..Job::new(fnv1a(uid.as_bytes()) >> 1, demand)
    };
    Ok((uid, job))
}

/// Candidate node names and how they were given (`NodeNames` or `Nodes.items`).
fn node_names(args: &Value) -> Result<(Vec<String>, bool), BadRequest> {
    if let Some(names) = get(args, "NodeNames").and_then(Value::as_array) {
        return Ok((
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect(),
            true,
        ));
    }
    let items = get(args, "Nodes")
        .and_then(|n| get(n, "items"))
        .and_then(Value::as_array);
    match items {
        Some(items) => Ok((
            items
                .iter()
                .filter_map(|i| {
                    get(i, "metadata")
                        .and_then(|m| get_str(m, "name"))
                        .map(str::to_owned)
                })
                .collect(),
            false,
        )),
        None if get(args, "Nodes").is_some_and(Value::is_null) || get(args, "Nodes").is_none() => {
            Err(BadRequest(
                "ExtenderArgs has neither NodeNames nor Nodes.items".into(),
            ))
        }
        None => Ok((Vec::new(), false)),
    }
}

/// Score of `job` on each node (`None` = does not fit), lower is better.
fn plan_nodes(st: &ExtenderState, job: &Job, names: &[String]) -> Vec<Result<f64, String>> {
    let now = (st.clock)();
    let mut out = Vec::new();
    st.allocator.with_allocator(&mut |a| {
        out = names
            .iter()
            .map(|name| {
                if job.demand == GpuDemand::None {
                    return Ok(0.0);
                }
                let Some(n) = a.view.node_index(&st.allocator.node_key(name)) else {
                    return Err("node is not managed by rigwatch".to_owned());
                };
                a.plan(job, now, Some(n))
                    .map(|(_, s)| s)
                    .ok_or_else(|| format!("rigwatch: no healthy GPU fits {:?} here", job.demand))
            })
            .collect();
    });
    out
}

fn remember(st: &ExtenderState, uid: &str, job: &Job) {
    let now = (st.clock)();
    let mut seen = st.seen.lock().unwrap_or_else(PoisonError::into_inner);
    if seen.len() >= MAX_PODS && !seen.contains_key(uid) {
        forget_oldest_half(&mut seen, |(_, t)| *t);
    }
    seen.insert(uid.to_owned(), (job.clone(), now));
}

/// Drops the older half of `map` by the time `at` gives each entry.
fn forget_oldest_half<V>(map: &mut HashMap<String, V>, at: impl Fn(&V) -> i64) {
    let mut times: Vec<i64> = map.values().map(&at).collect();
    times.sort_unstable();
    let cut = times[times.len() / 2];
    map.retain(|_, v| at(v) > cut);
}

async fn filter(State(st): State<Arc<ExtenderState>>, body: Bytes) -> Result<Response, BadRequest> {
    let args = parse_body(&body)?;
    let pod = get(&args, "Pod").ok_or_else(|| BadRequest("ExtenderArgs has no Pod".into()))?;
    let (names, by_name) = node_names(&args)?;
    let (uid, job) = match job_from_pod(pod) {
        Ok(x) => x,
        Err(e) => {
            return Ok(axum::Json(json!({
                "Nodes": null, "NodeNames": null, "FailedNodes": {}, "FailedAndUnresolvableNodes": {},
                "Error": e,
            }))
            .into_response());
        }
    };
    remember(&st, &uid, &job);
    let verdicts = plan_nodes(&st, &job, &names);
    let mut failed = Map::new();
    let mut ok = Vec::new();
    for (name, v) in names.iter().zip(verdicts) {
        match v {
            Ok(_) => ok.push(name.clone()),
            Err(why) => {
                failed.insert(name.clone(), Value::String(why));
            }
        }
    }
    let result = if by_name {
        json!({ "Nodes": null, "NodeNames": ok, "FailedNodes": failed, "FailedAndUnresolvableNodes": {}, "Error": "" })
    } else {
        let mut list = get(&args, "Nodes").cloned().unwrap_or(json!({}));
        if let Some(items) = list.as_object_mut().and_then(|o| {
            let key = o
                .keys()
                .find(|k| k.eq_ignore_ascii_case("items"))
                .cloned()?;
            o.get_mut(&key)
        }) && let Some(arr) = items.as_array_mut()
        {
            arr.retain(|i| {
                get(i, "metadata")
                    .and_then(|m| get_str(m, "name"))
                    .is_some_and(|n| ok.iter().any(|o| o == n))
            });
        }
        json!({ "Nodes": list, "NodeNames": null, "FailedNodes": failed, "FailedAndUnresolvableNodes": {}, "Error": "" })
    };
    Ok(axum::Json(result).into_response())
}

async fn prioritize(
    State(st): State<Arc<ExtenderState>>,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let args = parse_body(&body)?;
    let pod = get(&args, "Pod").ok_or_else(|| BadRequest("ExtenderArgs has no Pod".into()))?;
    let (names, _) = node_names(&args)?;
    let (uid, job) = job_from_pod(pod).map_err(BadRequest)?;
    remember(&st, &uid, &job);
    let scores = plan_nodes(&st, &job, &names);
    let feasible: Vec<f64> = scores
        .iter()
        .filter_map(|s| s.as_ref().ok().copied())
        .collect();
    let lo = feasible.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = feasible.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let list: Vec<Value> = names
        .iter()
        .zip(&scores)
        .map(|(name, s)| {
            let score = match s {
                Err(_) => 0,
                Ok(_) if hi - lo < 1e-12 => MAX_PRIORITY,
                Ok(v) => (((hi - v) / (hi - lo)) * MAX_PRIORITY as f64).round() as i64,
            };
            json!({ "Host": name, "Score": score })
        })
        .collect();
    Ok(axum::Json(Value::Array(list)).into_response())
}

async fn bind(State(st): State<Arc<ExtenderState>>, body: Bytes) -> Result<Response, BadRequest> {
    let args = parse_body(&body)?;
    let uid = get_str(&args, "PodUID")
        .or_else(|| get_str(&args, "PodName"))
        .unwrap_or("");
    let node = get_str(&args, "Node").unwrap_or("");
    if uid.is_empty() || node.is_empty() {
        return Err(BadRequest(
            "ExtenderBindingArgs needs PodUID (or PodName) and Node".into(),
        ));
    }
    let mut error = bind_pod(&st, uid, node);
    // Acknowledge a binding only once its leases are stored: kube-scheduler treats an error
    // as a failed bind and tries again, and the retry (same pod, same node) confirms.
    if error.is_none()
        && let Err(e) = st.allocator.durable().await
    {
        error = Some(format!(
            "pod {uid} is bound to {node}, but its leases are not stored yet ({e}); retry to \
             confirm"
        ));
    }
    Ok(axum::Json(json!({ "Error": error.unwrap_or_default() })).into_response())
}

fn bind_pod(st: &ExtenderState, uid: &str, node: &str) -> Option<String> {
    let mut bound = st.bound.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(prev) = bound.get(uid) {
        return (prev.node != node).then(|| format!("pod {uid} is already bound to {}", prev.node));
    }
    let Some(mut job) = st
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(uid)
        .map(|(j, _)| j.clone())
    else {
        return Some(format!("pod {uid} was not seen by /filter or /prioritize"));
    };
    let now = (st.clock)();
    if bound.len() >= MAX_PODS {
        return Some(format!(
            "this cluster holds {MAX_PODS} bindings; unbind finished pods first"
        ));
    }
    if job.demand == GpuDemand::None {
        bound.insert(
            uid.to_owned(),
            Binding {
                node: node.to_owned(),
                job: None,
                renewed_ms: now,
            },
        );
        return None;
    }
    job.id = st.allocator.job_id(uid);
    let mut outcome = None;
    st.allocator.with_allocator(&mut |a| {
        outcome = Some(match a.view.node_index(&st.allocator.node_key(node)) {
            None => Err(format!("node {node} is not managed by rigwatch")),
            Some(n) => match a.try_start_on(job.clone(), n, now) {
                Ok(Some(started)) => Ok(started.leases),
                Ok(None) => Err(format!("no GPU on {node} fits pod {uid} any more")),
                Err(e) => Err(e.to_string()),
            },
        });
    });
    match outcome {
        Some(Ok(leases)) => {
            bound.insert(
                uid.to_owned(),
                Binding {
                    node: node.to_owned(),
                    job: Some(job.id),
                    renewed_ms: now,
                },
            );
            drop(bound);
            st.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(uid);
            st.allocator.leases_started(&leases);
            None
        }
        Some(Err(e)) => Some(e),
        None => Some("the allocator did not answer".into()),
    }
}

/// `POST /unbind` `{"PodUID": …}` (or `PodName`): the pod ended; its leases end as
/// completed. Unbinding a pod that is not bound is an error naming it.
async fn unbind(State(st): State<Arc<ExtenderState>>, body: Bytes) -> Result<Response, BadRequest> {
    let args = parse_body(&body)?;
    let uid = get_str(&args, "PodUID")
        .or_else(|| get_str(&args, "PodName"))
        .unwrap_or("");
    if uid.is_empty() {
        return Err(BadRequest("unbind needs PodUID (or PodName)".into()));
    }
    let removed = st
        .bound
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(uid);
    let error = match removed {
        None => format!("pod {uid} is not bound"),
        Some(b) => {
            if let Some(job) = b.job {
                st.allocator
                    .job_ended(job, EndReason::Completed, (st.clock)());
            }
            match st.allocator.durable().await {
                Ok(()) => String::new(),
                Err(e) => format!(
                    "pod {uid} is unbound, but the end of its leases is not stored yet ({e}); \
                     it is written again every tick"
                ),
            }
        }
    };
    Ok(axum::Json(json!({ "Error": error })).into_response())
}

/// `POST /renew` `{"PodUIDs": [...]}`: these pods still run; their bindings start a new
/// time to live. Answers how many were renewed and which are not bound (any more).
async fn renew(State(st): State<Arc<ExtenderState>>, body: Bytes) -> Result<Response, BadRequest> {
    let args = parse_body(&body)?;
    let Some(uids) = get(&args, "PodUIDs").and_then(Value::as_array) else {
        return Err(BadRequest("renew needs PodUIDs, a list of pod UIDs".into()));
    };
    if uids.len() > MAX_PODS {
        return Err(BadRequest(format!(
            "renew at most {MAX_PODS} pods per call, got {}",
            uids.len()
        )));
    }
    let now = (st.clock)();
    let mut bound = st.bound.lock().unwrap_or_else(PoisonError::into_inner);
    let mut renewed = 0;
    let mut unknown = Vec::new();
    for uid in uids {
        match uid.as_str().and_then(|u| bound.get_mut(u)) {
            Some(b) => {
                b.renewed_ms = now;
                renewed += 1;
            }
            None => unknown.push(uid.clone()),
        }
    }
    Ok(axum::Json(json!({ "Renewed": renewed, "Unknown": unknown })).into_response())
}

impl ExtenderState {
    /// Ends every binding not renewed within `ttl_ms` of `now_ms` (its leases end as
    /// cancelled); returns how many ended.
    pub fn expire(&self, now_ms: i64, ttl_ms: i64) -> usize {
        let lapsed: Vec<Binding> = {
            let mut bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
            let uids: Vec<String> = bound
                .iter()
                .filter(|(_, b)| now_ms.saturating_sub(b.renewed_ms) >= ttl_ms)
                .map(|(u, _)| u.clone())
                .collect();
            uids.iter().filter_map(|u| bound.remove(u)).collect()
        };
        for b in &lapsed {
            if let Some(job) = b.job {
                self.allocator.job_ended(job, EndReason::Cancelled, now_ms);
            }
        }
        lapsed.len()
    }
}

/// The job id `/bind` gives a pod UID (for finishing it later).
pub fn job_id_of(uid: &str) -> JobId {
    fnv1a(uid.as_bytes()) >> 1
}
