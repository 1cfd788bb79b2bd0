//! Money end to end in the real server: prices typed exactly (`--rate`, `--currency`), no
//! pay while a leased GPU is silent and an `offline` end after the longer limit, and rows
//! from before micro-units read correctly after the upgrade.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One fresh sample for `gpus` H100s of supplier acme on worker w0.
pub fn samples(gpus: &[&str]) -> String {
    let t = now_ms() * 1_000_000;
    gpus.iter()
        .map(|g| {
            format!(
                "gpu,supplier=acme,worker=w0,gpu_uuid={g},gpu_index=0,model=H100 utilization=50.0,temperature=40.0,memory_total_mib=81559i,memory_free_mib=81000i {t}\n"
            )
        })
        .collect()
}

pub async fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.base);
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    }
    .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

async fn live_lease(server: &Server) -> Value {
    let v = admin(server, "GET", "/api/v1/earnings/live", None).await;
    v["data"]["leases"][0].clone()
}

/// Keeps `gpus` reporting every 200 ms for `d`.
async fn report(server: &Server, gpus: &[&str], d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        server.write_ok(&samples(gpus)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_gpu_is_not_paid_and_its_lease_ends_offline() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let args = [
        "--alloc-tick",
        "100ms",
        "--rate",
        "H100=3.6",
        "--pay-grace",
        "1500ms",
        "--offline-after",
        "5s",
    ];
    let server = Server::start(&data, &args, &[]).await;
    server.write_ok(&samples(&["GPU-a"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = admin(&server, "POST", "/api/v1/jobs", Some(json!({"gpus": 1}))).await;
    assert_eq!(v["data"]["state"], "running", "{v}");
    let job = v["data"]["job"]["id"].as_u64().unwrap();

    // Reporting: paid, 1,000 µ a second.
    report(&server, &["GPU-a"], Duration::from_secs(2)).await;
    let l = live_lease(&server).await;
    assert_eq!(l["paused"], false, "{l}");
    assert!(l["earned_micro"].as_i64().unwrap() >= 1_500, "{l}");

    // Silent past the grace: pay pauses, the figure stops, the lease row says so.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let l1 = live_lease(&server).await;
    assert_eq!(l1["paused"], true, "{l1}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let l2 = live_lease(&server).await;
    assert_eq!(
        l1["earned_micro"], l2["earned_micro"],
        "a paused lease earned: {l1} then {l2}"
    );
    // `*`: before any lease has ended there is no `end_ms` column to name.
    let row = server.rows("SELECT * FROM lease").await;
    assert_eq!(row[0]["paused"], true, "{row:?}");
    assert!(row[0]["unpaid"].as_str().unwrap().ends_with('-'), "{row:?}");

    // Heard again: pay resumes.
    report(&server, &["GPU-a"], Duration::from_secs(1)).await;
    let l3 = live_lease(&server).await;
    assert_eq!(l3["paused"], false, "{l3}");
    assert!(l3["unpaid_ms"].as_i64().unwrap() >= 1_000, "{l3}");
    report(&server, &["GPU-a"], Duration::from_millis(600)).await;
    let l4 = live_lease(&server).await;
    assert!(
        l4["earned_micro"].as_i64() > l3["earned_micro"].as_i64(),
        "{l3} then {l4}"
    );

    // Silent past the offline limit: the lease ends `offline`, the job goes back to the queue.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut state = Value::Null;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = admin(&server, "GET", &format!("/api/v1/jobs/{job}"), None).await;
        state = v["data"].clone();
        if state["state"] == "queued" {
            break;
        }
    }
    assert_eq!(state["state"], "queued", "{state}");
    assert_eq!(state["restarts"], 1, "{state}");
    let lease = server
        .rows(
            "SELECT l.start_ms, l.end_ms, l.unpaid_ms, l.end_reason, l.paused, sum(e.amount_micro) AS paid \
             FROM lease l JOIN earnings e ON l.lease_id = e.lease_id \
             GROUP BY l.start_ms, l.end_ms, l.unpaid_ms, l.end_reason, l.paused",
        )
        .await;
    assert_eq!(lease.len(), 1, "{lease:?}");
    let l = &lease[0];
    assert_eq!(l["end_reason"], "offline", "{l}");
    assert_eq!(l["paused"], false, "{l}");
    let (start, end, unpaid) = (
        l["start_ms"].as_i64().unwrap(),
        l["end_ms"].as_i64().unwrap(),
        l["unpaid_ms"].as_i64().unwrap(),
    );
    // Two silences: more than 1 s unpaid in the first, more than 3.5 s in the second.
    assert!(unpaid > 4_500, "{l}");
    // Paid exactly for the time heard: 3.6/h = 1 µ per ms, whole GPU, floor once.
    assert_eq!(l["paid"].as_i64().unwrap(), end - start - unpaid, "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_from_before_micro_units_are_read_after_the_upgrade() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let day = now_ms().div_euclid(86_400_000) - 3;
    let t0 = day * 86_400_000 + 3_600_000;
    // What the previous version wrote: whole cents, no ledger_version; and an old job row.
    let mut old = String::new();
    for m in 0..3i64 {
        let from = t0 + m * 60_000;
        old.push_str(&format!(
            "earnings,lease_id=9,gpu_uuid=GPU-old,supplier=acme,model=H100 amount_minor=4i,to_ms={}i,share_milli=1000i,rate_per_gpu_hour=250i {}\n",
            from + 60_000,
            from * 1_000_000
        ));
    }
    old.push_str(&format!(
        "lease,lease_id=9,job_id=3,gpu_uuid=GPU-old,worker=w0,supplier=acme,model=H100 share_milli=1000i,start_ms={t0}i,end_ms={}i,end_reason=\"lost\" {}\n",
        t0 + 180_000,
        t0 * 1_000_000
    ));
    old.push_str(&format!(
        "job,job_id=3 state=\"queued\",submitted_ms={t0}i,priority=0i,min_gpu_memory_mib=0i,expected_duration_ms=0i,models=\"\",gpus=1i,price_cap_per_gpu_hour=300i,restarts=0i {}\n",
        t0 * 1_000_000
    ));
    let mut server = Server::start(&data, &[], &[]).await;
    server.write_ok(&old).await;
    server.kill9();

    // The upgraded server rewrites them in micro-units, keeping the old fields.
    let server = Server::start(&data, &["--currency", "usd"], &[]).await;
    let rows = server
        .rows(
            "SELECT sum(amount_micro) AS micro, sum(amount_minor) AS minor, min(ledger_version) AS v, \
             max(rate_micro_per_gpu_hour) AS rate, count(*) AS n FROM earnings",
        )
        .await;
    assert_eq!(
        rows,
        [json!({"micro": 120_000, "minor": 12, "v": 2, "rate": 2_500_000, "n": 3})]
    );
    let v = admin(&server, "GET", "/api/v1/earnings/statements", None).await;
    let d = &v["data"]["days"][0];
    assert_eq!(d["accrued_micro"], 120_000, "{v}");
    assert_eq!(d["state"], "settled", "{v}");
    assert_eq!(d["settled_micro"], 120_000, "{v}");
    assert_eq!(v["data"]["currency"], "USD", "{v}");
    let rec = &v["data"]["reconciliation"][0];
    assert_eq!(rec["mismatch_micro"], 0, "{v}");
    assert_eq!(rec["balanced"], true, "{v}");
    // The old job's price cap, 300 cents, is 3,000,000 µ.
    let v = admin(&server, "GET", "/api/v1/jobs/3", None).await;
    assert_eq!(
        v["data"]["job"]["price_cap_micro_per_gpu_hour"], 3_000_000,
        "{v}"
    );

    // A payout against the settled day: recorded once, never more than settled.
    let client = reqwest::Client::new();
    let pay = |body: Value| {
        client
            .post(format!("{}/api/v1/payouts", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    for (body, why) in [
        (
            json!({"supplier": "acme", "amount": "0.13", "reference": "wire-1"}),
            "balance",
        ),
        (
            json!({"supplier": "acme", "amount": "0.105", "reference": "wire-1"}),
            "minor units",
        ),
        (
            json!({"supplier": "acme", "amount": "-1", "reference": "wire-1"}),
            "negative",
        ),
        (
            json!({"supplier": "acme", "amount": "0.01", "reference": ""}),
            "reference",
        ),
        (
            json!({"supplier": "other", "amount": "0.01", "reference": "w"}),
            "balance",
        ),
    ] {
        let r = pay(body.clone()).await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status.as_u16(), 422, "{body}: {text}");
        assert!(text.contains(why), "{body}: {text}");
    }
    let r = pay(json!({"supplier": "acme", "amount": "0.12", "reference": "wire-1"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let r = pay(json!({"supplier": "acme", "amount_micro": 10_000, "reference": "wire-2"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "paid twice over");
    let mut server = server;
    let v = admin(&server, "GET", "/api/v1/earnings/statements", None).await;
    assert_eq!(v["data"]["days"][0]["state"], "paid", "{v}");
    assert_eq!(v["data"]["reconciliation"][0]["payable_micro"], 0, "{v}");

    // After kill -9 the payout is still there, once.
    server.kill9();
    let server = Server::start(&data, &[], &[]).await;
    let v = admin(&server, "GET", "/api/v1/payouts", None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    // An operator who retries after the crash, not knowing whether it landed, cannot pay
    // twice: the reference is taken (and the balance is spent).
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/payouts", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"supplier": "acme", "amount": "0.12", "reference": "wire-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("already has a payout"));
    assert_eq!(v["data"][0]["amount_micro"], 120_000, "{v}");
    let v = admin(&server, "GET", "/api/v1/earnings/statements", None).await;
    assert_eq!(v["data"]["days"][0]["state"], "paid", "{v}");
    assert_eq!(v["data"]["days"][0]["paid_micro"], 120_000, "{v}");
}

#[test]
fn bad_prices_and_currencies_are_refused_naming_the_flag() {
    for (args, needle) in [
        (vec!["--rate", "H100=-1"], "--rate"),
        (vec!["--rate", "H100=2.5000001"], "decimals"),
        (vec!["--rate", "H100=abc"], "--rate"),
        (vec!["--rate", "H100"], "MODEL=AMOUNT"),
        (vec!["--currency", "XYZ"], "currency"),
    ] {
        let dir = temp_dir();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
