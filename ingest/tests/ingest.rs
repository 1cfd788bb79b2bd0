//! Integration tests of the write routes against a real server: one binary, modules under
//! `tests/ingest/`.

#[path = "ingest"]
mod ingest {
    mod body;
    mod formats;
    mod line_protocol;
    mod server;
}

#[path = "agent"]
mod agent {
    mod batches;
    mod dcgm;
    mod identity;
    mod register;
    mod spool;
    mod support;
    mod tenancy;
}
