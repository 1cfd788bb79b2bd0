//! The query list, answers normalised, agreement within tolerance, latency runs.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

use super::peers::{Kind, System};
use super::{Dataset, REL_TOL};

#[derive(Debug, Clone)]
pub(super) struct Query {
    pub(super) name: &'static str,
    pub(super) expr: String,
    /// VictoriaMetrics' expression when MetricsQL's semantics differ from PromQL's.
    pub(super) vm_expr: Option<String>,
    pub(super) range: bool,
    /// Step of a range query, seconds.
    pub(super) step_s: i64,
    /// A range query over only the last this many ms (on a step boundary); `None`: from the
    /// dataset's start.
    pub(super) span_ms: Option<i64>,
    /// Tied values may pick different series (topk): compare values only.
    pub(super) ties: bool,
}

pub(super) fn queries(ds: &Dataset) -> Vec<Query> {
    let uuid = ds.first_uuid();
    let q = |name, expr: String, range| Query {
        name,
        expr,
        vm_expr: None,
        range,
        step_s: 60,
        span_ms: None,
        ties: false,
    };
    let hourly = |name, expr: &str| Query {
        step_s: 3600,
        ..q(name, expr.to_string(), true)
    };
    let instant_and_short = vec![
        q(
            "one GPU, instant",
            format!("gpu_utilization{{gpu_uuid=\"{uuid}\"}}"),
            false,
        ),
        q("fleet avg", "avg(gpu_utilization)".into(), false),
        q("avg by model", "avg by (model) (gpu_utilization)".into(), false),
        Query {
            ties: true,
            ..q("topk 5", "topk(5, gpu_temperature)".into(), false)
        },
        Query {
            // MetricsQL's rate() uses the sample before the window and does not
            // extrapolate; with the window covered by samples, PromQL's extrapolated rate is
            // the slope between the window's first and last samples, which this computes.
            vm_expr: Some(
                "sum(increase_prometheus(gpu_energy_mj[5m]) / (tlast_over_time(gpu_energy_mj[5m]) - tfirst_over_time(gpu_energy_mj[5m])))"
                    .into(),
            ),
            ..q("sum of rates", "sum(rate(gpu_energy_mj[5m]))".into(), false)
        },
        q("quantile 0.99", "quantile(0.99, gpu_power_watts)".into(), false),
        Query {
            // MetricsQL keeps the metric name on max_over_time(); PromQL drops it.
            vm_expr: Some("label_del(max_over_time(gpu_temperature[1h]), \"__name__\")".into()),
            ..q(
                "max_over_time 1h",
                "max_over_time(gpu_temperature[1h])".into(),
                false,
            )
        },
        q(
            "samples in 1h",
            "sum(count_over_time(gpu_power_watts[1h]))".into(),
            false,
        ),
    ];
    let mut out = instant_and_short;
    if !ds.long() {
        out.extend([
            q(
                "one GPU, range 1m",
                format!("gpu_utilization{{gpu_uuid=\"{uuid}\"}}"),
                true,
            ),
            q("fleet avg, range 1m", "avg(gpu_utilization)".into(), true),
            q(
                "avg by region, range 1m",
                "avg by (region) (gpu_power_watts)".into(),
                true,
            ),
        ]);
        return out;
    }
    // A month: the long ranges at an hour's step, and one GPU's last week at a minute's.
    out.extend([
        Query {
            span_ms: Some(7 * 86_400_000),
            ..q(
                "one GPU, 7-day range 1m",
                format!("gpu_utilization{{gpu_uuid=\"{uuid}\"}}"),
                true,
            )
        },
        hourly("fleet avg, range 1h", "avg(gpu_utilization)"),
        hourly(
            "avg by region, range 1h",
            "avg by (region) (gpu_power_watts)",
        ),
        Query {
            // MetricsQL keeps the metric name on max_over_time(); PromQL drops it.
            vm_expr: Some("label_del(max_over_time(gpu_temperature[1h]), \"__name__\")".into()),
            ..hourly(
                "per-GPU max 1h, range 1h",
                "max_over_time(gpu_temperature[1h])",
            )
        },
    ]);
    out
}

/// One answer, normalised: series sorted by label set, samples as (ms, value).
pub(super) type Answer = Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>;

pub(super) fn parse_answer(v: &Value) -> anyhow::Result<Answer> {
    if v["status"] != "success" {
        bail!("query failed: {v}");
    }
    let point = |p: &Value| -> anyhow::Result<(i64, f64)> {
        let t = p[0].as_f64().context("timestamp")?;
        let s = p[1].as_str().context("value")?;
        let v = match s {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            _ => s.parse().with_context(|| format!("value `{s}`"))?,
        };
        Ok(((t * 1000.0).round() as i64, v))
    };
    let result = v["data"]["result"].as_array().context("no data.result")?;
    let mut out = Answer::new();
    for s in result {
        let labels = s["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let samples = if let Some(values) = s["values"].as_array() {
            values.iter().map(point).collect::<anyhow::Result<_>>()?
        } else {
            vec![point(&s["value"])?]
        };
        out.push((labels, samples));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub(super) fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= REL_TOL * a.abs().max(b.abs())
}

pub(super) fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

/// `Ok` when the answers agree within [`REL_TOL`]; otherwise the first differences, with
/// both values.
pub(super) fn agree(ours: &Answer, theirs: &Answer, ties: bool) -> Result<(), String> {
    if ties {
        let values = |a: &Answer| {
            let mut v: Vec<(i64, f64)> = a.iter().flat_map(|(_, s)| s.iter().copied()).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
            v
        };
        let (a, b) = (values(ours), values(theirs));
        if a.len() != b.len() {
            return Err(format!("{} values vs {}", a.len(), b.len()));
        }
        for (x, y) in a.iter().zip(&b) {
            if x.0 != y.0 || !close(x.1, y.1) {
                return Err(format!("value {} at {} vs {} at {}", x.1, x.0, y.1, y.0));
            }
        }
        return Ok(());
    }
    let mut diffs = Vec::new();
    let theirs_map: BTreeMap<_, _> = theirs.iter().map(|(l, s)| (l, s)).collect();
    let ours_map: BTreeMap<_, _> = ours.iter().map(|(l, s)| (l, s)).collect();
    for (l, s) in &ours_map {
        let Some(t) = theirs_map.get(l) else {
            diffs.push(format!("{} only in rigwatch", fmt_labels(l)));
            continue;
        };
        if s.len() != t.len() {
            diffs.push(format!(
                "{}: {} samples vs {}",
                fmt_labels(l),
                s.len(),
                t.len()
            ));
            continue;
        }
        if let Some((x, y)) = s
            .iter()
            .zip(t.iter())
            .find(|(x, y)| x.0 != y.0 || !close(x.1, y.1))
        {
            diffs.push(format!(
                "{} at {}: {} vs {} (at {})",
                fmt_labels(l),
                x.0,
                x.1,
                y.1,
                y.0
            ));
        }
    }
    for l in theirs_map.keys() {
        if !ours_map.contains_key(l) {
            diffs.push(format!("{} missing from rigwatch", fmt_labels(l)));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let n = diffs.len();
    diffs.truncate(5);
    Err(format!("{n} series differ: {}", diffs.join("; ")))
}

/// Runs `q` once for its answer, then `runs` timed times; returns the answer and the
/// latencies in seconds.
/// The path and form parameters that ask `expr` the way `q` is asked (instant or range).
pub(super) fn request(
    q: &Query,
    expr: &str,
    ds: &Dataset,
) -> (&'static str, Vec<(&'static str, String)>) {
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    if q.range {
        let step_ms = q.step_s * 1000;
        let end = ds.eval_ms().div_euclid(step_ms) * step_ms;
        // The first step boundary at or after the range start (a whole minute).
        let mut start = (ds.range_start_ms() + step_ms - 1).div_euclid(step_ms) * step_ms;
        if let Some(span) = q.span_ms {
            start = start.max(end - span);
        }
        (
            "/api/v1/query_range",
            vec![
                ("query", expr.to_string()),
                ("start", secs(start)),
                ("end", secs(end)),
                ("step", q.step_s.to_string()),
            ],
        )
    } else {
        (
            "/api/v1/query",
            vec![("query", expr.to_string()), ("time", secs(ds.eval_ms()))],
        )
    }
}

pub(super) async fn run_query(
    client: &reqwest::Client,
    sys: &System,
    q: &Query,
    ds: &Dataset,
    runs: usize,
) -> anyhow::Result<(Answer, Vec<f64>)> {
    let expr = match (sys.kind, &q.vm_expr) {
        (Kind::Victoria, Some(e)) => e.as_str(),
        _ => q.expr.as_str(),
    };
    let (path, params) = request(q, expr, ds);
    let mut answer = None;
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let t = Instant::now();
        let resp = sys.request(client, path).form(&params).send().await?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{} answered {status} to {expr}", sys.kind.name()))?;
        let elapsed = t.elapsed().as_secs_f64();
        if i == 0 {
            answer =
                Some(parse_answer(&body).with_context(|| format!("{}: {expr}", sys.kind.name()))?);
        } else {
            times.push(elapsed);
        }
    }
    Ok((answer.unwrap_or_default(), times))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(series: &[(&str, &[(i64, f64)])]) -> Answer {
        let mut a: Answer = series
            .iter()
            .map(|(gpu, s)| {
                (
                    BTreeMap::from([("gpu".to_string(), gpu.to_string())]),
                    s.to_vec(),
                )
            })
            .collect();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        a
    }

    #[test]
    fn answers_agree_within_tolerance_and_disagreements_name_both_values() {
        let a = answer(&[("a", &[(0, 1.0), (60, 2.0)]), ("b", &[(0, 3.0)])]);
        let b = answer(&[
            ("b", &[(0, 3.0 * (1.0 + 1e-9))]),
            ("a", &[(0, 1.0), (60, 2.0)]),
        ]);
        assert_eq!(agree(&a, &b, false), Ok(()));
        let c = answer(&[("a", &[(0, 1.0), (60, 2.1)]), ("b", &[(0, 3.0)])]);
        let err = agree(&a, &c, false).unwrap_err();
        assert!(err.contains("2 vs 2.1"), "{err}");
        let d = answer(&[("a", &[(0, 1.0), (60, 2.0)])]);
        let err = agree(&a, &d, false).unwrap_err();
        assert!(err.contains("{gpu=\"b\"} only in rigwatch"), "{err}");
        assert!(agree(&d, &a, false).unwrap_err().contains("missing"));
        // NaN agrees with NaN only.
        let n = answer(&[("a", &[(0, f64::NAN)])]);
        assert_eq!(agree(&n, &n, false), Ok(()));
        assert!(agree(&n, &answer(&[("a", &[(0, 0.0)])]), false).is_err());
    }

    #[test]
    fn ties_compare_values_not_series() {
        let a = answer(&[("a", &[(0, 80.0)]), ("b", &[(0, 80.0)])]);
        let b = answer(&[("c", &[(0, 80.0)]), ("a", &[(0, 80.0)])]);
        assert!(agree(&a, &b, false).is_err());
        assert_eq!(agree(&a, &b, true), Ok(()));
        let c = answer(&[("c", &[(0, 79.0)]), ("a", &[(0, 80.0)])]);
        assert!(agree(&a, &c, true).is_err());
    }

    #[test]
    fn parses_vectors_and_matrices() {
        let v = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"gpu": "b"}, "values": [[60, "1.5"], [120, "NaN"]]},
            {"metric": {"gpu": "a"}, "values": [[60.5, "+Inf"]]}
        ]}});
        let a = parse_answer(&v).unwrap();
        assert_eq!(a[0].0["gpu"], "a");
        assert_eq!(a[0].1, vec![(60_500, f64::INFINITY)]);
        assert_eq!(a[1].1[0], (60_000, 1.5));
        assert!(a[1].1[1].1.is_nan());
        let err = parse_answer(&json!({"status": "error", "error": "bad"})).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
    }
}
