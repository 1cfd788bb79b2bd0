//! The known-function signature table the parser checks calls against.
//!
//! Every PromQL function of Prometheus 3 except those that only work on native
//! histograms (`histogram_avg`, `histogram_count`, `histogram_sum`,
//! `histogram_stddev`, `histogram_stdvar`) and `start_timestamp` (needs stored start
//! timestamps, which rigwatch does not keep), plus rigwatch's own additions, marked
//! [`Origin::Rigwatch`]. The evaluator implements the functions; this table only says
//! how a call is typed.

use crate::ast::ValueType;

/// How many arguments a function takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly as many as [`Signature::arg_types`] lists.
    Exact,
    /// At least this many; extra arguments have the type of the last listed one.
    AtLeast(usize),
    /// Between the two bounds (inclusive); arguments past the listed types have the
    /// type of the last listed one.
    Range(usize, usize),
}

/// Where a function comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A stable Prometheus function.
    Stable,
    /// A Prometheus function behind `--enable-feature=promql-experimental-functions`;
    /// rigwatch accepts it unconditionally.
    Experimental,
    /// A rigwatch extension, not in Prometheus.
    Rigwatch,
}

/// A function's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub name: &'static str,
    pub arg_types: &'static [ValueType],
    pub arity: Arity,
    pub return_type: ValueType,
    pub origin: Origin,
}

impl Signature {
    /// The smallest and largest argument count (`None`: unbounded).
    pub fn arg_bounds(&self) -> (usize, Option<usize>) {
        match self.arity {
            Arity::Exact => (self.arg_types.len(), Some(self.arg_types.len())),
            Arity::AtLeast(n) => (n, None),
            Arity::Range(lo, hi) => (lo, Some(hi)),
        }
    }

    /// The expected type of argument `i` (0-based), assuming the count is valid.
    pub fn arg_type(&self, i: usize) -> ValueType {
        match self.arg_types.get(i) {
            Some(t) => *t,
            None => *self
                .arg_types
                .last()
                .expect("only functions with arguments accept extra arguments"),
        }
    }
}

const fn sig(
    name: &'static str,
    arg_types: &'static [ValueType],
    arity: Arity,
    return_type: ValueType,
    origin: Origin,
) -> Signature {
    Signature {
        name,
        arg_types,
        arity,
        return_type,
        origin,
    }
}

/// All known functions, sorted by name.
pub static SIGNATURES: &[Signature] = &[
    sig(
        "abs",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "absent",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "absent_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "acos",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "acosh",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "asin",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "asinh",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "atan",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "atanh",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "avg_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "ceil",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "changes",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "clamp",
        &[ValueType::Vector, ValueType::Scalar, ValueType::Scalar],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "clamp_max",
        &[ValueType::Vector, ValueType::Scalar],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "clamp_min",
        &[ValueType::Vector, ValueType::Scalar],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "cos",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "cosh",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "count_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "day_of_month",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "day_of_week",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "day_of_year",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "days_in_month",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "deg",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "delta",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "deriv",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "double_exponential_smoothing",
        &[ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
        Arity::Exact,
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "end",
        &[],
        Arity::Exact,
        ValueType::Scalar,
        Origin::Experimental,
    ),
    sig(
        "exp",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "first_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "floor",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "histogram_fraction",
        &[ValueType::Scalar, ValueType::Scalar, ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "histogram_quantile",
        &[ValueType::Scalar, ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "histogram_quantiles",
        &[
            ValueType::Vector,
            ValueType::String,
            ValueType::Scalar,
            ValueType::Scalar,
        ],
        Arity::Range(3, 12),
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "hour",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "idelta",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "increase",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "info",
        &[ValueType::Vector, ValueType::Vector],
        Arity::Range(1, 2),
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "irate",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "label_join",
        &[
            ValueType::Vector,
            ValueType::String,
            ValueType::String,
            ValueType::String,
        ],
        Arity::AtLeast(3),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "label_replace",
        &[
            ValueType::Vector,
            ValueType::String,
            ValueType::String,
            ValueType::String,
            ValueType::String,
        ],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "last_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "ln",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "log10",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "log2",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "mad_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "max_of",
        &[ValueType::Scalar, ValueType::Scalar],
        Arity::Exact,
        ValueType::Scalar,
        Origin::Experimental,
    ),
    sig(
        "max_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "min_of",
        &[ValueType::Scalar, ValueType::Scalar],
        Arity::Exact,
        ValueType::Scalar,
        Origin::Experimental,
    ),
    sig(
        "min_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "minute",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "month",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig("pi", &[], Arity::Exact, ValueType::Scalar, Origin::Stable),
    sig(
        "predict_linear",
        &[ValueType::Matrix, ValueType::Scalar],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "present_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "quantile_over_time",
        &[ValueType::Scalar, ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "rad",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "range",
        &[],
        Arity::Exact,
        ValueType::Scalar,
        Origin::Experimental,
    ),
    sig(
        "rate",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "resets",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "round",
        &[ValueType::Vector, ValueType::Scalar],
        Arity::Range(1, 2),
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "scalar",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Scalar,
        Origin::Stable,
    ),
    sig(
        "sgn",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "sin",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "sinh",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "sort",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "sort_by_label",
        &[ValueType::Vector, ValueType::String],
        Arity::AtLeast(1),
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "sort_by_label_desc",
        &[ValueType::Vector, ValueType::String],
        Arity::AtLeast(1),
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "sort_desc",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "sqrt",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "start",
        &[],
        Arity::Exact,
        ValueType::Scalar,
        Origin::Experimental,
    ),
    sig(
        "stddev_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "stdvar_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "step",
        &[],
        Arity::Exact,
        ValueType::Scalar,
        Origin::Experimental,
    ),
    sig(
        "sum_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "tan",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "tanh",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig("time", &[], Arity::Exact, ValueType::Scalar, Origin::Stable),
    sig(
        "timestamp",
        &[ValueType::Vector],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "ts_of_first_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "ts_of_last_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "ts_of_max_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "ts_of_min_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Experimental,
    ),
    sig(
        "vector",
        &[ValueType::Scalar],
        Arity::Exact,
        ValueType::Vector,
        Origin::Stable,
    ),
    sig(
        "year",
        &[ValueType::Vector],
        Arity::Range(0, 1),
        ValueType::Vector,
        Origin::Stable,
    ),
    // rigwatch extensions.
    sig(
        "increase_exact",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Rigwatch,
    ),
    sig(
        "max_gap_over_time",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Rigwatch,
    ),
    sig(
        "uptime_ratio",
        &[ValueType::Matrix],
        Arity::Exact,
        ValueType::Vector,
        Origin::Rigwatch,
    ),
];

/// Looks up a function by its exact (case-sensitive) name, like Prometheus.
pub fn lookup(name: &str) -> Option<&'static Signature> {
    SIGNATURES.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_variadic_functions_have_arguments() {
        let mut names: Vec<_> = SIGNATURES.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate function name");
        for s in SIGNATURES {
            if s.arity != Arity::Exact {
                assert!(!s.arg_types.is_empty(), "{}", s.name);
            }
            let (lo, hi) = s.arg_bounds();
            assert!(hi.is_none_or(|hi| hi >= lo), "{}", s.name);
        }
    }

    #[test]
    fn rigwatch_extensions_are_marked() {
        for name in ["increase_exact", "uptime_ratio", "max_gap_over_time"] {
            let s = lookup(name).unwrap();
            assert_eq!(s.origin, Origin::Rigwatch);
            assert_eq!(s.arg_types, &[ValueType::Matrix]);
        }
        assert_eq!(lookup("rate").unwrap().origin, Origin::Stable);
        assert!(lookup("histogram_count").is_none());
        assert_eq!(lookup("round").unwrap().arg_bounds(), (1, Some(2)));
        assert_eq!(lookup("label_join").unwrap().arg_bounds(), (3, None));
    }
}
