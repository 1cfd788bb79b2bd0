//! Result and data types shared by the evaluator, the storage interface and callers.
//!
//! [`Labels`] is an immutable, sorted label set behind an `Arc`, so handing the same
//! series' labels to every evaluation step costs a reference-count bump, not a copy.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Bit pattern of Prometheus' staleness marker (a signalling NaN).
pub use rigwatch_common::rollup::STALE_NAN_BITS;

/// The staleness marker value: a sample with this value ends a series.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (not any NaN: only the exact bit pattern).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A sorted, de-duplicated set of `name="value"` pairs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Labels(Arc<[(String, String)]>);

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Labels(Arc::from(Vec::new()))
    }

    /// Builds a label set from pairs in any order; empty values are dropped (as in
    /// Prometheus, a label with an empty value does not exist) and a later duplicate
    /// name wins.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // Keep the last of equal names.
        let mut out: Vec<(String, String)> = Vec::with_capacity(v.len());
        for (k, val) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = val,
                _ => out.push((k, val)),
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Labels(Arc::from(out))
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// A copy without the labels in `names`.
    pub fn without(&self, names: &[&str]) -> Labels {
        if !self.0.iter().any(|(k, _)| names.contains(&k.as_str())) {
            return self.clone();
        }
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| !names.contains(&k.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// A copy holding only the labels in `names`.
    pub fn keep(&self, names: &[&str]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        if self.get(name) == Some(value) {
            return self.clone();
        }
        let mut v: Vec<(String, String)> =
            self.0.iter().filter(|(k, _)| k != name).cloned().collect();
        if !value.is_empty() {
            let pos = v.partition_point(|(k, _)| k.as_str() < name);
            v.insert(pos, (name.to_string(), value.to_string()));
        }
        Labels(Arc::from(v))
    }

    /// A copy without the metric name.
    pub fn without_name(&self) -> Labels {
        self.without(&[METRIC_NAME])
    }

    /// Hash of the labels named in `names` (absent labels hash as empty), without
    /// allocating. Used as a matching/grouping signature.
    pub fn hash_on(&self, names: &[String]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (k, v) in self.0.iter() {
            if names.iter().any(|n| n == k) {
                k.hash(&mut h);
                0xffu8.hash(&mut h);
                v.hash(&mut h);
                0xfeu8.hash(&mut h);
            }
        }
        h.finish()
    }

    /// Hash of all labels except those in `names` and, when `drop_name`, the metric
    /// name.
    pub fn hash_without(&self, names: &[String], drop_name: bool) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (k, v) in self.0.iter() {
            if (drop_name && k == METRIC_NAME) || names.iter().any(|n| n == k) {
                continue;
            }
            k.hash(&mut h);
            0xffu8.hash(&mut h);
            v.hash(&mut h);
            0xfeu8.hash(&mut h);
        }
        h.finish()
    }

    /// Hash of the whole label set.
    pub fn hash_all(&self) -> u64 {
        self.hash_without(&[], false)
    }
}

impl fmt::Display for Labels {
    /// Prometheus' `Labels.String()` form: `{__name__="m", a="b"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        let mut first = true;
        for (k, v) in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One float sample: time in milliseconds since the epoch, and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// A series: labels plus samples sorted by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// The value of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        s: String,
    },
    /// An instant vector: one sample per label set, stamped with the evaluation time.
    Vector(Vec<(Labels, Sample)>),
    /// A range vector (instant query of a range selector) or a range query's result.
    Matrix(Vec<Series>),
}

impl Value {
    /// The Prometheus API name of the type: `scalar`, `string`, `vector`, `matrix`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// A query's value with the annotations collected while evaluating it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// `PromQL warning: ...` annotations (possibly-wrong results).
    pub warnings: Vec<String>,
    /// `PromQL info: ...` annotations (hints).
    pub infos: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sorted_and_edited() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("__name__", "m"), ("e", "")]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("e"), None);
        assert_eq!(l.to_string(), r#"{__name__="m", a="1", b="2"}"#);
        let w = l.with("c", "3").without(&["a"]);
        assert_eq!(w.to_string(), r#"{__name__="m", b="2", c="3"}"#);
        assert_eq!(l.without_name().metric_name(), None);
        assert_eq!(l.with("a", "").get("a"), None);
        assert_eq!(
            l.hash_on(&["a".into()]),
            Labels::from_pairs([("a", "1")]).hash_on(&["a".into()])
        );
        assert_ne!(l.hash_all(), l.without_name().hash_all());
        assert_eq!(l.hash_without(&[], true), l.without_name().hash_all());
    }

    #[test]
    fn stale_marker_is_exact_bits() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}
