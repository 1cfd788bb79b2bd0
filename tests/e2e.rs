//! End-to-end tests against the real `rigwatch` binary: crash safety under `kill -9` and
//! injected aborts, torn WAL tails, corrupt Parquet files, graceful shutdown, and a real
//! Prometheus remote-writing to rigwatch.
//!
//! Each test starts `rigwatch serve` as a child process on `127.0.0.1:0` with its own temporary
//! data directory and talks to it over HTTP only, as a user would.

mod e2e {
    pub mod abuse;
    pub mod adversarial;
    pub mod agent;
    pub mod alertmanager;
    pub mod alloc;
    pub mod compare;
    pub mod corruption;
    pub mod crash;
    pub mod dcgm;
    pub mod dcgm_rules;
    pub mod dsl;
    pub mod earnings;
    pub mod error_body;
    pub mod harness;
    pub mod health;
    pub mod host;
    pub mod ledger;
    pub mod limits;
    pub mod models;
    pub mod multinode;
    pub mod multinode_compact;
    pub mod multinode_shards;
    pub mod multinode_singletons;
    pub mod portal;
    pub mod prometheus;
    pub mod promql;
    pub mod promql_diff;
    pub mod recording;
    pub mod services;
    pub mod shards;
    pub mod shutdown;
    pub mod soak;
    pub mod tenancy;
}
