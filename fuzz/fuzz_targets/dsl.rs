#![no_main]
//! The analyst pipe language: parse, print back, and lower against a catalog where every
//! table has a small fixed schema. Oracle: on a 2 MiB stack (a tokio thread's), nothing
//! panics or overflows; a refused query's error points inside the text; an accepted one
//! prints to text that parses to the same query, and lowers to SQL or to a located error.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use libfuzzer_sys::fuzz_target;
use rigwatch_dsl::{TableRef, parse, to_sql};

fn schema(_: &TableRef) -> Option<SchemaRef> {
    let tag = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Some(Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("supplier", tag(), true),
        Field::new("gpu_uuid", tag(), true),
        Field::new("model", tag(), true),
        Field::new("utilization", DataType::Float64, true),
        Field::new("energy_mj", DataType::Float64, true),
        Field::new("amount_micro", DataType::Int64, true),
        Field::new("code", DataType::Int64, true),
        Field::new("state", DataType::Utf8, true),
    ])))
}

fn check(text: &str) {
    match parse(text) {
        Err(e) => assert!(e.pos().offset <= text.len(), "{e} points past the text"),
        Ok(q) => {
            let printed = q.to_string();
            let again = parse(&printed)
                .unwrap_or_else(|e| panic!("`{text}` printed as `{printed}`, which fails: {e}"));
            assert_eq!(again.to_string(), printed, "printing is not stable");
            if let Err(e) = to_sql(text, &schema) {
                assert!(e.pos().offset <= text.len(), "{e} points past the text");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.to_owned();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || check(&text))
        .expect("spawn")
        .join()
        .expect("the DSL panicked or overflowed its stack");
});
