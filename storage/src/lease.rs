//! Leases in PostgreSQL: who may write a shard's WAL (`ingest/<shard>`) or run a singleton,
//! and under which epoch.
//!
//! A lease is a row of `rw_leases`: holder, epoch, expiry (PostgreSQL's clock, so nodes'
//! clocks do not matter). Taking a lease that is free, expired or already this holder's bumps
//! its epoch; renewing keeps it and needs the epoch to match. Everything a holder writes
//! carries its epoch and is checked against the row in the same transaction (a fencing
//! token), so a holder that was paused past its expiry and replaced can no longer write.
//!
//! Taking a shard's lease also stamps the new epoch on the shard's WAL head
//! (`rw_wal_heads`) in the same transaction: from then on only the new holder can advance it.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::pg::Pg;

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

/// Someone else's lease, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub epoch: i64,
    /// Where the holder serves HTTP (`http://HOST:PORT`), for forwarding.
    pub address: String,
    /// Milliseconds until it expires (negative: expired).
    pub expires_in_ms: i64,
}

/// The name of the lease on a shard's WAL.
pub fn shard_lease(shard: &str) -> String {
    format!("ingest/{shard}")
}

/// The name of the lease whose holder runs the singletons: the allocator with its ledger,
/// fault detection and the rule evaluator. Only a shard's owner takes it (the singletons
/// write through its WAL), and every singleton's write is fenced by it
/// ([`crate::Singleton`]).
pub const SINGLETONS_LEASE: &str = "singletons";

/// Whether `holder` holds a live shard lease (`ingest/<shard>`).
pub async fn owns_a_shard(pg: &Pg, holder: &str) -> Result<bool> {
    let client = pg.client().await?;
    let row = client
        .query_opt(
            "SELECT 1 FROM rw_leases
             WHERE starts_with(name, $2) AND holder = $1 AND expires_at > now() LIMIT 1",
            &[&holder, &shard_lease("")],
        )
        .await
        .map_err(|e| pg.error("cannot read the shard leases on", e))?;
    Ok(row.is_some())
}

/// The error a fenced-off writer gets.
pub fn fenced(what: &str, held: &Held) -> Error {
    Error::Fenced(format!(
        "{what}: node `{}` no longer holds lease `{}` at epoch {} (another node took it over)",
        held.holder, held.name, held.epoch
    ))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Takes `name` for `holder` if it is free, expired or already `holder`'s, with a new epoch.
/// `None` if another live holder has it. For a shard lease (`shard` given) the shard's WAL head
/// is stamped with the new epoch in the same transaction; the answer then carries the head.
pub async fn acquire(
    pg: &Pg,
    name: &str,
    holder: &str,
    address: &str,
    ttl: Duration,
    shard: Option<&str>,
) -> Result<Option<(Held, i64)>> {
    let mut client = pg.client().await?;
    let err = |e| pg.error(&format!("cannot take lease `{name}` on"), e);
    let tx = client.transaction().await.map_err(err)?;
    let row = tx
        .query_opt(
            "INSERT INTO rw_leases (name, holder, epoch, expires_at, address)
             VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond', $4)
             ON CONFLICT (name) DO UPDATE SET
                 holder = excluded.holder,
                 epoch = rw_leases.epoch + 1,
                 expires_at = excluded.expires_at,
                 address = excluded.address
             WHERE rw_leases.expires_at <= now() OR rw_leases.holder = excluded.holder
             RETURNING epoch",
            &[&name, &holder, &ms(ttl), &address],
        )
        .await
        .map_err(err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let epoch: i64 = row.get(0);
    let mut head = 0;
    if let Some(shard) = shard {
        head = tx
            .query_one(
                "INSERT INTO rw_wal_heads (shard, head, epoch) VALUES ($1, 0, $2)
                 ON CONFLICT (shard) DO UPDATE SET epoch = excluded.epoch
                 RETURNING head",
                &[&shard, &epoch],
            )
            .await
            .map_err(err)?
            .get(0);
    }
    tx.commit().await.map_err(err)?;
    Ok(Some((
        Held {
            name: name.to_string(),
            holder: holder.to_string(),
            epoch,
        },
        head,
    )))
}

/// Extends a held lease by `ttl`; `false` if it was lost (expired and taken, or released).
pub async fn renew(pg: &Pg, held: &Held, ttl: Duration) -> Result<bool> {
    let client = pg.client().await?;
    let n = client
        .execute(
            "UPDATE rw_leases SET expires_at = now() + $4::bigint * interval '1 millisecond'
             WHERE name = $1 AND holder = $2 AND epoch = $3",
            &[&held.name, &held.holder, &held.epoch, &ms(ttl)],
        )
        .await
        .map_err(|e| pg.error(&format!("cannot renew lease `{}` on", held.name), e))?;
    Ok(n == 1)
}

/// Records where the holder of `held` serves HTTP.
pub async fn set_address(pg: &Pg, held: &Held, address: &str) -> Result<()> {
    let client = pg.client().await?;
    client
        .execute(
            "UPDATE rw_leases SET address = $4 WHERE name = $1 AND holder = $2 AND epoch = $3",
            &[&held.name, &held.holder, &held.epoch, &address],
        )
        .await
        .map_err(|e| {
            pg.error(
                &format!("cannot publish the address of lease `{}` on", held.name),
                e,
            )
        })?;
    Ok(())
}

/// Lets a held lease expire now, so another node need not wait out its time.
pub async fn release(pg: &Pg, held: &Held) -> Result<()> {
    let client = pg.client().await?;
    client
        .execute(
            "UPDATE rw_leases SET expires_at = now()
             WHERE name = $1 AND holder = $2 AND epoch = $3",
            &[&held.name, &held.holder, &held.epoch],
        )
        .await
        .map_err(|e| pg.error(&format!("cannot release lease `{}` on", held.name), e))?;
    Ok(())
}

/// Who holds `name`, if anyone ever did.
pub async fn holder(pg: &Pg, name: &str) -> Result<Option<Holder>> {
    let client = pg.client().await?;
    let row = client
        .query_opt(
            "SELECT holder, epoch, address,
                    (extract(epoch FROM expires_at - now()) * 1000)::bigint
             FROM rw_leases WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(|e| pg.error(&format!("cannot read lease `{name}` on"), e))?;
    Ok(row.map(|r| Holder {
        holder: r.get(0),
        epoch: r.get(1),
        address: r.get(2),
        expires_in_ms: r.get(3),
    }))
}

/// The name of the lease whose holder compacts, merges tiers, builds rollups and applies
/// retention for every node sharing the catalog.
pub const COMPACTION_LEASE: &str = "compact";

/// A lease this node takes whenever it is free and renews while it holds it, for a duty one
/// node at a time does (compaction). [`Keeper::current`] is the lease while held; everything
/// the duty commits is checked against it in the committing transaction.
#[derive(Debug)]
pub struct Keeper {
    pg: Pg,
    name: String,
    current: std::sync::Arc<parking_lot::Mutex<Option<Held>>>,
    task: rigwatch_common::task::Task<()>,
}

impl Keeper {
    /// Starts trying to take `name` for `holder` now, then every third of `ttl`.
    pub fn start(pg: &Pg, name: &str, holder: &str, ttl: Duration) -> std::sync::Arc<Keeper> {
        let current = std::sync::Arc::new(parking_lot::Mutex::new(None::<Held>));
        let task = {
            let (pg, name, holder, current) = (
                pg.clone(),
                name.to_string(),
                holder.to_string(),
                current.clone(),
            );
            rigwatch_common::task::spawn(async move {
                loop {
                    let held = current.lock().clone();
                    match held {
                        Some(h) => match renew(&pg, &h, ttl).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!(lease = %name, epoch = h.epoch, "lost the lease: another node took it over");
                                *current.lock() = None;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, lease = %name, "cannot renew the lease; retrying")
                            }
                        },
                        None => match acquire(&pg, &name, &holder, "", ttl, None).await {
                            Ok(Some((h, _))) => {
                                tracing::info!(lease = %name, epoch = h.epoch, "took the lease `{name}`");
                                *current.lock() = Some(h);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, lease = %name, "cannot take the lease; retrying")
                            }
                        },
                    }
                    tokio::time::sleep(ttl / 3).await;
                }
            })
        };
        std::sync::Arc::new(Keeper {
            pg: pg.clone(),
            name: name.to_string(),
            current,
            task,
        })
    }

    /// The lease, while this node holds it (as last renewed).
    pub fn current(&self) -> Option<Held> {
        self.current.lock().clone()
    }

    /// Stops taking the lease and lets it expire now, so another node takes the duty over.
    pub async fn release(&self) {
        self.task.abort();
        let held = self.current.lock().take();
        if let Some(h) = held
            && let Err(e) = release(&self.pg, &h).await
        {
            tracing::warn!(error = %e, lease = %self.name, "cannot release the lease; it expires by itself");
        }
    }
}

/// Checks, inside `tx`, that `held` is still live and this holder's, and keeps it so (`FOR
/// SHARE`) until `tx` ends: a takeover waits for the transaction.
pub(crate) async fn check_in(
    pg: &Pg,
    tx: &tokio_postgres::Transaction<'_>,
    held: &Held,
    what: &str,
) -> Result<()> {
    let live = tx
        .query_opt(
            "SELECT 1 FROM rw_leases
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
             FOR SHARE",
            &[&held.name, &held.holder, &held.epoch],
        )
        .await
        .map_err(|e| pg.error(&format!("cannot check lease `{}` on", held.name), e))?;
    match live {
        Some(_) => Ok(()),
        None => Err(fenced(what, held)),
    }
}
