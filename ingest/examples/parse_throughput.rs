//! Quick single-threaded throughput check of the parsers (not a test, not a criterion bench):
//!
//! ```text
//! cargo run --release -p rigwatch-ingest --example parse_throughput
//! ```
//!
//! Builds wide `gpu` rows (6 tags, 20 fields, like the agent's) in each format, parses them
//! a few times and prints field values per second.

use std::fmt::Write;
use std::time::{Duration, Instant};

use rigwatch_ingest::line_protocol::{self, Precision};
use rigwatch_ingest::{prom_text, remote_write};
use rigwatch_storage::batch::WriteBatch;

const ROWS: usize = 50_000;
const FIELDS: usize = 20;

fn line_protocol_body() -> String {
    let mut body = String::new();
    for i in 0..ROWS {
        write!(
            body,
            "gpu,supplier=acme,worker=w{},gpu_uuid=GPU-{:08x},gpu_index={},model=H100\\ SXM,region=eu-west ",
            i % 64,
            i % 512,
            i % 8
        )
        .unwrap();
        for f in 0..FIELDS {
            if f > 0 {
                body.push(',');
            }
            match f % 4 {
                0 => write!(body, "metric_{f}={}.{}", i % 1000, f * 7),
                1 => write!(body, "counter_{f}={}i", i * 13 + f),
                2 => write!(body, "clock_{f}={}", 1410 + f),
                _ => write!(body, "power_{f}={:.3}", i as f64 * 0.37),
            }
            .unwrap();
        }
        writeln!(
            body,
            " {}",
            1_700_000_000_000_000_000i64 + i as i64 * 1_000_000_000
        )
        .unwrap();
    }
    body
}

fn prom_body() -> String {
    let mut body = String::new();
    for i in 0..ROWS {
        for f in 0..FIELDS {
            writeln!(
                body,
                "gpu_metric_{f}{{supplier=\"acme\",worker=\"w{}\",gpu_uuid=\"GPU-{:08x}\",gpu_index=\"{}\",model=\"H100 SXM\",region=\"eu-west\"}} {}.5 {}",
                i % 64,
                i % 512,
                i % 8,
                i % 1000,
                1_700_000_000_000i64 + i as i64
            )
            .unwrap();
        }
    }
    body
}

fn remote_write_request() -> remote_write::WriteRequest {
    use remote_write::{Label, Sample, TimeSeries};
    let label = |name: &str, value: String| Label {
        name: name.into(),
        value,
    };
    let mut timeseries = Vec::new();
    for s in 0..ROWS / 10 {
        for f in 0..FIELDS {
            timeseries.push(TimeSeries {
                labels: vec![
                    label("__name__", format!("gpu_metric_{f}")),
                    label("gpu_index", (s % 8).to_string()),
                    label("gpu_uuid", format!("GPU-{s:08x}")),
                    label("model", "H100 SXM".into()),
                    label("region", "eu-west".into()),
                    label("supplier", "acme".into()),
                    label("worker", format!("w{}", s % 64)),
                ],
                samples: (0..10)
                    .map(|t| Sample {
                        value: t as f64 * 1.5,
                        timestamp: 1_700_000_000_000 + t,
                    })
                    .collect(),
            });
        }
    }
    remote_write::WriteRequest { timeseries }
}

/// Runs `f` until a second has passed (at least 3 times) and returns the best time.
fn best(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let (mut best, mut fields) = (Duration::MAX, 0);
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3 || start.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        fields = f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    (best, fields)
}

fn report(name: &str, bytes: usize, (time, fields): (Duration, usize)) {
    let secs = time.as_secs_f64();
    println!(
        "{name:<14} {fields:>9} field values in {:>7.2} ms: {:>6.2} M field values/s, {:>7.1} MB/s",
        secs * 1e3,
        fields as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
}

fn main() {
    let lp = line_protocol_body();
    report(
        "line protocol",
        lp.len(),
        best(|| {
            let mut batch = WriteBatch::with_capacity(ROWS, lp.len());
            let errors = line_protocol::parse(&lp, Precision::Ns, 0, &mut batch);
            assert!(errors.is_empty(), "{:?}", &errors[..1]);
            batch.field_count()
        }),
    );

    let prom = prom_body();
    report(
        "prom text",
        prom.len(),
        best(|| {
            let mut batch = WriteBatch::with_capacity(ROWS * FIELDS, prom.len());
            let errors = prom_text::parse(&prom, 0, &mut batch);
            assert!(errors.is_empty(), "{:?}", &errors[..1]);
            batch.field_count()
        }),
    );

    let req = remote_write_request();
    let body = remote_write::encode(&req);
    report(
        "remote_write",
        body.len(),
        best(|| {
            let req = remote_write::decode(&body, 1 << 30).unwrap();
            let mut batch = WriteBatch::with_capacity(ROWS * FIELDS, 1 << 20);
            assert!(remote_write::to_batch(&req, &mut batch).is_empty());
            batch.field_count()
        }),
    );
}
