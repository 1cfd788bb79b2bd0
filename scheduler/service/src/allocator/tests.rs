//! The allocator's acknowledgements against a real store: ending a job answers only once
//! its rows are durable. The store refuses writes for real here (its memory budget is
//! spent and nothing persists in the background), not through a mock.

use std::sync::Arc;
use std::time::Duration;

use rigwatch_common::money::Currency;
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, DbConfig, WriteOptions};
use serde_json::Value;

use super::{AllocService, AllocSettings, EndError, EndReason, JobRequest, JobState, now_ms};

const GPU: &str = "GPU-durable-0";

async fn gpu_row(db: &Db) {
    let mut b = WriteBatch::default();
    let mut r = b.row("gpu", now_ms() * 1_000_000);
    r.tag("supplier", "acme")
        .tag("worker", "w0")
        .tag("gpu_uuid", GPU)
        .tag("model", "H100")
        .field("memory_total_mib", FieldValue::I64(81_559))
        .field("memory_free_mib", FieldValue::I64(81_000))
        .field("utilization", FieldValue::F64(0.0))
        .field("temperature", FieldValue::F64(40.0));
    r.finish(0).unwrap();
    db.write(b, WriteOptions::default()).await.unwrap();
}

/// Fills the write buffer past the memory budget: the next write is refused.
async fn spend_the_budget(db: &Db) {
    for i in 0..100_000 {
        let mut b = WriteBatch::default();
        for k in 0..100 {
            let mut r = b.row("filler", (i * 100 + k) * 1_000_000);
            r.tag("k", "v")
                .field("payload", FieldValue::Str(&"x".repeat(200)));
            r.finish(0).unwrap();
        }
        if db.write(b, WriteOptions::default()).await.is_err() {
            return;
        }
    }
    panic!("the store never refused a write");
}

/// A store that refuses writes once 4 MiB are buffered (nothing persists in the
/// background), an allocator on it that the test drives (the ticker stays out of the way),
/// and one H100 it has seen.
async fn service_with_one_gpu() -> (tempfile::TempDir, Arc<Db>, AllocService) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = DbConfig::new(dir.path());
    config.background = false;
    config.memory_budget = 4 << 20;
    let db: Arc<Db> = Db::open(config).await.unwrap();
    let svc = AllocService::start(
        db.clone(),
        AllocSettings {
            policy: "rigwatch".into(),
            tick: Duration::from_secs(3600),
            rates: Vec::new(),
            currency: Currency::USD,
            extender_ttl: Duration::from_secs(60),
            pay_grace: Duration::from_secs(120),
            offline_after: Duration::from_secs(600),
        },
    )
    .await
    .unwrap();
    gpu_row(&db).await;
    for _ in 0..100 {
        if svc.gpu_load(GPU).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (dir, db, svc)
}

async fn lease_rows(svc: &AllocService) -> Vec<Value> {
    let (_, batches) = svc
        .query
        .sql_scoped("SELECT * FROM lease", None)
        .await
        .expect("lease rows");
    let bytes = rigwatch_query::format::encode(
        rigwatch_query::format::Format::Json,
        &batches[0].schema(),
        &batches,
    )
    .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_job_ends_acknowledged_only_once_its_rows_are_durable() {
    let (_dir, db, svc) = service_with_one_gpu().await;
    let id = svc.submit_now(&JobRequest::whole(1, 3600)).await.unwrap();
    assert_eq!(svc.job(id).unwrap().state, JobState::Running);
    let open = lease_rows(&svc).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(open[0]["end_ms"].is_null(), "{open:?}");

    // The store refuses writes: the job ends, but the answer says its rows are not stored.
    spend_the_budget(&db).await;
    let e = svc
        .end_durable(id, EndReason::Completed)
        .await
        .expect_err("acknowledged without a durable row");
    assert!(matches!(e, EndError::NotStored(_)), "{e}");
    assert!(e.to_string().contains("repeat the request"), "{e}");
    assert!(lease_rows(&svc).await[0]["end_ms"].is_null());
    // Asking again while the store still refuses: still not acknowledged.
    let e = svc.end_durable(id, EndReason::Completed).await.unwrap_err();
    assert!(matches!(e, EndError::NotStored(_)), "{e}");
    // A different end of the same job is a conflict, not a confirmation.
    let e = svc.end_durable(id, EndReason::Cancelled).await.unwrap_err();
    assert!(matches!(e, EndError::Ended(_)), "{e}");

    // The store takes writes again: the same request confirms, and the rows are there once.
    db.persist().await.unwrap();
    let rec = svc.end_durable(id, EndReason::Completed).await.unwrap();
    assert_eq!(rec.state, JobState::Completed);
    let rows = lease_rows(&svc).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["end_reason"], "completed", "{rows:?}");
    // Once durable, ending it again is the usual conflict.
    let e = svc.end_durable(id, EndReason::Completed).await.unwrap_err();
    assert!(matches!(e, EndError::Ended(_)), "{e}");
}

#[tokio::test]
async fn nothing_new_is_placed_while_earlier_rows_wait_to_be_written() {
    let (_dir, db, svc) = service_with_one_gpu().await;
    // A holds the only GPU; B waits for it.
    let a = svc.submit_now(&JobRequest::whole(1, 3600)).await.unwrap();
    let b = svc.submit_now(&JobRequest::whole(1, 3600)).await.unwrap();
    assert_eq!(svc.job(a).unwrap().state, JobState::Running);
    assert_eq!(svc.job(b).unwrap().state, JobState::Queued);

    // The store refuses writes; A ends, its rows wait in the outbox.
    spend_the_budget(&db).await;
    assert!(svc.end_durable(a, EndReason::Completed).await.is_err());
    // The GPU is free in memory, but B must not start on it while A's end is not stored.
    let _ = svc.persist(svc.tick(now_ms())).await;
    assert_eq!(svc.job(b).unwrap().state, JobState::Queued);

    // Once the rows are in, B is placed.
    db.persist().await.unwrap();
    svc.end_durable(a, EndReason::Completed).await.unwrap();
    let _ = svc.persist(svc.tick(now_ms())).await;
    assert_eq!(svc.job(b).unwrap().state, JobState::Running);
    let rows = lease_rows(&svc).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
}
