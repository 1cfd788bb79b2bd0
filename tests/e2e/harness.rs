//! A `rigwatch serve` child process on a data directory, with its stderr captured to a file.
//!
//! Every wait is bounded: a server that does not come up, a request that does not answer or a
//! process that does not exit fails the test with the server's log instead of hanging.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one HTTP request may take (queries over the whole data set in a debug build).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Tells apart the log files of the servers started on one data directory.
static STARTS: AtomicUsize = AtomicUsize::new(0);

/// A running `rigwatch serve`. Dropping it kills the process. Derefs to its [`Http`] client.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    http: Http,
    exit: Option<ExitStatus>,
}

/// The operator token every test server is started with (`--admin-token`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";

fn admin_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
    );
    h
}

/// The HTTP side of a server; cheap to clone into writer tasks.
#[derive(Debug, Clone)]
pub struct Http {
    pub base: String,
    client: reqwest::Client,
    /// Where the server's stderr goes.
    pub log_path: PathBuf,
}

impl std::ops::Deref for Server {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Server {
    /// Starts `rigwatch serve --data-dir DIR --listen 127.0.0.1:0 EXTRA_ARGS` with `env` added to
    /// the environment, and waits until it prints `rigwatch listening on http://ADDR`.
    /// Its stderr goes to `DIR.<n>.log` beside the data directory. `RW_SERVER_BIN` names
    /// another binary to start (a release build, for the measurements).
    pub async fn start(dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log_path = dir.with_extension(format!("{n}.log"));
        let log = File::create(&log_path).expect("create server log");
        let bin = std::env::var_os("RW_SERVER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_rigwatch").into());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env_remove("RIGWATCH_CRASH_AT")
            // Plain log lines, so tests can search them and failure messages stay readable.
            .env("NO_COLOR", "1")
            .env("RIGWATCH_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn rigwatch");
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().expect("addr"),
            http: Http {
                base: String::new(),
                client: reqwest::Client::builder()
                    .default_headers(admin_headers())
                    .no_proxy()
                    .timeout(REQUEST_TIMEOUT)
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .expect("http client"),
                log_path,
            },
            exit: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = server.log();
            // Only whole lines: the server may be mid-way through writing this one.
            if let Some(addr) = log
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .find_map(|l| l.strip_prefix("rigwatch listening on http://"))
            {
                server.addr = addr.trim().parse().expect("listening address");
                server.http.base = format!("http://{}", server.addr);
                return server;
            }
            if let Some(status) = server.try_exit() {
                panic!(
                    "rigwatch exited with {} before listening; log {}:\n{log}",
                    describe(status),
                    server.log_path.display()
                );
            }
            if Instant::now() > deadline {
                server.kill9();
                panic!(
                    "rigwatch did not listen within {START_TIMEOUT:?}; log {}:\n{}",
                    server.log_path.display(),
                    server.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (like `kill -9`), then reaps the process.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for killed rigwatch");
        self.exit = Some(status);
        status
    }

    /// Sends SIGTERM with the `kill` command (no libc needed).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait rigwatch");
        }
        self.exit
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0); fails the test otherwise.
    pub async fn stop_gracefully(&mut self) {
        self.terminate();
        match self.wait_exit(Duration::from_secs(60)).await {
            Some(s) if s.success() => {}
            Some(s) => panic!(
                "rigwatch exited with {} after SIGTERM; log:\n{}",
                describe(s),
                self.log_tail(40)
            ),
            None => {
                self.kill9();
                panic!(
                    "rigwatch did not exit within 60s of SIGTERM; log:\n{}",
                    self.log_tail(40)
                );
            }
        }
    }
}

impl Http {
    /// `POST /api/v2/write?precision=ns`; the status, or the transport error (server gone).
    pub async fn write(&self, lp: &str) -> Result<StatusCode, reqwest::Error> {
        let resp = self
            .client
            .post(format!("{}/api/v2/write?precision=ns", self.base))
            .body(lp.to_owned())
            .send()
            .await?;
        let status = resp.status();
        // Read the body so the connection can be reused.
        let _ = resp.bytes().await?;
        Ok(status)
    }

    /// `GET path` with `params` as the admin: the `data` of a successful answer (a failed
    /// one fails the test).
    pub async fn api_data(&self, path: &str, params: &[(&str, String)]) -> serde_json::Value {
        let r: serde_json::Value = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{path}: {r}");
        r["data"].clone()
    }

    /// Waits up to `secs` seconds for a line containing `needle` in the server's log.
    pub async fn wait_for_log(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log within {secs} s:\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value of the unlabelled sample `name` in `/metrics` (as the admin reads it), or
    /// `None` if there is none.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// As [`Http::write`], failing the test unless the write is acknowledged (204).
    pub async fn write_ok(&self, lp: &str) {
        match self.write(lp).await {
            Ok(StatusCode::NO_CONTENT) => {}
            other => panic!("write not acknowledged: {other:?}\n{}", self.log_tail(40)),
        }
    }

    /// `POST /api/v1/sql`: the JSON rows, or the status and body of a failed query.
    pub async fn try_sql(&self, q: &str) -> Result<serde_json::Value, String> {
        let resp = self
            .client
            .post(format!("{}/api/v1/sql", self.base))
            .body(q.to_owned())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("reading body: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("{status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("bad JSON ({e}): {body}"))
    }

    /// As [`Http::try_sql`], failing the test (with the server log) if the query fails.
    pub async fn sql(&self, q: &str) -> serde_json::Value {
        match self.try_sql(q).await {
            Ok(v) => v,
            Err(e) => panic!("query `{q}` failed: {e}\n{}", self.log_tail(40)),
        }
    }

    /// The rows of a query as a vector of JSON objects.
    pub async fn rows(&self, q: &str) -> Vec<serde_json::Value> {
        match self.sql(q).await {
            serde_json::Value::Array(rows) => rows,
            other => panic!("query `{q}` did not return an array: {other}"),
        }
    }

    /// As [`Http::rows`] for polling rows that a background write has yet to land: a
    /// table or column that does not exist yet reads as no rows; any other failure fails
    /// the test.
    pub async fn rows_when_ready(&self, q: &str) -> Vec<serde_json::Value> {
        match self.try_sql(q).await {
            Ok(serde_json::Value::Array(rows)) => rows,
            Ok(other) => panic!("query `{q}` did not return an array: {other}"),
            Err(e) if e.contains("not found") || e.contains("No field named") => Vec::new(),
            Err(e) => panic!("query `{q}` failed: {e}\n{}", self.log_tail(40)),
        }
    }

    /// `SELECT count(*) FROM "table"`.
    pub async fn count(&self, table: &str) -> u64 {
        let rows = self
            .rows(&format!("SELECT count(*) AS n FROM \"{table}\""))
            .await;
        rows.first()
            .and_then(|r| r["n"].as_u64())
            .unwrap_or_else(|| panic!("count(*) of {table} returned {rows:?}"))
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- last {n} lines of {} ---\n{}",
            self.log_path.display(),
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.kill9();
        }
    }
}

/// "exit status 0", "signal 9 (SIGKILL)", ...
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(6)) => "signal 6 (SIGABRT)".into(),
        (None, Some(9)) => "signal 9 (SIGKILL)".into(),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => format!("{status:?}"),
    }
}

/// The `.wal` segment files of a data directory, oldest first.
pub fn wal_segments(data_dir: &Path) -> Vec<PathBuf> {
    files_with_ext(&data_dir.join("wal"), "wal")
}

/// Every `.parquet` file under `DIR/objects/tables`, sorted by path.
pub fn parquet_files(data_dir: &Path) -> Vec<PathBuf> {
    files_with_ext(&data_dir.join("objects").join("tables"), "parquet")
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A small deterministic generator (splitmix64), so a failing schedule can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// A temporary directory for one test's data and logs; kept (and its path printed) when
/// `RIGWATCH_E2E_KEEP` is set, for looking at a failure afterwards.
pub fn temp_dir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("rigwatch-e2e-")
        .tempdir()
        .expect("create temp dir");
    if std::env::var_os("RIGWATCH_E2E_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

/// The test's seed: `RIGWATCH_E2E_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("RIGWATCH_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `rigwatch rules check` on a file `bad.yml` holding `yaml`: the exit code, stderr and
/// stdout.
pub fn rules_check(yaml: &str) -> (Option<i32>, String, String) {
    let dir = temp_dir();
    let file = dir.path().join("bad.yml");
    std::fs::write(&file, yaml).expect("write the rules file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args(["rules", "check"])
        .arg(&file)
        .output()
        .expect("run rigwatch rules check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
