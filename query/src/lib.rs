//! rigwatch's query surfaces. This crate runs SQL (DataFusion's dialect, read-only) over the
//! store's tables and serves it over HTTP as JSON, CSV or Arrow IPC; the pipe DSL
//! (`rigwatch-dsl`) lowers to SQL and runs the same way.
//!
//! ```text
//!  POST /api/v1/sql ──► QueryService::sql ──► SessionContext (tables from rigwatch-storage)
//!  POST /api/v1/dsl ──► lower to SQL ──┘  │
//!                         JSON | CSV | Arrow IPC (by Accept or ?format=)
//! ```

pub mod alerting;
pub mod dsl;
pub mod error;
mod executor;
pub mod format;
pub mod prometheus;
pub mod routes;
pub mod rows;
pub mod rules;
mod service;

pub use error::{Error, PromqlError, Result};
pub use service::{QueryLimits, QueryMetrics, QueryService};
