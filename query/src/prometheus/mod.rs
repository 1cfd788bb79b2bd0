//! The query language over the store: DataFusion-backed series source and the Prometheus
//! HTTP API. Parsing and evaluation live in `rigwatch-promql`.

pub mod api;
pub mod source;

pub use api::{PromOptions, router};
