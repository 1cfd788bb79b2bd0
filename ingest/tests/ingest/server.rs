//! A write server on a random local port over a fresh database, and a way to read back
//! what it stored.

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use reqwest::header::{CONTENT_ENCODING, HeaderMap, HeaderValue};
use rigwatch_ingest::routes::{IngestState, router};
use rigwatch_storage::{Db, DbConfig};
use serde_json::Value;
use tokio::task::JoinHandle;

/// The body size limit the test servers run with.
pub const LIMIT: usize = 64 * 1024;
/// The most time partitions one request may touch on the test servers.
pub const MAX_PARTITIONS: usize = 3;

pub struct Server {
    pub db: Arc<Db>,
    base: String,
    client: reqwest::Client,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A response, read completely.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON (error answers are JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    /// The `message` of an error answer.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {}", self.body))
            .to_string()
    }
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server whose database configuration `tune` may change.
    pub async fn start_with(tune: impl FnOnce(&mut DbConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = DbConfig::new(dir.path());
        config.background = false;
        tune(&mut config);
        let db = Db::open(config).await.expect("open database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let app = router(IngestState {
            db: db.clone(),
            max_body_bytes: LIMIT,
            max_partitions: MAX_PARTITIONS,
            admission: rigwatch_ingest::admission::Admission::new(Default::default()),
            partitions_per_hour: Arc::new(rigwatch_ingest::partition_budget::PartitionBudget::new(
                rigwatch_ingest::partition_budget::DEFAULT_WRITE_PER_HOUR,
            )),
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            db,
            base,
            client: reqwest::Client::new(),
            task,
            _dir: dir,
        }
    }

    /// POSTs `body` to `path_and_query` with `headers`.
    pub async fn post_with(
        &self,
        path_and_query: &str,
        headers: &[(&'static str, &'static str)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut req = self
            .client
            .post(format!("{}{path_and_query}", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("send request");
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.expect("read response"),
        }
    }

    pub async fn post(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.post_with(path_and_query, &[], body).await
    }

    /// POSTs a gzip-encoded body.
    pub async fn post_gzip(&self, path_and_query: &str, body: Vec<u8>) -> Reply {
        self.post_with(path_and_query, &[(CONTENT_ENCODING.as_str(), "gzip")], body)
            .await
    }

    /// Runs `sql` against what the server stored, as an Arrow pretty table.
    pub async fn query(&self, sql: &str) -> String {
        let ctx = SessionContext::new();
        rigwatch_storage::table::register(&self.db, &ctx).expect("register");
        let batches = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("planning `{sql}`: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("running `{sql}`: {e}"));
        pretty_format_batches(&batches).expect("format").to_string()
    }

    /// Whether `table` exists (has ever received a row).
    pub fn has_table(&self, table: &str) -> bool {
        self.db.table(table).is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("compress");
    enc.finish().expect("compress")
}

/// Asserts a header value.
pub fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .get(name)
        .map(|v: &HeaderValue| v.to_str().expect("ASCII header"))
}
