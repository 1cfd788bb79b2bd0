//! Several shards, each written by its own owner, read by every node: the storage layer in
//! process (two owners and a follower on one PostgreSQL and one object store), so that the
//! moment a persist moves rows from a shard's WAL into files can be driven by hand.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::lease::{self, shard_lease};
use rigwatch_storage::pg::Pg;
use rigwatch_storage::wal::ShardLog;
use rigwatch_storage::{
    CatalogConfig, Db, DbConfig, Error, LEADER_EPOCH, Maintenance, Singleton, StoreConfig, WalHome,
    WriteOptions,
};

use super::harness::temp_dir;
use super::services::{postgres, slot};

/// An append-only table: a row read twice (from a file and a buffer) counts twice.
const TABLE: &str = "events";

fn store(dir: &std::path::Path) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        rigwatch_storage::durable::SyncedLocalStore::new(
            &dir.join("objects"),
            Arc::new(rigwatch_storage::durable::RealSync),
        )
        .unwrap(),
    )
}

fn config(
    dir: &std::path::Path,
    node: &str,
    store: &Arc<dyn object_store::ObjectStore>,
) -> DbConfig {
    let mut c = DbConfig::new(dir.join(node));
    c.store = StoreConfig::Custom(store.clone());
    c.background = false;
    c.maintenance = Maintenance::Elsewhere;
    c.append_only_tables = vec![TABLE.to_string()];
    c
}

/// A node owning `shard` (named `owner-<shard>`), holding the singletons' lease `singletons`
/// if given.
async fn owner(
    pg: &Pg,
    dir: &std::path::Path,
    store: &Arc<dyn object_store::ObjectStore>,
    shard: &str,
    singletons: Option<lease::Held>,
) -> Arc<Db> {
    let node = format!("owner-{shard}");
    let (held, head) = lease::acquire(
        pg,
        &shard_lease(shard),
        &node,
        "",
        Duration::from_secs(60),
        Some(shard),
    )
    .await
    .unwrap()
    .expect("the shard is free");
    let mut c = config(dir, &node, store);
    let log = ShardLog {
        pg: pg.clone(),
        store: store.clone(),
        shard: shard.to_string(),
    };
    c.catalog = CatalogConfig::Postgres {
        pg: pg.clone(),
        writer: shard.to_string(),
        fence: Some(held.clone()),
    };
    c.wal_home = WalHome::Shard {
        log,
        held,
        head: head as u64,
        singletons,
    };
    Db::open(c).await.unwrap()
}

/// A node that writes nothing and reads every shard.
async fn follower(
    pg: &Pg,
    dir: &std::path::Path,
    store: &Arc<dyn object_store::ObjectStore>,
) -> Arc<Db> {
    let mut c = config(dir, "query", store);
    c.catalog = CatalogConfig::Postgres {
        pg: pg.clone(),
        writer: "0".to_string(),
        fence: None,
    };
    c.wal_home = WalHome::Follow {
        log: ShardLog {
            pg: pg.clone(),
            store: store.clone(),
            shard: "0".to_string(),
        },
    };
    Db::open(c).await.unwrap()
}

/// `n` rows of `gpu` from `first` on, with a field named after the shard's node (so each
/// shard widens the table by a column the other never wrote).
fn rows(gpu: &str, field: &str, first: i64, n: i64) -> WriteBatch {
    let mut b = WriteBatch::default();
    for i in 0..n {
        let t = first + i;
        let mut r = b.row(TABLE, t * 1_000_000);
        r.tag("gpu", gpu).field(field, FieldValue::I64(t));
        r.finish(i as u32 + 1).unwrap();
    }
    b
}

async fn count(db: &Arc<Db>, filter: &str) -> i64 {
    let query = rigwatch_query::QueryService::new(db.clone());
    // Before the first row arrives the table does not exist.
    let Ok((_, batches)) = query
        .sql(&format!("SELECT count(*) FROM {TABLE} {filter}"))
        .await
    else {
        return 0;
    };
    let col = batches[0].column(0);
    col.as_any().downcast_ref::<Int64Array>().unwrap().value(0)
}

/// Polls `db` until it holds `want` rows (of each of `gpu` a and b: `want_a`, `want_b`),
/// failing at once if a count ever exceeds its target: a row read twice.
async fn converge(db: &Arc<Db>, name: &str, want_a: i64, want_b: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = count(db, "WHERE gpu = 'a'").await;
        let b = count(db, "WHERE gpu = 'b'").await;
        assert!(
            a <= want_a && b <= want_b,
            "{name} reads rows twice: {a} of gpu a (written {want_a}), {b} of gpu b (written {want_b})"
        );
        if (a, b) == (want_a, want_b) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} holds {a} of {want_a} rows of gpu a and {b} of {want_b} of gpu b after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reads_every_shard_once_as_persists_move_rows_into_files() {
    let _slot = slot();
    let Some(engine) = postgres() else {
        return;
    };
    let pg = Pg::connect(&engine.url).await.unwrap();
    let tmp = temp_dir();
    let store = store(tmp.path());
    let a = owner(&pg, tmp.path(), &store, "0", None).await;
    let b = owner(&pg, tmp.path(), &store, "1", None).await;
    let q = follower(&pg, tmp.path(), &store).await;
    let nodes = [
        ("shard 0's owner", &a),
        ("shard 1's owner", &b),
        ("the query node", &q),
    ];

    let (mut na, mut nb) = (0, 0);
    for round in 0..3 {
        a.write(rows("a", "from_a", na, 40), Default::default())
            .await
            .unwrap();
        na += 40;
        b.write(rows("b", "from_b", nb, 25), Default::default())
            .await
            .unwrap();
        nb += 25;
        for (name, db) in nodes {
            converge(db, name, na, nb).await;
        }
        // One shard's rows move into files while every node keeps reading: each row stays
        // visible exactly once on every node, through the swap.
        let persisting = if round % 2 == 0 { &a } else { &b };
        let watch = async {
            for _ in 0..20 {
                for (name, db) in nodes {
                    let got = (
                        count(db, "WHERE gpu = 'a'").await,
                        count(db, "WHERE gpu = 'b'").await,
                    );
                    assert_eq!(
                        got,
                        (na, nb),
                        "{name} during a persist of shard {}",
                        round % 2
                    );
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        let (persisted, ()) = tokio::join!(persisting.persist(), watch);
        persisted.unwrap();
        for (name, db) in nodes {
            converge(db, name, na, nb).await;
        }
    }
    // Both shards' files are in the catalog, and the table's definition there has both
    // shards' columns: one owner's commit did not drop the other's.
    b.persist().await.unwrap();
    a.persist().await.unwrap();
    let client = pg.client().await.unwrap();
    let def: serde_json::Value = client
        .query_one("SELECT def FROM rw_tables WHERE name = $1", &[&TABLE])
        .await
        .unwrap()
        .get(0);
    let names: Vec<&str> = def["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for col in ["gpu", "from_a", "from_b"] {
        assert!(names.contains(&col), "{col} missing from {def}");
    }
    drop(client);
    for (name, db) in nodes {
        converge(db, name, na, nb).await;
        // Each shard's field reads back on every node, whichever shard's owner it is.
        assert_eq!(count(db, "WHERE from_a IS NOT NULL").await, na, "{name}");
        assert_eq!(count(db, "WHERE from_b IS NOT NULL").await, nb, "{name}");
    }
    // One series at one time written through both shards (an operator writing through two
    // nodes) is one row on every node: the two shards' buffers are merged where they share a
    // series, and only there.
    for (db, value) in [(&a, 1.0), (&b, 2.0)] {
        let mut batch = WriteBatch::default();
        let mut r = batch.row("gauge", 5_000_000);
        r.tag("gpu", "both").field("v", FieldValue::F64(value));
        r.finish(1).unwrap();
        let mut r = batch.row("gauge", 6_000_000);
        r.tag("gpu", if value == 1.0 { "only_a" } else { "only_b" })
            .field("v", FieldValue::F64(value));
        r.finish(2).unwrap();
        db.write(batch, Default::default()).await.unwrap();
    }
    for (name, db) in nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let query = rigwatch_query::QueryService::new(db.clone());
            let rows = match query.sql("SELECT gpu FROM gauge ORDER BY gpu").await {
                Ok((_, batches)) => arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string(),
                Err(e) => e.to_string(),
            };
            let want = ["both", "only_a", "only_b"];
            let lines: Vec<&str> = rows
                .lines()
                .filter(|l| l.starts_with("| ") && !l.contains("gpu"))
                .collect();
            if lines.len() == want.len() && lines.iter().zip(want).all(|(l, w)| l.contains(w)) {
                break;
            }
            assert!(
                lines.len() <= want.len(),
                "{name} reads a row twice:\n{rows}"
            );
            assert!(std::time::Instant::now() < deadline, "{name}:\n{rows}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for db in [a, b, q] {
        db.shutdown().await.unwrap();
    }
}

/// The singletons' lease for `node`, for a minute; it must be free or expired.
async fn take_singletons(pg: &Pg, node: &str) -> lease::Held {
    lease::acquire(
        pg,
        lease::SINGLETONS_LEASE,
        node,
        "",
        Duration::from_secs(60),
        None,
    )
    .await
    .unwrap()
    .expect("the singletons' lease is free or expired")
    .0
}

/// The singletons (allocator, fault detection, rules) write through their node's shard, fenced
/// by a lease of their own: once another node took it, the old holder's singleton writes are
/// refused and never read anywhere, while its shard's other writes go on; a shard's owner
/// without the lease cannot write as a singleton at all; and every record a live holder
/// stamps carries its epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singletons_writes_are_refused_once_another_node_took_their_lease() {
    let _slot = slot();
    let Some(engine) = postgres() else {
        return;
    };
    let pg = Pg::connect(&engine.url).await.unwrap();
    let tmp = temp_dir();
    let store = store(tmp.path());
    let held = take_singletons(&pg, "owner-0").await;
    let a = owner(&pg, tmp.path(), &store, "0", Some(held.clone())).await;
    let b = owner(&pg, tmp.path(), &store, "1", None).await;
    let singleton = |s| WriteOptions::singleton(s);

    a.write(rows("a", "paid", 0, 3), singleton(Singleton::Stamped))
        .await
        .expect("the holder writes");
    assert_eq!(a.leader_epoch(), Some(held.epoch));
    let err = b
        .write(rows("b", "paid", 0, 3), singleton(Singleton::Fenced))
        .await
        .expect_err("an owner without the lease wrote as a singleton");
    assert!(
        matches!(err, Error::Fenced(_)) && err.to_string().contains("singletons"),
        "{err}"
    );

    // The holder is paused past its lease, and another node takes the lease over.
    pg.client()
        .await
        .unwrap()
        .execute(
            "UPDATE rw_leases SET expires_at = now() - interval '1 second' WHERE name = $1",
            &[&lease::SINGLETONS_LEASE],
        )
        .await
        .unwrap();
    let taken = take_singletons(&pg, "owner-1").await;
    assert!(taken.epoch > held.epoch);
    for s in [Singleton::Stamped, Singleton::Fenced] {
        let err = a
            .write(rows("a", "paid", 10, 3), singleton(s))
            .await
            .expect_err("a deposed leader's write was acknowledged");
        assert!(
            matches!(err, Error::Fenced(_)) && err.to_string().contains("singletons"),
            "{err}"
        );
    }
    // Fenced alone: the shard's own writes go on.
    a.write(rows("a", "telemetry", 20, 2), Default::default())
        .await
        .expect("the shard's owner still writes its shard");

    // Nothing refused is read: not by its node, nor by a node replaying the shard's log.
    let q = follower(&pg, tmp.path(), &store).await;
    for (name, db) in [("the deposed leader", &a), ("a query node", &q)] {
        converge(db, name, 5, 0).await;
        let query = rigwatch_query::QueryService::new(db.clone());
        let (_, batches) = query
            .sql(&format!(
                "SELECT {LEADER_EPOCH} FROM {TABLE} WHERE {LEADER_EPOCH} IS NOT NULL"
            ))
            .await
            .unwrap();
        let epochs: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                (0..col.len()).map(|i| col.value(i)).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(epochs, vec![held.epoch; 3], "{name}");
    }
}
