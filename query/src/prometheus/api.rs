//! The Prometheus HTTP API: `/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/<name>/values`, `metadata`, `status/buildinfo`.
//!
//! Same parameters (GET query string or POST form body), JSON shapes, error types and status
//! codes as Prometheus, so Grafana and promtool work unchanged. Every handler reads the
//! caller's [`Principal`] (put there by the server's access layer) and evaluates in a session
//! confined to the caller's supplier when it has one.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rigwatch_promql::ast::Expr;
use rigwatch_promql::eval::{self, ErrorKind, EvalError, EvalOptions};
use rigwatch_promql::value::{QueryResult, Sample, Series, Value, is_stale_nan};
use rigwatch_storage::auth::Principal;

use crate::error::PromqlError;
use crate::prometheus::source::{self, FetchError};
use crate::service::QueryService;

/// Limits and defaults of the query API.
#[derive(Debug, Clone)]
pub struct PromOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback: Duration,
    /// Most samples one query may hold in memory.
    pub max_samples: usize,
    /// Default and largest query timeout.
    pub timeout: Duration,
    /// Most points a range query may return per series (Prometheus: 11,000).
    pub max_points_per_series: i64,
}

impl Default for PromOptions {
    fn default() -> Self {
        Self {
            lookback: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            max_points_per_series: 11_000,
        }
    }
}

#[derive(Debug, Clone)]
struct ApiState {
    service: QueryService,
    opts: Arc<PromOptions>,
}

/// The Prometheus API routes.
pub fn router(service: QueryService, opts: PromOptions) -> Router {
    let state = ApiState {
        service,
        opts: Arc::new(opts),
    };
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}

/// An API error: Prometheus' `errorType` and HTTP status.
#[derive(Debug)]
pub struct ApiError {
    kind: &'static str,
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: "bad_data",
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// An internal failure: the client gets a request id, the detail goes to the log.
    fn internal(message: impl Into<String>) -> Self {
        let id = crate::error::log_internal(&message.into());
        Self {
            kind: "internal",
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: crate::error::internal_message(&id),
        }
    }

    fn timeout(stage: &str) -> Self {
        Self {
            kind: "timeout",
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("query timed out in {stage}"),
        }
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        let (kind, status) = match e.kind() {
            ErrorKind::BadData => ("bad_data", StatusCode::BAD_REQUEST),
            ErrorKind::Execution => ("execution", StatusCode::UNPROCESSABLE_ENTITY),
            ErrorKind::Timeout => ("timeout", StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::Canceled => ("canceled", StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::Internal => return Self::internal(e.to_string()),
        };
        Self {
            kind,
            status,
            message: e.to_string(),
        }
    }
}

impl From<FetchError> for ApiError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::TooManySamples { .. } => Self {
                kind: "execution",
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: e.to_string(),
            },
            other => Self::internal(format!("reading series: {other}")),
        }
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        Self::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Prometheus' error shape is rigwatch's one error body.
        rigwatch_common::http_error::ErrorBody::new(self.kind, self.message).response(self.status)
    }
}

type ApiResult = Result<Response, ApiError>;

/// GET query string and POST form parameters, in order, repeated keys kept.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<String>, headers: &HeaderMap, body: &Bytes) -> Self {
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            out.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            out.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(out)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The earliest time a parameter may name: 0000-01-01T00:00:00Z, in Unix milliseconds.
pub const MIN_TIME_MS: i64 = -62_167_219_200_000;
/// The latest time a parameter may name: 9999-12-31T23:59:59.999Z, in Unix milliseconds.
/// Within these bounds (what RFC 3339 can write) a time plus any offset, range or
/// lookback PromQL allows stays far inside `i64`.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A time parameter: Unix seconds (fractional allowed) or RFC 3339, between years 0000
/// and 9999.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let ms = if let Ok(f) = s.parse::<f64>() {
        let ms = (f * 1000.0).round();
        // NaN and the infinities fail the range check too.
        if !(MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms) {
            return Err(format!(
                "cannot parse {s:?} to a valid timestamp: not between years 0000 and 9999"
            ));
        }
        ms as i64
    } else {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))?
    };
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        return Err(format!(
            "cannot parse {s:?} to a valid timestamp: not between years 0000 and 9999"
        ));
    }
    Ok(ms)
}

/// A duration parameter: seconds (fractional allowed) or a PromQL duration like `1m30s`.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        // NaN is refused too; 1e15 s (3e7 years) keeps milliseconds in i64.
        if f.is_nan() || f.abs() > 1e15 {
            return Err(format!("cannot parse {s:?} to a valid duration"));
        }
        return Ok((f * 1000.0).round() as i64);
    }
    let err = || format!("cannot parse {s:?} to a valid duration");
    let bytes = s.as_bytes();
    let (mut i, mut total) = (0usize, 0i64);
    if bytes.is_empty() {
        return Err(err());
    }
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let n: i64 = s[start..i].parse().map_err(|_| err())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let ms = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(total)
}

fn required<'a>(p: &'a Params, key: &str) -> Result<&'a str, ApiError> {
    p.get(key)
        .ok_or_else(|| ApiError::bad_data(format!("invalid parameter {key:?}: missing")))
}

fn time_param(p: &Params, key: &str, default: i64) -> Result<i64, ApiError> {
    match p.get(key) {
        None => Ok(default),
        Some(s) => {
            parse_time(s).map_err(|e| ApiError::bad_data(format!("invalid parameter {key:?}: {e}")))
        }
    }
}

fn principal(p: Option<Extension<Principal>>) -> Result<Principal, ApiError> {
    p.map(|Extension(p)| p).ok_or(ApiError {
        kind: "unauthorized",
        status: StatusCode::UNAUTHORIZED,
        message: "not authenticated".into(),
    })
}

fn parse_expr(q: &str) -> Result<Expr, ApiError> {
    rigwatch_promql::parser::parse(q)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

impl ApiState {
    /// The evaluation options a request asks for; `step` is a range query's.
    fn eval_options(
        &self,
        p: &Params,
        step: Option<i64>,
    ) -> Result<(EvalOptions, Duration), ApiError> {
        let timeout = match p.get("timeout") {
            Some(s) => {
                let ms = parse_duration(s).map_err(|e| {
                    ApiError::bad_data(format!("invalid parameter \"timeout\": {e}"))
                })?;
                Duration::from_millis(ms.max(1) as u64).min(self.opts.timeout)
            }
            None => self.opts.timeout,
        };
        let lookback_ms = match p.get("lookback_delta") {
            Some(s) => parse_duration(s).map_err(|e| {
                ApiError::bad_data(format!("invalid parameter \"lookback_delta\": {e}"))
            })?,
            None => self.opts.lookback.as_millis() as i64,
        };
        let opts = EvalOptions {
            lookback_ms,
            max_source_resolution_ms: max_source_resolution(p.get("max_source_resolution"), step)?,
            max_samples: self.opts.max_samples,
            deadline: Some(Instant::now() + timeout),
            ..EvalOptions::default()
        };
        Ok((opts, timeout))
    }

    /// Fetches what `expr` reads over `[start, end]` and evaluates it.
    async fn run(
        &self,
        who: &Principal,
        expr: Expr,
        range: Option<(i64, i64, i64)>,
        at: i64,
        opts: EvalOptions,
        timeout: Duration,
    ) -> Result<QueryResult, ApiError> {
        let scope = who.scope();
        Ok(evaluate(&self.service, scope, expr, range, at, opts, timeout).await?)
    }
}

/// `max_source_resolution` (Thanos' parameter), in ms: absent, `raw` or `0s` reads rollups
/// only where they give the raw data's answer; a duration (`1h`) lets every selection read
/// rollups up to it (the series thinned to the last sample of each bucket); `auto` is a fifth
/// of a range query's step, as in Thanos, and raw for an instant query.
fn max_source_resolution(value: Option<&str>, step: Option<i64>) -> Result<i64, ApiError> {
    match value {
        None | Some("raw") => Ok(0),
        Some("auto") => Ok(step.map_or(0, |s| s / 5)),
        Some(s) => parse_duration(s).ok().filter(|ms| *ms >= 0).ok_or_else(|| {
            ApiError::bad_data(format!(
                "invalid parameter \"max_source_resolution\": {s:?} is not raw, auto or a duration such as 1h"
            ))
        }),
    }
}

/// Fetches what `expr` reads through `scope`'s session and evaluates it: a range query when
/// `range` is `(start, end, step)`, else an instant query at `at`. Fetching is bounded by
/// `timeout`, evaluation by the deadline in `opts`, and runs off the async workers.
pub(crate) async fn evaluate(
    service: &QueryService,
    scope: Option<&str>,
    expr: Expr,
    range: Option<(i64, i64, i64)>,
    at: i64,
    opts: EvalOptions,
    timeout: Duration,
) -> Result<QueryResult, PromqlError> {
    let (start, end) = range.map(|(s, e, _)| (s, e)).unwrap_or((at, at));
    let selections = match range {
        Some((s, e, step)) => eval::range_selections(&expr, s, e, step, &opts),
        None => eval::selections(&expr, start, end, &opts),
    };
    let ctx = service
        .scoped_context(scope)
        .map_err(|e| PromqlError::Session(Box::new(e)))?;
    let db = service.db().clone();
    let fetched = tokio::time::timeout(
        timeout,
        source::fetch(
            &ctx,
            &db,
            selections,
            opts.max_samples,
            opts.max_source_resolution_ms,
        ),
    )
    .await
    .map_err(|_| PromqlError::Timeout)??;
    let steps = range.map_or(1, |(s, e, step)| {
        usize::try_from(e.saturating_sub(s) / step.max(1)).map_or(usize::MAX, |n| n + 1)
    });
    let samples = fetched.samples;
    let run = move || match range {
        Some((s, e, step)) => eval::range_query(&fetched, &expr, s, e, step, &opts),
        None => eval::instant_query(&fetched, &expr, at, &opts),
    };
    // A small query (one GPU's day, say) is evaluated here, in well under a millisecond: a
    // hand-off to the blocking pool and back cost more than that. Anything larger runs off
    // the async workers.
    if samples <= INLINE_EVAL_SAMPLES && steps <= INLINE_EVAL_STEPS {
        return match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(r) => Ok(r?),
            Err(payload) => Err(PromqlError::panicked(&*payload)),
        };
    }
    Ok(tokio::task::spawn_blocking(run).await??)
}

/// The most samples a query evaluated on the async worker that fetched them may read...
const INLINE_EVAL_SAMPLES: usize = 16_384;
/// ...and the most steps it may have (a week at one minute is 10,080).
const INLINE_EVAL_STEPS: usize = 11_000;

impl From<PromqlError> for ApiError {
    fn from(e: PromqlError) -> Self {
        match e {
            PromqlError::Eval(e) => e.into(),
            PromqlError::Fetch(e) => e.into(),
            PromqlError::Timeout => ApiError::timeout("query preparation"),
            PromqlError::Session(e) => (*e).into(),
            e @ PromqlError::Panicked(_) => ApiError::internal(e.to_string()),
            e @ (PromqlError::Parse(_)
            | PromqlError::TooManyPoints { .. }
            | PromqlError::NotSeries { .. }) => ApiError::bad_data(e.to_string()),
        }
    }
}

async fn query(
    State(state): State<ApiState>,
    who: Option<Extension<Principal>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = principal(who)?;
    let p = Params::new(raw, &headers, &body);
    let expr = parse_expr(required(&p, "query")?)?;
    let t = time_param(&p, "time", now_ms())?;
    let (opts, timeout) = state.eval_options(&p, None)?;
    let result = state.run(&who, expr, None, t, opts, timeout).await?;
    Ok(success(&result))
}

async fn query_range(
    State(state): State<ApiState>,
    who: Option<Extension<Principal>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = principal(who)?;
    let p = Params::new(raw, &headers, &body);
    let (start, end, step) = range_params(&p, state.opts.max_points_per_series)?;
    let expr = parse_expr(required(&p, "query")?)?;
    let (opts, timeout) = state.eval_options(&p, Some(step))?;
    let result = state
        .run(&who, expr, Some((start, end, step)), start, opts, timeout)
        .await?;
    Ok(success(&result))
}

/// `start`, `end` and `step` of a range query, checked: times between years 0000 and
/// 9999, `end` not before `start`, a positive step and at most `max_points` steps.
fn range_params(p: &Params, max_points: i64) -> Result<(i64, i64, i64), ApiError> {
    let start = parse_time(required(p, "start")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"start\": {e}")))?;
    let end = parse_time(required(p, "end")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"end\": {e}")))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = parse_duration(required(p, "step")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // Times are within years 0000..9999 and step > 0, so this cannot overflow; checked
    // all the same, so that the point limit always applies.
    let points = end.checked_sub(start).map_or(i64::MAX, |span| span / step);
    if points > max_points {
        return Err(ApiError::bad_data(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            max_points
        )));
    }
    Ok((start, end, step))
}

/// The series matching any of the `match[]` selectors in `[start, end]`.
async fn matching_series(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    require_match: bool,
) -> Result<Vec<Series>, ApiError> {
    let matches = p.all("match[]");
    if matches.is_empty() && require_match {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = time_param(p, "start", i64::MIN / 2_000_000)?;
    let end = time_param(p, "end", i64::MAX / 2_000_000)?;
    let mut selectors = Vec::new();
    for m in if matches.is_empty() {
        vec!["{__name__=~\".+\"}"]
    } else {
        matches
    } {
        match parse_expr(m)? {
            Expr::VectorSelector(vs) => selectors.push(vs.matchers),
            _ => {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"match[]\": {m:?} is not a series selector"
                )));
            }
        }
    }
    let selections = selectors
        .into_iter()
        .map(|matchers| eval::Selection {
            matchers,
            min_t: start,
            max_t: end,
            reads: eval::Reads::Raw,
        })
        .collect();
    let ctx = state.service.scoped_context(who.scope())?;
    let db = state.service.db().clone();
    let fetched = tokio::time::timeout(
        state.opts.timeout,
        source::fetch(&ctx, &db, selections, state.opts.max_samples, 0),
    )
    .await
    .map_err(|_| ApiError::timeout("series lookup"))??;
    Ok(fetched.into_series())
}

fn limit(p: &Params) -> Result<usize, ApiError> {
    match p.get("limit") {
        None => Ok(usize::MAX),
        Some(s) => match s.parse::<usize>() {
            Ok(0) => Ok(usize::MAX),
            Ok(n) => Ok(n),
            Err(_) => Err(ApiError::bad_data(format!(
                "invalid parameter \"limit\": cannot parse {s:?} to a valid limit"
            ))),
        },
    }
}

async fn series(
    State(state): State<ApiState>,
    who: Option<Extension<Principal>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = principal(who)?;
    let p = Params::new(raw, &headers, &body);
    let limit = limit(&p)?;
    let found = matching_series(&state, &who, &p, true).await?;
    let mut sets: BTreeSet<_> = found.into_iter().map(|s| s.labels).collect();
    let mut out = String::from("{\"status\":\"success\",\"data\":[");
    for (i, l) in std::mem::take(&mut sets)
        .into_iter()
        .take(limit)
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        write_labels(&mut out, l.iter());
    }
    out.push_str("]}");
    Ok(json(out))
}

async fn labels(
    State(state): State<ApiState>,
    who: Option<Extension<Principal>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = principal(who)?;
    let p = Params::new(raw, &headers, &body);
    let limit = limit(&p)?;
    let names: BTreeSet<String> = if p.all("match[]").is_empty() && p.get("start").is_none() {
        // Fast path: from the schemas, no data read.
        let ctx = state.service.scoped_context(who.scope())?;
        let db = state.service.db();
        let mut names = BTreeSet::new();
        let metrics = source::metrics(&ctx, db);
        if !metrics.is_empty() {
            names.insert("__name__".to_string());
        }
        for m in metrics {
            names.extend(m.label_names());
        }
        names
    } else if p.all("match[]").is_empty() {
        from_label_columns(&state, &who, &p, source::Lookup::Names).await?
    } else {
        matching_series(&state, &who, &p, false)
            .await?
            .iter()
            .flat_map(|s| s.labels.iter().map(|(k, _)| k.to_string()))
            .collect()
    };
    Ok(json(string_list(names.into_iter().take(limit))))
}

/// Label names or one label's values over every series in the request's range (no
/// `match[]`): from the label columns, no samples read ([`source::label_lookup`]).
async fn from_label_columns(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    what: source::Lookup<'_>,
) -> Result<BTreeSet<String>, ApiError> {
    let start = time_param(p, "start", i64::MIN / 2_000_000)?;
    let end = time_param(p, "end", i64::MAX / 2_000_000)?;
    let ctx = state.service.scoped_context(who.scope())?;
    Ok(tokio::time::timeout(
        state.opts.timeout,
        source::label_lookup(&ctx, state.service.db(), what, start, end),
    )
    .await
    .map_err(|_| ApiError::timeout("label lookup"))??)
}

async fn label_values(
    State(state): State<ApiState>,
    who: Option<Extension<Principal>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let who = principal(who)?;
    let p = Params::new(raw, &HeaderMap::new(), &Bytes::new());
    let limit = limit(&p)?;
    let values: BTreeSet<String> = if name == "__name__" && p.all("match[]").is_empty() {
        let ctx = state.service.scoped_context(who.scope())?;
        source::metrics(&ctx, state.service.db())
            .into_iter()
            .map(|m| m.name)
            .collect()
    } else if p.all("match[]").is_empty() {
        from_label_columns(&state, &who, &p, source::Lookup::Values(&name)).await?
    } else {
        matching_series(&state, &who, &p, false)
            .await?
            .iter()
            .filter_map(|s| s.labels.get(&name).map(str::to_string))
            .collect()
    };
    Ok(json(string_list(values.into_iter().take(limit))))
}

async fn metadata(
    State(state): State<ApiState>,
    who: Option<Extension<Principal>>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let who = principal(who)?;
    let p = Params::new(raw, &HeaderMap::new(), &Bytes::new());
    let limit = limit(&p)?;
    let wanted = p.get("metric");
    let ctx = state.service.scoped_context(who.scope())?;
    let mut data = serde_json::Map::new();
    for m in source::metrics(&ctx, state.service.db()) {
        if wanted.is_some_and(|w| w != m.name) || data.len() >= limit {
            continue;
        }
        let (kind, help) = m.metadata();
        data.insert(
            m.name.clone(),
            serde_json::json!([{ "type": kind, "help": help, "unit": "" }]),
        );
    }
    Ok(axum::Json(serde_json::json!({"status": "success", "data": data})).into_response())
}

async fn buildinfo() -> ApiResult {
    Ok(axum::Json(serde_json::json!({
        "status": "success",
        "data": {
            "version": "3.0.0",
            "revision": concat!("rigwatch-", env!("CARGO_PKG_VERSION")),
            "branch": "rigwatch",
            "buildUser": "rigwatch",
            "buildDate": "",
            "goVersion": "none (rigwatch is written in Rust)",
        }
    }))
    .into_response())
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn string_list(items: impl Iterator<Item = String>) -> String {
    let mut out = String::from("{\"status\":\"success\",\"data\":[");
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(&mut out, &s);
    }
    out.push_str("]}");
    out
}

fn write_str(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires.
    out.push_str(&serde_json::to_string(s).expect("strings serialize"));
}

fn write_labels<'a>(out: &mut String, labels: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push('{');
    for (i, (k, v)) in labels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_str(out, v);
    }
    out.push('}');
}

/// A sample value as Prometheus writes it: shortest round-trip decimal, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A timestamp as Prometheus writes it: Unix seconds with up to three decimals.
pub fn format_time(out: &mut String, t_ms: i64) {
    let secs = t_ms.div_euclid(1000);
    let ms = t_ms.rem_euclid(1000);
    if ms == 0 {
        let _ = write!(out, "{secs}");
    } else {
        let frac = format!("{ms:03}");
        let _ = write!(out, "{secs}.{}", frac.trim_end_matches('0'));
    }
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    format_time(out, t);
    out.push_str(",\"");
    format_value(out, v);
    out.push_str("\"]");
}

/// The success envelope with the result and its annotations.
pub fn success(result: &QueryResult) -> Response {
    let mut out = String::with_capacity(256);
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":\"");
    out.push_str(result.value.type_name());
    out.push_str("\",\"result\":");
    match &result.value {
        Value::Scalar { t, v } => write_point(&mut out, *t, *v),
        Value::String { t, s } => {
            out.push('[');
            format_time(&mut out, *t);
            out.push(',');
            write_str(&mut out, s);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, (labels, Sample { t, v })) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, labels.iter());
                out.push_str(",\"value\":");
                write_point(&mut out, *t, *v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, s.labels.iter());
                out.push_str(",\"values\":[");
                let mut first = true;
                for Sample { t, v } in &s.samples {
                    if is_stale_nan(*v) {
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    write_point(&mut out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    for (key, list) in [("warnings", &result.warnings), ("infos", &result.infos)] {
        if !list.is_empty() {
            let _ = write!(out, ",\"{key}\":");
            out.push_str(&serde_json::to_string(list).expect("strings serialize"));
        }
    }
    out.push('}');
    json(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_parse_like_prometheus() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51.781+02:00").unwrap(),
            1_435_781_451_781
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15").unwrap(), 15_000);
        assert_eq!(parse_duration("0.5").unwrap(), 500);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration("1h").unwrap(), 3_600_000);
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn times_outside_years_0000_to_9999_are_refused() {
        for bad in [
            "1e300",
            "-1e300",
            "NaN",
            "Inf",
            "-Inf",
            "+Inf",
            "9e15",
            "253402300800",
            "-62167219201",
        ] {
            let e = parse_time(bad).expect_err(bad);
            assert!(e.contains("not between years 0000 and 9999"), "{bad}: {e}");
        }
        assert_eq!(parse_time("253402300799.999").unwrap(), MAX_TIME_MS);
        assert_eq!(parse_time("-62167219200").unwrap(), MIN_TIME_MS);
        assert_eq!(parse_time("9999-12-31T23:59:59.999Z").unwrap(), MAX_TIME_MS);
        assert_eq!(parse_time("0000-01-01T00:00:00Z").unwrap(), MIN_TIME_MS);
        assert!(parse_time("10000-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn durations_that_overflow_are_refused() {
        for bad in [
            "1e300",
            "-1e300",
            "NaN",
            "Inf",
            "1e16",
            "99999999999999999999y",
            "999999999999y",
            "9223372036854775807ms1ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        // Tiny steps round to zero, which query_range refuses as a step.
        assert_eq!(parse_duration("1e-300").unwrap(), 0);
        assert_eq!(parse_duration("-1").unwrap(), -1000);
    }

    fn range(query: &str) -> Result<(i64, i64, i64), String> {
        let p = Params::new(Some(query.to_owned()), &HeaderMap::new(), &Bytes::new());
        range_params(&p, 11_000).map_err(|e| e.message)
    }

    #[test]
    fn range_query_parameters_are_checked_without_overflow() {
        assert_eq!(range("start=0&end=60&step=15"), Ok((0, 60_000, 15_000)));
        let refused = [
            ("start=-1e300&end=1e300&step=1", "\"start\""),
            ("start=0&end=1e300&step=1", "\"end\""),
            ("start=0&end=NaN&step=1", "\"end\""),
            ("start=0&end=60&step=0", "\"step\""),
            ("start=0&end=60&step=-15", "\"step\""),
            ("start=0&end=60&step=1e-300", "\"step\""),
            ("start=0&end=60&step=NaN", "\"step\""),
            ("start=0&end=60&step=1e300", "\"step\""),
            ("start=60&end=0&step=1", "\"end\""),
        ];
        for (q, param) in refused {
            let e = range(q).expect_err(q);
            assert!(e.contains(param), "{q}: {e}");
        }
        // The widest span allowed, at the smallest step: the point limit applies.
        let e = range("start=-62167219200&end=253402300799&step=0.001").unwrap_err();
        assert!(
            e.contains("exceeded maximum resolution of 11000 points"),
            "{e}"
        );
        assert!(range("start=0&end=11000&step=1").is_ok());
        assert!(range("start=0&end=11001&step=1").is_err());
    }

    #[test]
    fn max_source_resolution_is_raw_auto_or_a_duration() {
        assert_eq!(max_source_resolution(None, Some(3_600_000)).ok(), Some(0));
        assert_eq!(max_source_resolution(Some("raw"), None).ok(), Some(0));
        assert_eq!(max_source_resolution(Some("0s"), None).ok(), Some(0));
        assert_eq!(
            max_source_resolution(Some("1h"), None).ok(),
            Some(3_600_000)
        );
        assert_eq!(max_source_resolution(Some("300"), None).ok(), Some(300_000));
        assert_eq!(
            max_source_resolution(Some("auto"), Some(3_600_000)).ok(),
            Some(720_000)
        );
        assert_eq!(max_source_resolution(Some("auto"), None).ok(), Some(0));
        for bad in ["-1h", "hourly", "", "NaN"] {
            let e = max_source_resolution(Some(bad), None).unwrap_err().message;
            assert!(
                e.contains("\"max_source_resolution\"") && e.contains(bad),
                "{e}"
            );
        }
    }

    #[test]
    fn values_and_times_are_written_like_prometheus() {
        let mut s = String::new();
        for v in [
            1.0,
            0.1,
            -2.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e21,
        ] {
            format_value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "1 0.1 -2.5 NaN +Inf -Inf 1000000000000000000000 ");
        let mut t = String::new();
        format_time(&mut t, 1_435_781_451_781);
        t.push(' ');
        format_time(&mut t, 1_435_781_451_000);
        t.push(' ');
        format_time(&mut t, 1_435_781_451_500);
        assert_eq!(t, "1435781451.781 1435781451 1435781451.5");
    }
}
