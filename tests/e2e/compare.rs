//! `rigwatch bench compare` at a tiny size against the real Prometheus and VictoriaMetrics
//! (Debian packages, installed by .ci/run): every answer must agree and every figure must be
//! there. Timings are only checked to exist, never compared.

use std::process::Command;

use super::harness::temp_dir;

fn installed(bin: &str) -> bool {
    Command::new(bin).arg("--version").output().is_ok()
}

#[test]
fn bench_compare_answers_agree_with_prometheus_and_victoriametrics() {
    if !installed("prometheus") || !installed("victoria-metrics") {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus and victoria-metrics must be installed in CI (see .ci/run)"
        );
        eprintln!("skipping: apt-get install prometheus victoria-metrics");
        return;
    }
    let tmp = temp_dir();
    let json = tmp.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args([
            "bench",
            "compare",
            "--gpus",
            "8",
            "--duration",
            "20m",
            "--runs",
            "1",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run rigwatch bench compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench compare failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("rw/prom"), "no table:\n{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid json");
    assert_eq!(v["agree"], true, "{v:#}");
    assert_eq!(v["dataset"]["values"], 8 * 120 * 20, "{v:#}");
    let queries = v["queries"].as_array().expect("queries");
    assert!(queries.len() >= 10, "{v:#}");
    for q in queries {
        assert_eq!(q["agree"], true, "{q:#}");
        assert!(q["series"].as_u64().unwrap_or(0) > 0, "empty answer: {q:#}");
        for sys in ["rigwatch", "prometheus", "victoriametrics"] {
            assert!(q["median_ms"][sys].as_f64().unwrap_or(-1.0) > 0.0, "{q:#}");
        }
    }
    // Every sample was stored: all three agree on the count over the last hour, and it is
    // 8 GPUs x 114 samples (00:00:05 to 00:18:55; the evaluation time is 00:19:00).
    let count = queries
        .iter()
        .find(|q| q["expr"] == "sum(count_over_time(gpu_power_watts[1h]))")
        .expect("count query");
    assert_eq!(count["first_value"], 8.0 * 114.0, "{count:#}");
    let figures = v["figures"].as_array().expect("figures");
    for f in figures.iter().take(3) {
        for sys in ["rigwatch", "prometheus", "victoriametrics"] {
            assert!(f["values"][sys].as_f64().unwrap_or(0.0) > 0.0, "{f:#}");
        }
    }
    for sys in ["rigwatch", "prometheus", "victoriametrics"] {
        assert!(
            v["stored_bytes"][sys].as_f64().unwrap_or(0.0) > 0.0,
            "{v:#}"
        );
    }
}
