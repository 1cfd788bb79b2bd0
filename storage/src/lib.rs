//! rigwatch's time-series store.
//!
//! ```text
//!  WriteBatch ──validate (schema)──► WAL (group commit, fsync) ──► write buffer (Arrow, per
//!       │                                                          table × time partition)
//!       │                                                                 │ persist
//!       ▼                                                                 ▼
//!  subscribers (live fleet view)                    Parquet files on object_store + catalog
//!                                                                         │
//!  DataFusion ◄── TableProvider: buffer ∪ files, pruned by time/tags, deduplicated on
//!                 (series, time), last write wins per field
//! ```
//!
//! A *table* has tag columns (dictionary-encoded strings), typed field columns and a
//! nanosecond `time` column. A *series* is a table plus its tag set; writing the same series
//! and time again is an upsert, field by field. Tables declared append-only (events) keep
//! every row.

pub mod auth;
pub mod auth_sync;
pub mod batch;
pub mod buffer;
pub mod catalog;
pub mod conditional;
pub mod config;
pub mod counted;
pub mod crash;
pub mod db;
pub mod durable;
pub mod error;
pub mod lease;
pub mod merge;
pub mod metrics;
pub mod persist;
pub mod pg;
pub mod schema;
pub mod series_index;
pub mod shared_lines;
pub mod table;
pub mod wal;

pub use batch::{FieldType, FieldValue, WriteBatch};
pub use config::{CatalogConfig, DbConfig, Maintenance, StoreConfig, WalHome};
pub use db::{Db, LEADER_EPOCH, Singleton, WriteOptions, WriteOutcome};
pub use error::{Error, Result};
pub use metrics::StorageMetrics;
