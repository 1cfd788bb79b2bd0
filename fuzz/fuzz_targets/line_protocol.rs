#![no_main]

use libfuzzer_sys::fuzz_target;
use rigwatch_ingest::line_protocol::{Precision, parse};
use rigwatch_storage::batch::WriteBatch;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let body = match rigwatch_ingest::utf8(data) {
        Ok(body) => body,
        Err(e) => return rigwatch_fuzz::check_ingest_error(&e),
    };
    let precision = [
        Precision::Ns,
        Precision::Us,
        Precision::Ms,
        Precision::S,
        Precision::M,
        Precision::H,
    ][usize::from(selector) % 6];
    let mut batch = WriteBatch::default();
    let errors = parse(body, precision, i64::from(selector), &mut batch);
    rigwatch_fuzz::check_text(body, &batch, &errors);
});
