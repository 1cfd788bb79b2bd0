//! GPU identity between competing suppliers: a GPU belongs to the first supplier that
//! registers it, an agent writes rows only for its own worker's GPUs and only in the fixed
//! schema of the agent tables, per-supplier caps, and releasing a GPU.

use datafusion::prelude::SessionContext;
use reqwest::StatusCode;
use rigwatch_ingest::agent::routes::AgentLimits;
use rigwatch_storage::auth::Role;
use serde_json::{Value, json};

use super::support::AgentServer;

/// Registers `worker` with `gpus` as (uuid, model); the status and the JSON answer.
async fn register(
    server: &AgentServer,
    token: &str,
    worker: &str,
    gpus: &[(&str, &str)],
) -> (StatusCode, Value) {
    let gpus: Vec<Value> = gpus
        .iter()
        .enumerate()
        .map(|(i, (uuid, model))| {
            // Memory that fits the model, so only the check under test can refuse it.
            let mib = rigwatch_common::gpu_model::lookup(model).map_or(81559, |f| f.memory_mib);
            json!({"index": i, "uuid": uuid, "model": model, "memory_total_mib": mib})
        })
        .collect();
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/register", server.base))
        .bearer_auth(token)
        .json(&json!({"worker": worker, "gpus": gpus}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn register_ok(server: &AgentServer, token: &str, worker: &str, gpus: &[(&str, &str)]) {
    let (status, body) = register(server, token, worker, gpus).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Writes line protocol for `worker`; the status and the answer's text.
async fn write(
    server: &AgentServer,
    token: &str,
    worker: &str,
    body: &str,
) -> (StatusCode, String) {
    let resp = server
        .client
        .post(format!(
            "{}/api/v1/agent/write?worker={worker}",
            server.base
        ))
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

async fn release(server: &AgentServer, token: &str, uuid: &str) -> (StatusCode, Value) {
    let resp = server
        .client
        .delete(format!("{}/api/v1/agent/gpus/{uuid}", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn message(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

/// `count(*)` of `table` for `supplier` (0 if the table does not exist).
async fn count_for(server: &AgentServer, table: &str, supplier: &str) -> u64 {
    if server.db.table(table).is_none() {
        return 0;
    }
    server
        .scalar(&format!(
            "SELECT count(*) FROM \"{table}\" WHERE supplier = '{supplier}'"
        ))
        .await
        .parse()
        .unwrap()
}

#[tokio::test]
async fn registering_another_suppliers_gpu_is_refused_recorded_and_nothing_is_stored() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    let bravo = server.supplier("bravo");
    register_ok(
        &server,
        &alpha,
        "a-node",
        &[("GPU-A1", "NVIDIA H100 80GB HBM3")],
    )
    .await;

    // Bravo lists one GPU of its own and alpha's: the whole registration is refused.
    let (status, body) = register(
        &server,
        &bravo,
        "b-node",
        &[("GPU-B1", "Tesla T4"), ("GPU-A1", "Tesla T4")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errorType"], "conflict");
    let msg = message(&body);
    assert!(msg.contains("gpus[1]") && msg.contains("`GPU-A1`"), "{msg}");
    assert!(
        !msg.contains("alpha") && !msg.contains("a-node"),
        "the owner leaked: {msg}"
    );

    // Nothing of it was stored: no inventory rows, no worker, no claim on bravo's own GPU.
    assert_eq!(count_for(&server, "gpu_inventory", "bravo").await, 0);
    let (status, _) = write(&server, &bravo, "b-node", "heartbeat seq=1i\n").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "b-node was not registered");
    register_ok(&server, &alpha, "a-node-2", &[("GPU-B1", "Tesla T4")]).await;

    // Operators see the attempt; it has no supplier tag, so no supplier sees it.
    let rows = server
        .rows("SELECT kind, claimant, owner, gpu_uuid, worker, owner_worker FROM security_event")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            "gpu_claim_conflict".to_string(),
            "bravo".into(),
            "alpha".into(),
            "GPU-A1".into(),
            "b-node".into(),
            "a-node".into(),
        ]]
    );
    let def = server.db.table("security_event").unwrap();
    assert!(def.column_index("supplier").is_none());
    for scope in ["alpha", "bravo"] {
        let ctx = SessionContext::new();
        rigwatch_storage::table::register_scoped(&server.db, &ctx, Some(scope)).unwrap();
        assert!(
            ctx.sql("SELECT * FROM security_event").await.is_err(),
            "supplier {scope} sees security_event"
        );
    }
    // An agent retrying its registration does not flood the table.
    let (status, _) = register(&server, &bravo, "b-node", &[("GPU-A1", "Tesla T4")]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(server.count("security_event").await, 1);
}

#[tokio::test]
async fn gpu_claims_survive_a_restart() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    let bravo = server.supplier("bravo");
    register_ok(&server, &alpha, "a-node", &[("GPU-A1", "Tesla T4")]).await;
    let server = server.restart().await;
    assert!(server.dir.path().join("gpu_claims.jsonl").exists());
    let (status, body) = register(&server, &bravo, "b-node", &[("GPU-A1", "Tesla T4")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, text) = write(
        &server,
        &alpha,
        "a-node",
        "gpu,gpu_uuid=GPU-A1 utilization=5\n",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
}

#[tokio::test]
async fn rows_for_another_suppliers_gpu_are_refused_and_nothing_is_stored() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    let bravo = server.supplier("bravo");
    register_ok(&server, &alpha, "a-node", &[("GPU-A1", "Tesla T4")]).await;
    register_ok(&server, &bravo, "b-node", &[("GPU-B1", "Tesla T4")]).await;

    // Bravo's own registered worker, a valid first line, then a row naming alpha's GPU.
    for forged in [
        "gpu_fault,gpu_uuid=GPU-A1,kind=xid code=79i,severity=\"hardware\" 2",
        "gpu,gpu_uuid=GPU-A1 utilization=0 2",
        "heartbeat,gpu_uuid=GPU-A1 seq=1i 2",
    ] {
        let body = format!("gpu,gpu_uuid=GPU-B1 utilization=50\n{forged}\n");
        let (status, text) = write(&server, &bravo, "b-node", &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{forged}: {text}");
        assert!(
            text.contains("line 2") && text.contains("`GPU-A1`"),
            "{text}"
        );
        assert!(!text.contains("alpha"), "the owner leaked: {text}");
    }
    // A GPU nobody registered gets the same answer.
    let (status, text) = write(
        &server,
        &bravo,
        "b-node",
        "gpu,gpu_uuid=GPU-nobody utilization=1\n",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    for table in ["gpu", "gpu_fault", "heartbeat"] {
        assert_eq!(server.count(table).await, 0, "{table}");
    }

    // Per-GPU rows must say which GPU they are about.
    let (status, text) = write(&server, &bravo, "b-node", "gpu_fault,kind=xid code=79i\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("line 1") && text.contains("`gpu_uuid`"),
        "{text}"
    );

    // A GPU moved to another worker of the same supplier is written by that worker only.
    register_ok(&server, &alpha, "a-node-2", &[("GPU-A1", "Tesla T4")]).await;
    let row = "gpu,gpu_uuid=GPU-A1 utilization=5\n";
    let (status, _) = write(&server, &alpha, "a-node", row).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) = write(&server, &alpha, "a-node-2", row).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(
        server
            .rows("SELECT supplier, worker, gpu_uuid FROM gpu")
            .await,
        vec![vec![
            "alpha".to_string(),
            "a-node-2".into(),
            "GPU-A1".into()
        ]]
    );
}

#[tokio::test]
async fn tags_fields_and_types_outside_the_fixed_schema_are_refused() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    register_ok(&server, &alpha, "a-node", &[("GPU-A1", "Tesla T4")]).await;
    let good = "gpu,gpu_uuid=GPU-A1 utilization=5\n";
    let cases = [
        (
            "heartbeat seq=1i,mood=\"odd\" 1",
            "line 2: unknown field `mood` in table `heartbeat` (agents write a fixed schema:",
        ),
        (
            "gpu,gpu_uuid=GPU-A1,rack=r1 utilization=5 1",
            "line 2: unknown tag `rack` in table `gpu`",
        ),
        (
            "heartbeat,gpu_index=0 seq=1i 1",
            "line 2: unknown tag `gpu_index` in table `heartbeat`",
        ),
        (
            "heartbeat seq=\"one\" 1",
            "line 2: field `seq` of table `heartbeat` is integer, but the row gives string",
        ),
        (
            "gpu,gpu_uuid=GPU-A1 memory_used_mib=1.5 1",
            "line 2: field `memory_used_mib` of table `gpu` is integer, but the row gives float (1.5)",
        ),
        (
            "gpu_fault,gpu_uuid=GPU-A1,kind=xid code=79i,severity=true 1",
            "line 2: field `severity` of table `gpu_fault` is string, but the row gives boolean",
        ),
    ];
    for (bad, expected) in cases {
        let (status, text) = write(&server, &alpha, "a-node", &format!("{good}{bad}\n")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {text}");
        assert!(text.contains(expected), "{bad}: {text}");
    }
    for table in ["gpu", "gpu_fault", "heartbeat"] {
        assert_eq!(server.count(table).await, 0, "{table}");
    }
    // What the agent sends fits, and a lossless number is stored as the schema's type.
    let (status, text) = write(
        &server,
        &alpha,
        "a-node",
        "gpu,gpu_uuid=GPU-A1,region=eu utilization=5i,memory_used_mib=1024\n\
         heartbeat,region=eu seq=7u,agent_version=\"0.1.0\"\n",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(
        server
            .rows("SELECT arrow_typeof(utilization), utilization, arrow_typeof(memory_used_mib) FROM gpu")
            .await,
        vec![vec!["Float64".to_string(), "5.0".into(), "Int64".into()]]
    );
    assert_eq!(
        server
            .scalar("SELECT arrow_typeof(seq) FROM heartbeat")
            .await,
        "Int64"
    );
    let heartbeat = server.db.table("heartbeat").unwrap();
    assert!(
        heartbeat.column_index("mood").is_none(),
        "a refused row added a column"
    );
}

#[tokio::test]
async fn model_and_gpu_index_come_from_the_registration() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    register_ok(
        &server,
        &alpha,
        "a-node",
        &[("GPU-A0", "Tesla T4"), ("GPU-A1", "NVIDIA H100 80GB HBM3")],
    )
    .await;
    // The row claims a pricier model and another index; the server keeps the registered ones.
    let (status, text) = write(
        &server,
        &alpha,
        "a-node",
        "gpu,gpu_uuid=GPU-A0,model=NVIDIA\\ B200,gpu_index=7 utilization=5\n\
         gpu,gpu_uuid=GPU-A1 utilization=6\n\
         gpu_fault,gpu_uuid=GPU-A0,model=NVIDIA\\ B200,kind=xid code=13i\n",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(
        server
            .rows("SELECT gpu_uuid, model, gpu_index FROM gpu ORDER BY gpu_uuid")
            .await,
        vec![
            vec!["GPU-A0".to_string(), "T4".into(), "0".into()],
            vec!["GPU-A1".to_string(), "H100".into(), "1".into()],
        ]
    );
    assert_eq!(server.scalar("SELECT model FROM gpu_fault").await, "T4");
    // The model is the one table's canonical name; NVML's name is kept in the inventory.
    assert_eq!(
        server
            .scalar("SELECT product_name FROM gpu_inventory WHERE gpu_uuid = 'GPU-A1'")
            .await,
        "NVIDIA H100 80GB HBM3"
    );
}

#[tokio::test]
async fn a_model_whose_memory_contradicts_it_is_refused() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    // An RTX 4090 (24 GiB) calling itself an H100, to be paid H100 rates.
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/register", server.base))
        .bearer_auth(&alpha)
        .json(&json!({"worker": "w", "gpus": [
            {"index": 0, "uuid": "GPU-ok", "model": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564},
            {"index": 1, "uuid": "GPU-lie", "model": "NVIDIA H100 80GB HBM3", "memory_total_mib": 24564}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = resp.text().await.unwrap();
    assert!(body.contains("gpus[1]") && body.contains("H100"), "{body}");
    assert_eq!(server.count("gpu_inventory").await, 0);
    // An unknown name is accepted, as the model `unknown` (not a name of its own).
    let (status, body) = register(&server, &alpha, "w", &[("GPU-new", "NVIDIA Z9000")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, text) = write(&server, &alpha, "w", "gpu,gpu_uuid=GPU-new utilization=1\n").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(server.scalar("SELECT model FROM gpu").await, "unknown");
}

#[tokio::test]
async fn per_supplier_caps_refuse_with_the_cap_and_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let limits = AgentLimits {
        max_workers_per_supplier: 2,
        max_gpus_per_supplier: 3,
        max_gpus_per_registration: 2,
        ..AgentLimits::DEFAULT
    };
    let server = AgentServer::start_with(dir, "127.0.0.1:0", limits).await;
    let alpha = server.supplier("alpha");
    let bravo = server.supplier("bravo");

    let (status, body) = register(
        &server,
        &alpha,
        "w1",
        &[("g1", "T4"), ("g2", "T4"), ("g3", "T4")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errorType"], "limit");
    let msg = message(&body);
    assert!(
        msg.contains("at most 2")
            && msg.contains("--max-gpus-per-registration")
            && msg.contains("RIGWATCH_MAX_GPUS_PER_REGISTRATION"),
        "{msg}"
    );

    register_ok(&server, &alpha, "w1", &[("g1", "T4"), ("g2", "T4")]).await;
    register_ok(&server, &alpha, "w2", &[("g3", "T4")]).await;
    let (status, body) = register(&server, &alpha, "w3", &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let msg = message(&body);
    assert!(
        msg.contains("2 registered workers") && msg.contains("--max-workers-per-supplier"),
        "{msg}"
    );
    // A worker already registered may register again.
    register_ok(&server, &alpha, "w1", &[("g1", "T4"), ("g2", "T4")]).await;

    let (status, body) = register(&server, &alpha, "w2", &[("g3", "T4"), ("g4", "T4")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let msg = message(&body);
    assert!(
        msg.contains("holds 3 GPUs") && msg.contains("--max-gpus-per-supplier"),
        "{msg}"
    );
    // Nothing of it was claimed, and one supplier's caps are not another's.
    register_ok(&server, &bravo, "w1", &[("g4", "T4")]).await;
}

#[tokio::test]
async fn gpu_uuids_are_validated_per_entry() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    let long = "G".repeat(97);
    for (bad, expected) in [
        (
            "GPU 1",
            "gpus[1]: the uuid has a byte that is not printable ASCII",
        ),
        (
            "GPU-\u{7}",
            "gpus[1]: the uuid has a byte that is not printable ASCII",
        ),
        ("", "gpus[1]: the uuid is empty"),
        (long.as_str(), "gpus[1]: the uuid is 97 bytes long"),
        ("GPU-0", "gpus[1] repeats the uuid `GPU-0` of gpus[0]"),
    ] {
        let (status, body) = register(&server, &alpha, "w1", &[("GPU-0", "T4"), (bad, "T4")]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(message(&body).contains(expected), "{bad:?}: {body}");
    }
    assert_eq!(server.count("gpu_inventory").await, 0);
}

#[tokio::test]
async fn a_released_gpu_can_be_claimed_by_another_supplier() {
    let server = AgentServer::start().await;
    let alpha = server.supplier("alpha");
    let bravo = server.supplier("bravo");
    register_ok(
        &server,
        &alpha,
        "a-node",
        &[("GPU-A1", "Tesla T4"), ("GPU-A2", "Tesla T4")],
    )
    .await;

    // Bravo's tokens cannot release it, and learn nothing: the same answer as an unknown GPU.
    let bravo_reader = server.token(Role::Supplier, Some("bravo"));
    let (status, theirs) = release(&server, &bravo_reader, "GPU-A1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    let (status, unknown) = release(&server, &bravo_reader, "GPU-none").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        message(&theirs).replace("GPU-A1", "X"),
        message(&unknown).replace("GPU-none", "X")
    );
    let (status, _) = release(&server, &bravo, "GPU-A1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let analyst = server.token(Role::Analyst, None);
    let (status, _) = release(&server, &analyst, "GPU-A1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = register(&server, &bravo, "b-node", &[("GPU-A1", "Tesla T4")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Alpha's supplier token releases it; alpha's agent no longer writes for it.
    let alpha_reader = server.token(Role::Supplier, Some("alpha"));
    let (status, body) = release(&server, &alpha_reader, "GPU-A1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["worker"], "a-node");
    let (status, _) = write(
        &server,
        &alpha,
        "a-node",
        "gpu,gpu_uuid=GPU-A1 utilization=5\n",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bravo may now register it and write its rows; it stays bravo's across a restart.
    register_ok(&server, &bravo, "b-node", &[("GPU-A1", "Tesla T4")]).await;
    let server = server.restart().await;
    let (status, text) = write(
        &server,
        &bravo,
        "b-node",
        "gpu,gpu_uuid=GPU-A1 utilization=5\n",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let (status, _) = register(&server, &alpha, "a-node", &[("GPU-A1", "Tesla T4")]).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // An agent token releases its own supplier's GPU; an admin any supplier's.
    let (status, _) = release(&server, &alpha, "GPU-A2").await;
    assert_eq!(status, StatusCode::OK);
    let admin = server.token(Role::Admin, None);
    let (status, body) = release(&server, &admin, "GPU-A1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["supplier"], "bravo");
    register_ok(&server, &alpha, "a-node", &[("GPU-A1", "Tesla T4")]).await;
}
