//! Where the store keeps its state: the object store (local disk or an S3-compatible bucket)
//! and the catalog (beside the data, or in PostgreSQL for several nodes), and this node's
//! name among them.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rigwatch_storage::pg::{Pg, redact};
use rigwatch_storage::{CatalogConfig, DbConfig, StoreConfig};
use tracing::info;

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
}

impl StoreArgs {
    /// This node's name.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(crate::agent_cli::host_name)
    }

    /// Fills in `c`'s object store and catalog: builds the S3 client, connects to
    /// PostgreSQL and, when nodes share a catalog, probes the store's conditional writes.
    pub async fn configure(&self, c: &mut DbConfig) -> anyhow::Result<()> {
        if let Some(bucket) = &self.s3_bucket {
            c.store = StoreConfig::Custom(Arc::new(self.s3(bucket)?));
        }
        let Some(url) = &self.catalog else {
            return Ok(());
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
        info!(node = %node, catalog = %redact(url), "catalog in PostgreSQL; the object store honours create-only writes");
        c.catalog = CatalogConfig::Postgres { pg, writer: node };
        Ok(())
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
