//! Facts every rigwatch member shares, with no dependency on any other member.
//!
//! - [`gpu_model`]: the one GPU model table: how NVML product names map to a model, and each
//!   model's memory, power, thermal slowdown temperature and illustrative price. The
//!   allocator, the earnings ledger, fault detection and agent registration all read it, so
//!   they agree on what a GPU is.
//! - [`money`]: amounts in integer micro-units, exact decimal parsing and formatting, and
//!   currencies' minor units.

pub mod gpu_model;
pub mod money;
