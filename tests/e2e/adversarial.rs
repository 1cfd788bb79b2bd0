//! Supplier against supplier: an attacker's walk over every query surface and output format.
//!
//! Two suppliers, each with a read token, an agent and an extender token, seed data through
//! their own agents (and the allocator leases their GPUs), every value carrying a random
//! marker of its supplier: GPU UUIDs, worker names, regions, driver versions, fault severities,
//! heartbeat versions, plus an operator-written table. Supplier A then tries, with each of
//! its credentials, every route, SQL in every output format (casts that fail on a value, CASE,
//! regex, division by zero, EXPLAIN, information_schema, SHOW/DESCRIBE, aggregates over
//! strings, joins, top-k), PromQL and its metadata endpoints, the portal's event stream,
//! statements, inventory and the extender, and forges agent rows and GPU claims for B's GPUs.
//!
//! The oracle: no byte of B's markers (or B's name) appears in any body or header A gets,
//! the answers to "does B's value exist?" and "does a made-up value exist?" are the same, and
//! nothing A does changes B's GPUs, leases or faults.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::{Value, json};

use super::harness::{Rng, Server, seed, temp_dir};

/// One supplier of the test: its credentials and the marker in all its values.
struct Tenant {
    name: String,
    mark: String,
    read: String,
    agent: String,
    extender: String,
    worker: String,
    uuids: Vec<String>,
}

impl Tenant {
    fn new(auth: &AuthStore, rng: &mut Rng, label: &str) -> Tenant {
        let mark = format!("qz{label}{:010x}", rng.next_u64() & 0xff_ffff_ffff);
        let name = format!("sup-{mark}");
        auth.add_supplier(&name).unwrap();
        let issue = |role| auth.issue(role, Some(&name), None, "t").unwrap().token;
        Tenant {
            read: issue(Role::Supplier),
            agent: issue(Role::Agent),
            extender: issue(Role::Extender),
            worker: format!("w-{mark}"),
            uuids: (0..2).map(|i| format!("GPU-{mark}-{i}")).collect(),
            name,
            mark,
        }
    }

    /// What must never reach the other supplier.
    fn secrets(&self) -> [&str; 2] {
        [&self.mark, &self.name]
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Registers the tenant's worker and GPUs, then writes telemetry, a fault and a heartbeat.
async fn seed_agent(http: &reqwest::Client, base: &str, t: &Tenant) {
    let gpus: Vec<Value> = t
        .uuids
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({
                "index": i, "uuid": u, "model": "NVIDIA H100 80GB HBM3",
                "memory_total_mib": 81559, "pci_bus_id": format!("0000:0{i}:00.0"),
                "driver_version": format!("550-{}", t.mark), "cuda_version": "12.4",
            })
        })
        .collect();
    let r = http
        .post(format!("{base}/api/v1/agent/register"))
        .bearer_auth(&t.agent)
        .json(&json!({"worker": t.worker, "agent_version": format!("v-{}", t.mark), "gpus": gpus}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let now = now_ns();
    let mut lp = String::new();
    for k in 0..5i64 {
        let ts = now - (5 - k) * 1_000_000_000;
        for (i, u) in t.uuids.iter().enumerate() {
            lp.push_str(&format!(
                "gpu,gpu_uuid={u},gpu_index={i},model=H100,region=r-{m} utilization={},memory_used_mib=1000,memory_free_mib=80559,temperature=55,power_watts=300,memory_total_mib=81559i,driver_version=\"550-{m}\" {ts}\n",
                20 + 10 * k,
                m = t.mark
            ));
        }
        lp.push_str(&format!(
            "heartbeat,region=r-{m} seq={k}i,gpus=2i,agent_version=\"v-{m}\" {ts}\n",
            m = t.mark
        ));
        lp.push_str(&format!(
            "host,region=r-{m} cpu_utilization={},cpu_count=32i,memory_total_mib=65536i,memory_used_mib={}i,net_rx_errors_total={k}i {ts}\n",
            30 + k,
            1000 * k,
            m = t.mark
        ));
    }
    // An application XID (no hardware fault, so the GPU stays placeable).
    lp.push_str(&format!(
        "gpu_fault,gpu_uuid={},gpu_index=0,kind=xid code=31i,severity=\"sev-{}\" {now}\n",
        t.uuids[0], t.mark
    ));
    let r = http
        .post(format!("{base}/api/v1/agent/write?worker={}", t.worker))
        .bearer_auth(&t.agent)
        .body(lp)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Counts the probes and checks each answer for the other supplier's secrets.
struct Probe<'a> {
    http: reqwest::Client,
    base: String,
    forbidden: [&'a str; 2],
    cases: usize,
}

impl Probe<'_> {
    /// Sends `req`, fails if the answer carries a forbidden string; returns status and body.
    async fn send(&mut self, what: &str, req: reqwest::RequestBuilder) -> (StatusCode, String) {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status();
        let mut seen = String::new();
        for (k, v) in resp.headers() {
            seen.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let body = resp.bytes().await.unwrap_or_default();
        for secret in self.forbidden {
            let hay = [seen.as_bytes(), &body[..]];
            for h in hay {
                assert!(
                    !h.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{what} answered {status} with the other supplier's `{secret}`:\n{}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        // An attacker's query may fail, but never as a server failure that a retry could
        // turn into a different answer.
        assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR
                || String::from_utf8_lossy(&body).contains("request id"),
            "{what}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        self.cases += 1;
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// SQL an attacker sends: each tries to make another supplier's value appear in a result, a
/// plan, a schema or an error.
const SQL: &[&str] = &[
    "SELECT * FROM gpu",
    "SELECT gpu_uuid, worker, model, supplier FROM gpu LIMIT 1",
    "SELECT DISTINCT region, worker FROM gpu",
    "SELECT * FROM gpu WHERE CAST(gpu_uuid AS INT) = 0",
    "SELECT * FROM gpu WHERE CAST(worker AS INT) = 0 OR CAST(region AS DOUBLE) > 1",
    "SELECT * FROM gpu WHERE CAST(driver_version AS BIGINT) > 0",
    "SELECT CASE WHEN gpu_uuid <> '' THEN CAST(concat(gpu_uuid, 'x') AS INT) ELSE 0 END FROM gpu",
    "SELECT arrow_cast(gpu_uuid, 'Int32') FROM gpu",
    "SELECT * FROM heartbeat WHERE CAST(agent_version AS INT) = 1",
    "SELECT * FROM host",
    "SELECT * FROM host WHERE CAST(worker AS INT) = 0 OR CAST(region AS INT) = 0",
    "SELECT worker, max(cpu_utilization) FROM host GROUP BY worker",
    "SELECT * FROM gpu_fault WHERE CAST(severity AS BIGINT) > 0",
    "SELECT * FROM gpu_inventory WHERE CAST(driver_version AS INT) = 1",
    "SELECT regexp_match(gpu_uuid, '(') FROM gpu",
    "SELECT regexp_replace(gpu_uuid, '^(.*)$', '[\\1]') FROM gpu",
    "SELECT 1 / (CAST(utilization AS BIGINT) - CAST(utilization AS BIGINT)) FROM gpu",
    "SELECT string_agg(gpu_uuid, ','), array_agg(DISTINCT worker), approx_distinct(region) FROM gpu",
    "SELECT min(gpu_uuid), max(gpu_uuid), min(worker), max(region) FROM gpu",
    "SELECT count(*), count(DISTINCT gpu_uuid) FROM gpu",
    "SELECT * FROM gpu ORDER BY gpu_uuid DESC LIMIT 1",
    "SELECT * FROM gpu ORDER BY region ASC LIMIT 1",
    "SELECT a.gpu_uuid, b.gpu_uuid FROM gpu a JOIN gpu b ON a.gpu_uuid <> b.gpu_uuid LIMIT 50",
    "SELECT * FROM gpu WHERE gpu_uuid IN (SELECT gpu_uuid FROM gpu_fault)",
    "SELECT * FROM lease",
    "SELECT * FROM lease WHERE CAST(gpu_uuid AS INT) = 0",
    "SELECT * FROM earnings",
    "SELECT * FROM earnings WHERE CAST(concat(amount_micro, 'x') AS INT) = 0",
    "SELECT * FROM custom_t",
    "SELECT * FROM custom_t WHERE CAST(tagx AS INT) = 0 OR CAST(note AS INT) = 0",
    "SELECT * FROM datafusion.public.gpu",
    "SELECT * FROM job",
    "SELECT * FROM rate_card",
    "SELECT * FROM security_event",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM information_schema.columns",
    "SHOW TABLES",
    "SHOW COLUMNS FROM gpu",
    "DESCRIBE gpu",
    "EXPLAIN SELECT * FROM gpu WHERE region = 'x'",
    "EXPLAIN ANALYZE SELECT * FROM gpu WHERE region = 'x'",
    "EXPLAIN VERBOSE SELECT * FROM gpu",
    "EXPLAIN ANALYZE SELECT count(*) FROM gpu_fault",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r, gpu LIMIT 1",
    "SELECT * FROM 'rigwatch://store/gpu'",
    "SELECT arrow_typeof(gpu_uuid), gpu_uuid FROM gpu LIMIT 1",
    "SELECT first_value(gpu_uuid) OVER (ORDER BY time DESC) FROM gpu LIMIT 1",
];

/// Pipe-DSL queries an attacker sends: the same aims as the SQL above (values in results,
/// errors, suggestions and generated SQL), through every stage, join and source.
const DSL: &[&str] = &[
    "gpus",
    "gpus[1h] | select gpu_uuid, worker, region, driver_version, supplier",
    "gpus | stats count() by supplier, worker, gpu_uuid, region, driver_version",
    "gpus | stats min(gpu_uuid), max(gpu_uuid), min(worker), max(region), count_distinct(gpu_uuid)",
    "gpus | where supplier != \"\" or true | stats count() by supplier",
    "gpus | top 1 by gpu_uuid",
    "gpus | sort region desc, worker | select region, worker",
    "gpus | extend x = upper(gpu_uuid) | stats count() by x",
    "gpus | where gpu_uuid in (\"a\", \"b\") or not worker == \"\" | select worker",
    "gpus[1h] | stats avg(rate(energy_mj, 1m)), max(temperature) by gpu_uuid, bucket(1m)",
    "gpus | where utilization / 0 > 1",
    "gpus | stats sum(gpu_uuid)",
    "gpus | where gpu_uuidd == \"x\"",
    "gpus | where xid_class(driver_version) == \"x\"",
    "faults | extend c = xid_class(code) | stats count() by c, severity, gpu_uuid",
    "heartbeats | stats max(seq), max(rate(seq, 1m)) by worker, agent_version, region",
    "hosts | stats max(cpu_utilization), max(rate(net_rx_errors_total, 1m)) by worker, region, supplier",
    "hosts | join gpus on worker | select hosts.worker, gpus.gpu_uuid",
    "leases | stats count() by supplier, gpu_uuid, worker",
    "leases | join gpus on gpu_uuid | stats count() by gpus.worker, gpus.region, leases.supplier",
    "gpus | join leases on gpu_uuid == gpu_uuid | select leases.worker, gpus.driver_version",
    "earnings | stats sum(amount) by supplier, gpu_uuid, lease_id",
    "earnings | join leases on lease_id | select earnings.supplier, leases.gpu_uuid",
    "jobs | stats count() by state",
    "health | stats count() by supplier",
    "promql(\"{__name__=~\\\".+\\\"}\", step=5s)[2m]",
    "promql(\"count by (gpu_uuid, worker, region, supplier) (gpu_utilization)\", step=5s)[2m] | stats count() by gpu_uuid, worker, region, supplier",
    "promql(\"label_replace(gpu_utilization, \\\"x\\\", \\\"$1\\\", \\\"gpu_uuid\\\", \\\"(.*)\\\")\", step=5s)[2m] | stats count() by x",
    "promql(\"rigwatch_earnings_total\", step=5s)[2m]",
    "promql(\"gpu_utilization\", step=5s)[2m] | join gpus on gpu_uuid | select gpus.worker",
    "explain gpus | where supplier == \"x\" | stats count() by gpu_uuid",
    "gpus | stats count() by supplier | explain",
];

/// PromQL an attacker sends.
const PROMQL: &[&str] = &[
    "{__name__=~\".+\"}",
    "gpu_utilization",
    "count by (gpu_uuid, worker, region, supplier) (gpu_utilization)",
    "label_replace(gpu_utilization, \"x\", \"$1\", \"gpu_uuid\", \"(.*)\")",
    "topk(1, gpu_utilization)",
    "count_values(\"v\", gpu_temperature)",
    "group by (region) (heartbeat_seq)",
    "host_cpu_utilization",
    "DCGM_FI_DEV_XID_ERRORS",
    "count by (Hostname, UUID, supplier, region) (DCGM_FI_DEV_XID_ERRORS)",
    "max by (worker, region, supplier) (rate(host_net_rx_errors_total[1m]))",
    "rigwatch_earnings_total",
    "rigwatch_faults_total",
    "gpu_fault_code",
    "sum by (worker) (rate(gpu_utilization[1m]))",
    "absent(gpu_utilization{region=\"nowhere\"})",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplier_sees_touches_and_learns_nothing_of_another() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--alloc-tick", "200ms"], &[]).await;
    let auth = AuthStore::open(&data).unwrap();
    let mut rng = Rng::new(seed(0xad5e));
    let a = Tenant::new(&auth, &mut rng, "a");
    let b = Tenant::new(&auth, &mut rng, "b");
    let http = client();
    let base = server.base.clone();
    seed_agent(&http, &base, &a).await;
    seed_agent(&http, &base, &b).await;
    // An operator-written table with a supplier tag (operators may write any table).
    let t = now_ns();
    server
        .write_ok(&format!(
            "custom_t,supplier={},tagx=t-{m} note=\"n-{m}\",v=1 {t}\ncustom_t,supplier={},tagx=t-{n} note=\"n-{n}\",v=2 {t}\n",
            a.name,
            b.name,
            m = a.mark,
            n = b.mark
        ))
        .await;
    // B's cluster binds a pod on one of B's GPUs through B's extender.
    let b_pod = json!({
        "metadata": {"name": "pb", "uid": "uid-b-1"},
        "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    });
    for (op, body) in [
        ("filter", json!({"Pod": b_pod, "NodeNames": [b.worker]})),
        ("bind", json!({"PodUID": "uid-b-1", "Node": b.worker})),
    ] {
        let v: Value = http
            .post(format!("{base}/k8s/{}/{op}", b.extender))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            v["Error"].as_str().unwrap_or("").is_empty(),
            "B's {op}: {v}"
        );
    }
    // The allocator leases the other three GPUs: each supplier has leases, earnings, jobs.
    for _ in 0..3 {
        let r = http
            .post(format!("{base}/api/v1/jobs"))
            .bearer_auth(super::harness::ADMIN_TOKEN)
            .json(&json!({"gpus": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }
    let b_leases = format!(
        // `*`: `end_reason` exists as a column only once some lease has ended.
        "SELECT * FROM lease WHERE supplier = '{}' ORDER BY lease_id",
        b.name
    );
    let mut before = Vec::new();
    for _ in 0..100 {
        before = server.rows_when_ready(&b_leases).await;
        if before.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(before.len(), 2, "B's GPUs were not leased: {before:?}");
    let b_faults = format!(
        "SELECT count(*) AS n FROM gpu_fault WHERE supplier = '{}'",
        b.name
    );
    let faults_before = server.rows(&b_faults).await;

    let mut probe = Probe {
        http: http.clone(),
        base: base.clone(),
        forbidden: b.secrets(),
        cases: 0,
    };

    // SQL, in every output format, with A's read token.
    for q in SQL {
        for format in ["json", "jsonl", "csv", "arrow"] {
            let req = probe
                .http
                .post(format!("{}/api/v1/sql?format={format}", probe.base))
                .bearer_auth(&a.read)
                .body(q.to_string());
            let (status, body) = probe.send(&format!("SQL ({format}) `{q}`"), req).await;
            if q.starts_with("EXPLAIN") {
                assert_eq!(status, StatusCode::FORBIDDEN, "`{q}`: {body}");
            }
        }
    }
    // The pipe DSL, in every output format, with A's read token.
    for q in DSL {
        for format in ["json", "jsonl", "csv", "arrow"] {
            let req = probe
                .http
                .post(format!("{}/api/v1/dsl?format={format}", probe.base))
                .bearer_auth(&a.read)
                .body(q.to_string());
            let (status, body) = probe.send(&format!("DSL ({format}) `{q}`"), req).await;
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "DSL `{q}`: {status} {body}"
            );
        }
    }
    // The DSL's vocabulary (for the console's completion): a token is needed, and it is
    // static, so nothing of B's is in it.
    let r = http
        .get(format!("{base}/api/v1/dsl/vocabulary"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let req = probe
        .http
        .get(format!("{}/api/v1/dsl/vocabulary", probe.base))
        .bearer_auth(&a.read);
    let (status, body) = probe.send("DSL vocabulary", req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("\"stats\"") && body.contains("\"gpu\""),
        "{body}"
    );
    let req = probe
        .http
        .post(format!("{}/api/v1/dsl", probe.base))
        .bearer_auth(&a.read)
        .body("gpus | stats count() as n, count_distinct(gpu_uuid) as g");
    let (_, body) = probe.send("own DSL count", req).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&v[0]["n"], &v[0]["g"]), (&json!(10), &json!(2)), "{body}");
    // A does see its own rows, and only those (a count answered from statistics would be
    // the whole table's).
    let req = probe
        .http
        .post(format!("{}/api/v1/sql", probe.base))
        .bearer_auth(&a.read)
        .body("SELECT count(*) AS n, count(DISTINCT gpu_uuid) AS g FROM gpu");
    let (_, body) = probe.send("own count", req).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["n"], 10, "{body}");
    assert_eq!(v[0]["g"], 2, "{body}");
    let req = probe
        .http
        .post(format!("{}/api/v1/sql?format=arrow", probe.base))
        .bearer_auth(&a.read)
        .body("SELECT gpu_uuid FROM gpu LIMIT 1");
    let (status, body) = probe.send("own arrow", req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(&a.mark),
        "A's own value is in its Arrow answer"
    );

    // Existence oracles: B's real value and a made-up one get the same answer.
    for (table, col, real) in [
        ("gpu", "gpu_uuid", b.uuids[0].as_str()),
        ("gpu", "worker", b.worker.as_str()),
        ("heartbeat", "supplier", b.name.as_str()),
        ("host", "worker", b.worker.as_str()),
    ] {
        let fake = real.replace(&b.mark, "qzzzzzzzzzzzz");
        let mut answers = Vec::new();
        for v in [real, fake.as_str()] {
            let q = format!("SELECT count(*) AS n FROM {table} WHERE {col} = '{v}'");
            let r = http
                .post(format!("{base}/api/v1/sql"))
                .bearer_auth(&a.read)
                .body(q)
                .send()
                .await
                .unwrap();
            answers.push((r.status(), r.text().await.unwrap()));
            probe.cases += 1;
        }
        assert_eq!(answers[0], answers[1], "{table}.{col}");
        let mut answers = Vec::new();
        for v in [real, fake.as_str()] {
            let q = format!(
                "{} | where {col} == \"{v}\" | stats count() as n",
                match table {
                    "heartbeat" => "heartbeats",
                    "host" => "hosts",
                    _ => "gpus",
                }
            );
            let r = http
                .post(format!("{base}/api/v1/dsl"))
                .bearer_auth(&a.read)
                .body(q)
                .send()
                .await
                .unwrap();
            answers.push((r.status(), r.text().await.unwrap()));
            probe.cases += 1;
        }
        assert_eq!(answers[0], answers[1], "DSL {table}.{col}");
        let q = format!("count(gpu_utilization{{{col}=\"{real}\"}})");
        let r = http
            .get(format!("{base}/api/v1/query"))
            .bearer_auth(&a.read)
            .query(&[("query", q.as_str())])
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        assert!(body.contains("\"result\":[]"), "{q}: {body}");
    }

    // PromQL: instant and range.
    let (start, end) = (
        (t / 1_000_000_000 - 60).to_string(),
        (t / 1_000_000_000 + 5).to_string(),
    );
    for q in PROMQL {
        let req = probe
            .http
            .get(format!("{}/api/v1/query", probe.base))
            .bearer_auth(&a.read)
            .query(&[("query", *q)]);
        probe.send(&format!("PromQL `{q}`"), req).await;
        let req = probe
            .http
            .post(format!("{}/api/v1/query_range", probe.base))
            .bearer_auth(&a.read)
            .form(&[
                ("query", *q),
                ("start", &start),
                ("end", &end),
                ("step", "5"),
            ]);
        probe.send(&format!("PromQL range `{q}`"), req).await;
    }

    // Metadata, portal, statements, inventory: every read route a supplier may call.
    let mut gets: Vec<String> = vec![
        "/api/v1/labels".into(),
        // With a range and no match[]: the label columns are read (no samples).
        "/api/v1/labels?start=0&end=9999999999".into(),
        "/api/v1/labels?match[]={__name__=~\".%2B\"}".into(),
        "/api/v1/series?match[]={__name__=~\".%2B\"}".into(),
        "/api/v1/metadata".into(),
        "/api/v1/status/buildinfo".into(),
        "/api/v1/earnings/statements".into(),
        "/api/v1/earnings/live".into(),
        "/api/v1/payouts".into(),
        "/api/v1/agent/inventory".into(),
        "/portal/api/me".into(),
        "/portal/api/dashboards".into(),
        "/portal/events?once=1".into(),
        "/portal".into(),
    ];
    for label in [
        "gpu_uuid",
        "worker",
        "region",
        "supplier",
        "__name__",
        "model",
        "severity",
        "tagx",
        "driver_version",
    ] {
        gets.push(format!("/api/v1/label/{label}/values"));
        gets.push(format!(
            "/api/v1/label/{label}/values?start=0&end=9999999999"
        ));
    }
    let dashboards = http
        .get(format!("{base}/portal/api/dashboards"))
        .bearer_auth(&a.read)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap_or(Value::Null);
    for d in dashboards.as_array().into_iter().flatten() {
        if let Some(id) = d["id"].as_str().or_else(|| d["name"].as_str()) {
            gets.push(format!("/portal/api/dashboards/{id}"));
            gets.push(format!("/portal/api/dashboards/{id}/grafana"));
        }
    }
    for path in &gets {
        for (who, token) in [
            ("read", &a.read),
            ("agent", &a.agent),
            ("extender", &a.extender),
        ] {
            let req = probe
                .http
                .get(format!("{}{path}", probe.base))
                .bearer_auth(token);
            probe.send(&format!("{who} GET {path}"), req).await;
        }
    }
    // Operator routes: refused, and the refusal says nothing of B.
    for (method, path) in [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/1"),
        ("POST", "/api/v1/jobs/1/complete"),
        ("DELETE", "/api/v1/jobs/1"),
        ("GET", "/api/v1/alerts"),
        ("GET", "/api/v1/rules"),
        ("GET", "/metrics"),
    ] {
        for token in [&a.read, &a.agent, &a.extender] {
            let req = probe
                .http
                .request(method.parse().unwrap(), format!("{}{path}", probe.base))
                .bearer_auth(token);
            let (status, body) = probe.send(&format!("{method} {path}"), req).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        }
    }
    // The extender token is valid on /k8s only; read and agent tokens are not valid there.
    for token in [&a.read, &a.agent] {
        let req = probe
            .http
            .post(format!("{}/k8s/{token}/filter", probe.base))
            .json(&json!({}));
        let (status, _) = probe.send("k8s with a non-extender token", req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let pod = json!({
        "metadata": {"name": "p", "uid": "uid-a-1"},
        "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    });
    for op in ["filter", "prioritize"] {
        let req = probe
            .http
            .post(format!("{}/k8s/{}/{op}", probe.base, a.extender))
            .json(&json!({"Pod": pod, "NodeNames": [a.worker, "some-other-node"]}));
        let (status, body) = probe.send(&format!("extender {op}"), req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // A's extender ending or renewing B's bound pod: the same answer as for a pod that
    // does not exist (each cluster's bindings are its own), and B's lease stays open.
    for op in ["unbind", "renew"] {
        let mut answers = Vec::new();
        for uid in ["uid-b-1", "uid-zz-9"] {
            let body = match op {
                "unbind" => json!({"PodUID": uid}),
                _ => json!({"PodUIDs": [uid]}),
            };
            let req = probe
                .http
                .post(format!("{}/k8s/{}/{op}", probe.base, a.extender))
                .json(&body);
            let (status, text) = probe.send(&format!("extender {op} of B's pod"), req).await;
            answers.push((status, text.replace(uid, "U")));
        }
        assert_eq!(
            answers[0], answers[1],
            "extender {op}: B's pod vs an unknown one"
        );
    }

    // Forgery through A's agent: rows naming B's GPU, and a claim on B's GPU.
    let forged = [
        format!(
            "gpu_fault,gpu_uuid={},gpu_index=0,kind=xid code=79i,severity=\"hardware\" {}\n",
            b.uuids[0],
            now_ns()
        ),
        format!(
            "gpu,gpu_uuid={},gpu_index=0,model=H100 utilization=0 {}\n",
            b.uuids[1],
            now_ns()
        ),
        format!(
            "gpu,gpu_uuid={},gpu_index=0,model=H100,supplier={} utilization=0 {}\n",
            a.uuids[0],
            b.name,
            now_ns()
        ),
        format!("heartbeat,region=x seq=1i,extra_field=\"x\" {}\n", now_ns()),
        format!(
            "lease,gpu_uuid={} end_reason=\"fault_hardware\" {}\n",
            b.uuids[0],
            now_ns()
        ),
    ];
    for lp in &forged {
        let r = http
            .post(format!("{base}/api/v1/agent/write?worker={}", a.worker))
            .bearer_auth(&a.agent)
            .body(lp.clone())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error(),
            "forged `{lp}` answered {}",
            r.status()
        );
        probe.cases += 1;
    }
    let r = http
        .post(format!("{base}/api/v1/agent/register"))
        .bearer_auth(&a.agent)
        .json(&json!({"worker": a.worker, "gpus": [
            {"index": 0, "uuid": b.uuids[0], "model": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains(&b.name),
        "the refusal names the owner: {body}"
    );
    probe.cases += 1;
    // Writing to B's worker with A's agent token.
    let r = http
        .post(format!("{base}/api/v1/agent/write?worker={}", b.worker))
        .bearer_auth(&a.agent)
        .body(format!("heartbeat seq=1i {}\n", now_ns()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    probe.cases += 1;

    // Releasing B's GPU: the same answer as a GPU that does not exist.
    let mut answers = Vec::new();
    for uuid in [b.uuids[1].clone(), format!("GPU-{}-9", "qzzzzzzzzzzzz")] {
        for token in [&a.read, &a.agent] {
            let r = http
                .delete(format!("{base}/api/v1/agent/gpus/{uuid}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap().replace(&uuid, "U");
            answers.push((status, body));
            probe.cases += 1;
        }
    }
    assert_eq!(answers[0].0, StatusCode::NOT_FOUND, "{answers:?}");
    assert_eq!(
        answers[0], answers[2],
        "release of B's GPU vs an unknown one"
    );
    assert_eq!(
        answers[1], answers[3],
        "release of B's GPU vs an unknown one"
    );

    // Nothing A did changed B's leases or faults.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.rows(&b_leases).await, before, "B's leases changed");
    assert_eq!(
        server.rows(&b_faults).await,
        faults_before,
        "B's faults changed"
    );
    let inv = http
        .get(format!("{base}/api/v1/agent/inventory"))
        .bearer_auth(&b.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for u in &b.uuids {
        assert!(inv.contains(u.as_str()), "B's GPU {u} is still B's: {inv}");
    }
    // The admin sees the refused claim.
    let events = server.rows("SELECT * FROM security_event").await;
    assert!(
        events.iter().any(|e| e.to_string().contains(&b.uuids[0])),
        "{events:?}"
    );
    // And the server is still up.
    assert!(server.try_sql("SELECT 1").await.is_ok());
    eprintln!("adversarial tenancy: {} probes, no leak", probe.cases);
    assert!(probe.cases > 300, "only {} probes ran", probe.cases);
}
