//! The store's own metrics, registered into a registry the caller passes in.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Counters and latencies of the write, persist and compaction paths.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    pub rows_written: Counter,
    pub values_written: Counter,
    pub rows_rejected: Counter,
    pub writes_backpressured: Counter,
    pub wal_bytes: Counter,
    pub wal_syncs: Counter,
    pub wal_sync_seconds: Histogram,
    pub wal_group_writes: Histogram,
    pub buffer_bytes: Gauge,
    pub buffer_rows: Gauge,
    pub followed_bytes: Gauge,
    pub persists: Counter,
    pub persist_seconds: Histogram,
    pub persisted_bytes: Counter,
    pub compactions: Counter,
    pub compaction_seconds: Histogram,
    pub files: Gauge,
    pub file_bytes: Gauge,
    pub corrupt_files: Gauge,
    pub object_store: crate::counted::ObjectStoreMetrics,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        let secs = || Histogram::new(exponential_buckets(0.0001, 4.0, 12));
        Self {
            rows_written: Counter::default(),
            values_written: Counter::default(),
            rows_rejected: Counter::default(),
            writes_backpressured: Counter::default(),
            wal_bytes: Counter::default(),
            wal_syncs: Counter::default(),
            wal_sync_seconds: secs(),
            wal_group_writes: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            buffer_bytes: Gauge::default(),
            buffer_rows: Gauge::default(),
            followed_bytes: Gauge::default(),
            persists: Counter::default(),
            persist_seconds: secs(),
            persisted_bytes: Counter::default(),
            compactions: Counter::default(),
            compaction_seconds: secs(),
            files: Gauge::default(),
            file_bytes: Gauge::default(),
            corrupt_files: Gauge::default(),
            object_store: Default::default(),
        }
    }
}

impl StorageMetrics {
    /// Registers every metric under the `rigwatch_storage_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("rigwatch_storage");
        r.register(
            "rows_written",
            "Rows accepted and made durable",
            self.rows_written.clone(),
        );
        r.register(
            "values_written",
            "Field values accepted",
            self.values_written.clone(),
        );
        r.register(
            "rows_rejected",
            "Rows rejected by validation",
            self.rows_rejected.clone(),
        );
        r.register(
            "writes_backpressured",
            "Writes refused because the buffer was over its memory budget",
            self.writes_backpressured.clone(),
        );
        r.register_with_unit(
            "wal",
            "Bytes appended to the WAL",
            Unit::Bytes,
            self.wal_bytes.clone(),
        );
        r.register(
            "wal_syncs",
            "WAL fsyncs (group commits)",
            self.wal_syncs.clone(),
        );
        r.register_with_unit(
            "wal_sync",
            "Latency of WAL fsync",
            Unit::Seconds,
            self.wal_sync_seconds.clone(),
        );
        r.register(
            "wal_group_writes",
            "Write requests committed per WAL group commit",
            self.wal_group_writes.clone(),
        );
        r.register_with_unit(
            "buffer",
            "Approximate bytes held by the write buffer",
            Unit::Bytes,
            self.buffer_bytes.clone(),
        );
        r.register(
            "buffer_rows",
            "Rows held by the write buffer",
            self.buffer_rows.clone(),
        );
        r.register_with_unit(
            "followed",
            "Approximate bytes held by the buffers of shards other nodes write (their rows not yet in files)",
            Unit::Bytes,
            self.followed_bytes.clone(),
        );
        r.register(
            "persists",
            "Completed persists of the write buffer",
            self.persists.clone(),
        );
        r.register_with_unit(
            "persist",
            "Duration of a persist",
            Unit::Seconds,
            self.persist_seconds.clone(),
        );
        r.register_with_unit(
            "persisted",
            "Bytes of Parquet written by persists",
            Unit::Bytes,
            self.persisted_bytes.clone(),
        );
        r.register(
            "compactions",
            "Completed partition compactions",
            self.compactions.clone(),
        );
        r.register_with_unit(
            "compaction",
            "Duration of a compaction pass",
            Unit::Seconds,
            self.compaction_seconds.clone(),
        );
        r.register("files", "Parquet files in the catalog", self.files.clone());
        r.register_with_unit(
            "file",
            "Bytes of Parquet in the catalog",
            Unit::Bytes,
            self.file_bytes.clone(),
        );
        r.register(
            "corrupt_files",
            "Catalog files that failed their check and are excluded from queries",
            self.corrupt_files.clone(),
        );
        r.register(
            "object_store_requests",
            "Requests to the object store, by kind",
            self.object_store.requests.clone(),
        );
        r.register_with_unit(
            "object_store_sent",
            "Bytes sent to the object store",
            Unit::Bytes,
            self.object_store.sent_bytes.clone(),
        );
        r.register_with_unit(
            "object_store_received",
            "Bytes received from the object store",
            Unit::Bytes,
            self.object_store.received_bytes.clone(),
        );
    }
}
