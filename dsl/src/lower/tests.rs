use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::*;
use crate::parser::parse;

fn tag(name: &str) -> Field {
    Field::new(
        name,
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        true,
    )
}

fn time() -> Field {
    Field::new(
        "time",
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        false,
    )
}

fn schema(tags: &[&str], fields: &[(&str, DataType)]) -> SchemaRef {
    let mut out: Vec<Field> = tags.iter().map(|t| tag(t)).collect();
    out.extend(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)));
    out.push(time());
    Arc::new(Schema::new(out))
}

/// The tables as the demo server has them (from its `information_schema.columns`).
pub(crate) fn catalog(table: &TableRef) -> Option<SchemaRef> {
    use DataType::{Boolean as B, Float64 as F, Int64 as I, Utf8 as S};
    Some(match (table.schema, table.name.as_str()) {
        (None, "gpu") => schema(
            &[
                "gpu_index",
                "gpu_uuid",
                "model",
                "region",
                "supplier",
                "worker",
            ],
            &[
                ("memory_total_mib", I),
                ("power_limit_watts", F),
                ("pci_bus_id", S),
                ("driver_version", S),
                ("utilization", F),
                ("memory_utilization", F),
                ("memory_used_mib", I),
                ("memory_free_mib", I),
                ("temperature", F),
                ("power_watts", F),
                ("energy_mj", I),
                ("sm_clock_mhz", I),
                ("memory_clock_mhz", I),
                ("pcie_tx_bytes_per_s", I),
                ("pcie_rx_bytes_per_s", I),
                ("pcie_replay_total", I),
                ("throttle_reasons", I),
                ("compute_processes", I),
            ],
        ),
        (None, "gpu_fault") => schema(
            &[
                "gpu_index",
                "gpu_uuid",
                "kind",
                "model",
                "region",
                "supplier",
                "worker",
            ],
            &[("code", I), ("severity", S), ("evidence", S), ("action", S)],
        ),
        (None, "gpu_health") => schema(
            &["gpu_uuid", "model", "supplier", "worker"],
            &[
                ("state", S),
                ("previous", S),
                ("state_code", I),
                ("reasons", S),
                ("hardware", B),
            ],
        ),
        (None, "heartbeat") => schema(
            &["region", "supplier", "worker"],
            &[
                ("seq", I),
                ("gpus", I),
                ("gpus_reporting", I),
                ("interval_ms", I),
                ("uptime_s", I),
                ("spool_batches", I),
                ("spool_bytes", I),
                ("spool_dropped_batches", I),
                ("agent_version", S),
            ],
        ),
        (None, "job") => schema(
            &["job_id"],
            &[
                ("state", S),
                ("submitted_ms", I),
                ("priority", I),
                ("min_gpu_memory_mib", I),
                ("expected_duration_ms", I),
                ("models", S),
                ("gpus", I),
                ("restarts", I),
                ("started_ms", I),
                ("gpu_milli", I),
                ("ended_ms", I),
                ("end_reason", S),
            ],
        ),
        (None, "lease") => schema(
            &[
                "gpu_uuid", "job_id", "lease_id", "model", "supplier", "worker",
            ],
            &[
                ("share_milli", I),
                ("start_ms", I),
                ("end_ms", I),
                ("end_reason", S),
            ],
        ),
        (None, "earnings") => schema(
            &["gpu_uuid", "lease_id", "model", "supplier"],
            &[
                ("amount_micro", I),
                ("rate_micro_per_gpu_hour", I),
                ("share_milli", I),
                ("to_ms", I),
                ("duration_ms", I),
                ("ledger_version", I),
            ],
        ),
        (None, "payout") => schema(
            &["payout_id", "supplier"],
            &[("amount_micro", I), ("reference", S), ("paid_ms", I)],
        ),
        (Some("dsl"), name) if name.starts_with("promql_") => Arc::new(Schema::new(vec![
            time(),
            Field::new("gpu_uuid", S, true),
            Field::new("model", S, true),
            Field::new("supplier", S, true),
            Field::new("value", F, false),
        ])),
        _ => return None,
    })
}

fn sql(text: &str) -> String {
    let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    lower(text, &q, &catalog)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .sql
}

fn err(text: &str) -> Error {
    let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    lower(text, &q, &catalog).expect_err(text)
}

#[test]
fn sources_read_their_table_and_range() {
    assert_eq!(
        sql("gpus[5m]"),
        "WITH\n  s0 AS (SELECT * FROM \"gpu\" WHERE \"time\" > now() - INTERVAL '5 minutes')\nSELECT * FROM s0"
    );
    assert_eq!(
        sql("earnings[2026-11-01 .. 2026-12-01T12:00]"),
        "WITH\n  s0 AS (SELECT * FROM \"earnings\" WHERE \"time\" >= TIMESTAMP '2026-11-01 00:00:00' \
         AND \"time\" < TIMESTAMP '2026-12-01 12:00:00')\nSELECT * FROM s0"
    );
    assert!(sql("jobs").contains("SELECT * FROM \"job\")"));
    assert!(sql("faults[1d]").contains("FROM \"gpu_fault\" WHERE"));
    assert!(sql("heartbeats").contains("FROM \"heartbeat\""));
    assert!(sql("promql(\"up\")[5m]").contains("SELECT * FROM \"dsl\".\"promql_0\")"));
    // A table the caller cannot see.
    let text = "health[1h]";
    let hidden = |t: &TableRef| (t.name != "gpu_health").then(|| catalog(t)).flatten();
    let e = lower(text, &parse(text).unwrap(), &hidden).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1, column 1 (byte 0): source `health` (table `gpu_health`) has no data this \
         caller may read"
    );
}

#[test]
fn where_extend_select_sort_top() {
    let s = sql(
        "gpus | where model in (\"H100\", \"A100\") and not utilization < 0.5 | extend w = power_watts / 1000",
    );
    assert!(
        s.contains(
            "s1 AS (SELECT * FROM s0 WHERE ((\"model\" IN ('H100', 'A100')) AND (NOT (\"utilization\" < 0.5))))"
        ),
        "{s}"
    );
    assert!(
        s.contains("s2 AS (SELECT *, (\"power_watts\" / 1000) AS \"w\" FROM s1)"),
        "{s}"
    );
    // Extending an existing column replaces it in place.
    let s = sql("faults | extend severity = xid_class(code) | select severity, code");
    assert!(
        s.contains("\"worker\", \"code\", CASE WHEN \"code\" IN ("),
        "{s}"
    );
    assert!(
        s.contains("END AS \"severity\", \"evidence\", \"action\", \"time\" FROM s0"),
        "{s}"
    );
    assert!(
        s.contains("s2 AS (SELECT \"severity\", \"code\" FROM s1)"),
        "{s}"
    );
    // A sort is applied at the end, after stages that keep rows as they are.
    let s = sql("gpus | sort temperature desc, model | where utilization > 1");
    assert!(
        s.ends_with(
            "SELECT * FROM s1 ORDER BY \"temperature\" DESC NULLS LAST, \"model\" ASC NULLS LAST"
        ),
        "{s}"
    );
    let s = sql("leases | stats count() by supplier | top 5 by count");
    assert!(
        s.contains("s2 AS (SELECT * FROM s1 ORDER BY \"count\" DESC NULLS LAST LIMIT 5)"),
        "{s}"
    );
    assert!(
        s.ends_with("SELECT * FROM s2 ORDER BY \"count\" DESC NULLS LAST"),
        "{s}"
    );
    let e = err("gpus | sort temperature | select model");
    assert!(e.to_string().contains("drops `temperature`"), "{e}");
    let e = err("gpus | select model, model");
    assert!(matches!(e, Error::DuplicateColumn { .. }), "{e}");
}

#[test]
fn stats_names_columns_and_keeps_integer_sums() {
    let s = sql(
        "earnings[1d] | stats sum(amount), count(), avg(duration_ms) as d, count_distinct(gpu_uuid) by supplier, bucket(1h)",
    );
    assert!(
        s.contains(
            "s1 AS (SELECT \"supplier\" AS \"supplier\", date_bin(INTERVAL '1 hours', \"time\") AS \"bucket\", \
             sum(\"amount_micro\") AS \"sum_amount\", count(*) AS \"count\", avg(\"duration_ms\") AS \"d\", \
             count(DISTINCT \"gpu_uuid\") AS \"count_distinct_gpu_uuid\" FROM s0 \
             GROUP BY \"supplier\", date_bin(INTERVAL '1 hours', \"time\"))"
        ),
        "{s}"
    );
    let s = sql("jobs[1d] | where state == \"completed\" | stats count() as done by bucket(1m)");
    assert!(s.contains("WHERE (\"state\" = 'completed')"), "{s}");
    assert!(s.contains("count(*) AS \"done\""), "{s}");
    // After stats, only the result's columns exist.
    let e = err("gpus | stats avg(utilization) by model | sort utilization");
    assert_eq!(
        e.to_string(),
        "line 1, column 47 (byte 46): unknown field `utilization` (expected a field of the \
         stats result); did you mean `avg_utilization`?"
    );
    let e = err("gpus | stats sum(model)");
    assert_eq!(
        e.to_string(),
        "line 1, column 18 (byte 17): `sum` expects a number, but `model` is a tag (text)"
    );
    let e = err("gpus | stats avg(utilization), avg(utilization)");
    assert!(matches!(e, Error::DuplicateColumn { .. }), "{e}");
    let e = err("gpus | stats avg(utilization * 2)");
    assert!(e.to_string().contains("name it with `as`"), "{e}");
    let e = err("gpus | stats utilization");
    assert!(e.to_string().contains("is not an aggregate"), "{e}");
    let e = err("gpus | where avg(utilization) > 1");
    assert!(
        e.to_string()
            .contains("the aggregate `avg` belongs at the top of a `stats` item"),
        "{e}"
    );
    let e = err("gpus | stats count() by bucket(utilization)");
    assert!(e.to_string().contains("`bucket` expects a duration"), "{e}");
}

#[test]
fn rate_is_per_series_with_counter_resets() {
    let s = sql("gpus[5m] | stats avg(rate(energy_mj, 1m)) by model, bucket(1m)");
    assert!(
        s.contains(
            "s1 AS (SELECT *, date_part('epoch', \"time\") - LAG(date_part('epoch', \"time\")) \
             OVER (PARTITION BY \"supplier\", \"gpu_uuid\" ORDER BY \"time\") AS \"__dt\", \
             CAST(\"energy_mj\" AS DOUBLE) - LAG(CAST(\"energy_mj\" AS DOUBLE)) \
             OVER (PARTITION BY \"supplier\", \"gpu_uuid\" ORDER BY \"time\") AS \"__dv0\" FROM s0)"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "avg(CASE WHEN \"__dt\" > 0 AND \"__dt\" <= 60.0 THEN (CASE WHEN \"__dv0\" >= 0 \
             THEN \"__dv0\" ELSE CAST(\"energy_mj\" AS DOUBLE) END) / \"__dt\" END) AS \"avg_rate_energy_mj\""
        ),
        "{s}"
    );
    assert!(
        sql("heartbeats | stats max(rate(uptime_s, 5m))")
            .contains("PARTITION BY \"supplier\", \"worker\"")
    );
    let e = err("leases | stats avg(rate(share_milli, 1m))");
    assert!(e.to_string().contains("telemetry source"), "{e}");
    let e = err("gpus | stats avg(rate(model, 1m))");
    assert!(e.to_string().contains("expects a number"), "{e}");
    let e = err("gpus | where rate(energy_mj, 1m) > 0");
    assert!(e.to_string().contains("belongs inside an aggregate"), "{e}");
}

#[test]
fn joins_qualify_columns() {
    let s = sql(
        "leases[1d] | join gpus[5m] on gpu_uuid | stats max(gpus.temperature) by leases.supplier",
    );
    assert!(
        s.contains(
            "s1 AS (SELECT l.\"gpu_uuid\" AS \"leases.gpu_uuid\", l.\"job_id\" AS \"leases.job_id\""
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "FROM s0 AS l JOIN (SELECT * FROM \"gpu\" WHERE \"time\" > now() - INTERVAL '5 minutes') \
             AS r ON l.\"gpu_uuid\" = r.\"gpu_uuid\")"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "s2 AS (SELECT \"leases.supplier\" AS \"supplier\", max(\"gpus.temperature\") AS \
             \"max_temperature\" FROM s1 GROUP BY \"leases.supplier\")"
        ),
        "{s}"
    );
    // Unqualified names: the pipeline's own source first, then the joined one.
    let s = sql(
        "earnings | join leases on lease_id | where supplier == \"x\" and end_reason == \"y\" | stats sum(amount)",
    );
    assert!(
        s.contains("(\"earnings.supplier\" = 'x') AND (\"leases.end_reason\" = 'y')"),
        "{s}"
    );
    assert!(
        s.contains("sum(\"earnings.amount_micro\") AS \"sum_amount\""),
        "{s}"
    );
    let s = sql("gpus | join leases on gpu_uuid == gpu_uuid, supplier");
    assert!(
        s.contains("ON l.\"gpu_uuid\" = r.\"gpu_uuid\" AND l.\"supplier\" = r.\"supplier\""),
        "{s}"
    );
    let text = "jobs | join leases on job_id | join earnings on lease_id | select model";
    let e = err(text);
    assert_eq!(
        e.to_string(),
        format!(
            "line 1, column {} (byte {}): field `model` is ambiguous: qualify it as one of \
             `leases.model`, `earnings.model`",
            text.len() - 4,
            text.len() - 5
        )
    );
    let e = err("leases | join gpus on gpu_uuid | stats max(gpus.temprature)");
    assert_eq!(e.suggestion(), Some("gpus.temperature"), "{e}");
    let e = err("leases | join leases on gpu_uuid");
    assert!(e.to_string().contains("already in the pipeline"), "{e}");
    let e = err("leases | join gpus on lease_id");
    assert!(
        e.to_string()
            .contains("unknown field `lease_id` (expected a field of gpus)"),
        "{e}"
    );
}

#[test]
fn unknown_names_suggest_the_nearest() {
    let e = err("gpus[5m] | stats avg(utilisation) by model");
    assert_eq!(
        e.to_string(),
        "line 1, column 22 (byte 21): unknown field `utilisation` (expected a field of gpus); \
         did you mean `utilization`?"
    );
    let e = err("gpus | stats avgg(utilization)");
    assert_eq!(e.suggestion(), Some("avg"), "{e}");
    assert!(e.to_string().contains("unknown function `avgg`"), "{e}");
    let e = err("gpus | where xid_clas(code) == \"hardware\"");
    assert_eq!(e.suggestion(), Some("xid_class"), "{e}");
    let e = err("gpus | where now(1) > time");
    assert!(
        e.to_string().contains("`now` takes no arguments, not 1"),
        "{e}"
    );
    let e = err("faults | where xid_class(model) == \"x\"");
    assert!(e.to_string().contains("expects an XID code"), "{e}");
    // `gpus.x` before a join is the source's own field.
    assert!(sql("gpus | where gpus.model == \"T4\"").contains("(\"model\" = 'T4')"));
}

#[test]
fn explain_only_marks_the_result() {
    let text = "explain gpus[5m] | stats count()";
    let q = parse(text).unwrap();
    let l = lower(text, &q, &catalog).unwrap();
    assert!(l.explain);
    let text = "gpus[5m] | stats count()";
    let plain = lower(text, &parse(text).unwrap(), &catalog).unwrap();
    assert!(!plain.explain);
    assert_eq!(plain.sql, l.sql);
}

#[test]
fn the_seven_examples_lower() {
    for text in crate::parser::tests::EXAMPLES {
        let s = sql(text);
        assert!(s.starts_with("WITH\n  s0 AS (SELECT * FROM "), "{s}");
    }
}

#[test]
fn multiple_assignments_extend_in_order() {
    let s = sql("leases | extend a = share_milli * 2, b = a + 1 | select a, b");
    assert!(
        s.contains("s1 AS (SELECT *, (\"share_milli\" * 2) AS \"a\" FROM s0)"),
        "{s}"
    );
    assert!(
        s.contains("s2 AS (SELECT *, (\"a\" + 1) AS \"b\" FROM s1)"),
        "{s}"
    );
}

/// Every `dsl` block of the language reference parses and lowers.
#[test]
fn the_reference_examples_lower() {
    let doc = include_str!("../../../docs/dsl.md");
    let mut blocks = 0;
    let mut rest = doc;
    while let Some(start) = rest.find("```dsl\n") {
        let body = &rest[start + 7..];
        let end = body.find("```").expect("closed block");
        let text = body[..end].trim();
        let q = parse(text).unwrap_or_else(|e| panic!("docs/dsl.md: `{text}`: {e}"));
        let again = parse(&q.to_string()).unwrap_or_else(|e| panic!("`{q}`: {e}"));
        assert_eq!(again.to_string(), q.to_string());
        lower(text, &q, &catalog).unwrap_or_else(|e| panic!("docs/dsl.md: `{text}`: {e}"));
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(blocks >= 25, "only {blocks} examples found");
}

#[test]
fn chains_of_one_operator_stay_flat() {
    let s = sql(
        "gpus | where model == \"a\" or model == \"b\" or model == \"c\" and utilization > 1 + 2 - 3",
    );
    assert!(
        s.contains(
            "WHERE ((\"model\" = 'a') OR (\"model\" = 'b') OR ((\"model\" = 'c') AND (\"utilization\" > (1 + 2 - 3)))))"
        ),
        "{s}"
    );
    // A right operand keeps its parentheses: a - (b - c) is not a - b - c.
    assert!(sql("gpus | extend d = 1 - (2 - 3)").contains("(1 - (2 - 3)) AS \"d\""));
}

#[test]
fn aggregates_combine_with_arithmetic_and_scalar_functions() {
    let s = sql("earnings[1d] | stats round(sum(amount) / gpu_hours(), 2) as yield by model");
    assert!(
        s.contains("round((sum(\"amount_micro\") / (sum(CAST(\"duration_ms\" AS DOUBLE)"),
        "{s}"
    );
    let e = err("earnings | stats sum(amount) / count()");
    assert!(e.to_string().contains("name it with `as`"), "{e}");
    let e = err("gpus | stats utilization + 1 as x");
    assert!(e.to_string().contains("is not an aggregate"), "{e}");
}

#[test]
fn domain_aggregates_read_the_raw_rows_of_their_sources() {
    let s = sql("gpus[2026-11-02 .. 2026-11-03] | stats uptime() by supplier");
    assert!(s.contains("least(1.0, CAST(count(DISTINCT concat_ws('/', concat_ws('/', \"supplier\", \"gpu_uuid\")"), "{s}");
    assert!(s.contains("* 1440.0))"), "{s}");
    // A bucket is what the minutes count against when there is one.
    let s = sql("heartbeats[1d] | stats uptime() by bucket(1h)");
    assert!(s.contains("* 60.0))"), "{s}");
    assert!(sql("leases | stats gpu_hours()").contains("coalesce(CAST(\"end_ms\" AS DOUBLE)"));
    for (text, needle) in [
        ("gpus | stats uptime()", "needs a time range"),
        ("faults[1d] | stats gpu_hours()", "`gpu_hours()` on faults"),
        ("leases[1d] | stats uptime()", "reads gpus or heartbeats"),
        (
            "leases[1d] | join gpus[1d] on gpu_uuid | stats gpu_hours()",
            "before any join",
        ),
        (
            "gpus | extend x = gpu_hours()",
            "belongs at the top of a `stats` item",
        ),
    ] {
        let e = err(text);
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
    let s = sql("gpus | where throttled(throttle_reasons)");
    assert!(
        s.contains("((CAST(\"throttle_reasons\" AS BIGINT) & 232) <> 0)"),
        "{s}"
    );
    let e = err("gpus | where throttled(model)");
    assert!(e.to_string().contains("throttle_reasons bitmask"), "{e}");
}

#[test]
fn zoned_buckets_truncate_calendar_units_in_the_zone() {
    let s = sql("earnings[7d] | stats sum(amount) by bucket(1d, \"Europe/Berlin\")");
    assert!(
        s.contains(
            "date_trunc('day', arrow_cast(arrow_cast(\"time\", 'Timestamp(Nanosecond, Some(\"UTC\"))'), \
             'Timestamp(Nanosecond, Some(\"Europe/Berlin\"))')) AS \"bucket\""
        ),
        "{s}"
    );
    for (text, needle) in [
        (
            "gpus | stats count() by bucket(1d, \"Mars/Olympus\")",
            "unknown time zone",
        ),
        (
            "gpus | stats count() by bucket(2h, \"UTC\")",
            "1m, 1h, 1d or 1w",
        ),
        ("gpus | stats count() by bucket(1d, 5)", "a time zone name"),
        (
            "gpus | stats count() by bucket(1h), bucket(1d)",
            "at most one",
        ),
    ] {
        let e = err(text);
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn fill_follows_a_bucketed_stats() {
    let s = sql("gpus[1h] | stats avg(utilization) by model, bucket(5m) | sort bucket | fill");
    assert!(s.contains("unnest(range(0, 14))"), "{s}");
    assert!(
        s.contains("CROSS JOIN (SELECT DISTINCT \"model\" FROM s1) AS k LEFT JOIN s1 AS s"),
        "{s}"
    );
    assert!(
        s.contains("coalesce(s.\"avg_utilization\", 0) AS \"avg_utilization\""),
        "{s}"
    );
    assert!(s.ends_with("ORDER BY \"bucket\" ASC NULLS LAST"), "{s}");
    // Without a range (or with a zone), the buckets are those some key has.
    let s = sql("gpus | stats count() by bucket(1h) | fill null");
    assert!(
        s.contains("(SELECT DISTINCT \"bucket\" FROM s1) AS b"),
        "{s}"
    );
    assert!(s.contains("coalesce(s.\"count\", NULL)"), "{s}");
    for (text, needle) in [
        (
            "gpus | stats count() by model | fill",
            "follows a `stats … by bucket(…)`",
        ),
        (
            "gpus[1h] | stats count() by bucket(1m) | where count > 1 | fill",
            "follows",
        ),
        (
            "gpus[1h] | stats count() by bucket(1m) | fill \"x\"",
            "a number or null",
        ),
        (
            "gpus[30d] | stats count() by bucket(1s) | fill",
            "100,000 buckets",
        ),
    ] {
        let e = err(text);
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn joined_pipelines_and_left_joins() {
    let s = sql("gpus[1d] | stats gpu_hours() as offered by gpu_uuid \
         | join left (leases[1d] | stats gpu_hours() as rented by gpu_uuid) on gpu_uuid \
         | select gpu_uuid, offered, rented");
    // The joined pipeline's steps come first, named apart.
    assert!(s.contains("j1_s0 AS (SELECT * FROM \"lease\" WHERE"), "{s}");
    assert!(
        s.contains("LEFT JOIN (SELECT * FROM j1_s1) AS r ON l.\"gpu_uuid\" = r.\"gpu_uuid\""),
        "{s}"
    );
    // A select after a join names fields by their last part when that is unique.
    assert!(
        s.contains("SELECT \"gpus.gpu_uuid\" AS \"gpu_uuid\", \"gpus.offered\" AS \"offered\", \"leases.rented\" AS \"rented\""),
        "{s}"
    );
    let s = sql("leases | join gpus on gpu_uuid | select leases.gpu_uuid, gpus.gpu_uuid");
    assert!(
        s.contains("SELECT \"leases.gpu_uuid\", \"gpus.gpu_uuid\" FROM"),
        "{s}"
    );
    // Names resolve against the joined pipeline's result.
    let e = err(
        "gpus | join (leases | stats count() by gpu_uuid) on gpu_uuid | where leases.rented > 1",
    );
    assert!(
        e.to_string().contains("unknown field `leases.rented`"),
        "{e}"
    );
    let e = parse("gpus | join (leases | explain) on gpu_uuid").unwrap_err();
    assert!(e.to_string().contains("not to a joined pipeline"), "{e}");
}

#[test]
fn time_literals_are_timestamps() {
    let s = sql("gpus | where time >= 2026-11-02T02:30 and time < 2026-11-03");
    assert!(
        s.contains("(\"time\" >= TIMESTAMP '2026-11-02 02:30:00') AND (\"time\" < TIMESTAMP '2026-11-03 00:00:00')"),
        "{s}"
    );
    let q = parse("leases | where from_ms(start_ms) <= 2026-11-02T02:30:05").unwrap();
    assert_eq!(
        q.to_string(),
        "leases | where from_ms(start_ms) <= 2026-11-02T02:30:05"
    );
    // Arithmetic on numbers stays arithmetic.
    assert!(sql("gpus | extend x = 2026 - 11 - 2").contains("(2026 - 11 - 2) AS \"x\""));
    let e = parse("gpus | where time > 2026-02-30").unwrap_err();
    assert!(e.to_string().contains("not a valid UTC date"), "{e}");
}
