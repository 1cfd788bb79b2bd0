#![no_main]

use libfuzzer_sys::fuzz_target;
use rigwatch_ingest::prom_text::parse;
use rigwatch_storage::batch::WriteBatch;

fuzz_target!(|data: &[u8]| {
    let body = match rigwatch_ingest::utf8(data) {
        Ok(body) => body,
        Err(e) => return rigwatch_fuzz::check_ingest_error(&e),
    };
    let mut batch = WriteBatch::default();
    let errors = parse(body, 1_700_000_000_000, &mut batch);
    rigwatch_fuzz::check_text(body, &batch, &errors);
});
