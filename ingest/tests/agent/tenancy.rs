//! A supplier's token cannot write rows for another supplier (or another worker).

use rigwatch_ingest::agent::transport::gzip;
use serde_json::Value;

use super::support::AgentServer;

async fn register(server: &AgentServer, token: &str, worker: &str) {
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/register", server.base))
        .bearer_auth(token)
        .json(&serde_json::json!({"worker": worker, "gpus": [
            {"index": 0, "uuid": "GPU-a", "model": "NVIDIA L40S", "memory_total_mib": 46068}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn rows_claiming_another_supplier_are_refused_and_nothing_is_stored() {
    let server = AgentServer::start().await;
    let token_a = server.supplier("alpha");
    server.supplier("bravo");
    register(&server, &token_a, "a-node").await;
    // Line 2 claims supplier bravo; lines 1 and 3 are fine on their own.
    let body = "gpu,gpu_uuid=GPU-a utilization=10\n\
                gpu,supplier=bravo,gpu_uuid=GPU-b utilization=99\n\
                heartbeat seq=1i\n";
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/write?worker=a-node", server.base))
        .bearer_auth(&token_a)
        .header("content-encoding", "gzip")
        .body(gzip(body.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    let msg = err["error"].as_str().unwrap();
    assert!(msg.contains("line 2"), "{msg}");
    assert!(msg.contains("`bravo`") && msg.contains("`alpha`"), "{msg}");
    assert_eq!(server.count("gpu").await, 0);
    assert_eq!(server.count("heartbeat").await, 0);

    // Claiming another worker is refused the same way.
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/write?worker=a-node", server.base))
        .bearer_auth(&token_a)
        .body("gpu,worker=b-node,gpu_uuid=GPU-a utilization=1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("`b-node`"));
    assert_eq!(server.count("gpu").await, 0);

    // Its own supplier tag is accepted (and a forged one never lands).
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/write?worker=a-node", server.base))
        .bearer_auth(&token_a)
        .body("gpu,supplier=alpha,gpu_uuid=GPU-a utilization=7\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        server.rows("SELECT DISTINCT supplier FROM gpu").await,
        vec![vec!["alpha".to_string()]]
    );

    // Supplier bravo's token cannot use alpha's worker.
    let token_b = server.token(rigwatch_storage::auth::Role::Agent, Some("bravo"));
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/write?worker=a-node", server.base))
        .bearer_auth(&token_b)
        .body("gpu,gpu_uuid=GPU-a utilization=7\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(server.count("gpu").await, 1);

    // An agent cannot write the server's own accounts (money, leases, health verdicts,
    // batch digests), even for its own supplier; the whole request is refused.
    for table in [
        "earnings",
        "lease",
        "job",
        "gpu_health",
        "ALERTS",
        "agent_batch",
    ] {
        let resp = server
            .client
            .post(format!("{}/api/v1/agent/write?worker=a-node", server.base))
            .bearer_auth(&token_a)
            .body(format!(
                "gpu,gpu_uuid=GPU-a utilization=8\n{table},gpu_uuid=GPU-a amount_minor=999999i\n"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{table}");
        let msg = resp.text().await.unwrap();
        assert!(
            msg.contains("line 2") && msg.contains(&format!("`{table}`")),
            "{msg}"
        );
    }
    assert_eq!(
        server.count("gpu").await,
        1,
        "nothing of the refused requests landed"
    );
}
