//! The PromQL-compatible query language: parser (nom), AST and evaluator.
//!
//! This crate knows nothing of storage: the evaluator reads series through the
//! [`Queryable`]-style interface in `eval`, which `rigwatch-query` implements over
//! DataFusion and the conformance tests implement in memory.

pub mod ast;
pub mod parser;
pub mod signatures;

pub use parser::{ParseError, parse};
#[cfg(test)]
mod depth_tests;
pub mod eval;
pub mod functions;
pub mod storage;
pub mod testscript;
pub mod value;
