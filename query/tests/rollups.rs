//! PromQL over rollups: the same data in a store with rollups and in one without gives the
//! same answer to every query, at every step, for the operator and for a supplier; aligned
//! queries read far fewer samples where rollups stand for the data, including around a late
//! write that is still buffered (read raw there); a supplier's query reads only its own
//! rollup rows.

use std::sync::Arc;

use rigwatch_promql::eval::{self, EvalOptions};
use rigwatch_query::QueryService;
use rigwatch_query::prometheus::source;
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, DbConfig, WriteOptions};

const S: i64 = 1_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;
/// Long closed, on an hour.
const T0: i64 = 1_600_000_000_000 / H * H;

/// Every (GPU, sample time in ms) of steps `[from_step, to_step)`.
fn samples(from_step: i64, to_step: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for step in from_step..to_step {
        for g in 0..6i64 {
            // GPU 5 stops reporting for 20 minutes.
            if g == 5 && (200..320).contains(&step) {
                continue;
            }
            out.push((g, T0 + step * 10 * S + g * 7));
        }
    }
    out
}

fn rows(from_step: i64, to_step: i64) -> WriteBatch {
    rows_where(from_step, to_step, |_, _| true)
}

/// The rows of [`rows`] whose (GPU, time in ms) `keep` keeps.
fn rows_where(from_step: i64, to_step: i64, keep: impl Fn(i64, i64) -> bool) -> WriteBatch {
    let mut b = WriteBatch::default();
    let mut line = 1;
    for (g, t) in samples(from_step, to_step) {
        if !keep(g, t) {
            continue;
        }
        let step = (t - g * 7 - T0) / (10 * S);
        let mut r = b.row("gpu", t * 1_000_000);
        r.tag("supplier", if g % 2 == 0 { "s1" } else { "s2" })
            .tag("gpu_uuid", &format!("GPU-{g}"));
        let util = match (step + g) % 31 {
            7 => f64::NAN,
            _ => ((step * 11 + g * 5) % 97) as f64,
        };
        r.field("util", FieldValue::F64(util))
            .field("energy", FieldValue::I64(step * 40 + g));
        r.finish(line).unwrap();
        line += 1;
    }
    b
}

/// A store in `dir` without background work, with minute and hour rollups if `rollups`.
fn config(dir: &std::path::Path, rollups: bool) -> DbConfig {
    let mut c = DbConfig::new(dir);
    c.background = false;
    c.rollups = if rollups {
        vec![
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(3600),
        ]
    } else {
        Vec::new()
    };
    c
}

async fn open(dir: &std::path::Path, rollups: bool) -> Arc<Db> {
    let db = Db::open(config(dir, rollups)).await.unwrap();
    // Three hours, persisted, then a late write into the second hour left in the buffer.
    db.write(rows(0, 3 * 360), WriteOptions::default())
        .await
        .unwrap();
    db.persist().await.unwrap();
    if rollups {
        let built = db.build_rollups().await.unwrap();
        assert!(built.stretches >= 3, "{built:?}");
    }
    let mut b = WriteBatch::default();
    let mut r = b.row("gpu", (T0 + H + 30 * M + 5 * S) * 1_000_000);
    r.tag("supplier", "s1")
        .tag("gpu_uuid", "GPU-0")
        .field("util", FieldValue::F64(500.0));
    r.finish(1).unwrap();
    db.write(b, WriteOptions::default()).await.unwrap();
    db
}

/// The answer to `q` over `[start, end]` every `step`, and the samples fetched for it.
async fn range(
    service: &QueryService,
    scope: Option<&str>,
    q: &str,
    grid: (i64, i64, i64),
) -> (String, usize) {
    range_up_to(service, scope, q, grid, 0).await
}

/// As [`range`], reading rollups up to `max_source_ms` for every selection.
async fn range_up_to(
    service: &QueryService,
    scope: Option<&str>,
    q: &str,
    (start, end, step): (i64, i64, i64),
    max_source_ms: i64,
) -> (String, usize) {
    let expr = rigwatch_promql::parse(q).unwrap();
    let opts = EvalOptions::default();
    let sel = eval::range_selections(&expr, start, end, step, &opts);
    let ctx = service.scoped_context(scope).unwrap();
    let f = source::fetch(&ctx, service.db(), sel, 10_000_000, max_source_ms)
        .await
        .unwrap();
    let fetched = f.samples;
    let r = eval::range_query(&f, &expr, start, end, step, &opts).unwrap();
    (format!("{:?}", r.value), fetched)
}

#[tokio::test]
async fn queries_over_rollups_answer_as_the_raw_data_does() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rolled = QueryService::new(open(a.path(), true).await);
    let raw = QueryService::new(open(b.path(), false).await);
    let queries = [
        "gpu_util",
        "avg(gpu_util)",
        "max by (supplier) (gpu_util)",
        "timestamp(gpu_util{gpu_uuid=\"GPU-5\"})",
        "max_over_time(gpu_util[5m])",
        "min_over_time(gpu_energy[1h])",
        "max_over_time(gpu_util{gpu_uuid=~\"GPU-[12]\"}[10m])",
        "gpu_util - gpu_util offset 1h",
        "rate(gpu_energy[5m])",
        "count(gpu_util > 50)",
    ];
    let grids = [
        (T0 + 10 * M, T0 + 3 * H, M),
        (T0 + H, T0 + 3 * H, 5 * M),
        (T0 + H, T0 + 3 * H, H),
        (T0 + 10 * M + 30 * S, T0 + 2 * H, 2 * M),
    ];
    let (mut fewer, mut total) = (0, 0);
    for q in queries {
        for g in grids {
            for scope in [None, Some("s1")] {
                let (want, raw_samples) = range(&raw, scope, q, g).await;
                let (got, samples) = range(&rolled, scope, q, g).await;
                assert_eq!(got, want, "{q} over {g:?} as {scope:?}");
                if scope.is_some() {
                    assert!(!got.contains("s2"), "{q}: a supplier sees only its own");
                }
                total += 1;
                if samples < raw_samples {
                    fewer += 1;
                }
            }
        }
    }
    // Aligned queries other than `rate` read rollups for the closed hours without a late
    // write (the hour with one is read raw).
    assert!(fewer * 2 > total, "{fewer} of {total} queries read rollups");
    // The buffered late write is seen, through the raw rows of its stretch.
    let (v, _) = range(
        &rolled,
        None,
        "max_over_time(gpu_util{gpu_uuid=\"GPU-0\"}[1h])",
        (T0 + 2 * H, T0 + 2 * H, H),
    )
    .await;
    assert!(v.contains("v: 500.0"), "{v}");
}

/// With a resolution allowed outright (`max_source_resolution`), every selection over rolled
/// up stretches reads the series thinned to the last sample of each bucket: the answer is the
/// one a store holding only those samples gives, on any grid, for every function.
#[tokio::test]
async fn an_allowed_resolution_answers_from_the_last_sample_of_each_bucket() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let steps = 3 * 360;
    let write = |dir: std::path::PathBuf, rollups: bool, batch: WriteBatch| async move {
        let db = Db::open(config(&dir, rollups)).await.unwrap();
        db.write(batch, WriteOptions::default()).await.unwrap();
        db.persist().await.unwrap();
        if rollups {
            assert!(db.build_rollups().await.unwrap().stretches >= 3);
        }
        QueryService::new(db)
    };
    // The last sample of each GPU in each hour `(end - 1 h, end]`.
    let bucket = |t: i64| (t + H - 1).div_euclid(H);
    let mut last = std::collections::HashMap::new();
    for (g, t) in samples(0, steps) {
        let e = last.entry((g, bucket(t))).or_insert(t);
        *e = (*e).max(t);
    }
    let rolled = write(a.path().into(), true, rows(0, steps)).await;
    let thinned = write(
        b.path().into(),
        false,
        rows_where(0, steps, |g, t| last[&(g, bucket(t))] == t),
    )
    .await;
    let raw = write(c.path().into(), false, rows(0, steps)).await;
    let queries = [
        "gpu_util",
        "timestamp(gpu_util)",
        "avg(gpu_util)",
        "rate(gpu_energy[2h])",
        "avg_over_time(gpu_util[90m])",
        "count_over_time(gpu_util[3h])",
    ];
    let grids = [
        (T0 + 10 * M + 30 * S, T0 + 3 * H, 2 * M),
        (T0 + 7 * M, T0 + 3 * H, 10 * M),
        (T0 + H, T0 + 3 * H, H),
    ];
    let mut differs = 0;
    for q in queries {
        for g in grids {
            for scope in [None, Some("s1")] {
                let (want, _) = range(&thinned, scope, q, g).await;
                let (got, samples) = range_up_to(&rolled, scope, q, g, H).await;
                assert_eq!(got, want, "{q} over {g:?} as {scope:?}");
                if scope.is_some() {
                    assert!(!got.contains("s2"), "{q}: a supplier sees only its own");
                }
                let (exact, raw_samples) = range(&raw, scope, q, g).await;
                assert!(samples < raw_samples, "{q} over {g:?}: {samples} samples");
                differs += usize::from(exact != got);
                // Without the parameter, the same store answers as the raw data.
                let (plain, _) = range(&rolled, scope, q, g).await;
                assert_eq!(plain, exact, "{q} over {g:?} as {scope:?}, not allowed");
            }
        }
    }
    // Thinning changes most answers (those at whole hours of a plain selector do not).
    assert!(differs * 2 > queries.len() * grids.len() * 2, "{differs}");
}
