//! NVIDIA's dcgm-exporter Grafana dashboard, unchanged, against agent-written data.
//!
//! Simulated agents (two suppliers, a data-centre and a consumer model) write `gpu` rows to
//! the real server. Then every panel expression and template-variable query of the dashboard
//! in NVIDIA's dcgm-exporter repository (`grafana/dcgm-exporter-dashboard.json`, gnetId 12239:
//! both its older `instance`-based revision and its current `Hostname`-based one) goes
//! through the Prometheus HTTP API the way Grafana sends it, with the token as the Basic
//! password: variables through `/api/v1/label/<name>/values` and `/api/v1/series`, panels
//! through `/api/v1/query_range` and `/api/v1/query`, with `$var` replaced by the "All" regex
//! and by values the variable queries returned. Each must return series. The profiling
//! (activity) fields have series for the data-centre GPUs only: the consumer cards cannot
//! measure them, so they have none (never zeros).
//!
//! Also: the DCGM names read the same rows as rigwatch's own (`DCGM_FI_DEV_GPU_TEMP` sums to
//! `gpu_temperature`), metadata lists them, and a supplier's token sees only its own GPUs
//! under DCGM names and labels.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rigwatch_common::dcgm;
use rigwatch_ingest::agent::sim::{CATALOG, Simulator};
use rigwatch_ingest::agent::{AgentConfig, AgentHandle};
use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::Value;

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

/// One panel target of the dashboard: its expression (with `$var`s) and the labels its
/// legend shows (`{{gpu}}`), which the results must carry.
struct Panel {
    expr: &'static str,
    legend: &'static [&'static str],
}

/// The older revision (Grafana 6.7): `instance` and `gpu` variables.
const PANELS_INSTANCE: &[Panel] = &[
    Panel {
        expr: r#"DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"}"#,
        legend: &["gpu"],
    },
    Panel {
        expr: r#"avg(DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"})"#,
        legend: &[],
    },
    Panel {
        expr: r#"DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"}"#,
        legend: &["gpu"],
    },
    Panel {
        expr: r#"sum(DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"})"#,
        legend: &[],
    },
    Panel {
        expr: r#"DCGM_FI_DEV_SM_CLOCK{instance=~"$instance", gpu=~"$gpu"} * 1000000"#,
        legend: &["gpu"],
    },
    Panel {
        expr: r#"DCGM_FI_DEV_GPU_UTIL{instance=~"$instance", gpu=~"$gpu"}"#,
        legend: &["gpu"],
    },
    Panel {
        expr: r#"DCGM_FI_DEV_FB_USED{instance=~"$instance", gpu=~"$gpu"}"#,
        legend: &["gpu"],
    },
    Panel {
        expr: r#"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{instance=~"$instance", gpu=~"$gpu"}"#,
        legend: &["gpu"],
    },
];

/// The current revision (Grafana 9.1): `Hostname` and `gpu` variables. `GPU_I_ID` and
/// `GPU_I_PROFILE` are MIG labels, absent without MIG (the dashboard's `renameByRegex`
/// transformation tidies the legend then), and `uuid` is lower-case there: absent too.
const PANELS_HOSTNAME: &[Panel] = &[
    Panel {
        expr: r#"max(DCGM_FI_DEV_GPU_TEMP{Hostname=~"$Hostname", gpu=~"$gpu"}) by (Hostname, gpu, uuid)"#,
        legend: &["Hostname", "gpu"],
    },
    Panel {
        expr: r#"avg(DCGM_FI_DEV_GPU_TEMP{Hostname=~"$Hostname", gpu=~"$gpu"})"#,
        legend: &[],
    },
    Panel {
        expr: r#"max(DCGM_FI_DEV_POWER_USAGE{Hostname=~"$Hostname", gpu=~"$gpu"}) by (Hostname, gpu, uuid)"#,
        legend: &["Hostname", "gpu"],
    },
    Panel {
        expr: r#"sum(max(DCGM_FI_DEV_POWER_USAGE{Hostname=~"$Hostname", gpu=~"$gpu"}) by (gpu))"#,
        legend: &[],
    },
    Panel {
        expr: r#"max(DCGM_FI_DEV_SM_CLOCK{Hostname=~"$Hostname", gpu=~"$gpu"} * 1000000) by (Hostname, UUID, gpu)"#,
        legend: &["Hostname", "gpu"],
    },
    Panel {
        expr: r#"max(DCGM_FI_PROF_GR_ENGINE_ACTIVE{Hostname=~"$Hostname", gpu=~"$gpu"}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)"#,
        legend: &["gpu"],
    },
    Panel {
        expr: r#"max(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{Hostname=~"$Hostname", gpu=~"$gpu"}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)"#,
        legend: &["Hostname", "gpu"],
    },
    Panel {
        expr: r#"max(DCGM_FI_DEV_FB_USED{Hostname=~"$Hostname", gpu=~"$gpu"}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)"#,
        legend: &["Hostname", "gpu"],
    },
];

/// A template variable: `label_values(<selector>, <label>)`, whose selector may use the
/// host variable.
struct Variable {
    selector: &'static str,
    label: &'static str,
}

/// The older revision's variables, as released, and with the `gpu` variable scoped to the
/// chosen instance (a common edit of it).
const VARIABLES_INSTANCE: &[Variable] = &[
    Variable {
        selector: "DCGM_FI_DEV_GPU_TEMP",
        label: "instance",
    },
    Variable {
        selector: "DCGM_FI_DEV_GPU_TEMP",
        label: "gpu",
    },
    Variable {
        selector: r#"DCGM_FI_DEV_GPU_TEMP{instance="$instance"}"#,
        label: "gpu",
    },
];

const VARIABLES_HOSTNAME: &[Variable] = &[
    Variable {
        selector: "DCGM_FI_DEV_FB_FREE",
        label: "Hostname",
    },
    Variable {
        selector: r#"DCGM_FI_DEV_FB_FREE{Hostname=~"$Hostname"}"#,
        label: "gpu",
    },
];

/// Grafana's Prometheus client: Basic auth with the token as password, form-encoded GETs.
struct Grafana {
    base: String,
    client: reqwest::Client,
    token: String,
    start: i64,
    end: i64,
}

impl Grafana {
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .basic_auth("grafana", Some(&self.token))
            .query(params)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status.is_success(),
            "GET {path} {params:?}: {status}: {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "GET {path} {params:?}: {body}");
        v["data"].clone()
    }

    fn range(&self) -> Vec<(&'static str, String)> {
        vec![
            ("start", self.start.to_string()),
            ("end", self.end.to_string()),
        ]
    }

    /// `label_values(selector, label)` as Grafana 9+ runs it, and as older versions did
    /// (through `/api/v1/series`); both must agree.
    async fn label_values(&self, selector: &str, label: &str) -> Vec<String> {
        let mut params = self.range();
        params.push(("match[]", selector.to_string()));
        let values: Vec<String> = self
            .get(&format!("/api/v1/label/{label}/values"), &params)
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let from_series: BTreeSet<String> = self
            .get("/api/v1/series", &params)
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s[label].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            values.iter().cloned().collect::<BTreeSet<_>>(),
            from_series,
            "label_values({selector}, {label}) through /label and /series"
        );
        values
    }

    /// The series of a panel, over the dashboard's default range (last 15 minutes) and at
    /// its end; both must return the same label sets.
    async fn panel(&self, expr: &str) -> Vec<Value> {
        let mut params = self.range();
        params.push(("query", expr.to_string()));
        params.push(("step", "15".to_string()));
        let range = self.get("/api/v1/query_range", &params).await;
        assert_eq!(range["resultType"], "matrix", "{expr}");
        let instant = self
            .get(
                "/api/v1/query",
                &[("query", expr.to_string()), ("time", self.end.to_string())],
            )
            .await;
        assert_eq!(instant["resultType"], "vector", "{expr}");
        let metrics = |v: &Value| -> BTreeSet<String> {
            v["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["metric"].to_string())
                .collect()
        };
        assert_eq!(
            metrics(&range),
            metrics(&instant),
            "{expr}: range vs instant"
        );
        range["result"].as_array().unwrap().clone()
    }
}

/// The DCGM metric names in an expression.
fn dcgm_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("DCGM_FI_"))
        .collect()
}

/// Whether the agent wrote the `gpu` field a DCGM name reads (some non-null value), read
/// through SQL, not PromQL.
async fn written(server: &Server, metric: &str) -> bool {
    let Some(field) = dcgm::field_of(metric) else {
        return false;
    };
    let rows = server
        .rows(&format!("SELECT count({field}) AS n FROM gpu"))
        .await;
    rows[0]["n"].as_u64().unwrap_or(0) > 0
}

fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut out = expr.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// Runs a revision of the dashboard: its variables, then each panel with `$var` = "All"
/// (`.*`) and with the first value each variable query returned.
async fn run_dashboard(
    server: &Server,
    grafana: &Grafana,
    host_var: &str,
    variables: &[Variable],
    panels: &[Panel],
    hosts: &BTreeSet<String>,
    gpus: &BTreeSet<String>,
) {
    let mut values: Vec<(String, Vec<String>)> = Vec::new();
    for v in variables {
        let host = values
            .iter()
            .find(|(n, _)| n == host_var)
            .and_then(|(_, vals)| vals.first().cloned())
            .unwrap_or_default();
        let selector = substitute(v.selector, &[(host_var, &host)]);
        let got = grafana.label_values(&selector, v.label).await;
        let want = if v.label == host_var { hosts } else { gpus };
        let got_set: BTreeSet<String> = got.iter().cloned().collect();
        if selector.contains('{') {
            assert!(
                !got.is_empty() && got_set.is_subset(want),
                "label_values({selector}, {}) = {got:?}, not a non-empty part of {want:?}",
                v.label
            );
        } else {
            assert_eq!(&got_set, want, "label_values({selector}, {})", v.label);
        }
        if !values.iter().any(|(n, _)| n == v.label) {
            values.push((v.label.to_string(), got));
        }
    }
    let first = |name: &str| {
        values
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.first().cloned())
            .unwrap()
    };
    let (host, gpu) = (first(host_var), first("gpu"));
    for p in panels {
        let required = {
            let mut all = true;
            for name in dcgm_names(p.expr) {
                all &= written(server, name).await;
            }
            all
        };
        for vars in [
            [(host_var, ".*"), ("gpu", ".*")],
            [(host_var, host.as_str()), ("gpu", gpu.as_str())],
        ] {
            let expr = substitute(p.expr, &vars);
            let series = grafana.panel(&expr).await;
            if !required {
                assert!(
                    series.is_empty(),
                    "{expr}: the agent does not write it, yet: {series:?}"
                );
                continue;
            }
            assert!(!series.is_empty(), "{expr}: no series");
            for s in &series {
                for l in p.legend {
                    assert!(s["metric"][l].is_string(), "{expr}: no `{l}` in {s}");
                }
                assert!(!s["values"].as_array().unwrap().is_empty(), "{expr}: {s}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nvidias_dcgm_dashboard_runs_unchanged_on_agent_data() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    let auth = AuthStore::open(&data).unwrap();

    // acme: 4 H100s on one worker; globex: 2 RTX 4090s (no ECC, no memory temperature).
    let h100 = CATALOG[0];
    let rtx4090 = CATALOG
        .iter()
        .copied()
        .find(|m| m.name.contains("4090"))
        .unwrap();
    let mut agents = Vec::new();
    for (supplier, worker, models, seed) in [
        ("acme", "acme-w1", vec![h100; 4], 7),
        ("globex", "globex-w1", vec![rtx4090; 2], 8),
    ] {
        let token = auth.add_supplier(supplier).unwrap().token;
        let mut config = AgentConfig::new(
            &server.base,
            &token,
            worker,
            dir.path().join("spool").join(worker),
        );
        config.interval = Duration::from_millis(250);
        let sim = Simulator::with_models(&models, seed, config.interval);
        agents.push(AgentHandle::spawn(config, sim).unwrap());
    }
    // Until every GPU has a few samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = server
            .rows_when_ready("SELECT gpu_uuid, count(*) AS n FROM gpu GROUP BY gpu_uuid")
            .await;
        if rows.len() == 6 && rows.iter().all(|r| r["n"].as_u64().unwrap_or(0) >= 8) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents did not write: {rows:?}\n{}",
            server.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for a in agents {
        a.stop().await.unwrap();
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let grafana = Grafana {
        base: server.base.clone(),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        token: ADMIN_TOKEN.to_string(),
        start: now - 15 * 60,
        end: now + 1,
    };
    let hosts: BTreeSet<String> = ["acme-w1", "globex-w1"].map(String::from).into();
    let gpus: BTreeSet<String> = ["0", "1", "2", "3"].map(String::from).into();

    run_dashboard(
        &server,
        &grafana,
        "instance",
        VARIABLES_INSTANCE,
        PANELS_INSTANCE,
        &hosts,
        &gpus,
    )
    .await;
    run_dashboard(
        &server,
        &grafana,
        "Hostname",
        VARIABLES_HOSTNAME,
        PANELS_HOSTNAME,
        &hosts,
        &gpus,
    )
    .await;

    // Every DCGM name of a field the agent wrote has a series per GPU that wrote it, with
    // dcgm-exporter's labels; a name of a field it did not write has none.
    for d in dcgm::FIELDS {
        let series = grafana.panel(d.metric).await;
        let rows = server
            .rows(&format!(
                "SELECT count(DISTINCT gpu_uuid) AS n FROM gpu WHERE {} IS NOT NULL",
                d.field
            ))
            .await;
        let gpus_with_field = rows[0]["n"].as_u64().unwrap() as usize;
        assert_eq!(series.len(), gpus_with_field, "{}", d.metric);
        for s in &series {
            let m = &s["metric"];
            assert_eq!(m["__name__"], d.metric);
            assert_eq!(m["job"], dcgm::JOB);
            assert_eq!(m["instance"], m["Hostname"]);
            let gpu = m["gpu"].as_str().unwrap();
            assert_eq!(m["device"], format!("nvidia{gpu}"), "{m}");
            for l in [
                "UUID",
                "modelName",
                "supplier",
                "pci_bus_id",
                "DCGM_FI_DRIVER_VERSION",
            ] {
                assert!(m[l].is_string(), "{}: no `{l}` in {m}", d.metric);
            }
            for l in ["gpu_index", "gpu_uuid", "worker", "model"] {
                assert!(m.get(l).is_none(), "{}: rigwatch's `{l}` in {m}", d.metric);
            }
        }
    }
    // The activity (profiling) fields: a series per H100, none for the GeForce cards, which
    // cannot measure them (absent, not zero).
    for field in dcgm::ACTIVITY_FIELDS {
        let name = dcgm::metric_of(field);
        let series = grafana.panel(name).await;
        assert_eq!(series.len(), 4, "{name}: {series:?}");
        assert!(
            series.iter().all(|s| s["metric"]["modelName"] == "H100"),
            "{name}: {series:?}"
        );
        let value: f64 = series[0]["values"][0][1].as_str().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&value), "{name} is a ratio: {value}");
    }

    // The same rows under both names: sums agree at every step.
    let sums = |expr: &'static str| {
        let grafana = &grafana;
        async move {
            let mut params = grafana.range();
            params.push(("query", expr.to_string()));
            params.push(("step", "15".to_string()));
            grafana.get("/api/v1/query_range", &params).await["result"].clone()
        }
    };
    let dcgm_sum = sums("sum(DCGM_FI_DEV_GPU_TEMP)").await;
    assert!(!dcgm_sum.as_array().unwrap().is_empty());
    assert_eq!(dcgm_sum, sums("sum(gpu_temperature)").await);
    // Matchers on derived labels select the right rows: `device` pushes down as `gpu_index`.
    let nvidia1 = grafana
        .panel(r#"DCGM_FI_DEV_FB_USED{device="nvidia1"}"#)
        .await;
    assert_eq!(nvidia1.len(), 2, "{nvidia1:?}");
    assert!(nvidia1.iter().all(|s| s["metric"]["gpu"] == "1"));
    assert!(
        grafana
            .panel(r#"DCGM_FI_DEV_FB_USED{job="dcgm-exporter"}"#)
            .await
            .is_empty()
    );

    // What Grafana's editor reads: label names and metadata.
    let labels = grafana.get("/api/v1/labels", &[]).await;
    for l in [
        "gpu",
        "UUID",
        "device",
        "modelName",
        "Hostname",
        "instance",
        "job",
    ] {
        assert!(
            labels.as_array().unwrap().iter().any(|v| v == l),
            "{l} not in {labels}"
        );
    }
    let names = grafana.get("/api/v1/label/__name__/values", &[]).await;
    assert!(
        names
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "DCGM_FI_DEV_GPU_TEMP")
    );
    let meta = grafana
        .get(
            "/api/v1/metadata",
            &[("metric", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION".to_string())],
        )
        .await;
    assert_eq!(
        meta["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"][0]["type"],
        "counter"
    );
    let meta = grafana.get("/api/v1/metadata", &[]).await;
    assert_eq!(meta["DCGM_FI_DEV_GPU_TEMP"][0]["type"], "gauge", "{meta}");

    // Tenancy: acme's supplier token (as Grafana's Basic password) sees its own GPUs only,
    // however the DCGM labels are matched.
    let acme = auth
        .issue(Role::Supplier, Some("acme"), None, "grafana")
        .unwrap()
        .token;
    let acme = Grafana {
        token: acme,
        ..grafana
    };
    let own = acme.panel("DCGM_FI_DEV_GPU_TEMP").await;
    assert_eq!(own.len(), 4, "{own:?}");
    assert!(own.iter().all(|s| s["metric"]["supplier"] == "acme"));
    for expr in [
        r#"DCGM_FI_DEV_GPU_TEMP{supplier="globex"}"#,
        r#"DCGM_FI_DEV_GPU_TEMP{Hostname="globex-w1"}"#,
        r#"DCGM_FI_DEV_GPU_TEMP{instance=~"globex.*"}"#,
        r#"DCGM_FI_DEV_GPU_TEMP{modelName=~".*4090.*"}"#,
        r#"{__name__=~"DCGM_.+", supplier!="acme"}"#,
    ] {
        assert!(acme.panel(expr).await.is_empty(), "acme saw {expr}");
    }
    assert_eq!(
        acme.label_values("DCGM_FI_DEV_GPU_TEMP", "instance").await,
        ["acme-w1"]
    );
    let globex_gpus: Vec<String> = server
        .rows("SELECT DISTINCT gpu_uuid FROM gpu WHERE supplier = 'globex'")
        .await
        .iter()
        .map(|r| r["gpu_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(globex_gpus.len(), 2);
    for (path, params) in [
        (
            "/api/v1/series",
            vec![("match[]", r#"{__name__=~"DCGM_.+"}"#)],
        ),
        ("/api/v1/label/Hostname/values", vec![]),
        ("/api/v1/label/UUID/values", vec![]),
        (
            "/api/v1/label/modelName/values",
            vec![("match[]", "DCGM_FI_DEV_FB_USED")],
        ),
    ] {
        let params: Vec<(&str, String)> = params
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        let body = acme.get(path, &params).await.to_string();
        assert!(
            !body.contains("globex") && !globex_gpus.iter().any(|u| body.contains(u)),
            "acme saw globex through {path}: {body}"
        );
    }
}
