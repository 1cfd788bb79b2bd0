//! Registration, inventory and the write route's authentication, over real HTTP.

use std::time::Duration;

use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{AgentConfig, AgentHandle};
use rigwatch_storage::auth::Role;
use serde_json::Value;

use super::support::AgentServer;

fn config(server: &AgentServer, token: &str, worker: &str) -> AgentConfig {
    let mut c = AgentConfig::new(
        &server.base,
        token,
        worker,
        server.dir.path().join(format!("spool-{worker}")),
    );
    c.interval = Duration::from_millis(100);
    c.backoff_base = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

#[tokio::test]
async fn simulated_worker_registers_and_its_gpus_appear_in_gpu_and_inventory() {
    let server = AgentServer::start().await;
    let token = server.supplier("acme");
    let sim = Simulator::new(4, 11, Duration::from_millis(100));
    let infos = sim.infos();
    let agent = AgentHandle::spawn(config(&server, &token, "rack1-node3"), sim).expect("spawn");
    let n = server
        .wait_count("gpu", Duration::from_secs(20), |n| n >= 12)
        .await;
    assert!(n >= 12, "only {n} gpu rows arrived");
    agent.stop().await.expect("agent ends cleanly");

    // Every GPU has rows, tagged with the supplier from the token and the worker.
    let rows = server
        .rows(
            "SELECT supplier, worker, gpu_uuid, gpu_index, model, min(memory_total_mib), \
             min(power_limit_watts), min(pci_bus_id), count(*) FROM gpu \
             GROUP BY supplier, worker, gpu_uuid, gpu_index, model ORDER BY gpu_index",
        )
        .await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (row, info) in rows.iter().zip(&infos) {
        assert_eq!(row[0], "acme");
        assert_eq!(row[1], "rack1-node3");
        assert_eq!(row[2], info.uuid);
        assert_eq!(row[3], info.index.to_string());
        // The one model table's name for what NVML reported.
        assert_eq!(row[4], rigwatch_common::gpu_model::canonical(&info.model));
        assert_eq!(row[5], info.memory_total_mib.to_string());
        assert_eq!(
            row[6].parse::<f64>().unwrap(),
            info.power_limit_watts.unwrap()
        );
        assert_eq!(row[7], info.pci_bus_id);
    }
    // Inventory rows in the store ...
    let inv = server
        .rows("SELECT gpu_uuid, model, memory_total_mib, supplier FROM gpu_inventory ORDER BY gpu_index")
        .await;
    assert_eq!(inv.len(), 4);
    assert_eq!(inv[0][0], infos[0].uuid);
    assert_eq!(inv[0][3], "acme");
    // ... and in the inventory listing, for the supplier's token only.
    let resp = server
        .client
        .get(format!("{}/api/v1/agent/inventory", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let workers = body["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["worker"], "rack1-node3");
    assert_eq!(workers[0]["supplier"], "acme");
    let gpus = workers[0]["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 4);
    assert_eq!(gpus[2]["uuid"], infos[2].uuid.as_str());
    assert_eq!(gpus[2]["memory_total_mib"], infos[2].memory_total_mib);
    assert_eq!(gpus[2]["driver_version"], "550.54.15");

    // Another supplier sees none of it.
    let other = server.supplier("globex");
    let body: Value = server
        .client
        .get(format!("{}/api/v1/agent/inventory", server.base))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["workers"].as_array().unwrap().len(), 0);
    // Heartbeats arrived too, one per tick.
    assert!(server.count("heartbeat").await >= 3);
}

#[tokio::test]
async fn write_needs_a_valid_agent_token_and_a_registered_worker() {
    let server = AgentServer::start().await;
    let token = server.supplier("acme");
    let url = format!("{}/api/v1/agent/write?worker=w1", server.base);
    let line = "gpu,gpu_uuid=GPU-1 utilization=5\n";

    let resp = server.client.post(&url).body(line).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("missing `Authorization: Bearer")
    );

    let resp = server
        .client
        .post(&url)
        .bearer_auth("rw_0123456789_0123456789abcdef0123456789abcdef")
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("invalid token"));

    // A supplier (reader) token is not an agent token.
    let reader = server.token(Role::Supplier, Some("acme"));
    let resp = server
        .client
        .post(&url)
        .bearer_auth(&reader)
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("role `supplier`"));

    // The right token, but the worker never registered.
    let resp = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errorType"], "unregistered");
    assert_eq!(server.count("gpu").await, 0);

    // Registered, it goes through and the server stamps supplier and worker.
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/register", server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"worker": "w1", "gpus": [
            {"index": 0, "uuid": "GPU-1", "model": "Tesla T4", "memory_total_mib": 15360}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        server
            .rows("SELECT supplier, worker, utilization FROM gpu")
            .await,
        vec![vec![
            "acme".to_string(),
            "w1".to_string(),
            "5.0".to_string()
        ]]
    );
    // A revoked token stops working at once.
    server.auth.revoke("acme").unwrap();
    let resp = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
