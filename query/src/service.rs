//! [`QueryService`]: a read-only SQL front over a [`Db`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::config::SessionConfig;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionContext};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rigwatch_storage::Db;

use crate::error::{Error, Result};

/// Query counters and latencies.
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    pub queries: Counter,
    pub errors: Counter,
    pub seconds: Histogram,
    pub rows_returned: Counter,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        Self {
            queries: Counter::default(),
            errors: Counter::default(),
            seconds: Histogram::new(exponential_buckets(0.0005, 4.0, 12)),
            rows_returned: Counter::default(),
        }
    }
}

impl QueryMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("rigwatch_query");
        r.register("sql_queries", "SQL queries received", self.queries.clone());
        r.register("sql_errors", "SQL queries that failed", self.errors.clone());
        r.register_with_unit(
            "sql",
            "SQL query latency",
            Unit::Seconds,
            self.seconds.clone(),
        );
        r.register(
            "rows_returned",
            "Rows returned by SQL queries",
            self.rows_returned.clone(),
        );
    }
}

/// What one principal's SQL may use. Every limit is enforced inside execution: the deadline
/// and a client that goes away drop the running plan (DataFusion cancels its tasks), the
/// memory pool refuses operators past their share, and the row cap stops the stream.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Longest a statement may run (`--query-timeout`).
    pub timeout: std::time::Duration,
    /// Memory the operators of one scope's queries may hold together, bytes
    /// (`--query-max-memory`).
    pub max_memory: usize,
    /// Most rows one answer may hold (`--query-max-rows`).
    pub max_rows: usize,
    /// Most statements one scope (a supplier, or the operators together) may run at once
    /// (`--query-max-concurrent`).
    pub max_concurrent: usize,
}

impl QueryLimits {
    /// No limits: for the server's own queries (rebuilding the allocator reads every row).
    pub const UNLIMITED: QueryLimits = QueryLimits {
        timeout: std::time::Duration::MAX,
        max_memory: usize::MAX,
        max_rows: usize::MAX,
        max_concurrent: usize::MAX,
    };
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: std::time::Duration::from_secs(120),
            max_memory: 1 << 30,
            max_rows: 1_000_000,
            max_concurrent: 8,
        }
    }
}

/// Runs read-only SQL against the store.
#[derive(Clone)]
pub struct QueryService {
    db: Arc<Db>,
    metrics: QueryMetrics,
    limits: QueryLimits,
    /// Statements running, by scope.
    running: Arc<std::sync::Mutex<HashMap<Option<String>, Arc<tokio::sync::Semaphore>>>>,
    /// Sessions by supplier scope. A session holds no query state and its schema looks
    /// tables up live, so one per scope serves every query (setting one up costs about as
    /// much as a small query).
    sessions: Arc<std::sync::Mutex<HashMap<Option<String>, SessionContext>>>,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService").finish_non_exhaustive()
    }
}

/// Most cached sessions (one per supplier that queries); past it the cache starts over.
const MAX_SESSIONS: usize = 4096;

impl QueryService {
    /// A service without limits, for the server's own queries.
    pub fn new(db: Arc<Db>) -> Self {
        Self::with_limits(db, QueryLimits::UNLIMITED)
    }

    /// A service whose every statement runs within `limits`: the one clients reach.
    pub fn with_limits(db: Arc<Db>, limits: QueryLimits) -> Self {
        Self {
            db,
            metrics: QueryMetrics::default(),
            limits,
            running: Arc::default(),
            sessions: Arc::default(),
        }
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// A slot for one more statement of `scope` (none needed when unlimited), or the
    /// refusal naming the limit.
    fn admit(&self, scope: Option<&str>) -> Result<Option<tokio::sync::OwnedSemaphorePermit>> {
        if self.limits.max_concurrent == usize::MAX {
            return Ok(None);
        }
        let sem = {
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if running.len() >= MAX_SESSIONS {
                running.retain(|_, s| s.available_permits() < self.limits.max_concurrent);
            }
            running
                .entry(scope.map(str::to_string))
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Semaphore::new(self.limits.max_concurrent))
                })
                .clone()
        };
        sem.try_acquire_owned()
            .map(Some)
            .map_err(|_| Error::TooManyQueries {
                limit: self.limits.max_concurrent,
            })
    }

    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// A session whose default schema holds every table of the store.
    pub fn session_context(&self) -> Result<SessionContext> {
        self.scoped_context(None)
    }

    /// A session confined to one supplier's rows when `scope` names one (see
    /// [`rigwatch_storage::table::register_scoped`]).
    pub fn scoped_context(&self, scope: Option<&str>) -> Result<SessionContext> {
        let key = scope.map(str::to_string);
        if let Some(ctx) = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(ctx.clone());
        }
        let ctx = self.new_context(scope)?;
        let mut cache = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_SESSIONS {
            cache.clear();
        }
        cache.insert(key, ctx.clone());
        Ok(ctx)
    }

    fn new_context(&self, scope: Option<&str>) -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("datafusion", "public");
        let mut config = config;
        // A recursive CTE is an unbounded loop a client controls.
        config.options_mut().execution.enable_recursive_ctes = false;
        let ctx = if self.limits.max_memory == usize::MAX {
            SessionContext::new_with_config(config)
        } else {
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_limit(self.limits.max_memory, 1.0)
                .build_arc()?;
            SessionContext::new_with_config_rt(config, runtime)
        };
        rigwatch_storage::table::register_scoped(&self.db, &ctx, scope)?;
        Ok(ctx)
    }

    /// A session for one request: `scope`'s tables as in [`Self::scoped_context`], plus
    /// `extra` tables in the schema `schema_name` (a DSL query's `promql(…)` rows). It
    /// shares the memory pool of `scope`'s cached session, so the memory limit still holds
    /// for the scope as a whole; the cached session itself is left untouched.
    pub fn request_context(
        &self,
        scope: Option<&str>,
        schema_name: &str,
        extra: Vec<(String, RecordBatch)>,
    ) -> Result<SessionContext> {
        use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
        use datafusion::datasource::MemTable;
        let shared = self.scoped_context(scope)?;
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(shared.copied_config())
            .with_runtime_env(shared.runtime_env())
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        rigwatch_storage::table::register_scoped(&self.db, &ctx, scope)?;
        let schema = Arc::new(MemorySchemaProvider::new());
        for (name, batch) in extra {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
            schema.register_table(name, Arc::new(table))?;
        }
        let catalog = ctx.catalog("datafusion").ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("default catalog missing".into())
        })?;
        catalog.register_schema(schema_name, schema)?;
        Ok(ctx)
    }

    /// Runs one read-only statement in `ctx` (from [`Self::request_context`]) with the
    /// limits, admission and metrics of `scope`, like [`Self::sql_scoped`].
    pub async fn sql_in(
        &self,
        ctx: &SessionContext,
        query: &str,
        scope: Option<&str>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        self.observed(query, scope, Some(ctx)).await
    }

    /// Runs one read-only statement over every supplier's rows and collects its result.
    pub async fn sql(&self, query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        self.sql_scoped(query, None).await
    }

    /// Runs one read-only statement that sees only `scope`'s rows when it names a supplier.
    pub async fn sql_scoped(
        &self,
        query: &str,
        scope: Option<&str>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        self.observed(query, scope, None).await
    }

    /// Runs a statement in `ctx`, or in `scope`'s cached session, counting it in the metrics.
    async fn observed(
        &self,
        query: &str,
        scope: Option<&str>,
        ctx: Option<&SessionContext>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let start = Instant::now();
        self.metrics.queries.inc();
        let result = self.run(query, scope, ctx).await;
        self.metrics.seconds.observe(start.elapsed().as_secs_f64());
        match &result {
            Ok((_, batches)) => {
                self.metrics
                    .rows_returned
                    .inc_by(batches.iter().map(|b| b.num_rows() as u64).sum());
            }
            Err(_) => {
                self.metrics.errors.inc();
            }
        }
        result
    }

    async fn run(
        &self,
        query: &str,
        scope: Option<&str>,
        ctx: Option<&SessionContext>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let query = query.trim();
        if query.is_empty() {
            return Err(Error::EmptyQuery);
        }
        let _slot = self.admit(scope)?;
        let deadline = self.limits.timeout;
        match tokio::time::timeout(deadline, self.run_admitted(query, scope, ctx)).await {
            Ok(r) => r,
            // Dropping the future drops the plan: its tasks stop.
            Err(_) => Err(Error::Timeout { after: deadline }),
        }
    }

    async fn run_admitted(
        &self,
        query: &str,
        scope: Option<&str>,
        ctx: Option<&SessionContext>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let ctx = match ctx {
            Some(c) => c.clone(),
            None => self.scoped_context(scope)?,
        };
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(query, options).await?;
        if scope.is_some()
            && matches!(
                df.logical_plan(),
                LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
            )
        {
            return Err(Error::ExplainRefused);
        }
        let schema = df.schema().inner().clone();
        match self.collect(df).await {
            Ok(batches) => Ok((schema, batches)),
            // A data file whose footer is intact but whose pages are corrupt only shows up
            // when read. Find and exclude such files (each is logged), then answer from the
            // rest of the data.
            Err(e) if e.is_corrupt_data() && self.db.scrub(None).await > 0 => {
                let df = ctx.sql_with_options(query, options).await?;
                Ok((schema, self.collect(df).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// The answer's batches, stopping at the row cap; executed on the query runtime
    /// ([`crate::executor`]).
    async fn collect(&self, df: datafusion::dataframe::DataFrame) -> Result<Vec<RecordBatch>> {
        let (max_rows, max_memory) = (self.limits.max_rows, self.limits.max_memory);
        crate::executor::run(collect_capped(df, max_rows, max_memory)).await
    }
}

async fn collect_capped(
    df: datafusion::dataframe::DataFrame,
    max_rows: usize,
    max_memory: usize,
) -> Result<Vec<RecordBatch>> {
    use futures::StreamExt;
    let mut stream = df.execute_stream().await?;
    let mut out = Vec::new();
    let mut rows = 0usize;
    while let Some(b) = stream.next().await {
        let b = b.map_err(|e| match e.find_root() {
            datafusion::error::DataFusionError::ResourcesExhausted(_) => Error::MemoryLimit {
                limit: max_memory,
                source: e,
            },
            _ => Error::DataFusion(e),
        })?;
        rows += b.num_rows();
        if rows > max_rows {
            return Err(Error::TooManyRows { limit: max_rows });
        }
        out.push(b);
    }
    Ok(out)
}
