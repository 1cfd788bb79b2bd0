//! The `promql(…)` sources of a DSL query: each is evaluated as a PromQL range query through
//! the caller's scoped PromQL path (the same as `/api/v1/query_range`) and becomes a table of
//! rows `(time, <label>…, value)` that only this request's session can see.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rigwatch_dsl::{Pos, Query, TableRef};
use rigwatch_promql::ast::{Expr, Grouping};
use rigwatch_promql::eval::EvalOptions;
use rigwatch_promql::value::{Labels, Sample, Value};

use crate::error::{Error, PromqlError, Result};
use crate::prometheus::PromOptions;
use crate::prometheus::api::{evaluate, now_ms};
use crate::service::QueryService;

/// Evaluates every `promql(…)` source of `query` (parsed from `text`) for `scope`.
pub(crate) async fn evaluate_sources(
    service: &QueryService,
    opts: &PromOptions,
    text: &str,
    query: &Query,
    scope: Option<&str>,
) -> Result<Vec<(TableRef, RecordBatch)>> {
    let mut out = Vec::new();
    for src in query.promql_sources() {
        let pos = Pos::at(text, src.span.start);
        let fail = |source: PromqlError| Error::DslPromql { pos, source };
        let expr = rigwatch_promql::parse(src.expr).map_err(|e| fail(e.into()))?;
        let (start, end, step) = src.window(now_ms());
        let points = (end - start) / step;
        if points > opts.max_points_per_series {
            return Err(fail(PromqlError::TooManyPoints {
                points,
                limit: opts.max_points_per_series,
            }));
        }
        let eval_opts = EvalOptions {
            lookback_ms: opts.lookback.as_millis() as i64,
            max_samples: opts.max_samples,
            deadline: Some(Instant::now() + opts.timeout),
            ..EvalOptions::default()
        };
        let grouping = grouping_labels(&expr);
        let result = evaluate(
            service,
            scope,
            expr,
            Some((start, end, step)),
            start,
            eval_opts,
            opts.timeout,
        )
        .await
        .map_err(fail)?;
        let batch = to_batch(&result.value, &grouping).map_err(fail)?;
        out.push((src.table, batch));
    }
    Ok(out)
}

/// The labels an aggregation keeps (`avg by (model) (…)`): columns even when no series
/// matched, so that `stats … by model` over an empty result is no unknown-field error.
fn grouping_labels(e: &Expr) -> Vec<String> {
    match e {
        Expr::Paren(inner) => grouping_labels(inner),
        Expr::Aggregate(a) => match &a.grouping {
            Grouping::By(labels) => labels.clone(),
            Grouping::Without(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The column of a label: its name, unless that is `time` or `value`.
fn label_column(name: &str) -> String {
    match name {
        "time" | "value" => format!("label_{name}"),
        n => n.to_string(),
    }
}

/// Rows `(time, <label>…, value)`, one per sample; a label a series lacks is null.
pub(crate) fn to_batch(
    value: &Value,
    grouping: &[String],
) -> std::result::Result<RecordBatch, PromqlError> {
    let series: Vec<(Labels, Vec<Sample>)> = match value {
        Value::Matrix(ss) => ss
            .iter()
            .map(|s| (s.labels.clone(), s.samples.clone()))
            .collect(),
        Value::Vector(v) => v.iter().map(|(l, s)| (l.clone(), vec![*s])).collect(),
        Value::Scalar { t, v } => vec![(Labels::empty(), vec![Sample { t: *t, v: *v }])],
        Value::String { .. } => {
            return Err(PromqlError::NotSeries {
                type_name: value.type_name(),
            });
        }
    };
    let mut names: BTreeSet<&str> = grouping.iter().map(String::as_str).collect();
    for (labels, _) in &series {
        names.extend(labels.iter().map(|(k, _)| k));
    }
    let rows: usize = series.iter().map(|(_, s)| s.len()).sum();
    let mut times = Vec::with_capacity(rows);
    let mut values = Vec::with_capacity(rows);
    for (_, samples) in &series {
        for s in samples {
            times.push(s.t.saturating_mul(1_000_000));
            values.push(s.v);
        }
    }
    let mut fields = vec![Field::new(
        "time",
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        false,
    )];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(TimestampNanosecondArray::from(times))];
    for name in &names {
        let mut col: Vec<Option<&str>> = Vec::with_capacity(rows);
        for (labels, samples) in &series {
            let v = labels.get(name);
            col.extend(std::iter::repeat_n(v, samples.len()));
        }
        fields.push(Field::new(label_column(name), DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(col)));
    }
    fields.push(Field::new("value", DataType::Float64, false));
    columns.push(Arc::new(Float64Array::from(values)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| PromqlError::Fetch(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigwatch_promql::value::Series;

    #[test]
    fn series_become_rows_with_a_column_per_label() {
        let value = Value::Matrix(vec![
            Series {
                labels: Labels::from_pairs([("model", "H100")]),
                samples: vec![Sample { t: 1000, v: 0.5 }, Sample { t: 2000, v: 0.7 }],
            },
            Series {
                labels: Labels::from_pairs([("model", "A100"), ("value", "x")]),
                samples: vec![Sample { t: 1000, v: 0.25 }],
            },
        ]);
        let b = to_batch(&value, &["region".to_string()]).unwrap();
        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["time", "model", "region", "label_value", "value"]);
        assert_eq!(b.num_rows(), 3);
        let schema = b.schema();
        let json = crate::format::encode(crate::format::Format::JsonLines, &schema, &[b]).unwrap();
        let text = String::from_utf8(json).unwrap();
        assert_eq!(
            text,
            "{\"time\":\"1970-01-01T00:00:01\",\"model\":\"H100\",\"value\":0.5}\n\
             {\"time\":\"1970-01-01T00:00:02\",\"model\":\"H100\",\"value\":0.7}\n\
             {\"time\":\"1970-01-01T00:00:01\",\"model\":\"A100\",\"label_value\":\"x\",\"value\":0.25}\n"
        );
        let empty = to_batch(&Value::Matrix(vec![]), &["model".to_string()]).unwrap();
        assert_eq!(empty.num_columns(), 3);
        assert!(matches!(
            to_batch(
                &Value::String {
                    t: 0,
                    s: "x".into()
                },
                &[]
            ),
            Err(PromqlError::NotSeries { .. })
        ));
    }

    #[test]
    fn grouping_labels_come_from_the_outer_aggregation() {
        let e = rigwatch_promql::parse("(avg by (model, region) (gpu_utilization))").unwrap();
        assert_eq!(grouping_labels(&e), ["model", "region"]);
        let e = rigwatch_promql::parse("sum without (x) (y)").unwrap();
        assert!(grouping_labels(&e).is_empty());
    }
}
