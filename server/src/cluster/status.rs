//! `GET /api/v1/cluster`: how the nodes sharing a catalog divide the work, as PostgreSQL
//! records it now: the shard count, each shard's owner (node, address, lease epoch and time
//! left), WAL head and coverage by files, and the holders of the compaction lease and of the
//! singletons' lease (allocator, fault detection, alert rules). Operators only;
//! any node answers it from PostgreSQL, adding what it is itself.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rigwatch_storage::lease;
use rigwatch_storage::pg::Pg;
use serde_json::{Value, json};

/// What a node knows of itself, for the answer.
#[derive(Debug, Clone)]
pub struct StatusState {
    /// The shared database; `None` for a node on its own.
    pub pg: Option<Pg>,
    pub node: String,
    /// `--mode`, as typed.
    pub mode: String,
    /// The shard this node writes, if it owns one.
    pub shard: Option<String>,
}

/// The route.
pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/api/v1/cluster", get(status))
        .with_state(Arc::new(state))
}

async fn status(State(s): State<Arc<StatusState>>) -> Response {
    let Some(pg) = &s.pg else {
        return axum::Json(json!({
            "node": s.node,
            "mode": "alone",
            "shards": 1,
            "this_node_shard": "0",
        }))
        .into_response();
    };
    match read(pg).await {
        Ok(mut v) => {
            v["node"] = json!(s.node);
            v["mode"] = json!(s.mode);
            v["this_node_shard"] = json!(s.shard);
            axum::Json(v).into_response()
        }
        Err(e) => crate::access::unavailable(&format!("cannot read the cluster's state: {e}")),
    }
}

/// The shared state, from PostgreSQL.
async fn read(pg: &Pg) -> anyhow::Result<Value> {
    let client = pg.client().await?;
    let err = |e| pg.error("cannot read the cluster's state from", e);
    let shards: i32 = client
        .query_opt("SELECT shards FROM rw_cluster WHERE id = 1", &[])
        .await
        .map_err(err)?
        .map_or(1, |r| r.get(0));
    let leases: Vec<(String, Value)> = client
        .query(
            "SELECT name, holder, epoch, address,
                    (extract(epoch FROM expires_at - now()) * 1000)::bigint
             FROM rw_leases ORDER BY name",
            &[],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| {
            let left: i64 = r.get(4);
            (
                r.get::<_, String>(0),
                json!({
                    "holder": r.get::<_, String>(1),
                    "epoch": r.get::<_, i64>(2),
                    "address": r.get::<_, String>(3),
                    "expires_in_ms": left,
                    "live": left > 0,
                }),
            )
        })
        .collect();
    let heads: std::collections::HashMap<String, i64> = client
        .query("SELECT shard, head FROM rw_wal_heads", &[])
        .await
        .map_err(err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let covered: std::collections::HashMap<String, i64> = client
        .query("SELECT writer, persisted_through FROM rw_wal_coverage", &[])
        .await
        .map_err(err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let lease_of = |name: &str| {
        leases
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Value::Null, |(_, v)| v.clone())
    };
    let detail: Vec<Value> = (0..shards.max(1))
        .map(|k| {
            let shard = k.to_string();
            json!({
                "shard": shard,
                "primary": k == 0,
                "owner": lease_of(&lease::shard_lease(&shard)),
                "wal_head": heads.get(&shard).copied().unwrap_or(0),
                "covered_through": covered.get(&shard).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(json!({
        "shards": shards,
        "shard": detail,
        "compaction": lease_of(lease::COMPACTION_LEASE),
        "singletons": lease_of(lease::SINGLETONS_LEASE),
    }))
}
