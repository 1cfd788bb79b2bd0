//! Codec tests: proptest round trips, hostile input, and the format-1 golden bytes.

use proptest::prelude::*;

use super::*;
use crate::batch::FieldValue;

/// An owned field value, turned into a borrowed [`FieldValue`] when building the batch.
#[derive(Debug, Clone)]
enum Value {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(String),
}

impl Value {
    fn as_field(&self) -> FieldValue<'_> {
        match self {
            Value::F64(x) => FieldValue::F64(*x),
            Value::I64(x) => FieldValue::I64(*x),
            Value::U64(x) => FieldValue::U64(*x),
            Value::Bool(x) => FieldValue::Bool(*x),
            Value::Str(s) => FieldValue::Str(s),
        }
    }
}

type RowSpec = (
    String,
    i64,
    u32,
    Vec<(String, String)>,
    Vec<(String, Value)>,
);

fn value(allow_nan: bool) -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("NaN != NaN", move |x| allow_nan || !x.is_nan())
            .prop_map(Value::F64),
        any::<i64>().prop_map(Value::I64),
        any::<u64>().prop_map(Value::U64),
        any::<bool>().prop_map(Value::Bool),
        "\\PC{0,12}".prop_map(Value::Str),
    ]
}

fn row(allow_nan: bool) -> impl Strategy<Value = RowSpec> {
    (
        "\\PC{1,10}",
        any::<i64>(),
        any::<u32>(),
        prop::collection::vec(("\\PC{1,8}", "\\PC{0,10}"), 0..5),
        prop::collection::vec(("\\PC{1,8}", value(allow_nan)), 1..6),
    )
}

/// Builds a batch from row specs; rows the builder rejects (duplicate keys, `time`) are
/// simply left out, which is what a real parser does too.
fn build(rows: &[RowSpec]) -> WriteBatch {
    let mut b = WriteBatch::default();
    for (table, time, line, tags, fields) in rows {
        let mut r = b.row(table, *time);
        for (k, v) in tags {
            r.tag(k, v);
        }
        for (k, v) in fields {
            r.field(k, v.as_field());
        }
        let _ = r.finish(*line);
    }
    b
}

fn encoded(batch: &WriteBatch) -> Vec<u8> {
    let mut out = Vec::new();
    encode(batch, &mut out);
    out
}

proptest! {
    #[test]
    fn round_trip(rows in prop::collection::vec(row(false), 0..20)) {
        let batch = build(&rows);
        let bytes = encoded(&batch);
        prop_assert!(bytes.len() <= encoded_len_upper_bound(&batch));
        let decoded = decode(&bytes).expect("decodes");
        prop_assert_eq!(&decoded, &batch);
    }

    #[test]
    fn round_trip_is_bit_exact_with_nan(rows in prop::collection::vec(row(true), 0..8)) {
        let bytes = encoded(&build(&rows));
        prop_assert_eq!(encoded(&decode(&bytes).expect("decodes")), bytes);
    }

    #[test]
    fn decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decode_mutated_payload_never_panics(
        rows in prop::collection::vec(row(true), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encoded(&build(&rows));
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let _ = decode(&bytes);
        let _ = decode(&bytes[..cut.index(bytes.len())]);
    }
}

#[test]
fn hostile_counts_are_rejected_before_allocating() {
    let mut bytes = vec![RECORD_FORMAT_V1];
    for n in [0u32, u32::MAX, 0, 0] {
        bytes.extend_from_slice(&n.to_le_bytes());
    }
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::CountTooLarge { what: "row", .. })
    ));
    bytes[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&bytes), Err(DecodeError::Truncated { .. })));
}

#[test]
fn rejects_bad_utf8_unknown_format_and_trailing_bytes() {
    let mut b = WriteBatch::default();
    let mut r = b.row("gpu", 5);
    r.tag("host", "a").field("temp", FieldValue::Str("hot"));
    r.finish(1).expect("valid row");
    let good = encoded(&b);

    let mut bad = good.clone();
    bad[PREFIX_LEN] = 0xff;
    assert!(matches!(decode(&bad), Err(DecodeError::InvalidUtf8 { .. })));

    let mut bad = good.clone();
    bad[0] = 2;
    assert_eq!(decode(&bad), Err(DecodeError::UnknownFormat { format: 2 }));

    let mut bad = good.clone();
    bad.push(0);
    assert_eq!(
        decode(&bad),
        Err(DecodeError::TrailingBytes { trailing: 1 })
    );

    assert!(matches!(decode(&[]), Err(DecodeError::Truncated { .. })));
}

/// Compatibility: these bytes were written by format 1 and must decode forever.
#[test]
fn format_v1_golden_bytes() {
    let mut b = WriteBatch::default();
    let mut r = b.row("g", -2);
    r.tag("k", "v")
        .field("a", FieldValue::F64(1.5))
        .field("b", FieldValue::I64(-1))
        .field("c", FieldValue::U64(7))
        .field("d", FieldValue::Bool(true))
        .field("e", FieldValue::Str("é"));
    r.finish(3).expect("valid row");
    let golden: &[u8] = &GOLDEN_V1;
    assert_eq!(encoded(&b), golden);
    assert_eq!(decode(golden).expect("decodes"), b);
}

#[rustfmt::skip]
const GOLDEN_V1: [u8; 157] = [
    1, // record format
    10, 0, 0, 0,  1, 0, 0, 0,  1, 0, 0, 0,  5, 0, 0, 0, // arena bytes, rows, tags, fields
    b'g', b'k', b'v', b'a', b'b', b'c', b'd', b'e', 0xc3, 0xa9, // arena "gkvabcdeé"
    // row: table (0, 1), time -2, line 3, tags 0..1, fields 0..5
    0, 0, 0, 0,  1, 0, 0, 0,  254, 255, 255, 255, 255, 255, 255, 255,  3, 0, 0, 0,
    0, 0, 0, 0,  1, 0, 0, 0,  0, 0, 0, 0,  5, 0, 0, 0,
    // tag: key (1, 1), value (2, 1)
    1, 0, 0, 0,  1, 0, 0, 0,  2, 0, 0, 0,  1, 0, 0, 0,
    // fields: a = f64 1.5, b = i64 -1, c = u64 7, d = bool true, e = str (8, 2)
    3, 0, 0, 0,  1, 0, 0, 0,  0,  0, 0, 0, 0, 0, 0, 0xf8, 0x3f,
    4, 0, 0, 0,  1, 0, 0, 0,  1,  255, 255, 255, 255, 255, 255, 255, 255,
    5, 0, 0, 0,  1, 0, 0, 0,  2,  7, 0, 0, 0, 0, 0, 0, 0,
    6, 0, 0, 0,  1, 0, 0, 0,  3,  1,
    7, 0, 0, 0,  1, 0, 0, 0,  4,  8, 0, 0, 0,  2, 0, 0, 0,
];
