//! rigwatch's write formats: every wire format parses into one
//! [`WriteBatch`](rigwatch_storage::batch::WriteBatch).
//!
//! ```text
//!  request body ──gzip::decompress (limit)──► bytes
//!                                               │
//!     ┌──────────────────┬──────────────────────┴───────────────┐
//!     ▼ utf8()           ▼ utf8()                                ▼ remote_write::decode
//!  line_protocol::parse  prom_text::parse          (snappy, limit) → WriteRequest
//!     │  (nom, zero-copy)   │  (nom)                              │ remote_write::to_batch
//!     └──────────────────┬──┴────────────────────────────────────┘
//!                        ▼
//!        WriteBatch (good rows)  +  Vec<LineError> (bad lines: line, column, byte, what)
//! ```
//!
//! A body that cannot be read at all is an [`IngestError`] (with its HTTP status); a body
//! that can is parsed line by line, and each bad line becomes a [`LineError`] while every
//! good line is kept.

pub mod admission;
pub mod agent;
pub mod error;
pub mod gzip;
pub mod line_protocol;
pub mod partition_budget;
pub mod prom_text;
pub mod remote_write;
pub mod routes;

pub use error::{After, Expected, IngestError, LineError, LineErrorKind, Result, utf8};
pub use line_protocol::Precision;
