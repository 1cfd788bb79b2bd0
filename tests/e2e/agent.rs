//! The GPU agent end to end: `rigwatch supplier add` (the real binary) for a token, an agent
//! streaming to a real `rigwatch serve` that is killed with SIGKILL and restarted, the
//! agent binary itself killed mid-outage, and the agent's message on a machine without an
//! NVIDIA driver.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{
    AgentConfig, AgentHandle, CollectError, Collector, GpuEvent, GpuInfo, GpuSample, Metric,
};

use super::harness::{Server, temp_dir};

/// `rigwatch supplier add NAME --data-dir DIR`; returns the token it printed.
fn add_supplier(data_dir: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args(["supplier", "add", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run rigwatch supplier add");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "supplier add failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token in: {stdout}"))
        .trim()
        .to_string()
}

/// A TCP forwarder on a fixed local port to whichever server is current, so that the
/// agent keeps one server URL while servers die and start on new ports.
struct Proxy {
    addr: SocketAddr,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let current = backend.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = *current.lock().unwrap();
                conns.spawn(async move {
                    let Some(target) = target else { return };
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Proxy {
            addr,
            backend,
            task,
        }
    }

    fn point_to(&self, target: Option<SocketAddr>) {
        *self.backend.lock().unwrap() = target;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A simulator that records every sample it hands out, and stops producing GPU samples
/// (heartbeats go on) after `ticks`.
struct Recording {
    sim: Simulator,
    ticks_left: usize,
    log: Arc<Mutex<Vec<(usize, i64, f64)>>>,
}

impl Collector for Recording {
    fn inventory(&mut self) -> Result<Vec<GpuInfo>, CollectError> {
        self.sim.inventory()
    }

    fn sample(&mut self, now_ns: i64, out: &mut Vec<GpuSample>) -> Result<(), CollectError> {
        if self.ticks_left == 0 {
            return Ok(());
        }
        self.ticks_left -= 1;
        let from = out.len();
        self.sim.sample(now_ns, out)?;
        let mut log = self.log.lock().unwrap();
        for s in &out[from..] {
            log.push((s.gpu, s.time_ns, s.get(Metric::Utilization).unwrap()));
        }
        Ok(())
    }

    fn events(&mut self, now_ns: i64, out: &mut Vec<GpuEvent>) {
        self.sim.events(now_ns, out)
    }
}

async fn gpu_summary(server: &Server) -> (u64, u64, f64) {
    let rows = server
        .rows(
            "SELECT count(*) AS n, count(DISTINCT concat(gpu_uuid, '/', CAST(time AS VARCHAR))) AS d, \
             sum(utilization) AS u FROM gpu WHERE supplier = 'acme' AND worker = 'node-a'",
        )
        .await;
    let r = &rows[0];
    (
        r["n"].as_u64().unwrap(),
        r["d"].as_u64().unwrap(),
        r["u"].as_f64().unwrap_or(0.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_loses_nothing_across_two_server_kill9s() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let token = add_supplier(&data, "acme");
    let proxy = Proxy::start().await;
    let mut server = Server::start(&data, &[], &[]).await;
    proxy.point_to(Some(server.addr));

    let log = Arc::new(Mutex::new(Vec::new()));
    let interval = Duration::from_millis(100);
    let sim = Simulator::new(4, 21, interval);
    sim.set_fault_rate(0.0);
    let recording = Recording {
        sim,
        ticks_left: 120,
        log: log.clone(),
    };
    let mut config = AgentConfig::new(
        &format!("http://{}", proxy.addr),
        &token,
        "node-a",
        dir.path().join("spool"),
    );
    config.interval = interval;
    config.backoff_base = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(5);
    let agent = AgentHandle::spawn(config, recording).expect("spawn agent");
    let stats = agent.stats.clone();

    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = server.kill9();
        assert!(
            !status.success(),
            "round {round}: server should die by SIGKILL"
        );
        proxy.point_to(None);
        // Let the agent hit the outage and spool.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        server = Server::start(&data, &[], &[]).await;
        proxy.point_to(Some(server.addr));
    }
    assert!(
        stats.batches_spooled.load(Relaxed) > 0,
        "the outages should have sent batches to the spool"
    );

    // Wait for the agent to finish its samples and for everything to arrive.
    let deadline = Instant::now() + Duration::from_secs(90);
    let produced = loop {
        let produced = log.lock().unwrap().len() as u64;
        let done = produced == 4 * 120;
        let (n, _, _) = gpu_summary(&server).await;
        if (done && n >= produced) || Instant::now() > deadline {
            break produced;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await.expect("agent ends cleanly");
    assert_eq!(produced, 4 * 120, "the agent sampled every tick");
    let (n, distinct, util) = gpu_summary(&server).await;
    let want_util: f64 = log.lock().unwrap().iter().map(|r| r.2).sum();
    assert_eq!(
        n,
        produced,
        "every sample stored once: {}",
        server.log_tail(20)
    );
    assert_eq!(distinct, produced, "no sample stored twice");
    assert!(
        (util - want_util).abs() < 1e-6 * want_util.max(1.0),
        "stored values match what was sampled: {util} vs {want_util}"
    );
    assert_eq!(stats.batches_rejected.load(Relaxed), 0);
    assert_eq!(stats.spool.dropped_batches.load(Relaxed), 0);
    server.stop_gracefully().await;
}

/// The gpu-row timestamps in the spool's batches.
fn spooled_gpu_times(dir: &Path) -> Vec<i64> {
    let mut times = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return times;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.to_string_lossy().ends_with(".lp.gz") {
            continue;
        }
        let Ok(gz) = std::fs::read(&p) else {
            continue;
        };
        let Ok(raw) = rigwatch_ingest::gzip::decompress(&gz, 64 << 20) else {
            continue;
        };
        let text = String::from_utf8(raw).expect("spooled batches are UTF-8");
        for line in text.lines().filter(|l| l.starts_with("gpu,")) {
            times.push(line.rsplit(' ').next().unwrap().parse().unwrap());
        }
    }
    times.sort();
    times
}

fn spawn_agent(server: &str, token: &str, spool: &Path, log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args([
            "agent",
            "--simulate",
            "2",
            "--seed",
            "4",
            "--interval",
            "100ms",
        ])
        .args([
            "--worker",
            "edge-9",
            "--max-backoff",
            "300ms",
            "--server",
            server,
        ])
        .args(["--token", token, "--spool-dir"])
        .arg(spool)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn rigwatch agent")
}

#[tokio::test]
async fn agent_binary_spool_survives_kill9_and_drains_when_the_server_comes() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let spool = dir.path().join("spool");
    let token = add_supplier(&data, "acme");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut agent = spawn_agent(&dead, &token, &spool, &dir.path().join("agent1.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while spooled_gpu_times(&spool).len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    let spooled = spooled_gpu_times(&spool);
    assert!(
        spooled.len() >= 20,
        "agent spooled only {} rows; log:\n{}",
        spooled.len(),
        std::fs::read_to_string(dir.path().join("agent1.log")).unwrap_or_default()
    );

    let server = Server::start(&data, &[], &[]).await;
    let mut agent = spawn_agent(&server.base, &token, &spool, &dir.path().join("agent2.log"));
    let last = *spooled.last().unwrap();
    let q = format!(
        "SELECT count(*) AS n FROM gpu WHERE worker = 'edge-9' AND \
         time <= arrow_cast({last}, 'Timestamp(Nanosecond, None)')"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while Instant::now() < deadline {
        // Before the first row arrives the table does not exist and the query fails.
        if let Ok(rows) = server.try_sql(&q).await {
            stored = rows[0]["n"].as_u64().unwrap();
            if stored >= spooled.len() as u64 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(
        stored,
        spooled.len() as u64,
        "every spooled row arrives exactly once; agent log:\n{}",
        std::fs::read_to_string(dir.path().join("agent2.log")).unwrap_or_default()
    );
}

#[tokio::test]
async fn agent_without_a_driver_names_the_library_and_suggests_simulate() {
    if Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let dir = temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args([
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "rw_x",
            "--spool-dir",
        ])
        .arg(dir.path().join("spool"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run rigwatch agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail without NVML: {stderr}");
    assert!(stderr.contains("libnvidia-ml.so.1"), "{stderr}");
    assert!(stderr.contains("no NVIDIA driver found"), "{stderr}");
    assert!(stderr.contains("--simulate N"), "{stderr}");
}

/// Runs `rigwatch supplier ARGS --data-dir DIR` and returns its stdout.
pub fn supplier_cmd(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .arg("supplier")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run rigwatch supplier");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "supplier {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn supplier_commands_work_beside_a_running_server() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    // Added while the server runs: the server picks the token up without a restart.
    let token = add_supplier(&data, "acme");
    let reader = supplier_cmd(&data, &["token", "acme", "--role", "supplier"]);
    assert!(reader.contains("supplier token"), "{reader}");
    let list = supplier_cmd(&data, &["list"]);
    assert!(list.contains("acme"), "{list}");
    let token_id = &token[3..13];
    assert!(list.contains(token_id), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("supplier") && l.contains("acme"))
    );

    let client = reqwest::Client::new();
    let register = || {
        client
            .post(format!("{}/api/v1/agent/register", server.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({"worker": "n1", "gpus": [
                {"index": 0, "uuid": "GPU-e2e", "model": "Tesla T4", "memory_total_mib": 15360}
            ]}))
            .send()
    };
    assert_eq!(register().await.unwrap().status(), 200);
    let out = supplier_cmd(&data, &["revoke", "acme"]);
    assert!(out.contains("revoked `acme`"), "{out}");
    let resp = register().await.unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a revoked supplier's agent token stops working"
    );
    let list = supplier_cmd(&data, &["list"]);
    assert!(list.contains("disabled"), "{list}");
}

/// The agent's own XID rows of GPU-x (fault detection adds rows with `detector=health`; wait
/// for its first one, so that the column exists).
async fn agent_xids(server: &Server) -> Vec<serde_json::Value> {
    let q = "SELECT count(*) AS n FROM gpu_fault WHERE gpu_uuid = 'GPU-x' AND detector IS NULL";
    for _ in 0..100 {
        if let Ok(serde_json::Value::Array(rows)) = server.try_sql(q).await {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.rows(q).await
}

/// A batch retried after its acknowledgement was lost (here: sent again under its id, before
/// and after a kill -9 of the server) is acknowledged but stored once: an XID is counted once.
/// Another batch with the same bytes (another id) is stored; a batch without an id (an older
/// agent) is recognised by its bytes, also after the kill.
#[tokio::test]
async fn a_retried_batch_is_stored_once_even_across_kill_9() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[], &[]).await;
    let token = add_supplier(&data, "acme");
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/api/v1/agent/register", server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"worker": "n1", "gpus": [
            {"index": 0, "uuid": "GPU-x", "model": "Tesla T4", "memory_total_mib": 15360}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let now = rigwatch_ingest::agent::now_ns();
    let batch = format!(
        "gpu_fault,gpu_uuid=GPU-x,kind=xid code=79i,severity=\"hardware\" {now}\n\
         gpu,gpu_uuid=GPU-x utilization=5 {now}\n"
    );
    let old_agent = format!(
        "gpu_fault,gpu_uuid=GPU-x,kind=xid code=79i,severity=\"hardware\" {}\n",
        now - 1
    );
    let send = |base: String, id: Option<&'static str>, body: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let mut req = client
                .post(format!("{base}/api/v1/agent/write?worker=n1"))
                .bearer_auth(&token)
                .body(body);
            if let Some(id) = id {
                req = req.header(rigwatch_ingest::agent::dedup::BATCH_HEADER, id);
            }
            req.send().await.unwrap()
        }
    };
    const ID: Option<&str> = Some("00000000000000aa-1");
    let first = send(server.base.clone(), ID, batch.clone()).await;
    assert_eq!(first.status(), 204);
    assert!(first.headers().get("x-rigwatch-duplicate").is_none());
    let again = send(server.base.clone(), ID, batch.clone()).await;
    assert_eq!(again.status(), 204);
    assert_eq!(again.headers()["x-rigwatch-duplicate"], "1");
    let old = send(server.base.clone(), None, old_agent.clone()).await;
    assert_eq!(old.status(), 204);
    assert!(old.headers().get("x-rigwatch-duplicate").is_none());
    server.kill9();
    let server = Server::start(&data, &[], &[]).await;
    let after = send(server.base.clone(), ID, batch.clone()).await;
    assert_eq!(after.status(), 204);
    assert_eq!(
        after.headers()["x-rigwatch-duplicate"],
        "1",
        "recognised after the restart"
    );
    let old = send(server.base.clone(), None, old_agent).await;
    assert_eq!(old.status(), 204);
    assert_eq!(
        old.headers()["x-rigwatch-duplicate"],
        "1",
        "a batch without an id is recognised by its bytes after the restart"
    );
    let n = agent_xids(&server).await;
    assert_eq!(
        n[0]["n"], 2,
        "two XIDs: one sent three times, one sent twice"
    );
    // A different batch with the same bytes (the next id) is new.
    let other = send(server.base.clone(), Some("00000000000000aa-2"), batch).await;
    assert_eq!(other.status(), 204);
    assert!(other.headers().get("x-rigwatch-duplicate").is_none());
    let n = agent_xids(&server).await;
    assert_eq!(n[0]["n"], 3);
}
