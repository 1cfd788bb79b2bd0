//! Access control and tenancy, over the server's own route table.
//!
//! Every route in `server/src/access.rs`'s `ROUTES` is called with no token, a bad token and a token
//! of every role; supplier A's credentials must never reveal supplier B's rows through any
//! route or either query language. The route table is compiled into this test from the
//! binary's source, so a route added there is tested here without anyone remembering to.

use std::time::Duration;

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};

use super::harness::{Server, temp_dir};

use rigwatch_server::access;

/// Marks of supplier B's data: none may appear in anything supplier A is answered.
const B_MARKS: &[&str] = &["supplier-b", "GPU-bbbb", "worker-b"];

fn lp() -> String {
    let t0: i64 = 1_700_000_000_000_000_000;
    let mut out = String::new();
    for i in 0..10i64 {
        let t = t0 + i * 10_000_000_000;
        out.push_str(&format!(
            "gpu,supplier=supplier-a,worker=worker-a,gpu_uuid=GPU-aaaa-{i},model=H100 utilization={}.0,power=300.0 {t}\n",
            i * 5
        ));
        out.push_str(&format!(
            "gpu,supplier=supplier-b,worker=worker-b,gpu_uuid=GPU-bbbb-{i},model=A100 utilization=99.0,power=250.0 {t}\n"
        ));
        // A table with no supplier tag: fleet-wide, invisible to suppliers.
        out.push_str(&format!(
            "fleet_stats,region=eu gpus_total=20i,note=\"supplier-b is biggest\" {t}\n"
        ));
    }
    out
}

/// A request to `route` shaped so that it returns data when it is allowed to.
fn request(
    client: &reqwest::Client,
    base: &str,
    route: &access::Route,
    method: &str,
    who: &str,
) -> reqwest::RequestBuilder {
    let path = match route.path {
        "/api/v1/label/*" => "/api/v1/label/supplier/values".to_string(),
        "/portal/assets/*" => "/portal/assets/app.js".to_string(),
        "/portal/api/dashboards/*" => "/portal/api/dashboards/fleet/grafana".to_string(),
        // A GPU nobody claimed (the path is echoed in the 404, so not one of B's marks).
        "/api/v1/agent/gpus/*" => "/api/v1/agent/gpus/GPU-unclaimed-0".to_string(),
        p => p.to_string(),
    };
    let url = format!("{base}{path}");
    let params: Vec<(&str, &str)> = match route.path {
        "/api/v1/sql" => vec![("q", "SELECT * FROM gpu")],
        "/api/v1/dsl" => vec![("q", "gpus | sort gpu_uuid")],
        "/api/v1/query" => vec![("query", "gpu_utilization"), ("time", "1700000090")],
        "/api/v1/query_range" => vec![
            ("query", "gpu_utilization"),
            ("start", "1700000000"),
            ("end", "1700000090"),
            ("step", "10"),
        ],
        "/api/v1/series" => vec![("match[]", "{__name__=~\".+\"}")],
        // One snapshot and the end of the stream, instead of a stream that never ends.
        "/portal/events" => vec![("once", "1")],
        _ => vec![],
    };
    match method {
        "GET" => client.get(url).query(&params),
        "DELETE" => client.delete(url),
        _ => {
            let body = match route.path {
                // Writes that would land if allowed: B's rows, claimed by whoever calls.
                "/api/v2/write" | "/write" | "/api/v1/agent/write" => format!(
                    "gpu,supplier=supplier-b,gpu_uuid=claimed-by-{who} utilization=1.0 1700000000000000000\n"
                ),
                _ => String::new(),
            };
            if params.is_empty() {
                client.post(url).body(body)
            } else {
                client.post(url).form(&params)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_authenticated_and_scoped() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    server.write_ok(&lp()).await;

    // Tokens, created the way `rigwatch supplier ...` does, beside the running server.
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("supplier-a").unwrap();
    auth.add_supplier("supplier-b").unwrap();
    let tokens = [
        (
            Role::Admin,
            auth.issue(Role::Admin, None, None, "t").unwrap().token,
        ),
        (
            Role::Analyst,
            auth.issue(Role::Analyst, None, None, "t").unwrap().token,
        ),
        (
            Role::Supplier,
            auth.issue(Role::Supplier, Some("supplier-a"), None, "t")
                .unwrap()
                .token,
        ),
        (
            Role::Agent,
            auth.issue(Role::Agent, Some("supplier-a"), None, "t")
                .unwrap()
                .token,
        ),
    ];
    // Redirects are answers too: a public route may send a browser on (`/` to the portal).
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut checked = 0;
    for route in access::ROUTES {
        for method in route.methods {
            // No token, and a token that does not exist.
            let anon = request(&client, &server.base, route, method, "anonymous")
                .send()
                .await
                .unwrap();
            let bad = request(&client, &server.base, route, method, "bad-token")
                .bearer_auth("rw_0000000000_00000000000000000000000000000000")
                .send()
                .await
                .unwrap();
            if route.access == access::Access::Public {
                let s = anon.status();
                assert!(
                    s.is_success() || s.is_redirection(),
                    "{method} {}: {s}",
                    route.path
                );
                continue;
            }
            assert_eq!(
                anon.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {} without a token",
                route.path
            );
            assert!(anon.headers().contains_key("www-authenticate"));
            assert_eq!(
                bad.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {}",
                route.path
            );

            let access::Access::Roles(allowed) = route.access else {
                unreachable!()
            };
            for (role, token) in &tokens {
                let resp = request(&client, &server.base, route, method, role.as_str())
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let body = resp.text().await.unwrap();
                if !allowed.contains(role) {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{role} on {method} {}: {body}",
                        route.path
                    );
                    continue;
                }
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
                        || *role == Role::Agent,
                    "{role} on {method} {} refused: {status} {body}",
                    route.path
                );
                if role.is_scoped() {
                    for mark in B_MARKS {
                        assert!(
                            !body.contains(mark),
                            "supplier A's {role} token saw `{mark}` through {method} {}: {body}",
                            route.path
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} allowed calls were checked");

    // Only the admin's write landed: nothing anyone else claimed for B was stored.
    let rows = server
        .rows("SELECT DISTINCT gpu_uuid FROM gpu WHERE gpu_uuid LIKE 'claimed-by-%'")
        .await;
    let who: Vec<&str> = rows.iter().filter_map(|r| r["gpu_uuid"].as_str()).collect();
    assert_eq!(who, ["claimed-by-admin"], "writes that landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppliers_sql_cannot_reach_other_rows() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // Persisted and rolled up within seconds: the rollup tables are a surface too.
    let server = Server::start(
        &data,
        &["--persist-age", "1s", "--compaction-interval", "1s"],
        &[],
    )
    .await;
    server.write_ok(&lp()).await;
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("supplier-a").unwrap();
    auth.add_supplier("supplier-b").unwrap();
    let a = auth
        .issue(Role::Supplier, Some("supplier-a"), None, "t")
        .unwrap()
        .token;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let sql = |q: &'static str| {
        let client = client.clone();
        let base = server.base.clone();
        let a = a.clone();
        async move {
            let resp = client
                .post(format!("{base}/api/v1/sql"))
                .bearer_auth(&a)
                .body(q)
                .send()
                .await
                .unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    // The data is from 2023: once persisted, its stretches are closed and rolled up (10 GPUs
    // of A, two fields, one hourly bucket each).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, body) = sql("SELECT count(*) AS n FROM \"gpu@1h\"").await;
        if body.contains("\"n\":20") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rollups built: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let attempts = [
        "SELECT * FROM \"gpu@1h\"",
        "SELECT * FROM \"gpu@1h\" WHERE supplier = 'supplier-b'",
        "SELECT field, supplier, gpu_uuid, max FROM \"gpu@1h\" WHERE supplier <> 'supplier-a' OR true",
        "SELECT * FROM gpu",
        "SELECT * FROM gpu WHERE supplier = 'supplier-b'",
        "SELECT * FROM gpu WHERE supplier <> 'supplier-a' OR true",
        "SELECT * FROM (SELECT * FROM gpu) g WHERE g.supplier LIKE '%b'",
        "SELECT supplier, count(*) FROM gpu GROUP BY supplier",
        "SELECT * FROM datafusion.public.gpu",
        "SELECT table_name FROM information_schema.tables",
        "SELECT * FROM information_schema.columns",
        "SELECT * FROM fleet_stats",
    ];
    for q in attempts {
        let (status, body) = sql(q).await;
        for mark in B_MARKS.iter().chain(["gpus_total", "biggest"].iter()) {
            assert!(!body.contains(mark), "`{q}` leaked `{mark}`: {body}");
        }
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "`{q}`: {status} {body}"
        );
    }
    // Query-language selectors on an hour grid read the rollups (the samples' bucket ends at
    // 1700002800): still only A's series.
    for (path, params) in [
        (
            "/api/v1/query_range",
            vec![
                ("query", "max_over_time(gpu_utilization[1h])"),
                ("start", "1700002800"),
                ("end", "1700006400"),
                ("step", "3600"),
            ],
        ),
        (
            "/api/v1/query",
            vec![
                ("query", "min_over_time(gpu_power[1h])"),
                ("time", "1700002800"),
            ],
        ),
        // Off the hour grid, with the hourly resolution allowed outright.
        (
            "/api/v1/query_range",
            vec![
                ("query", "last_over_time(gpu_utilization[2h])"),
                ("start", "1700001234"),
                ("end", "1700007000"),
                ("step", "600"),
                ("max_source_resolution", "1h"),
            ],
        ),
    ] {
        let resp = client
            .get(format!("{}{path}", server.base))
            .bearer_auth(&a)
            .query(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.text().await.unwrap();
        assert!(body.contains("GPU-aaaa-9"), "{path}: {body}");
        for mark in B_MARKS {
            assert!(!body.contains(mark), "{path} leaked `{mark}`: {body}");
        }
    }
    // And A does see all of A's rows.
    let (status, body) = sql("SELECT count(*) AS n FROM gpu").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["n"], 10, "{body}");
    // A table without a supplier tag does not exist for a supplier: the same error as a
    // table that really does not exist.
    let (status, hidden) = sql("SELECT count(*) AS n FROM fleet_stats").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{hidden}");
    let (_, missing) = sql("SELECT count(*) AS n FROM no_such_table").await;
    assert_eq!(
        hidden.replace("fleet_stats", "X"),
        missing.replace("no_such_table", "X")
    );
    let (_, tables) = sql("SELECT table_name FROM information_schema.tables").await;
    assert!(!tables.contains("fleet_stats"), "{tables}");
}
