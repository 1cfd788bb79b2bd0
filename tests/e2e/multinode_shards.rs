//! Writes split into shards by supplier, each shard written by its own node, and every node
//! reading all of them (`--shards 2`; real PostgreSQL and SeaweedFS, real server processes).

use rigwatch_server::cluster::shard_of;
use rigwatch_storage::pg::Pg;

use super::harness::Server;
use super::multinode::{Shared, eventually, shared_registry, supplier_cli};

const SHARDS: &[&str] = &["--shards", "2"];

/// Two supplier names whose writes go to shards 0 and 1.
fn one_supplier_per_shard() -> (String, String) {
    let names: Vec<String> = (0..64).map(|i| format!("supplier{i}")).collect();
    let on = |shard: &str| {
        names
            .iter()
            .find(|n| shard_of(n, 2) == shard)
            .expect("64 names cover two shards")
            .clone()
    };
    (on("0"), on("1"))
}

/// Each shard's WAL head (the last acknowledged segment).
async fn heads(pg: &Pg) -> std::collections::BTreeMap<String, i64> {
    let c = pg.client().await.unwrap();
    c.query("SELECT shard, head FROM rw_wal_heads", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `POST path` on `base` as `token` with a JSON or text body; the status (503s, with their
/// answer, go to the log: a moment when an owner is not known yet).
async fn post(base: &str, path: &str, token: &str, body: reqwest::Body, json: bool) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .body(body);
    if json {
        req = req.header("content-type", "application/json");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    if status >= 500 {
        eprintln!(
            "{base}{path}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
    status
}

/// `request` until it answers something other than 503 (retry: an owner changing or not
/// known yet), for at most 20 s; that status.
async fn settled<F, Fut>(mut request: F) -> u16
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = request().await;
        if status != 503 || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Registers `worker` of `token`'s supplier with GPU `uuid` through `base`; the status.
async fn register(base: &str, token: &str, worker: &str, uuid: &str) -> u16 {
    let body = serde_json::json!({"worker": worker, "gpus": [
        {"index": 0, "uuid": uuid, "model": "Tesla T4", "memory_total_mib": 15360}
    ]});
    settled(|| {
        post(
            base,
            "/api/v1/agent/register",
            token,
            body.to_string().into(),
            true,
        )
    })
    .await
}

/// One telemetry row of `uuid` through `base`; the status.
async fn telemetry(base: &str, token: &str, worker: &str, uuid: &str, value: u32) -> u16 {
    let now = rigwatch_ingest::agent::now_ns();
    let row = format!("gpu,gpu_uuid={uuid} utilization={value} {now}\n");
    let path = format!("/api/v1/agent/write?worker={worker}");
    settled(|| post(base, &path, token, row.clone().into(), false)).await
}

/// `GET path` on `server` as `token`; the body.
async fn get_as(server: &Server, path: &str, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("{}{path}", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `GET /api/v1/cluster` on `server`, as the operator.
async fn cluster(server: &Server) -> serde_json::Value {
    let body = get_as(server, "/api/v1/cluster", super::harness::ADMIN_TOKEN).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Who owns each shard, as `server`'s `/api/v1/cluster` says (live leases only).
async fn owners(server: &Server) -> Vec<String> {
    let v = cluster(server).await;
    v["shard"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| match s["owner"]["live"].as_bool() {
            Some(true) => s["owner"]["holder"].as_str().unwrap_or("").to_string(),
            _ => String::new(),
        })
        .collect()
}

/// How many `gpu` rows of `uuid` `server` reads.
async fn rows_of(server: &Server, uuid: &str) -> usize {
    server
        .rows_when_ready(&format!(
            "SELECT utilization FROM gpu WHERE gpu_uuid = '{uuid}'"
        ))
        .await
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppliers_write_to_their_own_shard_through_any_node_and_every_node_reads_all() {
    let Some(c) = Shared::start().await else {
        return;
    };
    // The first node takes shard 0 (the primary), the second shard 1.
    let n0 = c.owner("n0", SHARDS).await;
    let n1 = c.owner("n1", SHARDS).await;
    n1.wait_for_log("ingest/1", 10).await;
    let q = c.node("q", &["--mode", "query", "--shards", "2"]).await;
    // Every node must split writes alike.
    let err = c.refused("odd", &["--shards", "3"]);
    assert!(err.contains("--shards 2"), "{err}");
    // Any node tells who owns what.
    for node in [&n0, &n1, &q] {
        assert_eq!(owners(node).await, ["n0", "n1"]);
    }
    let v = cluster(&q).await;
    assert_eq!(
        (v["shards"].as_i64(), v["mode"].as_str()),
        (Some(2), Some("query")),
        "{v}"
    );
    assert!(v["this_node_shard"].is_null(), "{v}");
    assert_eq!(cluster(&n1).await["this_node_shard"], "1");

    let (s0, s1) = one_supplier_per_shard();
    let t0 = supplier_cli(&c.dir("n0"), &["add", &s0]).expect("agent token");
    let t1 = supplier_cli(&c.dir("n0"), &["add", &s1]).expect("agent token");
    let id = |t: &str| t.split('_').nth(1).expect("rw_<id>_<secret>").to_string();
    let (id0, id1) = (id(&t0), id(&t1));
    eventually(20, "both tokens in PostgreSQL", || async {
        match shared_registry(&c.pg).await {
            doc if doc.contains(&id0) && doc.contains(&id1) => Ok(()),
            doc => Err(doc),
        }
    })
    .await;
    let pg = Pg::connect(&c.pg.url).await.unwrap();
    let nodes = [("n0", &n0), ("n1", &n1), ("q", &q)];

    // Each supplier registers through the node that does not own its shard.
    for (base, token, uuid) in [(&n1.base, &t0, "GPU-s0"), (&n0.base, &t1, "GPU-s1")] {
        eventually(20, "registration through another shard's node", || async {
            match register(base, token, "w", uuid).await {
                200 => Ok(()),
                s => Err(s.to_string()),
            }
        })
        .await;
    }
    // A GPU claimed through one shard cannot be claimed by another supplier through the
    // other: the claim is checked against every shard's.
    for (_, node) in nodes {
        assert_eq!(register(&node.base, &t1, "w2", "GPU-s0").await, 409);
    }

    // Shard 1 holds only its supplier's rows: s0's telemetry through n1 goes to n0's shard.
    let before = heads(&pg).await;
    for (_, node) in nodes {
        assert_eq!(telemetry(&node.base, &t0, "w", "GPU-s0", 7).await, 204);
    }
    let after = heads(&pg).await;
    assert_eq!(
        before.get("1"),
        after.get("1"),
        "s0's rows landed in shard 1"
    );
    // s1's telemetry through each node lands in shard 1.
    for (i, (_, node)) in nodes.iter().enumerate() {
        assert_eq!(
            telemetry(&node.base, &t1, "w", "GPU-s1", 10 + i as u32).await,
            204
        );
        let h = heads(&pg).await;
        assert!(
            h["1"] > after["1"],
            "s1's row {i} did not land in shard 1: {h:?}"
        );
    }

    // Every node reads both shards' rows, each once.
    for (name, node) in nodes {
        eventually(20, &format!("every row on {name}"), || async {
            match (rows_of(node, "GPU-s0").await, rows_of(node, "GPU-s1").await) {
                (3, 3) => Ok(()),
                got => Err(format!("{got:?}; log:\n{}", node.log_tail(20))),
            }
        })
        .await;
    }
    // An operator's inventory lists both shards' workers, through any node.
    for (name, node) in nodes {
        let body = get_as(node, "/api/v1/agent/inventory", super::harness::ADMIN_TOKEN).await;
        assert!(
            body.contains("GPU-s0") && body.contains("GPU-s1"),
            "{name}: {body}"
        );
    }
    // The cluster's state is the operators': a supplier's or agent's token is refused on
    // every node (a query node answers the route itself), without learning who owns what;
    // no token is a 401.
    for (name, node) in nodes {
        for token in [&t0, &t1] {
            let r = reqwest::Client::new()
                .get(format!("{}/api/v1/cluster", node.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_eq!(status, 403, "{name}: {body}");
            assert!(
                !body.contains("\"n0\"") && !body.contains("ingest/"),
                "{name}: {body}"
            );
        }
        let anon = reqwest::Client::new()
            .get(format!("{}/api/v1/cluster", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(anon.status().as_u16(), 401, "{name}");
    }
    // A forged hop count cannot make a node store another shard's write: it is refused.
    let before = heads(&pg).await;
    let forged = reqwest::Client::new()
        .post(format!("{}/api/v1/agent/write?worker=w", n1.base))
        .bearer_auth(&t0)
        .header("x-rigwatch-forwarded", "2")
        .body(format!(
            "gpu,gpu_uuid=GPU-s0 utilization=99 {}\n",
            rigwatch_ingest::agent::now_ns()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 503);
    assert_eq!(heads(&pg).await.get("1"), before.get("1"));
    // A supplier still sees only its own rows, on every node.
    for (_, node) in nodes {
        let body = get_as(node, "/api/v1/agent/inventory", &t1).await;
        assert!(!body.contains("GPU-s0") && !body.contains(&s0), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_owner_is_replaced_while_the_other_shard_keeps_writing() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let n0 = c.owner("n0", SHARDS).await;
    let mut n1 = c.owner("n1", SHARDS).await;
    // Both shards owned: the third node stands by.
    let n2 = c.node("n2", SHARDS).await;
    n2.wait_for_log("live nodes own every shard", 10).await;

    let (s0, s1) = one_supplier_per_shard();
    let t0 = supplier_cli(&c.dir("n0"), &["add", &s0]).expect("agent token");
    let t1 = supplier_cli(&c.dir("n0"), &["add", &s1]).expect("agent token");
    for (token, uuid) in [(&t0, "GPU-f0"), (&t1, "GPU-f1")] {
        eventually(20, "registration", || async {
            match register(&n2.base, token, "w", uuid).await {
                200 => Ok(()),
                s => Err(s.to_string()),
            }
        })
        .await;
    }
    // Acknowledged through the standby: stored by n1, shard 1's owner.
    for v in 0..5 {
        assert_eq!(telemetry(&n2.base, &t1, "w", "GPU-f1", v).await, 204);
    }
    n1.kill9();
    // Shard 0 does not wait for shard 1's takeover.
    assert_eq!(telemetry(&n0.base, &t0, "w", "GPU-f0", 1).await, 204);
    n2.wait_for_log("took the shard's lease", 30).await;
    eventually(10, "n2 listed as shard 1's owner", || async {
        match owners(&n0).await {
            o if o == ["n0", "n2"] => Ok(()),
            o => Err(format!("{o:?}")),
        }
    })
    .await;
    // The standby owns shard 1 now: it replayed what n1 acknowledged and takes new writes.
    assert_eq!(telemetry(&n0.base, &t1, "w", "GPU-f1", 5).await, 204);
    for (name, node) in [("n0", &n0), ("n2", &n2)] {
        eventually(30, &format!("every row on {name}"), || async {
            match (rows_of(node, "GPU-f0").await, rows_of(node, "GPU-f1").await) {
                (1, 6) => Ok(()),
                got => Err(format!("{got:?}; log:\n{}", node.log_tail(20))),
            }
        })
        .await;
    }
}
