//! One GPU model table, end to end: the agent simulator reports NVML product names
//! ("NVIDIA H100 80GB HBM3"), and the allocator, the ledger and the rate card see an H100.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::{Value, json};

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_h100s_are_placed_as_h100_and_earn_the_h100_rate() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &["--alloc-tick", "200ms", "--rate", "H100=2.50"],
        &[],
    )
    .await;
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("acme").unwrap();
    let token = auth
        .issue(Role::Agent, Some("acme"), None, "sim")
        .unwrap()
        .token;
    // Seed 0 picks the simulator's first model, the H100 (the same for every seed % 8 == 0).
    assert_eq!(
        rigwatch_ingest::agent::sim::CATALOG[0].name,
        "NVIDIA H100 80GB HBM3"
    );
    let log = dir.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args([
            "agent",
            "--simulate",
            "2",
            "--seed",
            "0",
            "--interval",
            "200ms",
        ])
        .args([
            "--worker",
            "h100-box",
            "--server",
            &server.base,
            "--token",
            &token,
        ])
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn rigwatch agent");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut placed = Value::Null;
    // A job that asks for "H100" by its canonical name is placed on an NVML-named H100.
    while Instant::now() < deadline {
        let rows = server.try_sql("SELECT count(*) AS n FROM gpu").await;
        if rows.is_ok_and(|v| v[0]["n"].as_u64().unwrap_or(0) >= 4) {
            let r = client
                .post(format!("{}/api/v1/jobs", server.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"gpus": 1, "models": ["H100"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            placed = r.json::<Value>().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = placed["data"]["job"]["id"].as_u64().unwrap_or_else(|| {
        let _ = agent.kill();
        panic!(
            "no telemetry from the simulator: {placed}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let mut state = placed["data"]["state"].clone();
    while state != "running" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = client
            .get(format!("{}/api/v1/jobs/{id}", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        state = r.json::<Value>().await.unwrap()["data"]["state"].clone();
    }
    assert_eq!(state, "running", "an H100 job was not placed on the H100s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Live, before any minute has closed: priced at the flag's rate, already earning.
    let live: Value = client
        .get(format!("{}/api/v1/earnings/live", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lease = &live["data"]["leases"][0];
    assert_eq!(lease["model"], "H100", "{live}");
    assert_eq!(lease["rate_micro_per_gpu_hour"], 2_500_000, "{live}");
    // 2.50/h is 694 µ a second: two seconds in, the figure has moved.
    assert!(lease["earned_micro"].as_i64().unwrap() > 0, "{live}");
    assert!(live["data"]["total_micro"].as_i64().unwrap() > 0, "{live}");
    let r = client
        .post(format!("{}/api/v1/jobs/{id}/complete", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = agent.kill();
    let _ = agent.wait();

    let leases = server
        .rows(&format!("SELECT model FROM lease WHERE job_id = '{id}'"))
        .await;
    assert_eq!(leases, [json!({"model": "H100"})]);
    // The ledger priced it at the flag's rate for H100 (not the 0.20/h fallback), in µ, and
    // a lease of seconds already earns: the live figure moves before the first minute closes.
    let mut entries = Vec::new();
    for _ in 0..20 {
        entries = server
            .rows_when_ready("SELECT model, rate_micro_per_gpu_hour, sum(amount_micro) AS micro FROM earnings GROUP BY 1, 2")
            .await;
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["model"], "H100");
    assert_eq!(entries[0]["rate_micro_per_gpu_hour"], 2_500_000);
    assert!(entries[0]["micro"].as_i64().unwrap() > 0, "{entries:?}");
}
