//! Where the store keeps its state: the object store (local disk or an S3-compatible bucket)
//! and the catalog (beside the data, or in PostgreSQL for several nodes), and this node's
//! name among them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rigwatch_common::task::{self, Task};
use rigwatch_storage::lease::{self, Held};
use rigwatch_storage::pg::{Pg, redact};
use rigwatch_storage::wal::ShardLog;
use rigwatch_storage::{CatalogConfig, DbConfig, Maintenance, StoreConfig, WalHome};
use tracing::{error, info, warn};

pub mod status;

/// Options of the object store, the catalog and the node.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Keep Parquet files and the catalog in this S3-compatible bucket instead of
    /// <data-dir>/objects (the WAL stays in --data-dir). Credentials come from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); without them
    /// rigwatch refuses to start unless --s3-instance-credentials is given.
    #[arg(long, env = "RIGWATCH_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// Endpoint of an S3-compatible store (SeaweedFS, MinIO, Ceph, R2, ...); AWS when unset.
    #[arg(long, env = "RIGWATCH_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,

    /// Region of the bucket.
    #[arg(long, env = "RIGWATCH_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Allow plain http:// endpoints (a store on loopback or a trusted network).
    #[arg(long, env = "RIGWATCH_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,

    /// Take S3 credentials from the environment's instance metadata, web identity or container
    /// credentials when AWS_ACCESS_KEY_ID is not set. Off by default, so a missing key is an
    /// error instead of a silent request to a metadata endpoint.
    #[arg(long, env = "RIGWATCH_S3_INSTANCE_CREDENTIALS")]
    pub s3_instance_credentials: bool,

    /// Keep the catalog (tables, data files, WAL coverage) and leases in PostgreSQL, so that
    /// several nodes can share one bucket: postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    /// The schema is created on first use. Without it the catalog lives beside the data (one
    /// node). At start the object store must pass a conditional-write probe.
    #[arg(long, env = "RIGWATCH_CATALOG")]
    pub catalog: Option<String>,

    /// This node's name among the nodes sharing a catalog (default: the host name). Two live
    /// nodes must not share a name.
    #[arg(long, env = "RIGWATCH_NODE_ID")]
    pub node_id: Option<String>,

    /// What this node does when nodes share a catalog. `all`: takes the shard's lease, then
    /// writes, persists, runs the allocator and alert rules, and compacts while it holds the
    /// compaction lease; while another live node owns the shard it stands by, serving like a
    /// query node, and takes over (in place, on the same port) once the lease is free.
    /// `ingest`: as `all`, but never compacts (leave that to a `compact` node). `compact`:
    /// serves like a query node and, while it holds the compaction lease, compacts, merges
    /// tiers, builds rollups and applies retention. `query`: never writes; follows the
    /// catalog and the shard's WAL to answer queries (SQL, PromQL, the DSL, the portal) and
    /// passes every other request to the shard's owner.
    #[arg(long, env = "RIGWATCH_MODE", value_enum, default_value_t = Mode::All)]
    pub mode: Mode,

    /// The URL other nodes reach this one at, for requests they pass on (default:
    /// http://LISTEN-ADDRESS, with the port actually bound).
    #[arg(long, env = "RIGWATCH_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// How long a node's lease on its shard lasts without renewal (renewed every third of
    /// it). A node that dies is replaced after at most this long; one that is paused past it
    /// is fenced off: its writes are refused.
    #[arg(long, env = "RIGWATCH_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// How many shards the writes of nodes sharing a catalog are split into, each written by
    /// its own `all` or `ingest` node: a supplier's writes (its agents' and its own) go to
    /// shard `hash(supplier) mod N`, everything else to shard 0, whose owner also runs the
    /// allocator, fault detection and alert rules. Recorded in PostgreSQL by the first node;
    /// every node must be started with the same value.
    #[arg(long, env = "RIGWATCH_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_SHARDS as i64))]
    pub shards: u32,
}

/// Most shards a cluster may have.
pub const MAX_SHARDS: u32 = 256;

/// A node's part among nodes sharing a catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Owns the shard when its lease is free: writes, persists, compacts, allocates; stands
    /// by (serving like `query`) while another node owns it.
    All,
    /// Owns the shard like `all` (or stands by) but leaves compaction to other nodes.
    Ingest,
    /// Compacts, merges tiers, builds rollups and applies retention while it holds the
    /// compaction lease; otherwise serves like `query`.
    Compact,
    /// Answers queries from the shared data; passes everything else to the owner.
    Query,
}

/// The shard whose owner runs the singletons (allocator, fault detection, alert rules) and
/// takes every request that is not a supplier's write.
pub const PRIMARY_SHARD: &str = "0";

/// The shard that takes `supplier`'s writes among `shards` (FNV-1a of the name: the same on
/// every node and every release).
pub fn shard_of(supplier: &str, shards: u32) -> String {
    (rigwatch_scheduler::rng::fnv1a(supplier.as_bytes()) % u64::from(shards.max(1))).to_string()
}

/// What a node turned out to be.
#[derive(Debug)]
pub enum Role {
    /// No shared catalog.
    Alone,
    /// Owns the shard.
    Owner(ShardOwner),
    /// Follows the shard; passes requests that are not reads to its owner.
    Query(Pg),
    /// An `all` node while another owns the shard: serves like [`Role::Query`] and watches
    /// the lease, to take the shard over once it is free.
    Standby(Pg),
}

impl Role {
    /// The shared database, when nodes share a catalog.
    pub fn pg(&self) -> Option<&Pg> {
        match self {
            Role::Alone => None,
            Role::Owner(o) => Some(&o.pg),
            Role::Query(pg) | Role::Standby(pg) => Some(pg),
        }
    }

    /// The shared database, when this node follows another's shard (and so passes
    /// everything but reads on to it).
    pub fn follows(&self) -> Option<&Pg> {
        match self {
            Role::Query(pg) | Role::Standby(pg) => Some(pg),
            Role::Alone | Role::Owner(_) => None,
        }
    }

    /// The shard this node writes, if it owns one.
    pub fn shard(&self) -> Option<&str> {
        match self {
            Role::Owner(o) => Some(&o.shard),
            Role::Alone | Role::Query(_) | Role::Standby(_) => None,
        }
    }

    /// Whether this node runs the singletons (the allocator, fault detection, the alert
    /// rules): alone, or as the shard owner holding their lease.
    pub fn runs_singletons(&self) -> bool {
        match self {
            Role::Alone => true,
            Role::Owner(o) => o.singletons.is_some(),
            Role::Query(_) | Role::Standby(_) => false,
        }
    }
}

/// Wakes a node whose part must change: a standby once the shard's lease is free, an owner
/// once it lost the lease. The node then restarts its services in its new part, on the same
/// listening socket ([`crate::serve`]).
#[derive(Debug)]
pub struct PartChange {
    notify: Arc<tokio::sync::Notify>,
    _watch: Option<Task<()>>,
}

impl PartChange {
    /// Resolves once the part changed (at once if it already has).
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    /// For a standby: polls the leases of the `shards` shards and wakes once no live node
    /// holds one of them.
    pub fn when_free(pg: &Pg, ttl: Duration, shards: u32) -> Self {
        let notify = Arc::new(tokio::sync::Notify::new());
        let (pg, wake) = (pg.clone(), notify.clone());
        let watch = task::spawn(async move {
            loop {
                tokio::time::sleep((ttl / 10).max(Duration::from_millis(100))).await;
                for shard in 0..shards {
                    let name = lease::shard_lease(&shard.to_string());
                    match lease::holder(&pg, &name).await {
                        Ok(Some(h)) if h.expires_in_ms > 0 => {}
                        Ok(_) => {
                            info!(lease = %name, "a shard's lease is free: this standby takes the shard over");
                            wake.notify_one();
                            return;
                        }
                        Err(e) => {
                            warn!(error = %e, lease = %name, "cannot read a shard's lease; retrying")
                        }
                    }
                }
            }
        });
        Self {
            notify,
            _watch: Some(watch),
        }
    }
}

/// Keeps this node's supplier and token registry in step with the shared one: one exchange
/// now (so a new node knows every token before it serves), then one per interval until
/// dropped.
pub async fn share_auth(
    pg: &Pg,
    auth: &Arc<rigwatch_storage::auth::AuthStore>,
) -> anyhow::Result<Task<()>> {
    use rigwatch_storage::auth_sync::{AUTH_SYNC_INTERVAL, sync_once};
    sync_once(pg, auth)
        .await
        .context("cannot exchange the supplier and token registry with PostgreSQL")?;
    let (pg, auth) = (pg.clone(), auth.clone());
    Ok(task::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(AUTH_SYNC_INTERVAL) => {}
                _ = auth.changed().notified() => {}
            }
            if let Err(e) = sync_once(&pg, &auth).await {
                warn!(error = %e, "cannot exchange the auth registry; retrying");
            }
        }
    }))
}

/// The middleware of an owner: once it lost the shard's lease, its data no longer follows
/// the shard (another node writes it), so every request, `/health` included, gets 503 and
/// clients and load balancers go to a node that serves the shard, until the node has
/// restarted its services as a standby (moments later).
pub async fn refuse_when_deposed(
    axum::extract::State(lost): axum::extract::State<Arc<std::sync::atomic::AtomicBool>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if lost.load(std::sync::atomic::Ordering::Relaxed) {
        return crate::access::unavailable(
            "this node lost the shard's lease to another node: it serves nothing until it has restarted as a standby (moments); retry",
        );
    }
    next.run(req).await
}

/// The lease on a shard's WAL that this node holds while it serves, renewed in the
/// background. Dropping it stops the renewal; [`ShardOwner::release`] also hands the lease
/// back, so the next owner need not wait for it to expire.
#[derive(Debug)]
pub struct ShardOwner {
    pg: Pg,
    /// The shard it writes.
    pub shard: String,
    held: Held,
    /// The singletons' lease, if this node took it too.
    singletons: Option<Held>,
    renew: Task<()>,
    /// Set once another node took the lease over.
    lost: Arc<std::sync::atomic::AtomicBool>,
    /// Notified at the same moment.
    deposed: Arc<tokio::sync::Notify>,
}

impl ShardOwner {
    /// Takes `shard`'s lease for `node` if no other live node holds it. Answers the owner and
    /// the shard's WAL head, or `None` (this node then stands by).
    async fn take(
        pg: &Pg,
        shard: &str,
        node: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<(Self, u64)>> {
        let name = lease::shard_lease(shard);
        let Some((held, head)) = lease::acquire(pg, &name, node, "", ttl, Some(shard)).await?
        else {
            let h = lease::holder(pg, &name).await?;
            let (who, left) = h.map_or((String::new(), 0), |h| (h.holder, h.expires_in_ms));
            info!(lease = %name, holder = %who, expires_in_ms = left, "another node owns the shard");
            return Ok(None);
        };
        info!(lease = %held.name, epoch = held.epoch, head, "took the shard's lease");
        let singletons = take_singletons(pg, &held, ttl).await?;
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deposed = Arc::new(tokio::sync::Notify::new());
        let renew = {
            let (pg, held, singletons, lost, deposed) = (
                pg.clone(),
                held.clone(),
                singletons.clone(),
                lost.clone(),
                deposed.clone(),
            );
            task::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match lease::renew(&pg, &held, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            error!(lease = %held.name, epoch = held.epoch, "lost the shard's lease: another node took it over; this node answers 503 until it has restarted its services as a standby");
                            lost.store(true, std::sync::atomic::Ordering::Relaxed);
                            deposed.notify_one();
                            return;
                        }
                        Err(e) => {
                            warn!(error = %e, lease = %held.name, "cannot renew the shard's lease; retrying")
                        }
                    }
                    let Some(s) = &singletons else {
                        // Not the singletons' node: once their lease is free (their node
                        // died), take it and restart to run them. Of several owners, only the
                        // one that took it restarts.
                        match lease::holder(&pg, lease::SINGLETONS_LEASE).await {
                            Ok(Some(h)) if h.expires_in_ms > 0 => {}
                            Ok(_) => match lease::acquire(
                                &pg,
                                lease::SINGLETONS_LEASE,
                                &held.holder,
                                "",
                                ttl,
                                None,
                            )
                            .await
                            {
                                Ok(Some(_)) => {
                                    info!(
                                        "the singletons' lease was free and this node took it: restarting its services to run them"
                                    );
                                    deposed.notify_one();
                                    return;
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    warn!(error = %e, "cannot take the singletons' lease; retrying")
                                }
                            },
                            Err(e) => {
                                warn!(error = %e, "cannot read the singletons' lease; retrying")
                            }
                        }
                        continue;
                    };
                    match lease::renew(&pg, s, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Its writes are refused from now on (fenced); restarting stops
                            // the allocator, fault detection and the rules here.
                            error!(lease = %s.name, epoch = s.epoch, "lost the singletons' lease: another node took it over; restarting this node's services without them");
                            deposed.notify_one();
                            return;
                        }
                        Err(e) => {
                            warn!(error = %e, lease = %s.name, "cannot renew the singletons' lease; retrying")
                        }
                    }
                }
            })
        };
        Ok(Some((
            Self {
                pg: pg.clone(),
                shard: shard.to_string(),
                held: held.clone(),
                singletons,
                renew,
                lost,
                deposed,
            },
            head as u64,
        )))
    }

    /// Wakes once this node lost the lease.
    pub fn part_change(&self) -> PartChange {
        PartChange {
            notify: self.deposed.clone(),
            _watch: None,
        }
    }

    /// Whether another node took the lease over (this node's view is then stale).
    pub fn lost(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.lost.clone()
    }

    /// The shared database.
    pub fn pg(&self) -> &Pg {
        &self.pg
    }

    /// Publishes where this node serves, so that query nodes can pass requests on.
    pub async fn advertise(&self, url: &str) -> anyhow::Result<()> {
        for held in std::iter::once(&self.held).chain(&self.singletons) {
            lease::set_address(&self.pg, held, url).await?;
        }
        Ok(())
    }

    /// Stops renewing and lets the leases expire now.
    pub async fn release(self) {
        self.renew.abort();
        for held in std::iter::once(&self.held).chain(&self.singletons) {
            if let Err(e) = lease::release(&self.pg, held).await {
                warn!(error = %e, lease = %held.name, "cannot release a lease; it expires by itself");
            }
        }
    }
}

/// Takes the singletons' lease for the owner of the shard lease `shard`, if no live shard
/// owner holds it. A holder that owns no shard any more (it died or was deposed, and its
/// lease has not expired yet) is waited for, up to one and a half lease lengths, renewing
/// `shard` meanwhile, so that the node replacing it also takes the singletons instead of
/// waiting for a second restart.
async fn take_singletons(pg: &Pg, shard: &Held, ttl: Duration) -> anyhow::Result<Option<Held>> {
    let node = &shard.holder;
    let deadline = tokio::time::Instant::now() + ttl + ttl / 2;
    loop {
        if let Some((held, _)) =
            lease::acquire(pg, lease::SINGLETONS_LEASE, node, "", ttl, None).await?
        {
            info!(lease = %held.name, epoch = held.epoch, "took the singletons' lease: this node runs the allocator, fault detection and the alert rules");
            return Ok(Some(held));
        }
        let Some(h) = lease::holder(pg, lease::SINGLETONS_LEASE).await? else {
            // Released between the two reads: take it now.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if lease::owns_a_shard(pg, &h.holder).await? || tokio::time::Instant::now() >= deadline {
            info!(holder = %h.holder, "another node runs the singletons");
            return Ok(None);
        }
        let wait = Duration::from_millis(h.expires_in_ms.clamp(0, 60_000) as u64 + 50);
        info!(holder = %h.holder, ?wait, "the singletons' holder owns no shard: waiting for its lease to expire");
        if !lease::renew(pg, shard, ttl).await? {
            anyhow::bail!(
                "lost lease `{}` while waiting for the singletons' lease",
                shard.name
            );
        }
        tokio::time::sleep(wait.min(ttl / 3)).await;
    }
}

/// Records the cluster's shard count in PostgreSQL (the first node's) and refuses a node
/// started with another: nodes that split writes differently would each take a supplier's
/// writes for a shard the others do not send them to.
async fn check_shards(pg: &Pg, shards: u32) -> anyhow::Result<()> {
    let client = pg.client().await?;
    let want = i32::try_from(shards).unwrap_or(i32::MAX);
    let have: i32 = client
        .query_one(
            "WITH mine AS (
                 INSERT INTO rw_cluster (id, shards) VALUES (1, $1)
                 ON CONFLICT (id) DO NOTHING RETURNING shards
             )
             SELECT shards FROM mine UNION ALL SELECT shards FROM rw_cluster WHERE id = 1
             LIMIT 1",
            &[&want],
        )
        .await
        .map_err(|e| pg.error("cannot read the cluster's shard count from", e))?
        .get(0);
    if have != want {
        anyhow::bail!(
            "this cluster splits writes into {have} shard(s) (recorded in PostgreSQL by its first node), \
             but this node was started with --shards {shards}: start every node with --shards {have}"
        );
    }
    Ok(())
}

impl StoreArgs {
    /// `--mode` as typed.
    pub fn mode_name(&self) -> String {
        use clap::ValueEnum;
        self.mode
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }

    /// This node's name.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(rigwatch_ingest::agent::host::host_name)
    }

    /// Fills in `c`'s object store and catalog: builds the S3 client, connects to
    /// PostgreSQL and, when nodes share a catalog, probes the store's conditional writes.
    /// Answers the node's part: the shard lease it took, or the connection a query node or
    /// a standby passes requests on through; nothing for a node on its own.
    pub async fn configure(&self, c: &mut DbConfig, prefer: Option<&str>) -> anyhow::Result<Role> {
        if let Some(bucket) = &self.s3_bucket {
            c.store = StoreConfig::Custom(Arc::new(self.s3(bucket)?));
        }
        let Some(url) = &self.catalog else {
            if self.mode != Mode::All {
                anyhow::bail!(
                    "--mode {} needs --catalog: it divides work among nodes that share a catalog",
                    self.mode_name()
                );
            }
            return Ok(Role::Alone);
        };
        let node = self.node_id();
        let pg = Pg::connect(url)
            .await
            .with_context(|| format!("cannot use the catalog at {}", redact(url)))?;
        let store = match &c.store {
            StoreConfig::Custom(s) => s.clone(),
            _ => {
                let dir = c.data_dir.join("objects");
                Arc::new(rigwatch_storage::durable::SyncedLocalStore::new(
                    &dir,
                    Arc::new(rigwatch_storage::durable::RealSync),
                )?) as Arc<dyn object_store::ObjectStore>
            }
        };
        rigwatch_storage::conditional::probe_create_only(&store, &node)
            .await
            .context("the object store failed the conditional-write probe")?;
        info!(node = %node, catalog = %redact(url), mode = ?self.mode, "catalog in PostgreSQL; the object store honours create-only writes");
        check_shards(&pg, self.shards).await?;
        let log = ShardLog {
            pg: pg.clone(),
            store,
            shard: PRIMARY_SHARD.to_string(),
        };
        let compaction = || {
            Maintenance::Leased(lease::Keeper::start(
                &pg,
                lease::COMPACTION_LEASE,
                &node,
                self.lease_ttl,
            ))
        };
        let mut taken = None;
        if matches!(self.mode, Mode::All | Mode::Ingest) {
            // The shard it owned before restarting, else the first free one, the primary
            // first.
            let order = prefer
                .map(str::to_string)
                .into_iter()
                .chain((0..self.shards).map(|k| k.to_string()));
            for shard in order {
                taken = ShardOwner::take(&pg, &shard, &node, self.lease_ttl).await?;
                if taken.is_some() {
                    break;
                }
            }
        }
        if taken.is_none() && matches!(self.mode, Mode::All | Mode::Ingest) {
            info!(
                shards = self.shards,
                "live nodes own every shard: standing by (serving reads, passing the rest on) until a shard's lease is free"
            );
        }
        let Some((owner, head)) = taken else {
            c.catalog = CatalogConfig::Postgres {
                pg: pg.clone(),
                writer: PRIMARY_SHARD.to_string(),
                fence: None,
            };
            c.wal_home = WalHome::Follow { log };
            c.maintenance = match self.mode {
                Mode::Compact => compaction(),
                Mode::All | Mode::Ingest | Mode::Query => Maintenance::Elsewhere,
            };
            return Ok(match self.mode {
                Mode::Query | Mode::Compact => Role::Query(pg),
                Mode::All | Mode::Ingest => Role::Standby(pg),
            });
        };
        c.maintenance = match self.mode {
            Mode::All => compaction(),
            Mode::Ingest | Mode::Compact | Mode::Query => Maintenance::Elsewhere,
        };
        c.catalog = CatalogConfig::Postgres {
            pg: pg.clone(),
            writer: owner.shard.clone(),
            fence: Some(owner.held.clone()),
        };
        c.wal_home = WalHome::Shard {
            log: log.of(&owner.shard),
            held: owner.held.clone(),
            head,
            singletons: owner.singletons.clone(),
        };
        Ok(Role::Owner(owner))
    }

    fn s3(&self, bucket: &str) -> anyhow::Result<object_store::aws::AmazonS3> {
        let has_key = std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty());
        let has_secret = std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some_and(|v| !v.is_empty());
        match (has_key, has_secret) {
            (true, true) => {}
            (true, false) => anyhow::bail!(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both to reach bucket `{bucket}`"
            ),
            _ if !self.s3_instance_credentials => anyhow::bail!(
                "no S3 credentials for bucket `{bucket}`: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or pass --s3-instance-credentials to use the instance's \
                 metadata or web-identity credentials"
            ),
            _ => {}
        }
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&self.s3_region)
            .with_allow_http(self.s3_allow_http);
        if let Some(endpoint) = &self.s3_endpoint {
            if endpoint.starts_with("http://") && !self.s3_allow_http {
                anyhow::bail!(
                    "--s3-endpoint {endpoint} is plain http: pass --s3-allow-http to allow it"
                );
            }
            b = b.with_endpoint(endpoint);
        }
        b.build()
            .with_context(|| format!("cannot configure S3 bucket `{bucket}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suppliers_shard_is_pinned_across_releases() {
        // Nodes of different releases must agree on where a supplier writes.
        assert_eq!(shard_of("acme", 256), "15");
        assert_eq!(shard_of("acme", 2), "1");
        assert_eq!(shard_of("acme", 1), "0");
        assert_eq!(shard_of("acme", 0), "0", "no shards is read as one");
    }
}
