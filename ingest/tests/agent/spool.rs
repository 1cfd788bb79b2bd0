//! While the server is away the agent spools to disk; the spool survives an agent restart
//! and drains in order; a full spool drops the oldest batches and says so in heartbeats.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{AgentConfig, AgentHandle};

use super::support::AgentServer;

/// An address nothing listens on.
async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn config(server: &str, token: &str, spool: &Path, max: u64) -> AgentConfig {
    let mut c = AgentConfig::new(server, token, "edge-1", spool.to_path_buf());
    c.interval = Duration::from_millis(50);
    c.spool_max_bytes = max;
    c.backoff_base = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.request_timeout = Duration::from_secs(2);
    c
}

/// The gpu-row timestamps in every spooled batch, oldest batch first.
fn spooled_gpu_times(dir: &Path) -> Vec<i64> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".lp.gz"))
        .collect();
    files.sort();
    let mut times = Vec::new();
    for f in files {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines().filter(|l| l.starts_with("gpu,")) {
            times.push(line.rsplit(' ').next().unwrap().parse().unwrap());
        }
    }
    times
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn spool_survives_an_agent_restart_and_drains_when_the_server_returns() {
    let server = AgentServer::start().await;
    let token = server.supplier("acme");
    let spool = server.dir.path().join("agent-spool");
    let dead = dead_address().await;

    let agent = AgentHandle::spawn(
        config(&dead, &token, &spool, 64 << 20),
        Simulator::new(2, 5, Duration::from_millis(50)),
    )
    .unwrap();
    let stats = agent.stats.clone();
    wait_until(Duration::from_secs(20), || {
        stats.spool.batches.load(Relaxed) >= 10
    })
    .await;
    agent.stop().await.unwrap();
    let spooled = spooled_gpu_times(&spool);
    assert!(spooled.len() >= 20, "only {} rows spooled", spooled.len());
    assert_eq!(server.count("gpu").await, 0);

    // A new agent process on the same spool, now with a reachable server.
    let agent = AgentHandle::spawn(
        config(&server.base, &token, &spool, 64 << 20),
        Simulator::new(2, 5, Duration::from_millis(50)),
    )
    .unwrap();
    let stats = agent.stats.clone();
    wait_until(Duration::from_secs(30), || {
        stats.spool.batches.load(Relaxed) == 0
    })
    .await;
    agent.stop().await.unwrap();
    let last_spooled = *spooled.iter().max().unwrap();
    let stored = server
        .scalar(&format!(
            "SELECT count(*) FROM gpu WHERE time <= arrow_cast({last_spooled}, 'Timestamp(Nanosecond, None)')"
        ))
        .await;
    assert_eq!(
        stored,
        spooled.len().to_string(),
        "every spooled row arrives once"
    );
    // Nothing was dropped or rejected on the way.
    assert_eq!(stats.spool.dropped_batches.load(Relaxed), 0);
    assert_eq!(stats.batches_rejected.load(Relaxed), 0);
}

#[tokio::test]
async fn a_full_spool_drops_the_oldest_batches_and_heartbeats_report_it() {
    let server = AgentServer::start().await;
    let token = server.supplier("acme");
    let spool = server.dir.path().join("small-spool");
    let dead = dead_address().await;
    // About four batches of two GPUs fit.
    let max = 4 * 1000;
    let agent = AgentHandle::spawn(
        config(&dead, &token, &spool, max),
        Simulator::new(2, 9, Duration::from_millis(50)),
    )
    .unwrap();
    let stats = agent.stats.clone();
    wait_until(Duration::from_secs(20), || {
        stats.spool.dropped_batches.load(Relaxed) >= 10
    })
    .await;
    agent.stop().await.unwrap();
    let dropped = stats.spool.dropped_batches.load(Relaxed);
    assert!(dropped >= 10, "only {dropped} dropped");
    assert!(stats.spool.bytes.load(Relaxed) <= max);
    let surviving = spooled_gpu_times(&spool);
    let ticks = stats.ticks.load(Relaxed);
    assert!(
        (surviving.len() as u64) < ticks * 2,
        "oldest batches are gone"
    );

    // Restarted with room to spare, so that draining does not evict what is left.
    let agent = AgentHandle::spawn(
        config(&server.base, &token, &spool, 64 << 20),
        Simulator::new(2, 9, Duration::from_millis(50)),
    )
    .unwrap();
    let stats2 = agent.stats.clone();
    wait_until(Duration::from_secs(30), || {
        stats2.spool.batches.load(Relaxed) == 0
    })
    .await;
    // The restarted agent reports the drop count it found on disk, in its own heartbeats.
    wait_until(Duration::from_secs(10), || {
        stats2.batches_acked.load(Relaxed) >= 3
    })
    .await;
    agent.stop().await.unwrap();
    let reported: u64 = server
        .scalar("SELECT max(spool_dropped_batches) FROM heartbeat")
        .await
        .parse()
        .unwrap();
    assert!(
        reported >= dropped,
        "heartbeats report {reported}, agent dropped {dropped}"
    );
    // The oldest ticks are missing; the newest spooled ones arrived.
    let min_seq: u64 = server
        .scalar(&format!(
            "SELECT min(seq) FROM heartbeat WHERE time <= arrow_cast({}, 'Timestamp(Nanosecond, None)')",
            surviving.last().unwrap()
        ))
        .await
        .parse()
        .unwrap();
    assert!(min_seq > 0, "heartbeat seq 0 should have been dropped");
    let first_surviving = surviving[0];
    let stored = server
        .scalar(&format!(
            "SELECT count(*) FROM gpu WHERE time >= arrow_cast({first_surviving}, 'Timestamp(Nanosecond, None)') \
             AND time <= arrow_cast({}, 'Timestamp(Nanosecond, None)')",
            surviving.last().unwrap()
        ))
        .await;
    assert_eq!(stored, surviving.len().to_string());
}
