//! The state several nodes share, in real engines: the catalog in PostgreSQL, data in
//! SeaweedFS's S3 gateway, the start-up probe of conditional writes, and the clear refusals
//! when credentials or conditional writes are missing.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use rigwatch_storage::pg::Pg;

use super::earnings::admin;
use super::harness::{Server, temp_dir};
use super::services::{Postgres, S3_ENV, SeaweedFs, keys, postgres, seaweedfs, slot};

/// Serves `rigwatch serve` args for a node keeping its catalog at `pg`.
fn node_args<'a>(pg: &'a Postgres, node: &'a str) -> Vec<&'a str> {
    vec![
        "--catalog",
        &pg.url,
        "--node-id",
        node,
        "--persist-age",
        "1s",
    ]
}

/// Rows of `rw_files` for `table`.
pub(super) async fn catalog_files(pg: &Postgres, table: &str) -> i64 {
    let pg = Pg::connect(&pg.url).await.expect("connect");
    let client = pg.client().await.expect("client");
    client
        .query_one(
            "SELECT count(*) FROM rw_files WHERE table_name = $1",
            &[&table],
        )
        .await
        .expect("count files")
        .get(0)
}

/// Polls `probe` every 200 ms until it answers `Ok`; after `secs` seconds fails the test
/// with `what` and the last `Err` it answered.
pub(super) async fn eventually<T, F, Fut>(secs: u64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("{what} within {secs} s: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn wait_for_files(pg: &Postgres, table: &str, server: &Server) {
    eventually(
        60,
        &format!("a `{table}` file in the PostgreSQL catalog"),
        || async {
            match catalog_files(pg, table).await {
                0 => Err(format!("none yet; log:\n{}", server.log_tail(60))),
                _ => Ok(()),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lives_in_postgres_and_survives_kill9() {
    let _slot = slot();
    let Some(pg) = postgres() else { return };
    let tmp = temp_dir();
    let dir = tmp.path().join("data");
    let mut server = Server::start(&dir, &node_args(&pg, "n1"), &[]).await;
    let lines: String = (0..50)
        .map(|i| {
            format!(
                "cpu,host=h{} v={i} {}\n",
                i % 5,
                1_700_000_000_000_000_000i64 + i * 1_000_000_000
            )
        })
        .collect();
    server.write_ok(&lines).await;
    wait_for_files(&pg, "cpu", &server).await;
    // Written after the persist: only in the WAL.
    server
        .write_ok("cpu,host=late v=99 1700000100000000000\n")
        .await;
    server.kill9();

    // The catalog is not on the object store: PostgreSQL is its one home.
    assert!(
        !dir.join("objects").join("catalog").exists(),
        "a catalog version was written beside the data"
    );
    let server = Server::start(&dir, &node_args(&pg, "n1"), &[]).await;
    assert_eq!(
        server.count("cpu").await,
        51,
        "log:\n{}",
        server.log_tail(40)
    );
    // Tables come back with their definitions.
    let rows = server
        .rows("SELECT max(v) AS m FROM cpu WHERE host = 'late'")
        .await;
    assert_eq!(rows[0]["m"], 99.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_from_a_newer_build_is_refused() {
    let _slot = slot();
    let Some(pg) = postgres() else { return };
    {
        let db = Pg::connect(&pg.url).await.expect("migrate");
        db.client()
            .await
            .unwrap()
            .execute("INSERT INTO rw_migrations (version) VALUES (999)", &[])
            .await
            .unwrap();
    }
    let tmp = temp_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--catalog", &pg.url])
        .env("RIGWATCH_ADMIN_TOKEN", super::harness::ADMIN_TOKEN)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a newer schema:\n{err}");
    assert!(err.contains("schema version 999"), "{err}");
}

/// Runs `rigwatch serve` expecting it to refuse to start; returns its stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let tmp = temp_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("RIGWATCH_ADMIN_TOKEN", super::harness::ADMIN_TOKEN)
        .envs(env.iter().copied())
        .output()
        .expect("run rigwatch");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "rigwatch started:\n{err}");
    err
}

#[test]
fn missing_s3_credentials_are_a_clear_error() {
    let err = refused_start(
        &[
            "--s3-bucket",
            "data",
            "--s3-endpoint",
            "http://127.0.0.1:9",
            "--s3-allow-http",
        ],
        &[],
    );
    assert!(
        err.contains("no S3 credentials") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    let err = refused_start(
        &["--s3-bucket", "data", "--s3-endpoint", "http://127.0.0.1:9"],
        &S3_ENV,
    );
    assert!(err.contains("--s3-allow-http"), "{err}");
}

#[test]
fn modes_that_divide_work_need_a_catalog() {
    for mode in ["ingest", "compact", "query"] {
        let err = refused_start(&["--mode", mode], &[]);
        assert!(
            err.contains(&format!("--mode {mode} needs --catalog")),
            "{err}"
        );
    }
}

/// An S3 proxy in front of `upstream` that drops `If-None-Match`: a store that ignores
/// conditional writes.
async fn header_dropping_proxy(upstream: String) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut req = client.request(method, format!("{upstream}{path}"));
            for (name, value) in &headers {
                if !matches!(name.as_str(), "host" | "if-none-match" | "content-length") {
                    req = req.header(name, value);
                }
            }
            match req.body(body).send().await {
                Ok(r) => {
                    let status = r.status();
                    let mut out = HeaderMap::new();
                    for (name, value) in r.headers() {
                        if !matches!(name.as_str(), "content-length" | "transfer-encoding") {
                            out.insert(name, value.clone());
                        }
                    }
                    (status, out, r.bytes().await.unwrap_or_default())
                }
                Err(_) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new()),
            }
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_seaweedfs_only_if_it_honours_conditional_writes() {
    let _slot = slot();
    let Some(pg) = postgres() else { return };
    let Some(weed) = seaweedfs("rigwatch").await else {
        return;
    };
    // Behind a proxy that drops If-None-Match, both racing writers "win": refused.
    let proxy = header_dropping_proxy(weed.endpoint.clone()).await;
    let err = {
        let mut args = node_args(&pg, "n1");
        args.extend([
            "--s3-bucket",
            "rigwatch",
            "--s3-endpoint",
            &proxy,
            "--s3-allow-http",
        ]);
        refused_start(&args, &S3_ENV)
    };
    assert!(
        err.contains("conditional-write probe") && err.contains("does not honour create-only"),
        "{err}"
    );

    // SeaweedFS itself honours them: the node starts, and its files land in the bucket.
    let tmp = temp_dir();
    let dir = tmp.path().join("data");
    let mut args = node_args(&pg, "n1");
    args.extend([
        "--s3-bucket",
        "rigwatch",
        "--s3-endpoint",
        &weed.endpoint,
        "--s3-allow-http",
    ]);
    let mut server = Server::start(&dir, &args, &S3_ENV).await;
    server
        .write_ok("gpu_probe,worker=w1 v=1 1700000000000000000\n")
        .await;
    wait_for_files(&pg, "gpu_probe", &server).await;
    let files = keys(&weed, "rigwatch", "tables/gpu_probe/").await;
    assert!(
        files.iter().any(|k| k.ends_with(".parquet")),
        "no Parquet file in the bucket: {files:?}"
    );
    assert!(
        keys(&weed, "rigwatch", "probe/").await.is_empty(),
        "the probe left its key"
    );
    server.kill9();
    let server = Server::start(&dir, &args, &S3_ENV).await;
    assert_eq!(server.count("gpu_probe").await, 1);
}

/// `rigwatch serve` args for a node sharing `pg` and `weed`'s bucket.
pub(super) fn shared_args<'a>(
    pg: &'a Postgres,
    weed: &'a SeaweedFs,
    node: &'a str,
) -> Vec<&'a str> {
    let mut args = node_args(pg, node);
    args.extend([
        "--s3-bucket",
        "rigwatch",
        "--s3-endpoint",
        &weed.endpoint,
        "--s3-allow-http",
        "--lease-ttl",
        "2s",
        "--append-only-tables",
        "gpu_fault,gpu_health,events",
    ]);
    args
}

/// PostgreSQL and SeaweedFS for one test, and a directory for its nodes.
pub(super) struct Shared {
    _slot: super::services::Slot,
    pub(super) pg: Postgres,
    weed: SeaweedFs,
    tmp: tempfile::TempDir,
}

impl Shared {
    /// `None` where the engines are not installed (outside CI).
    pub(super) async fn start() -> Option<Shared> {
        let slot = slot();
        let pg = postgres()?;
        let weed = seaweedfs("rigwatch").await?;
        Some(Shared {
            _slot: slot,
            pg,
            weed,
            tmp: temp_dir(),
        })
    }

    pub(super) fn dir(&self, node: &str) -> std::path::PathBuf {
        self.tmp.path().join(node)
    }

    /// `rigwatch serve` as `node` on the shared engines, with `extra` arguments.
    pub(super) async fn node(&self, node: &str, extra: &[&str]) -> Server {
        self.node_env(node, extra, &[]).await
    }

    /// `rigwatch serve` as `node`, once it owns the shard (a node that finds the shard owned
    /// starts as a standby and takes over when the owner's lease is free).
    pub(super) async fn owner(&self, node: &str, extra: &[&str]) -> Server {
        let server = self.node(node, extra).await;
        wait_for_ownership(&server).await;
        server
    }

    /// `rigwatch serve` as `node`, expected to refuse to start; its stderr.
    pub(super) fn refused(&self, node: &str, extra: &[&str]) -> String {
        let mut args = shared_args(&self.pg, &self.weed, node);
        args.extend(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.dir(node))
            .args(&args)
            .envs(S3_ENV.iter().copied())
            .env("RIGWATCH_ADMIN_TOKEN", super::harness::ADMIN_TOKEN)
            .output()
            .expect("run rigwatch");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "rigwatch started:\n{err}");
        err
    }

    async fn node_env(&self, node: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args = shared_args(&self.pg, &self.weed, node);
        args.extend(extra);
        let env: Vec<(&str, &str)> = S3_ENV.iter().chain(env).copied().collect();
        Server::start(&self.dir(node), &args, &env).await
    }
}

/// Waits until `server` logged that it took the shard's lease.
pub(super) async fn wait_for_ownership(server: &Server) {
    server.wait_for_log("took the shard's lease", 30).await
}

fn sigstop(server: &Server, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_is_replaced_and_nothing_acknowledged_is_lost() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let mut n1 = c.node("n1", &[]).await;
    // Some rows reach Parquet (persist after 1 s), the last ones only the shared WAL.
    let mut acked = 0u64;
    for round in 0..6i64 {
        let lines: String = (0..20)
            .map(|i| {
                let t = 1_700_000_000_000_000_000i64 + (round * 20 + i) * 1_000_000_000;
                format!("events,gpu=g{} code={i}i {t}\n", i % 4)
            })
            .collect();
        n1.write_ok(&lines).await;
        acked += 20;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    wait_for_files(&c.pg, "events", &n1).await;
    n1.kill9();
    assert!(
        !keys(&c.weed, "rigwatch", "wal/0/").await.is_empty(),
        "the shard's WAL objects should hold the unpersisted rows"
    );

    // Another node, with its own empty data directory, takes the shard over once n1's lease
    // expires, replays the shard's log past the catalog's coverage, and serves everything.
    let n2 = c.owner("n2", &[]).await;
    assert_eq!(n2.count("events").await, acked, "log:\n{}", n2.log_tail(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_segment_is_not_replayed_so_a_retry_is_stored_once() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let mut n1 = c
        .node_env("n1", &[], &[("RIGWATCH_CRASH_AT", "wal:after_upload")])
        .await;
    let line = "events,gpu=g1 code=43i 1700000000000000000\n";
    // The segment object lands, then the node dies before advancing the head: no answer.
    assert!(n1.write(line).await.is_err(), "the write was acknowledged");
    n1.wait_exit(Duration::from_secs(10)).await;
    assert!(
        keys(&c.weed, "rigwatch", "wal/0/").await.len() == 1,
        "the unacknowledged segment object should be in the bucket"
    );
    // The agent retries on whichever node now owns the shard: stored exactly once.
    let n2 = c.owner("n2", &[]).await;
    n2.write_ok(line).await;
    assert_eq!(n2.count("events").await, 1, "log:\n{}", n2.log_tail(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_its_lease_is_fenced_off_then_stands_by() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let n1 = c.node("n1", &[]).await;
    n1.write_ok("events,gpu=g1 code=1i 1700000000000000000\n")
        .await;
    sigstop(&n1, "STOP");
    let n2 = c.owner("n2", &[]).await;
    n2.write_ok("events,gpu=g1 code=2i 1700000001000000000\n")
        .await;
    sigstop(&n1, "CONT");
    // n1 wakes up believing it owns the shard. Its own WAL append is refused (the head moved
    // on under n2's epoch): 503. Or its renewal noticed first, it restarted as a standby, and
    // passed the write on to n2, which stored it. Never does n1 acknowledge a row itself.
    // The connection may also close unanswered, when n1 restarts its services as a standby
    // with the write in flight: not acknowledged, so it may or may not have reached n2.
    let answer = n1
        .write("events,gpu=g1 code=3i 1700000002000000000\n")
        .await;
    let want = match answer {
        Ok(status) => match status.as_u16() {
            503 => Some(2),
            s if (200..300).contains(&s) => Some(3),
            s => panic!("n1 answered {s}; log:\n{}", n1.log_tail(30)),
        },
        Err(e) if e.is_request() => None,
        Err(e) => panic!("n1 answers: {e:?}"),
    };
    // Once its renewal finds the lease gone, it restarts its services as a standby on the
    // same port: it serves reads of the shard as n2 writes it, and passes writes to n2.
    eventually(20, "n1 restarted as a standby", || async {
        match n1.log() {
            log if log.contains("lost the shard's lease") && log.contains("standing by") => Ok(()),
            _ => Err(n1.log_tail(30)),
        }
    })
    .await;
    let want = match want {
        Some(w) => w,
        None => {
            // Unanswered: what n2 holds once n1 stands by (and a forwarded write had time to
            // land), 2 rows or 3.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let n = n2.count("events").await;
            assert!((2..=3).contains(&n), "{n} rows; log:\n{}", n2.log_tail(40));
            n
        }
    };
    wait_for_count(&n1, "events", want).await;
    eventually(20, "a write through n1, passed on to n2", || async {
        match n1
            .write("events,gpu=g1 code=4i 1700000003000000000\n")
            .await
        {
            Ok(s) if s.is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Its catalog commits were refused too: nothing n1 wrote alone is in the shard.
    assert_eq!(
        n2.count("events").await,
        want + 1,
        "log:\n{}",
        n2.log_tail(40)
    );
    let codes: Vec<i64> = n2
        .rows("SELECT code FROM events ORDER BY time")
        .await
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect();
    let mut expected = vec![1, 2];
    if want == 3 {
        expected.push(3);
    }
    expected.push(4);
    assert_eq!(codes, expected);
    wait_for_count(&n1, "events", want + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_then_takes_the_shard_over_on_the_same_port() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let mut n1 = c.owner("n1", &[]).await;
    // n2 finds the shard owned: it stands by, but serves at once.
    let n2 = c.node("n2", &[]).await;
    assert!(n2.log().contains("standing by"), "{}", n2.log_tail(20));
    let line = |i: i64| {
        format!(
            "events,gpu=g{} code={i}i {}\n",
            i % 2,
            1_700_000_000_000_000_000i64 + i * 1_000_000_000
        )
    };
    // Writes through either node land in the owner's log; reads on either see them all.
    n1.write_ok(&line(0)).await;
    n2.write_ok(&line(1)).await;
    wait_for_count(&n2, "events", 2).await;
    assert_eq!(n1.count("events").await, 2);
    // The standby runs no allocator: its job routes are passed on to the owner.
    let jobs = admin(&n2, "GET", "/api/v1/jobs", None).await;
    assert!(jobs["data"].is_array(), "{jobs}");

    // The owner dies. n2 takes over in place: the address its clients use does not change.
    n1.kill9();
    wait_for_ownership(&n2).await;
    eventually(20, "a write through n2 after the takeover", || async {
        match n2.write(&line(2)).await {
            Ok(s) if s.is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(n2.count("events").await, 3, "log:\n{}", n2.log_tail(40));
    // Once it owns the shard it runs the allocator itself.
    assert!(n2.log().contains("this node's part changed"));
}

/// Polls `count(table)` on `server` until it is `want` (a query node catches up within a
/// second or two).
async fn wait_for_count(server: &Server, table: &str, want: u64) {
    let q = format!("SELECT count(*) AS n FROM \"{table}\"");
    eventually(30, &format!("{want} rows in {table}"), || async {
        let rows = server.rows_when_ready(&q).await;
        match rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0) {
            got if got == want => Ok(()),
            got => Err(format!("{got} rows; log:\n{}", server.log_tail(30))),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_node_reads_everything_and_passes_writes_to_the_owner() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let mut n1 = c.node("n1", &[]).await;
    let q1 = c.node("q1", &["--mode", "query"]).await;
    let batch = |from: i64| -> String {
        (from..from + 10)
            .map(|i| {
                format!(
                    "events,gpu=g{} code={i}i {}\n",
                    i % 3,
                    1_700_000_000_000_000_000i64 + i * 1_000_000_000
                )
            })
            .collect()
    };
    // Written through the owner and through the query node (passed on to the owner).
    n1.write_ok(&batch(0)).await;
    q1.write_ok(&batch(10)).await;
    wait_for_count(&q1, "events", 20).await;
    assert_eq!(n1.count("events").await, 20);
    // Once the owner persists, the query node reads the rows from Parquet instead, still once.
    wait_for_files(&c.pg, "events", &n1).await;
    n1.write_ok(&batch(20)).await;
    wait_for_count(&q1, "events", 30).await;
    let rows = q1
        .rows("SELECT count(DISTINCT code) AS n FROM events")
        .await;
    assert_eq!(rows[0]["n"], 30);
    // PromQL on the query node too.
    let data = q1
        .api_data(
            "/api/v1/query",
            &[
                ("query", "count(count_over_time(events_code[10y]))".into()),
                ("time", "1700000100".into()),
            ],
        )
        .await;
    assert_eq!(data["result"][0]["value"][1], "3", "{data}");

    // Nothing passes unauthenticated: reads are checked here, what is passed on by the owner.
    let anon = reqwest::Client::new();
    let write = anon
        .post(format!("{}/api/v2/write", q1.base))
        .body(batch(90))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status().as_u16(), 401);
    let read = anon
        .post(format!("{}/api/v1/sql", q1.base))
        .body("SELECT count(*) FROM events")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 401);
    let jobs = anon
        .get(format!("{}/api/v1/jobs", q1.base))
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status().as_u16(), 401);
    wait_for_count(&q1, "events", 30).await;

    // The owner dies; another takes over; the query node passes writes to the new owner.
    n1.kill9();
    let n2 = c.node("n2", &[]).await;
    eventually(30, "a write through q1 after the failover", || async {
        match q1.write(&batch(30)).await {
            Ok(s) if s.is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_for_count(&q1, "events", 40).await;
    assert_eq!(n2.count("events").await, 40);
}

/// `rigwatch supplier ARGS --data-dir DIR`; the token it printed, if any.
pub(super) fn supplier_cli(data_dir: &std::path::Path, args: &[&str]) -> Option<String> {
    super::agent::supplier_cmd(data_dir, args)
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .map(|t| t.trim().to_string())
}

/// `token` (acme's read token) tries every read a query node answers itself, and a forged
/// write it passes on, for globex's marker `qzglobexmark`.
async fn acme_learns_nothing_of_globex(base: &str, token: &str) {
    const MARK: &str = "qzglobexmark";
    let http = reqwest::Client::new();
    let mut requests = Vec::new();
    for format in ["json", "jsonl", "csv", "arrow"] {
        for sql in [
            "SELECT * FROM events",
            "SELECT CAST(gpu AS INT) FROM events",
            "SELECT gpu, count(*) FROM events GROUP BY gpu",
        ] {
            requests.push(
                http.post(format!("{base}/api/v1/sql?format={format}"))
                    .body(sql),
            );
        }
        requests.push(
            http.post(format!("{base}/api/v1/dsl?format={format}"))
                .body("events | stats count() by gpu, supplier"),
        );
    }
    for (path, query) in [
        ("query", "query=events_code&time=1700000100"),
        (
            "series",
            "match[]=events_code&start=1600000000&end=1800000000",
        ),
        ("label/gpu/values", "start=1600000000&end=1800000000"),
        ("labels", "start=1600000000&end=1800000000"),
    ] {
        requests.push(http.get(format!("{base}/api/v1/{path}?{query}")));
    }
    // Forged: a read token writing globex's series, passed on to the owner.
    requests.push(http.post(format!("{base}/api/v2/write")).body(format!(
        "events,supplier=globex,gpu={MARK} code=9i 1700000003000000000\n"
    )));
    for req in requests {
        let r = req.bearer_auth(token).send().await.unwrap();
        let (status, headers) = (r.status(), format!("{:?}", r.headers()));
        let body = String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string();
        assert!(
            !body.contains(MARK) && !headers.contains(MARK) && !body.contains("globex"),
            "{status}: {body}"
        );
    }
}

/// The shared supplier and token registry, as JSON text.
pub(super) async fn shared_registry(pg: &Postgres) -> String {
    let db = Pg::connect(&pg.url).await.unwrap();
    let c = db.client().await.unwrap();
    let doc: serde_json::Value = c
        .query_one("SELECT doc FROM rw_auth", &[])
        .await
        .unwrap()
        .get(0);
    doc.to_string()
}

/// `SELECT count(*) FROM events` on `base` as `token`: the status and the count.
async fn count_as(base: &str, token: &str) -> (u16, Option<u64>) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/sql"))
        .bearer_auth(token)
        .body("SELECT count(*) AS n FROM events")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body[0]["n"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppliers_and_tokens_are_shared_by_every_node() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let n1_dir = c.dir("n1");
    let n1 = c.node("n1", &[]).await;
    let q1 = c.node("q1", &["--mode", "query"]).await;
    n1.write_ok(
        "events,supplier=acme,gpu=a code=1i 1700000000000000000\n\
         events,supplier=acme,gpu=b code=2i 1700000001000000000\n\
         events,supplier=globex,gpu=qzglobexmark code=3i 1700000002000000000\n",
    )
    .await;
    // Tokens issued on the owner's data directory (while it runs) reach the query node.
    supplier_cli(&n1_dir, &["add", "acme"]);
    supplier_cli(&n1_dir, &["add", "globex"]);
    let acme = supplier_cli(&n1_dir, &["token", "acme", "--role", "supplier"]).unwrap();
    // Scoped on the query node too: acme sees its two rows, never globex's.
    eventually(20, "acme's two rows on the query node", || async {
        match count_as(&q1.base, &acme).await {
            (200, Some(2)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(count_as(&n1.base, &acme).await, (200, Some(2)));
    // The portal through the query node: the session is made and kept by the owner, and
    // every request carrying it is passed on.
    let http = reqwest::Client::new();
    let login = http
        .post(format!("{}/portal/login", q1.base))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let me: serde_json::Value = http
        .get(format!("{}/portal/api/me", q1.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["supplier"], "acme", "{me}");
    // ...including the allocator's routes, which only the owner serves.
    let live = http
        .get(format!("{}/api/v1/earnings/live", q1.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "{:?}", live.text().await);
    // Tenancy through the query node: acme's read token, on every local read surface and
    // output format (an erroring cast included), and a forged write passed on to the owner,
    // never shows globex's marker in a body or a header.
    acme_learns_nothing_of_globex(&q1.base, &acme).await;
    // A revocation on one node holds on every node.
    supplier_cli(&n1_dir, &["revoke", "acme"]);
    eventually(20, "acme's revoked token refused on q1", || async {
        match count_as(&q1.base, &acme).await {
            (401, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(count_as(&n1.base, &acme).await.0, 401);
    // The shared copy holds hashes only.
    let shared = shared_registry(&c.pg).await;
    assert!(
        !shared.contains(&acme),
        "a token's secret reached PostgreSQL"
    );
    assert!(shared.contains("globex"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_retry_is_recognised_on_whichever_node_gets_it() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let n1_dir = c.dir("n1");
    let mut n1 = c.node("n1", &[]).await;
    let q1 = c.node("q1", &["--mode", "query"]).await;
    let token = supplier_cli(&n1_dir, &["add", "acme"]).expect("agent token");
    // The CLI wrote n1's registry file; n1 passes it on within its exchange interval.
    let id = token
        .split('_')
        .nth(1)
        .expect("rw_<id>_<secret>")
        .to_string();
    eventually(20, "the token in PostgreSQL", || async {
        match shared_registry(&c.pg).await {
            doc if doc.contains(&id) => Ok(()),
            doc => Err(doc),
        }
    })
    .await;
    let client = reqwest::Client::new();
    // Registered through the query node (passed on to the owner) once the token reached it.
    eventually(20, "registration through q1", || async {
        let r = client
            .post(format!("{}/api/v1/agent/register", q1.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({"worker": "w1", "gpus": [
                {"index": 0, "uuid": "GPU-x", "model": "Tesla T4", "memory_total_mib": 15360}
            ]}))
            .send()
            .await
            .unwrap();
        match r.status() {
            s if s == 200 => Ok(()),
            s => Err(s.to_string()),
        }
    })
    .await;
    let now = rigwatch_ingest::agent::now_ns();
    let batch = format!(
        "gpu_fault,gpu_uuid=GPU-x,kind=xid code=79i,severity=\"hardware\" {now}\n\
         gpu,gpu_uuid=GPU-x utilization=5 {now}\n"
    );
    let send = |base: String| {
        let (client, token, batch) = (client.clone(), token.clone(), batch.clone());
        async move {
            client
                .post(format!("{base}/api/v1/agent/write?worker=w1"))
                .bearer_auth(&token)
                .header(
                    rigwatch_ingest::agent::dedup::BATCH_HEADER,
                    "00000000000000bb-7",
                )
                .body(batch)
                .send()
                .await
        }
    };
    // Stored by n1, whose acknowledgement the agent never saw: n1 dies.
    let first = send(n1.base.clone()).await.unwrap();
    assert_eq!(first.status(), 204);
    n1.kill9();
    let n2 = c.node("n2", &[]).await;
    // The agent retries through the query node: n2 recognises the batch n1 stored.
    let again = eventually(30, "the retry acknowledged through q1", || async {
        match send(q1.base.clone()).await {
            Ok(r) if r.status() == 204 => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(again.headers()["x-rigwatch-duplicate"], "1");
    // The agent's own XID rows: fault detection may add its own, with `detector=health`
    // (`*`: the column exists only once it has).
    let q = "SELECT * FROM gpu_fault WHERE gpu_uuid = 'GPU-x' AND kind = 'xid'";
    eventually(20, "the agent's XID stored once", || async {
        let rows = n2.rows_when_ready(q).await;
        match rows.iter().filter(|r| r["detector"].is_null()).count() {
            1 => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;
}
