use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, DictionaryArray, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use base64::Engine as _;
use proptest::prelude::*;

use super::*;

fn schema() -> SchemaRef {
    let tag = crate::schema::tag_type();
    Arc::new(Schema::new(vec![
        Field::new("gpu", tag.clone(), true),
        Field::new("host", tag, true),
        Field::new("v", DataType::Float64, true),
    ]))
}

/// Rows as (gpu, host); each batch gets its own dictionaries.
fn batch(rows: &[(Option<&str>, Option<&str>)]) -> RecordBatch {
    let gpu: DictionaryArray<Int32Type> = rows.iter().map(|r| r.0).collect();
    let host: DictionaryArray<Int32Type> = rows.iter().map(|r| r.1).collect();
    let v = Float64Array::from(vec![1.0; rows.len()]);
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(gpu) as ArrayRef,
            Arc::new(host) as ArrayRef,
            Arc::new(v) as ArrayRef,
        ],
    )
    .unwrap()
}

fn tag_schema() -> SchemaRef {
    let s = schema();
    Arc::new(Schema::new(vec![s.field(0).clone(), s.field(1).clone()]))
}

/// The rows a selection reads.
fn rows_of(sel: &Selection, total: usize) -> Vec<usize> {
    match sel {
        Selection::All => (0..total).collect(),
        Selection::None => Vec::new(),
        Selection::Rows(r) => {
            let mut out = Vec::new();
            let mut at = 0;
            for s in r.iter() {
                if !s.skip {
                    out.extend(at..at + s.row_count);
                }
                at += s.row_count;
            }
            assert_eq!(at, total, "a selection covers the whole file");
            out
        }
    }
}

/// Keeps series whose gpu equals `gpu` (null never matches).
fn keep_gpu(index: &SeriesIndex, gpu: &str) -> BooleanArray {
    let b = index.series_batch(&tag_schema()).unwrap();
    let col = cast(b.column(0), &DataType::Utf8).unwrap();
    col.as_string::<i32>()
        .iter()
        .map(|v| v.map(|v| v == gpu))
        .collect()
}

#[test]
fn runs_continue_across_batches_and_restart_at_row_groups() {
    let mut b = Builder::new(&schema());
    let a = (Some("a"), Some("h1"));
    let c = (Some("c"), None);
    for rows in [&[a, a, a, a][..], &[a, a, c, c], &[c, c, c, c]] {
        b.push(&batch(rows));
    }
    b.end_group();
    b.push(&batch(&[a, a, a, a]));
    let text = b
        .finish()
        .and_then(|kv| kv.value)
        .expect("runs average at least four rows");
    let index = SeriesIndex::parse(&text, 16).unwrap();
    // a [0, 6), c [6, 12), a again after the row group ends [12, 16).
    assert_eq!(index.starts, [0, 6, 12]);
    assert_eq!(index.ids, [0, 1, 0]);
    assert_eq!(
        rows_of(&index.selection(&keep_gpu(&index, "a")), 16),
        [0, 1, 2, 3, 4, 5, 12, 13, 14, 15]
    );
    assert_eq!(index.selection(&keep_gpu(&index, "zz")), Selection::None);
    let all = BooleanArray::from(vec![true, true]);
    assert_eq!(index.selection(&all), Selection::All);
    // A null verdict keeps nothing.
    let nulls = BooleanArray::from(vec![None, Some(true)]);
    assert_eq!(
        rows_of(&index.selection(&nulls), 16),
        (6..12).collect::<Vec<_>>()
    );
}

#[test]
fn a_file_of_tiny_runs_or_without_tags_carries_no_index() {
    let mut b = Builder::new(&schema());
    b.push(&batch(&[
        (Some("a"), None),
        (Some("b"), None),
        (Some("c"), None),
    ]));
    assert!(b.finish().is_none());
    let untagged = Schema::new(vec![Field::new("v", DataType::Float64, true)]);
    assert!(Builder::new(&untagged).finish().is_none());
}

#[test]
fn an_inconsistent_index_is_ignored() {
    let mut b = Builder::new(&schema());
    b.push(&batch(&[(Some("a"), None); 8]));
    let text = b.finish().and_then(|kv| kv.value).unwrap();
    assert!(SeriesIndex::parse(&text, 8).is_some());
    // Another row count than the file's, garbage, or runs that do not add up: read the
    // whole file.
    assert!(SeriesIndex::parse(&text, 9).is_none());
    assert!(SeriesIndex::parse("{", 8).is_none());
    let repack = |json: &str| {
        let packed = zstd::bulk::compress(json.as_bytes(), 3).unwrap();
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(packed)
    };
    let good =
        r#"{"rows":8,"columns":["gpu"],"values":[["a"]],"keys":[1],"lengths":[8],"series":[0]}"#;
    assert!(SeriesIndex::parse(&repack(good), 8).is_some());
    for bad in [
        good.replace("[8]", "[3]"),
        good.replace(
            "\"lengths\":[8],\"series\":[0]",
            "\"lengths\":[0,8],\"series\":[0,0]",
        ),
        good.replace("\"series\":[0]", "\"series\":[1]"),
        good.replace("\"keys\":[1]", "\"keys\":[2]"),
    ] {
        assert!(SeriesIndex::parse(&repack(&bad), 8).is_none(), "{bad}");
    }
}

#[test]
fn a_tag_the_file_lacks_reads_as_null() {
    let mut b = Builder::new(&schema());
    b.push(&batch(&[(Some("a"), Some("h")); 4]));
    let index = SeriesIndex::parse(&b.finish().and_then(|kv| kv.value).unwrap(), 4).unwrap();
    let tags = Arc::new(Schema::new(vec![
        Field::new("rack", crate::schema::tag_type(), true),
        Field::new("gpu", crate::schema::tag_type(), true),
    ]));
    let batch = index.series_batch(&tags).unwrap();
    assert_eq!(batch.num_rows(), 1);
    assert!(batch.column(0).is_null(0));
    assert!(batch.column(1).is_valid(0));
}

#[test]
fn the_cache_stays_within_its_budget() {
    let mut b = Builder::new(&schema());
    b.push(&batch(&[(Some("a"), Some("h")); 4]));
    let index =
        Arc::new(SeriesIndex::parse(&b.finish().and_then(|kv| kv.value).unwrap(), 4).unwrap());
    let cache = IndexCache::new(64 * (index.bytes() + 100));
    for i in 0..1000 {
        cache.insert(&format!("f{i:04}"), Some(index.clone()));
        assert!(cache.inner.lock().1 <= cache.limit);
    }
    assert!(cache.get("f0999").is_some());
    cache.insert("none", None);
    assert!(matches!(cache.get("none"), Some(None)));
}

proptest! {
    /// Whatever the rows, batches and row groups, a selection reads exactly the rows whose
    /// series the predicate keeps (rows come in runs, as sorted files hold them, but a
    /// series may recur).
    #[test]
    fn selection_reads_exactly_the_matching_rows(
        runs in prop::collection::vec((0usize..5, 0usize..3, 4usize..12), 1..30),
        cuts in prop::collection::vec(1usize..20, 1..10),
        groups in prop::collection::vec(any::<bool>(), 10),
        wanted in 0usize..5,
    ) {
        let gpus = [Some("g0"), Some("g1"), Some("g2"), None, Some("")];
        let hosts = [Some("h0"), None, Some("h1")];
        let rows: Vec<(Option<&str>, Option<&str>)> = runs
            .iter()
            .flat_map(|&(g, h, n)| std::iter::repeat_n((gpus[g], hosts[h]), n))
            .collect();
        let mut b = Builder::new(&schema());
        let (mut at, mut k) = (0, 0);
        while at < rows.len() {
            let n = cuts[k % cuts.len()].min(rows.len() - at);
            b.push(&batch(&rows[at..at + n]));
            if groups[k % groups.len()] {
                b.end_group();
            }
            at += n;
            k += 1;
        }
        // However short the runs (the row-group ends cut them): what it says is exact.
        let index = SeriesIndex::parse(&b.encode(1).unwrap(), rows.len() as u64).unwrap();
        let want = gpus[wanted];
        let keep = match want {
            Some(g) => keep_gpu(&index, g),
            None => {
                let batch = index.series_batch(&tag_schema()).unwrap();
                (0..batch.num_rows()).map(|i| Some(batch.column(0).is_null(i))).collect()
            }
        };
        let expected: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.0 == want)
            .map(|(i, _)| i)
            .collect();
        prop_assert_eq!(rows_of(&index.selection(&keep), rows.len()), expected.clone());
        // Both ways of finding the rows agree, whichever the keep's share of the series.
        let kept = match keep.nulls() {
            Some(valid) => keep.values() & valid.inner(),
            None => keep.values().clone(),
        };
        if kept.count_set_bits() > 0 {
            prop_assert_eq!(rows_of(&index.selection_of_few(&kept), rows.len()), expected.clone());
            prop_assert_eq!(rows_of(&index.selection_of_many(&kept), rows.len()), expected.clone());
        }
    }
}
