//! The supplier and token registry shared through PostgreSQL, for nodes sharing a catalog.
//!
//! Each node keeps its registry file (`auth.json`, read on every request) and, every
//! [`AUTH_SYNC_INTERVAL`], folds the shared copy (`rw_auth`, one JSON document with a
//! version) into it and its own changes into the shared copy, by compare-and-swap on the
//! version. The merge only adds suppliers and tokens and carries disabling and revoking
//! (see [`AuthStore::merge`]), so no change is lost and none is undone, whatever the order.
//! A token minted or revoked on one node takes effect on the others within about one interval.

use std::time::Duration;

use crate::auth::AuthStore;
use crate::error::{Error, Result};
use crate::pg::Pg;

/// How often a node exchanges registry changes with the shared copy.
pub const AUTH_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// One exchange; answers whether the local registry changed.
pub async fn sync_once(pg: &Pg, auth: &AuthStore) -> Result<bool> {
    let auth_err = |e: crate::auth::AuthError| Error::Catalog(format!("auth registry: {e}"));
    for _ in 0..8 {
        let client = pg.client().await?;
        let err = |e| pg.error("cannot exchange the auth registry with", e);
        let row = client
            .query_one("SELECT version, doc FROM rw_auth WHERE id = 1", &[])
            .await
            .map_err(err)?;
        let version: i64 = row.get(0);
        let shared: serde_json::Value = row.get(1);
        drop(client);
        let local_changed = if shared.is_null() {
            false
        } else {
            auth.merge(&shared).map_err(auth_err)?
        };
        let merged = auth.export().map_err(auth_err)?;
        if merged == shared {
            return Ok(local_changed);
        }
        let client = pg.client().await?;
        let swapped = client
            .execute(
                "UPDATE rw_auth SET version = version + 1, doc = $2 WHERE id = 1 AND version = $1",
                &[&version, &merged],
            )
            .await
            .map_err(err)?;
        if swapped == 1 {
            return Ok(local_changed);
        }
        // Another node pushed first: fold its change in and try again.
    }
    Err(Error::Catalog(
        "the shared auth registry kept changing under this node; will retry".into(),
    ))
}
