//! Alert rules written for dcgm-exporter data, unchanged: the usual GPU alerts people keep
//! in Prometheus (temperature, memory nearly full, double-bit ECC, power at its limit, a
//! busy GPU whose tensor cores idle, an XID), on DCGM metric and label names. NVIDIA's repository
//! ships no alert rules of its own, so these are the common shapes of community rule files.
//!
//! `rigwatch rules check` accepts the file; the server evaluates it over agent-shaped rows
//! and the alerts fire with dcgm-exporter's labels (`gpu`, `Hostname`, `UUID`,
//! `modelName`) and their annotations rendered; the alerts whose condition does not hold
//! stay silent.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::harness::{ADMIN_TOKEN, Server, rules_check, temp_dir};

const RULES: &str = r#"
groups:
  - name: dcgm-gpu
    interval: 1s
    rules:
      - alert: GPUHighTemperature
        expr: DCGM_FI_DEV_GPU_TEMP > 80
        labels:
          severity: warning
        annotations:
          summary: "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is at {{ $value }} C"
      - alert: GPUMemoryNearlyFull
        expr: DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > 0.95
        labels:
          severity: warning
        annotations:
          summary: "GPU {{ $labels.UUID }} ({{ $labels.modelName }}) memory {{ $value | humanizePercentage }} used"
      - alert: GPUDoubleBitEccErrors
        expr: increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[5m]) > 0
        labels:
          severity: critical
      - alert: GPUPowerAtLimit
        expr: DCGM_FI_DEV_POWER_USAGE / DCGM_FI_DEV_POWER_MGMT_LIMIT > 0.98
        labels:
          severity: info
      - alert: GPUXidError
        expr: DCGM_FI_DEV_XID_ERRORS > 0
        labels:
          severity: critical
        annotations:
          summary: "XID {{ $value }} on GPU {{ $labels.gpu }} of {{ $labels.Hostname }}"
      - alert: GPUTensorCoresIdle
        expr: avg_over_time(DCGM_FI_DEV_GPU_UTIL[5m]) > 50 and avg_over_time(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE[5m]) < 0.05
        labels:
          severity: info
"#;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcgm_alert_rules_run_unchanged() {
    let (code, stderr, stdout) = rules_check(RULES);
    assert_eq!(code, Some(0), "rules check refused them: {stderr}{stdout}");

    let dir = temp_dir();
    let rules = dir.path().join("dcgm-rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--rules", rules.to_str().unwrap()],
        &[],
    )
    .await;
    // GPU 0: hot, memory full, an ECC double-bit error, busy without tensor work.
    // GPU 1: cool, half full, no errors, using its tensor cores.
    let t = now_ns();
    let mut lp = String::new();
    for k in 0..4i64 {
        let ts = t - (3 - k) * 1_000_000_000;
        lp.push_str(&format!(
            "gpu,supplier=acme,worker=node-7,gpu_uuid=GPU-hot,gpu_index=0,model=H100 \
temperature=86,memory_used_mib=80000i,memory_free_mib=1500i,ecc_dbe_total={}i,power_watts=699,\
power_limit_watts=700,utilization=97,tensor_active=0.01 {ts}\n\
gpu,supplier=acme,worker=node-7,gpu_uuid=GPU-cool,gpu_index=1,model=H100 \
temperature=55,memory_used_mib=40000i,memory_free_mib=41500i,ecc_dbe_total=0i,power_watts=300,\
power_limit_watts=700,utilization=90,tensor_active=0.6 {ts}\n",
            k.min(1)
        ));
    }
    // An XID 79 on the hot GPU as the agent records it, and the health engine's verdict on
    // it (which the XID gauge must not count twice).
    lp.push_str(&format!(
        "gpu_fault,supplier=acme,worker=node-7,gpu_uuid=GPU-hot,gpu_index=0,model=H100,kind=xid code=79i,severity=\"hardware\" {t}\n\
gpu_fault,supplier=acme,worker=node-7,gpu_uuid=GPU-hot,model=H100,kind=xid,class=hardware,\
detector=health code=79i,severity=\"critical\" {t}\n"
    ));
    s.write_ok(&lp).await;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let want = [
        "GPUHighTemperature",
        "GPUMemoryNearlyFull",
        "GPUDoubleBitEccErrors",
        "GPUPowerAtLimit",
        "GPUTensorCoresIdle",
        "GPUXidError",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let v: Value = http
            .get(format!("{}/api/v1/alerts", s.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
        let firing = |name: &str| {
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
        };
        if want.iter().all(|n| firing(n)) {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "not all of {want:?} fire: {alerts:#?}\n{}",
            s.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for a in &alerts {
        let l = &a["labels"];
        // Only the hot GPU fires, and its alerts carry dcgm-exporter's labels.
        assert_eq!(l["UUID"], "GPU-hot", "{a}");
        assert_eq!(l["gpu"], "0", "{a}");
        assert_eq!(l["Hostname"], "node-7", "{a}");
        assert_eq!(l["modelName"], "H100", "{a}");
    }
    let by = |n: &str| {
        alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == n)
            .unwrap()
    };
    assert_eq!(
        by("GPUHighTemperature")["annotations"]["summary"],
        "GPU 0 on node-7 is at 86 C"
    );
    assert_eq!(
        by("GPUXidError")["annotations"]["summary"],
        "XID 79 on GPU 0 of node-7"
    );
    // One XID, one series: the health engine's verdict row is not a second one.
    let xid: Value = http
        .get(format!("{}/api/v1/query", s.base))
        .bearer_auth(ADMIN_TOKEN)
        .query(&[("query", "DCGM_FI_DEV_XID_ERRORS")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let series = xid["data"]["result"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{xid}");
    assert_eq!(series[0]["value"][1], "79", "{xid}");
    assert!(series[0]["metric"].get("detector").is_none(), "{xid}");
    let memory = by("GPUMemoryNearlyFull")["annotations"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        memory.starts_with("GPU GPU-hot (H100) memory 98.") && memory.ends_with("% used"),
        "{memory}"
    );
}
