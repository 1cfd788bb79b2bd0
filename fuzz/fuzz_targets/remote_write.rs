#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rigwatch_ingest::remote_write::{WriteRequest, decode, encode, to_batch};
use rigwatch_storage::batch::WriteBatch;

fn check_request(req: &WriteRequest) {
    let mut batch = WriteBatch::default();
    let errors = to_batch(req, &mut batch);
    rigwatch_fuzz::check_series(req.timeseries.len(), &batch, &errors);
    // encode/decode round-trips (compared as bytes: NaN != NaN).
    let again = decode(&encode(req), usize::MAX).expect("own encoding decodes");
    assert_eq!(again.encode_to_vec(), req.encode_to_vec());
}

fuzz_target!(|data: &[u8]| {
    // As a request body: snappy, then protobuf.
    match decode(data, 1 << 20) {
        Ok(req) => check_request(&req),
        Err(e) => rigwatch_fuzz::check_ingest_error(&e),
    }
    // As the protobuf itself, so that the fuzzer reaches to_batch without learning snappy.
    if let Ok(req) = WriteRequest::decode(data) {
        check_request(&req);
    }
});
