//! Recording rules as golden files: `tests/recording-golden/rules.yml` is evaluated on the
//! fixed dataset below at T0, T0+30s and T0+60s (the `fleet` group every 30 s, `scalars`
//! every 60 s), with the store persisted to Parquet half-way; every recorded series is
//! then read back through SQL (unscoped and as supplier `acme`) and PromQL, and the text
//! must equal `tests/recording-golden/expected.txt`.
//!
//! The expected answers were worked out by hand from the dataset (the arithmetic is beside
//! each rule in rules.yml), not copied from a run. `RIGWATCH_BLESS=1` rewrites expected.txt from the
//! current output, for a change whose new answers have been checked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rigwatch_query::QueryService;
use rigwatch_query::format::{Format, encode};
use rigwatch_query::rules::{RuleSet, parse_rule_file};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, DbConfig, WriteOptions};

/// 2023-11-14T22:13:00Z, a multiple of 60 s so that both groups evaluate at T0.
const T0: i64 = 1_699_999_980_000;
const S: i64 = 1_000;

/// The recorded metrics, in the order they are printed.
const RECORDED: &[&str] = &[
    "supplier:gpu_utilization:avg",
    "fleet:gpu_utilization:avg",
    "fleet:gpu_power:sum",
    "supplier:gpu_busy:count",
    "fleet:gpu_utilization:avg_x2",
    "fleet:gpus",
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recording-golden")
}

/// The dataset: three GPUs of two suppliers, a sample every 10 s from T0 to T0+60s.
/// G1 (acme) runs at 40 % and then 80 % from T0+30s; G2 (acme) at 60 %; G3 (beta) at 10 %
/// and then 100 % from T0+60s. Power: 200, 300 and 150 W throughout.
async fn write_samples(db: &Db, t: i64) {
    let d = t - T0;
    let gpus = [
        ("acme", "G1", if d < 30 * S { 40.0 } else { 80.0 }, 200.0),
        ("acme", "G2", 60.0, 300.0),
        ("beta", "G3", if d < 60 * S { 10.0 } else { 100.0 }, 150.0),
    ];
    let mut b = WriteBatch::default();
    for (supplier, uuid, util, power) in gpus {
        let mut r = b.row("gpu", t * 1_000_000);
        r.tag("supplier", supplier).tag("gpu_uuid", uuid);
        r.field("utilization", FieldValue::F64(util))
            .field("power", FieldValue::F64(power));
        r.finish(1).expect("valid row");
    }
    db.write(b, WriteOptions::default()).await.expect("write");
}

async fn sql_csv(service: &QueryService, q: &str, scope: Option<&str>) -> String {
    match service.sql_scoped(q, scope).await {
        Ok((schema, batches)) => {
            let bytes = encode(Format::Csv, &schema, &batches).expect("CSV");
            let text = String::from_utf8(bytes).expect("UTF-8");
            // Header first, then the rows sorted: the order of a scan is not part of the answer.
            let mut lines: Vec<&str> = text.lines().collect();
            if lines.len() > 1 {
                lines[1..].sort_unstable();
            }
            lines.join("\n") + "\n"
        }
        Err(e) => format!("error: {}\n", e.to_string().lines().next().unwrap_or("")),
    }
}

async fn promql_range(service: &QueryService, db: &Arc<Db>, metric: &str) -> String {
    let expr = rigwatch_promql::parse(metric).expect("metric name parses");
    let opts = rigwatch_promql::eval::EvalOptions::default();
    let (start, end, step) = (T0, T0 + 60 * S, 30 * S);
    let sel = rigwatch_promql::eval::selections(&expr, start, end, &opts);
    let ctx = service.session_context().expect("context");
    let f = rigwatch_query::prometheus::source::fetch(&ctx, db, sel, 1_000_000, 0)
        .await
        .expect("fetch");
    let r = rigwatch_promql::eval::range_query(&f, &expr, start, end, step, &opts)
        .expect("range query");
    let mut out = String::new();
    match r.value {
        rigwatch_promql::value::Value::Matrix(series) => {
            for s in series {
                let points: Vec<String> = s
                    .samples
                    .iter()
                    .map(|p| format!("{}@+{}s", p.v, (p.t - T0) / S))
                    .collect();
                let _ = writeln!(out, "{} {}", s.labels, points.join(" "));
            }
        }
        other => {
            let _ = writeln!(out, "unexpected {other:?}");
        }
    }
    out
}

#[tokio::test]
async fn recorded_series_read_back_as_their_golden_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = DbConfig::new(dir.path());
    c.background = false;
    let db = Db::open(c).await.expect("open db");
    let service = QueryService::new(db.clone());
    let text = std::fs::read_to_string(golden_dir().join("rules.yml")).expect("rules.yml");
    let mut set = RuleSet::new(parse_rule_file(&text).expect("rules.yml is valid"));

    let mut fired = Vec::new();
    for step in 0..=6 {
        let t = T0 + step * 10 * S;
        write_samples(&db, t).await;
        let out = set.eval_due(&service, t).await;
        fired.extend(
            out.notifications
                .iter()
                .map(|n| (n.alertname.clone(), (t - T0) / S, n.resolved)),
        );
        if step == 3 {
            // Half of the recorded rows go through Parquet.
            db.persist().await.expect("persist");
        }
    }

    let mut got = String::new();
    for metric in RECORDED {
        let q = format!("SELECT * FROM \"{metric}\"");
        let _ = writeln!(got, "## {metric}\n# SQL: {q}");
        got.push_str(&sql_csv(&service, &q, None).await);
        let _ = writeln!(got, "# SQL as supplier acme: {q}");
        got.push_str(&sql_csv(&service, &q, Some("acme")).await);
        let _ = writeln!(got, "# PromQL: {metric} from T0 to T0+60s, step 30s");
        got.push_str(&promql_range(&service, &db, metric).await);
        got.push('\n');
    }

    let path = golden_dir().join("expected.txt");
    if std::env::var_os("RIGWATCH_BLESS").is_some() {
        std::fs::write(&path, &got).expect("write expected.txt");
    } else {
        let expected = std::fs::read_to_string(&path).expect("expected.txt");
        if let Some((i, (g, e))) = got
            .lines()
            .zip(expected.lines())
            .enumerate()
            .find(|(_, (g, e))| g != e)
        {
            panic!(
                "{} line {}: expected\n  {e}\ngot\n  {g}\n(RIGWATCH_BLESS=1 rewrites the file \
                 once the new answers are checked)\n--- got\n{got}",
                path.display(),
                i + 1
            );
        }
        assert_eq!(
            got.lines().count(),
            expected.lines().count(),
            "--- got\n{got}"
        );
    }

    // The alerting rule between the recording rules read the average recorded in the same
    // evaluation: 80 % at T0+60s fires it (the previous evaluation's 50 % would not).
    assert_eq!(fired, [("FleetBusy".to_string(), 60, false)]);

    // The failing rules failed at each evaluation, with their reason, and wrote nothing.
    let health = |name: &str| {
        set.groups
            .iter()
            .flat_map(|g| g.records.iter())
            .find(|r| r.rule.name == name)
            .map(|r| {
                (
                    r.health.failures,
                    r.health.last_error.clone().unwrap_or_default(),
                )
            })
            .expect("rule exists")
    };
    let (n, e) = health("bad:duplicate");
    assert!(n == 3 && e.contains("two series"), "{n} {e}");
    let (n, e) = health("gpu");
    assert!(
        n == 3 && e.contains("already holds other fields"),
        "{n} {e}"
    );
    let (n, e) = health("bad:string");
    assert!(
        n == 2 && e.contains("instant vector or a scalar"),
        "{n} {e}"
    );
    let gpu = db.table("gpu").expect("gpu table");
    assert!(gpu.column_index("value").is_none(), "{gpu:?}");
    assert!(db.table("bad:duplicate").is_none());
    let (n, e) = health("fleet:gpus");
    assert_eq!((n, e.as_str()), (0, ""));
    assert_eq!(set.metrics.recorded_samples.get(), 21);
}
