//! rigwatch's query surfaces. This crate runs SQL (DataFusion's dialect, read-only) over the
//! store's tables and serves it over HTTP as JSON, CSV or Arrow IPC.
//!
//! ```text
//!  POST /api/v1/sql ──► QueryService::sql ──► SessionContext (tables from rigwatch-storage)
//!                                     │
//!                         JSON | CSV | Arrow IPC (by Accept or ?format=)
//! ```

pub mod error;
pub mod format;
pub mod promql;
pub mod routes;
pub mod rules;
mod service;

pub use error::{Error, Result};
pub use service::{QueryLimits, QueryMetrics, QueryService};
