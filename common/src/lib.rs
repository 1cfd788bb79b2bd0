//! Facts every rigwatch member shares, with no dependency on any other member.
//!
//! - [`gpu_model`]: the one GPU model table: how NVML product names map to a model, and each
//!   model's memory, power, thermal slowdown temperature and illustrative price. The
//!   allocator, the earnings ledger, fault detection and agent registration all read it, so
//!   they agree on what a GPU is.
//! - [`dcgm`]: which `gpu` field each dcgm-exporter metric carries, and where its labels
//!   come from, so the agent's scraper and the PromQL source agree on NVIDIA's names.
//! - [`money`]: amounts in integer micro-units, exact decimal parsing and formatting, and
//!   currencies' minor units.
//! - [`rng`]: the seeded generator simulations draw from.
//! - [`rollup`]: how rollup tables and their columns are named, and the staleness marker.
//! - [`tables`]: the name of every table rigwatch writes, and what its rows hold.
//! - `task` (feature `task`): spawned tasks that stop when their handle is dropped.
//! - [`http_error`]: the one error body of rigwatch's own HTTP APIs and the error trait behind
//!   it.

pub mod dcgm;
pub mod gpu_model;
pub mod http_error;
pub mod money;
pub mod rng;
pub mod rollup;
pub mod tables;
#[cfg(feature = "task")]
pub mod task;
