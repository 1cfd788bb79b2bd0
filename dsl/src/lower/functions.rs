//! The functions of the language: scalar functions, aggregates, the per-series `rate` and the
//! `bucket` key, with their arity, result type and SQL.

use rigwatch_scheduler::health::xid::{CATALOGUE, XidClass};

use crate::catalog::Ty;

/// Where a function may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anywhere an expression may.
    Scalar,
    /// At the top of a `stats` item.
    Aggregate,
    /// Inside an aggregate, on a telemetry source.
    PerSeries,
    /// As a `stats … by` key.
    Bucket,
}

impl Kind {
    /// The word for editors and the reference.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::Scalar => "scalar",
            Kind::Aggregate => "aggregate",
            Kind::PerSeries => "per-series",
            Kind::Bucket => "bucket",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Function {
    pub name: &'static str,
    pub kind: Kind,
    pub min_args: usize,
    pub max_args: usize,
    /// How the arguments read, for messages: "one argument".
    pub arity: &'static str,
}

const fn f(
    name: &'static str,
    kind: Kind,
    min_args: usize,
    max_args: usize,
    arity: &'static str,
) -> Function {
    Function {
        name,
        kind,
        min_args,
        max_args,
        arity,
    }
}

pub(crate) const FUNCTIONS: &[Function] = &[
    f("count", Kind::Aggregate, 0, 1, "no argument or one field"),
    f("sum", Kind::Aggregate, 1, 1, "one argument"),
    f("avg", Kind::Aggregate, 1, 1, "one argument"),
    f("min", Kind::Aggregate, 1, 1, "one argument"),
    f("max", Kind::Aggregate, 1, 1, "one argument"),
    f("count_distinct", Kind::Aggregate, 1, 1, "one argument"),
    f(
        "gpu_hours",
        Kind::Aggregate,
        0,
        0,
        "no arguments: GPU-hours offered (gpus), rented (leases) or paid (earnings)",
    ),
    f(
        "uptime",
        Kind::Aggregate,
        0,
        0,
        "no arguments: the share of minutes each GPU (gpus) or worker (heartbeats) reported",
    ),
    f(
        "rate",
        Kind::PerSeries,
        2,
        2,
        "a counter field and a window, e.g. rate(energy_mj, 1m)",
    ),
    f(
        "bucket",
        Kind::Bucket,
        1,
        2,
        "a duration and optionally a time zone, e.g. bucket(1h) or bucket(1d, \"Europe/Berlin\")",
    ),
    f(
        "xid_class",
        Kind::Scalar,
        1,
        1,
        "one argument (an XID code)",
    ),
    f(
        "throttled",
        Kind::Scalar,
        1,
        1,
        "one argument (throttle_reasons)",
    ),
    f("now", Kind::Scalar, 0, 0, "no arguments"),
    f(
        "from_ms",
        Kind::Scalar,
        1,
        1,
        "one argument (milliseconds since 1970)",
    ),
    f("abs", Kind::Scalar, 1, 1, "one argument"),
    f(
        "round",
        Kind::Scalar,
        1,
        2,
        "a number and optionally the decimals to keep",
    ),
    f("floor", Kind::Scalar, 1, 1, "one argument"),
    f("ceil", Kind::Scalar, 1, 1, "one argument"),
    f("lower", Kind::Scalar, 1, 1, "one argument"),
    f("upper", Kind::Scalar, 1, 1, "one argument"),
    f("coalesce", Kind::Scalar, 1, 16, "one to 16 arguments"),
    f(
        "if",
        Kind::Scalar,
        3,
        3,
        "a condition, the value when true and the value otherwise",
    ),
    f(
        "nullif",
        Kind::Scalar,
        2,
        2,
        "a value and the value that makes it null",
    ),
];

/// For "unknown function" messages.
pub(crate) const FUNCTION_LIST: &str = "one of count, sum, avg, min, max, count_distinct, \
     gpu_hours, uptime, rate, bucket, xid_class, throttled, now, from_ms, abs, round, floor, ceil, lower, upper, coalesce, if, nullif";

pub(crate) fn lookup(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The SQL and type of a scalar call whose arguments are already lowered.
pub(crate) fn scalar_sql(name: &str, args: &[(String, Ty)]) -> (String, Ty) {
    let joined = args
        .iter()
        .map(|(s, _)| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let first = args.first().map_or(Ty::Other, |(_, t)| *t);
    match name {
        "xid_class" => (xid_class_sql(&args[0].0), Ty::Str),
        "throttled" => (
            format!(
                "((CAST({} AS BIGINT) & {}) <> 0)",
                args[0].0,
                rigwatch_scheduler::health::throttle::SLOWDOWN
            ),
            Ty::Bool,
        ),
        "now" => ("now()".into(), Ty::Time),
        "from_ms" => (format!("to_timestamp_millis({joined})"), Ty::Time),
        "lower" | "upper" => (format!("{name}({joined})"), Ty::Str),
        "if" => {
            let ty = match (args[1].1, args[2].1) {
                (a, b) if a == b => a,
                (Ty::Null, b) => b,
                (a, Ty::Null) => a,
                (Ty::Int | Ty::Float, Ty::Int | Ty::Float) => Ty::Float,
                (Ty::Tag | Ty::Str, Ty::Tag | Ty::Str) => Ty::Str,
                _ => Ty::Other,
            };
            (
                format!(
                    "CASE WHEN {} THEN {} ELSE {} END",
                    args[0].0, args[1].0, args[2].0
                ),
                ty,
            )
        }
        "round" | "floor" | "ceil" => (format!("{name}({joined})"), Ty::Float),
        _ => (format!("{name}({joined})"), first),
    }
}

/// `xid_class(code)`: the class of each XID of the catalogue (scheduler's
/// `health::xid::CATALOGUE`, the one place that decides it), `unknown` for other codes,
/// null for a null code.
pub(crate) fn xid_class_sql(code: &str) -> String {
    let mut out = String::from("CASE");
    for class in [
        XidClass::Application,
        XidClass::Hardware,
        XidClass::Informational,
    ] {
        let codes: Vec<String> = CATALOGUE
            .iter()
            .filter(|x| x.class == class)
            .map(|x| x.code.to_string())
            .collect();
        if !codes.is_empty() {
            out.push_str(&format!(
                " WHEN {code} IN ({}) THEN '{}'",
                codes.join(", "),
                class.as_str()
            ));
        }
    }
    out.push_str(&format!(
        " WHEN {code} IS NOT NULL THEN '{}' END",
        XidClass::Unknown.as_str()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_classes_follow_the_catalogue() {
        let sql = xid_class_sql("\"code\"");
        assert!(
            sql.starts_with(
                "CASE WHEN \"code\" IN (8, 13, 31, 43, 45, 94, 109) THEN 'application'"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("IN (48, 61, 62, 64, 74, 79, 95, 119, 120, 140) THEN 'hardware'"),
            "{sql}"
        );
        assert!(sql.contains("IN (63, 92) THEN 'informational'"), "{sql}");
        assert!(
            sql.ends_with("WHEN \"code\" IS NOT NULL THEN 'unknown' END"),
            "{sql}"
        );
    }

    #[test]
    fn every_function_is_listed_for_messages() {
        for f in FUNCTIONS {
            assert!(FUNCTION_LIST.contains(f.name), "{} missing", f.name);
            assert!(f.min_args <= f.max_args);
        }
    }
}
