//! Integration tests of the storage crate: one binary, modules under `tests/storage/`.

mod storage {
    mod differential;
    mod model;
    mod power_cut;
    mod series_index;
    mod time_filters;
    mod upsert;
    mod util;
}
