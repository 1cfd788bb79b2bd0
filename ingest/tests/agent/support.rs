//! A server with the agent routes on a random local port over a fresh database and auth
//! store, and ways to read back what it stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use rigwatch_ingest::agent::dedup::{self, Seen};
use rigwatch_ingest::agent::routes::{AgentLimits, AgentState, router};
use rigwatch_storage::auth::{AuthStore, Role};
use rigwatch_storage::{Db, DbConfig};
use tokio::task::JoinHandle;

pub struct AgentServer {
    pub db: Arc<Db>,
    pub auth: Arc<AuthStore>,
    pub base: String,
    pub client: reqwest::Client,
    task: JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

impl AgentServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, "127.0.0.1:0").await
    }

    /// Starts on `dir` (reusing what an earlier server left there, its stored batches
    /// included, as `rigwatch serve` does) at `addr`.
    pub async fn start_in(dir: tempfile::TempDir, addr: &str) -> Self {
        Self::start_with(dir, addr, AgentLimits::default()).await
    }

    /// Starts on `dir` at `addr` with `limits`.
    pub async fn start_with(dir: tempfile::TempDir, addr: &str, limits: AgentLimits) -> Self {
        let mut config = DbConfig::new(dir.path());
        config.background = false;
        let db = Db::open(config).await.expect("open database");
        let auth = Arc::new(AuthStore::open(dir.path()).expect("open auth store"));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let seen_batches = seen_batches(&db).await;
        let app = router(AgentState {
            db: db.clone(),
            auth: auth.clone(),
            max_body_bytes: 1 << 20,
            seen_batches,
            limits,
            admission: rigwatch_ingest::admission::Admission::new(Default::default()),
            shared: None,
        })
        .expect("read the GPU claims");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        AgentServer {
            db,
            auth,
            base,
            client: reqwest::Client::new(),
            task,
            dir,
        }
    }

    /// Stops this server and starts another on the same data directory.
    pub async fn restart(mut self) -> Self {
        self.task.abort();
        self.db.shutdown().await.expect("shut the database down");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        drop(self);
        Self::start_in(dir, "127.0.0.1:0").await
    }

    /// Adds `supplier` and returns its agent token.
    pub fn supplier(&self, supplier: &str) -> String {
        self.auth
            .add_supplier(supplier)
            .expect("add supplier")
            .token
    }

    /// A token of `role` for `supplier`.
    pub fn token(&self, role: Role, supplier: Option<&str>) -> String {
        self.auth
            .issue(role, supplier, None, "test")
            .expect("issue")
            .token
    }

    /// Runs `sql` over what the server stored; every value rendered as a string.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let ctx = SessionContext::new();
        rigwatch_storage::table::register(&self.db, &ctx).expect("register");
        let batches = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("planning `{sql}`: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("running `{sql}`: {e}"));
        let mut out = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                out.push(
                    b.columns()
                        .iter()
                        .map(|c| array_value_to_string(c, r).expect("display"))
                        .collect(),
                );
            }
        }
        out
    }

    /// The single value of a one-row, one-column query.
    pub async fn scalar(&self, sql: &str) -> String {
        let rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "`{sql}` returned {rows:?}");
        rows[0][0].clone()
    }

    /// `count(*)` of a table, 0 if it does not exist.
    pub async fn count(&self, table: &str) -> u64 {
        if self.db.table(table).is_none() {
            return 0;
        }
        self.scalar(&format!("SELECT count(*) FROM \"{table}\""))
            .await
            .parse()
            .expect("count")
    }

    /// Waits up to `timeout` for `check` to hold over `count(table)`.
    pub async fn wait_count(
        &self,
        table: &str,
        timeout: Duration,
        check: impl Fn(u64) -> bool,
    ) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(table).await;
            if check(n) || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The batches stored in the last hour, read the way `rigwatch serve` reads them at start.
async fn seen_batches(db: &Arc<Db>) -> Vec<Seen> {
    let Some(sql) = dedup::seen_sql(db) else {
        return Vec::new();
    };
    let ctx = SessionContext::new();
    rigwatch_storage::table::register(db, &ctx).expect("register");
    let batches = ctx
        .sql(&sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("read agent_batch");
    let mut out = Vec::new();
    for b in &batches {
        let text = |i: usize| {
            datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8).expect("cast")
        };
        let (supplier, worker, id) = (text(0), text(1), text(3));
        let (supplier, worker, id) = (
            supplier.as_string::<i32>(),
            worker.as_string::<i32>(),
            id.as_string::<i32>(),
        );
        let digest = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.extend(Seen::from_row(
                supplier.value(i),
                worker.value(i),
                digest.is_valid(i).then(|| digest.value(i)),
                id.is_valid(i).then(|| id.value(i)),
            ));
        }
    }
    out
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
