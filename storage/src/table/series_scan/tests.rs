#![allow(clippy::single_range_in_vec_init)]

use super::*;
use proptest::prelude::*;

/// Reads the rows `plan_rows` selects the way the Parquet reader does (the selection runs
/// over the chosen row groups' rows, concatenated) and answers each row read with its file
/// row.
fn read(groups: &[(usize, Range<u64>)], selection: &RowSelection) -> Vec<u64> {
    let rows: Vec<u64> = groups.iter().flat_map(|(_, g)| g.clone()).collect();
    let mut out = Vec::new();
    let mut at = 0usize;
    for s in selection.iter() {
        if !s.skip {
            out.extend(&rows[at..at + s.row_count]);
        }
        at += s.row_count;
    }
    assert!(at <= rows.len(), "the selection runs past the row groups");
    out
}

/// `runs` (first row, rows, series) planned through [`Runs`].
fn plan(
    runs: &[(u64, u64, u32)],
    groups: &[(usize, Range<u64>)],
    wanted: &[Range<u64>],
) -> Option<(RowSelection, Vec<(u32, u64)>)> {
    let rows = runs.last().map_or(0, |(s, l, _)| s + l);
    let starts: Vec<u64> = runs.iter().map(|r| r.0).collect();
    let series: Vec<u32> = runs.iter().map(|r| r.2).collect();
    plan_rows(
        Runs {
            starts: &starts,
            series: &series,
            rows,
        },
        groups,
        wanted,
    )
}

/// The series of file row `row`.
fn series_at(runs: &[(u64, u64, u32)], row: u64) -> u32 {
    runs.iter()
        .find(|(start, len, _)| (*start..start + len).contains(&row))
        .map(|r| r.2)
        .expect("runs cover the file")
}

#[test]
fn ranges_of_a_selection() {
    let s = RowSelection::from(vec![
        RowSelector::skip(3),
        RowSelector::select(2),
        RowSelector::select(1),
        RowSelector::skip(4),
        RowSelector::select(5),
    ]);
    assert_eq!(selected_ranges(Some(&s), 15), vec![3..6, 10..15]);
    assert_eq!(selected_ranges(None, 7), vec![0..7]);
}

#[test]
fn a_unit_labels_the_rows_of_its_row_groups() {
    // Two row groups of 6 rows; series 0,1 in the first (runs 3+3), 1,2 in the second.
    let runs = [(0, 3, 0), (3, 3, 1), (6, 2, 1), (8, 4, 2)];
    let groups = [(0, 0..6), (1, 6..12)];
    let (sel, labels) = plan(&runs, &groups, &[0..12]).expect("rows");
    assert_eq!(read(&groups, &sel), (0..12).collect::<Vec<_>>());
    // Series 1's runs in two row groups read back to back form one label.
    assert_eq!(labels, vec![(0, 3), (1, 5), (2, 4)]);
    // Only the second row group, only series 2's rows wanted.
    let (sel, labels) = plan(&runs, &groups[1..], &[8..12]).expect("rows");
    assert_eq!(read(&groups[1..], &sel), vec![8, 9, 10, 11]);
    assert_eq!(labels, vec![(2, 4)]);
    // Nothing wanted in these row groups: no unit.
    assert!(plan(&runs, &groups[..1], &[6..12]).is_none());
}

proptest! {
    /// For any runs, row groups, rows wanted and row groups kept, the unit reads exactly
    /// the wanted rows of its row groups, and labels each with its series.
    #[test]
    fn a_unit_reads_and_labels_exactly_the_wanted_rows(
        lens in prop::collection::vec((1u64..20, 0u32..6), 1..30),
        cuts in prop::collection::vec(1u64..40, 1..8),
        wanted_bits in prop::collection::vec(any::<bool>(), 0..400),
        keep in prop::collection::vec(any::<bool>(), 8),
    ) {
        let mut runs = Vec::new();
        let mut at = 0u64;
        for (len, id) in lens {
            runs.push((at, len, id));
            at += len;
        }
        let rows = at;
        // Row groups: cut the rows at `cuts`' running sums.
        let mut groups = Vec::new();
        let mut start = 0u64;
        for (i, c) in cuts.iter().enumerate() {
            if start >= rows { break; }
            let end = (start + c).min(rows);
            groups.push((i, start..end));
            start = end;
        }
        if start < rows {
            groups.push((groups.len(), start..rows));
        }
        let kept: Vec<(usize, Range<u64>)> = groups
            .iter()
            .filter(|(i, _)| keep.get(*i).copied().unwrap_or(true))
            .cloned()
            .collect();
        let mut wanted: Vec<Range<u64>> = Vec::new();
        for r in 0..rows {
            if wanted_bits.get(r as usize).copied().unwrap_or(true) {
                match wanted.last_mut() {
                    Some(w) if w.end == r => w.end += 1,
                    _ => wanted.push(r..r + 1),
                }
            }
        }
        let expected: Vec<u64> = kept
            .iter()
            .flat_map(|(_, g)| g.clone())
            .filter(|r| wanted.iter().any(|w| w.contains(r)))
            .collect();
        match plan(&runs, &kept, &wanted) {
            None => prop_assert!(expected.is_empty()),
            Some((sel, labels)) => {
                let got = read(&kept, &sel);
                prop_assert_eq!(&got, &expected);
                let label_rows: Vec<u32> = labels
                    .iter()
                    .flat_map(|&(id, n)| std::iter::repeat_n(id, n as usize))
                    .collect();
                let truth: Vec<u32> = got.iter().map(|&r| series_at(&runs, r)).collect();
                prop_assert_eq!(label_rows, truth);
            }
        }
    }
}

/// A tier file (ten one-minute row groups) of four GPUs read through the scan, by several
/// partitions and units: every row keeps its own labels, whatever the projection, tag
/// filter or time range.
#[tokio::test]
async fn a_tier_file_read_by_several_partitions_labels_every_row() {
    use std::time::Duration;

    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    use datafusion::prelude::SessionContext;

    use crate::batch::{FieldValue, WriteBatch};
    use crate::{Db, DbConfig, WriteOptions};

    const MIN: i64 = 60_000_000_000;
    // Long closed, and a multiple of ten minutes.
    const T0: i64 = 1_600_000_000_000_000_000 / (10 * MIN) * (10 * MIN);
    let dir = tempfile::tempdir().unwrap();
    let mut c = DbConfig::new(dir.path());
    c.background = false;
    c.partition = Duration::from_secs(60);
    c.compaction_tier = Some(Duration::from_secs(600));
    let db = Db::open(c).await.unwrap();
    let mut b = WriteBatch::default();
    let mut seq = 1;
    // A row every 5 s: runs of 12 rows a minute, enough for the file to carry an index.
    for step in 0..120 {
        for (g, gpu) in ["d", "b", "c", "a"].iter().enumerate() {
            let mut r = b.row("gpu", T0 + step * 5_000_000_000);
            // GPU b has no region: a tag some series lack.
            r.tag("gpu", gpu);
            if *gpu != "b" {
                r.tag("region", if g % 2 == 0 { "eu" } else { "us" });
            }
            r.field("util", FieldValue::F64((g * 100 + step as usize) as f64));
            r.finish(seq).unwrap();
            seq += 1;
        }
    }
    db.write(b, WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    assert_eq!(db.compact_tiers().await.unwrap().tiers, 1);
    let tier = db
        .files()
        .iter()
        .find(|f| f.is_tier())
        .cloned()
        .expect("a tier file");
    assert!(
        db.series_index(&tier).await.unwrap().is_some(),
        "the tier file has an index"
    );
    let ctx = SessionContext::new();
    crate::table::register(&db, &ctx).unwrap();
    let rows = |q: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&q).await.unwrap().collect().await.unwrap();
            let mut out = Vec::new();
            for b in batches {
                let gpu =
                    arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
                let region =
                    arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
                for i in 0..b.num_rows() {
                    out.push((
                        gpu.as_string::<i32>().value(i).to_string(),
                        region
                            .as_string::<i32>()
                            .is_valid(i)
                            .then(|| region.as_string::<i32>().value(i).to_string()),
                        b.column(2).as_primitive::<Int64Type>().value(i),
                        b.column(3).as_primitive::<Float64Type>().value(i),
                    ));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
    };
    // Each GPU's 120 rows sum to 120 * 100 g + (0 + ... + 119).
    let want = |g: usize, gpu: &str, region: Option<&str>| {
        (
            gpu.to_string(),
            region.map(str::to_string),
            120,
            (120 * 100 * g + 7140) as f64,
        )
    };
    let all =
        rows("SELECT gpu, region, count(*), sum(util) FROM gpu GROUP BY gpu, region".into()).await;
    assert_eq!(
        all,
        vec![
            want(3, "a", Some("us")),
            want(1, "b", None),
            want(2, "c", Some("eu")),
            want(0, "d", Some("eu")),
        ]
    );
    // A tag filter and a time range that keeps minutes 3..6 (rows 36..84 of each GPU).
    let some = rows(format!(
        "SELECT gpu, region, count(*), sum(util) FROM gpu \
         WHERE region = 'eu' AND time >= to_timestamp_nanos({}) \
         AND time < to_timestamp_nanos({}) GROUP BY gpu, region",
        T0 + 3 * MIN,
        T0 + 7 * MIN
    ))
    .await;
    let part = |g: usize, gpu: &str| {
        let sum: usize = (36..84).map(|s| g * 100 + s).sum();
        (gpu.to_string(), Some("eu".to_string()), 48, sum as f64)
    };
    assert_eq!(some, vec![part(2, "c"), part(0, "d")]);
}

#[test]
fn rows_in_both_lists_of_ranges() {
    assert_eq!(
        intersect(&[0..10, 20..30, 40..50], &[5..25, 28..45]),
        vec![5..10, 20..25, 28..30, 40..45]
    );
    assert_eq!(intersect(&[0..10], &[10..20]), Vec::<Range<u64>>::new());
    assert_eq!(intersect(&[0..100], &[0..100]), vec![0..100]);
}
