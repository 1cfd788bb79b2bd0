//! Prometheus rule files: parsing and validation with line numbers.
//!
//! The format is Prometheus' (`groups:` → `name`, `interval`, `rules:` → `alert`, `expr`,
//! `for`, `keep_firing_for`, `labels`, `annotations`; or `record`, `expr`, `labels`).
//! As in Prometheus, a recording rule's name must be a valid metric name, its labels are
//! plain strings (not templates), and it takes no `for`, `keep_firing_for` or
//! `annotations`.
//!
//! Line numbers: YAML syntax and shape errors come with the YAML parser's position. Semantic
//! errors (a bad duration, a PromQL error, a bad template) are placed by finding the rule's
//! keys in the text in document order, which is exact for the block style every rule file
//! uses; a PromQL error's line and column point inside the `expr` value itself.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use rigwatch_promql::ast::Expr;
use serde::Deserialize;

use super::template::Template;

/// Default evaluation interval of a group without `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleFileError {
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for RuleFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => f.write_str(&self.reason),
            (l, 0) => write!(f, "line {l}: {}", self.reason),
            (l, c) => write!(f, "line {l}, column {c}: {}", self.reason),
        }
    }
}

/// All problems of a rule file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleFileErrors(pub Vec<RuleFileError>);

impl fmt::Display for RuleFileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A validated alerting rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub expr_text: String,
    pub expr: Expr,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, Template>,
    pub annotations: BTreeMap<String, Template>,
    /// Line of the rule in its file (0 if unknown).
    pub line: usize,
}

/// A validated recording rule: each evaluation stores the expression's result as series
/// named `name` (see [`super::record`]).
#[derive(Debug, Clone)]
pub struct RecordingRule {
    pub name: String,
    pub expr_text: String,
    pub expr: Expr,
    /// Set on every recorded series (an empty value removes the label).
    pub labels: BTreeMap<String, String>,
    /// Line of the rule in its file (0 if unknown).
    pub line: usize,
    /// How many alerting rules of the group come before it in the file: rules run in file
    /// order, so a rule can read what an earlier one recorded in the same evaluation.
    pub alerts_before: usize,
}

/// A validated rule group.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub name: String,
    pub interval: Duration,
    /// Alerting rules, in file order.
    pub rules: Vec<AlertRule>,
    /// Recording rules, in file order.
    pub records: Vec<RecordingRule>,
}

impl RuleGroup {
    /// Alerting and recording rules together.
    pub fn len(&self) -> usize {
        self.rules.len() + self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Metric names recording rules may not use: the alert state series.
const RESERVED_NAMES: [&str; 2] = ["ALERTS", "ALERTS_FOR_STATE"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    query_offset: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Where each group and rule key sits in the text, in document order.
#[derive(Default)]
struct Lines {
    groups: Vec<usize>,
    rules: Vec<usize>,
    /// (line, byte column of the value start, value is a block scalar)
    exprs: Vec<(usize, usize, bool)>,
    fors: Vec<usize>,
    keeps: Vec<usize>,
}

fn index_lines(text: &str) -> Lines {
    let mut l = Lines::default();
    let mut in_rule_for: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim_start();
        let (dash, t) = match t.strip_prefix("- ") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, t),
        };
        let key = |k: &str| t.strip_prefix(k).and_then(|r| r.strip_prefix(':'));
        if dash && key("name").is_some() {
            l.groups.push(line);
        }
        if key("alert").is_some() || key("record").is_some() {
            l.rules.push(line);
            in_rule_for = Some(l.rules.len());
        }
        if let Some(v) = key("expr") {
            let value_col = raw.len() - v.trim_start().len();
            let v = v.trim();
            l.exprs
                .push((line, value_col, v.starts_with('|') || v.starts_with('>')));
        }
        if in_rule_for.is_some() {
            if key("for").is_some() {
                l.fors.push(line);
            }
            if key("keep_firing_for").is_some() {
                l.keeps.push(line);
            }
        }
    }
    l
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s != "0" && s.bytes().last().is_some_and(|b| b.is_ascii_digit()) {
        return Err(format!("duration {s:?} has no unit (use e.g. 30s, 5m, 1h)"));
    }
    crate::prometheus::api::parse_duration(s)
        .and_then(|ms| {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| format!("duration {s:?} is negative"))
        })
        .map_err(|e| format!("invalid duration: {e}"))
}

/// Parses and validates a rule file. Every problem is reported, each with its line.
pub fn parse_rule_file(text: &str) -> Result<Vec<RuleGroup>, RuleFileErrors> {
    let raw: RawFile = serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        RuleFileErrors(vec![RuleFileError {
            line,
            column,
            reason: format!("invalid rule file: {e}"),
        }])
    })?;
    let lines = index_lines(text);
    let mut errors = Vec::new();
    macro_rules! err {
        ($line:expr, $column:expr, $($reason:tt)+) => {
            errors.push(RuleFileError {
                line: $line,
                column: $column,
                reason: format!($($reason)+),
            })
        };
    }
    let mut groups = Vec::new();
    let mut seen_groups = HashSet::new();
    let mut rule_index = 0usize;
    let mut for_index = 0usize;
    let mut keep_index = 0usize;
    for (gi, g) in raw.groups.into_iter().enumerate() {
        let gline = lines.groups.get(gi).copied().unwrap_or(0);
        if g.name.trim().is_empty() {
            err!(gline, 0, "group name is empty");
        } else if !seen_groups.insert(g.name.clone()) {
            err!(gline, 0, "group {:?} is defined twice", g.name);
        }
        let _ = (g.limit, &g.query_offset);
        let interval = match g.interval.as_deref().map(parse_duration) {
            None => DEFAULT_INTERVAL,
            Some(Ok(d)) if d.is_zero() => {
                err!(gline, 0, "group {:?}: interval must be > 0", g.name);
                DEFAULT_INTERVAL
            }
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                err!(gline, 0, "group {:?}: {e}", g.name);
                DEFAULT_INTERVAL
            }
        };
        let mut rules = Vec::new();
        let mut records = Vec::new();
        for r in g.rules {
            let rline = lines.rules.get(rule_index).copied().unwrap_or(0);
            let expr_at = lines
                .exprs
                .get(rule_index)
                .copied()
                .unwrap_or((0, 0, false));
            rule_index += 1;
            let what = format!(
                "group {:?}, rule {:?}",
                g.name,
                r.alert.as_deref().or(r.record.as_deref()).unwrap_or("")
            );
            // Where `for` and `keep_firing_for` are, whichever kind of rule has them.
            let for_line = r.for_.as_ref().map(|_| {
                for_index += 1;
                lines.fors.get(for_index - 1).copied().unwrap_or(rline)
            });
            let keep_line = r.keep_firing_for.as_ref().map(|_| {
                keep_index += 1;
                lines.keeps.get(keep_index - 1).copied().unwrap_or(rline)
            });
            let name = match (&r.alert, &r.record) {
                (Some(a), None) if !a.trim().is_empty() => a.clone(),
                (Some(_), None) => {
                    err!(rline, 0, "{what}: alert name is empty");
                    continue;
                }
                (None, Some(name)) => {
                    let name_column = value_column(text, rline, "record");
                    if !valid_metric_name(name) {
                        err!(
                            rline,
                            name_column,
                            "{what}: invalid recording rule name {name:?}: a metric name \
                             matches [a-zA-Z_:][a-zA-Z0-9_:]*"
                        );
                    } else if RESERVED_NAMES.contains(&name.as_str()) {
                        err!(
                            rline,
                            name_column,
                            "{what}: {name:?} is reserved for the alert state series"
                        );
                    }
                    for (key, line) in [("for", for_line), ("keep_firing_for", keep_line)] {
                        if let Some(line) = line {
                            err!(line, 0, "{what}: `{key}` is for alerting rules only");
                        }
                    }
                    if !r.annotations.is_empty() {
                        err!(
                            rline,
                            0,
                            "{what}: `annotations` are for alerting rules only"
                        );
                    }
                    let mut labels = BTreeMap::new();
                    for (k, v) in r.labels {
                        if valid_label_name(&k) && k != "__name__" {
                            labels.insert(k, v);
                        } else {
                            err!(rline, 0, "{what}: invalid label name {k:?}");
                        }
                    }
                    match parse_expr(text, &r.expr, rline, expr_at, &what) {
                        Ok(expr) => records.push(RecordingRule {
                            name: name.clone(),
                            expr_text: r.expr.trim().to_string(),
                            expr,
                            labels,
                            line: rline,
                            alerts_before: rules.len(),
                        }),
                        Err(e) => errors.push(e),
                    }
                    continue;
                }
                (Some(_), Some(_)) => {
                    err!(
                        rline,
                        0,
                        "{what}: a rule has either `alert` or `record`, not both"
                    );
                    continue;
                }
                (None, None) => {
                    err!(
                        rline,
                        0,
                        "{what}: rule needs an `alert:` or a `record:` name"
                    );
                    continue;
                }
            };
            let mut durations = [
                ("for", r.for_.as_deref(), for_line),
                ("keep_firing_for", r.keep_firing_for.as_deref(), keep_line),
            ]
            .map(|(key, value, line)| match value.map(parse_duration) {
                None => Duration::ZERO,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    err!(line.unwrap_or(rline), 0, "{what}: `{key}`: {e}");
                    Duration::ZERO
                }
            })
            .into_iter();
            let for_ = durations.next().unwrap_or_default();
            let keep_firing_for = durations.next().unwrap_or_default();
            let expr = match parse_expr(text, &r.expr, rline, expr_at, &what) {
                Ok(e) => Some(e),
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
            let mut templates = |m: BTreeMap<String, String>, kind: &str| {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    if !valid_label_name(&k) {
                        err!(rline, 0, "{what}: invalid {kind} name {k:?}");
                        continue;
                    }
                    match Template::parse(&v) {
                        Ok(t) => {
                            out.insert(k, t);
                        }
                        Err(e) => err!(rline, 0, "{what}: {kind} {k:?}: {e}"),
                    }
                }
                out
            };
            let labels = templates(r.labels, "label");
            let annotations = templates(r.annotations, "annotation");
            if let Some(expr) = expr {
                rules.push(AlertRule {
                    name,
                    expr_text: r.expr.trim().to_string(),
                    expr,
                    for_,
                    keep_firing_for,
                    labels,
                    annotations,
                    line: rline,
                });
            }
        }
        groups.push(RuleGroup {
            name: g.name,
            interval,
            rules,
            records,
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(RuleFileErrors(errors))
    }
}

/// Parses a rule's `expr`; an error is placed inside the value in the file. `at` is the
/// `expr` key's (line, byte column of the value, value is a block scalar).
fn parse_expr(
    text: &str,
    expr: &str,
    rline: usize,
    at: (usize, usize, bool),
    what: &str,
) -> Result<Expr, RuleFileError> {
    let (eline, ecol, block) = at;
    rigwatch_promql::parse(expr).map_err(|pe| {
        let (line, column) = if eline == 0 {
            (rline, 0)
        } else if block {
            // The block's indentation is its first line's.
            let indent = text
                .lines()
                .nth(eline)
                .map_or(0, |l| l.len() - l.trim_start().len());
            (eline + pe.line, indent + pe.column)
        } else {
            let quoted = text
                .lines()
                .nth(eline - 1)
                .and_then(|l| l.get(ecol..))
                .is_some_and(|v| v.starts_with('"') || v.starts_with('\''));
            (eline, ecol + quoted as usize + pe.column)
        };
        RuleFileError {
            line,
            column,
            reason: format!(
                "{what}: invalid expr: {} (at expr line {}, column {})",
                pe.message, pe.line, pe.column
            ),
        }
    })
}

/// The 1-based column where `key`'s value starts on `line` (0 when not found).
fn value_column(text: &str, line: usize, key: &str) -> usize {
    let Some(l) = line.checked_sub(1).and_then(|i| text.lines().nth(i)) else {
        return 0;
    };
    let Some(at) = l.find(&format!("{key}:")) else {
        return 0;
    };
    let after = &l[at + key.len() + 1..];
    at + key.len() + 1 + (after.len() - after.trim_start().len()) + 1
}

/// Prometheus' metric name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The rules rigwatch ships with (used when `--rules` is not given); see the file itself.
pub const DEFAULT_RULES: &str = include_str!("default_rules.yml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_are_valid() {
        let g = parse_rule_file(DEFAULT_RULES).unwrap();
        assert!(g.iter().map(|g| g.rules.len()).sum::<usize>() >= 4);
    }

    #[test]
    fn errors_carry_lines_and_expr_positions() {
        let text = "groups:\n  - name: g\n    interval: 10s\n    rules:\n      - alert: A\n        expr: up == \n        for: 5\n      - alert: B\n        expr: |\n          sum(rate(x[5m]))\n            + * 2\n";
        let e = parse_rule_file(text).unwrap_err().0;
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(
            (e[0].line, e[0].reason.contains("no unit")),
            (7, true),
            "{e:?}"
        );
        assert_eq!(e[1].line, 6, "{e:?}");
        assert!(e[1].column > 14, "{e:?}");
        assert!(
            e[1].reason
                .contains("group \"g\", rule \"A\": invalid expr"),
            "{e:?}"
        );
        assert_eq!((e[2].line, e[2].column), (11, 15), "{e:?}");
        let e = parse_rule_file("groups:\n  - name: g\n    rules:\n      - alrt: A\n").unwrap_err();
        assert_eq!(e.0[0].line, 4, "{e}");
        assert!(e.0[0].reason.contains("unknown field `alrt`"), "{e}");
    }

    #[test]
    fn recording_rules_parse_in_file_order() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: job:util:avg\n        expr: avg(gpu_utilization)\n        labels:\n          scope: fleet\n      - alert: A\n        expr: job:util:avg > 90\n      - record: b\n        expr: job:util:avg * 2\n";
        let g = parse_rule_file(text).unwrap();
        assert_eq!(g[0].len(), 3);
        let r = &g[0].records;
        assert_eq!(
            r.iter()
                .map(|r| (r.name.as_str(), r.alerts_before, r.line))
                .collect::<Vec<_>>(),
            [("job:util:avg", 0, 4), ("b", 1, 10)]
        );
        assert_eq!(r[0].labels["scope"], "fleet");
        assert_eq!(r[1].expr_text, "job:util:avg * 2");
    }

    #[test]
    fn bad_recording_rules_are_located() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: gpu-util\n        expr: avg(x)\n      - record: ok\n        expr: sum(x) by (\n      - record: ALERTS\n        expr: x\n        for: 5m\n        annotations:\n          a: b\n        labels:\n          __name__: y\n";
        let e = parse_rule_file(text).unwrap_err().0;
        let got: Vec<(usize, usize, bool)> = e
            .iter()
            .map(|e| (e.line, e.column, e.reason.is_empty()))
            .collect();
        assert_eq!(e.len(), 6, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (4, 17), "{got:?}");
        assert!(
            e[0].reason
                .contains("invalid recording rule name \"gpu-util\""),
            "{e:?}"
        );
        assert_eq!(e[1].line, 7, "{e:?}");
        assert!(e[1].column > 14, "{e:?}");
        assert!(e[1].reason.contains("rule \"ok\": invalid expr"), "{e:?}");
        assert_eq!((e[2].line, e[2].column), (8, 17), "{e:?}");
        assert!(e[2].reason.contains("reserved"), "{e:?}");
        assert_eq!(e[3].line, 10, "{e:?}");
        assert!(
            e[3].reason.contains("`for` is for alerting rules only"),
            "{e:?}"
        );
        assert!(e[4].reason.contains("`annotations`"), "{e:?}");
        assert!(
            e[5].reason.contains("invalid label name \"__name__\""),
            "{e:?}"
        );
    }

    /// The recording-rule example of the README ("Faults, health and alerts") is valid.
    #[test]
    fn readme_recording_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let from = readme
            .find("Recording rules (`record:`)")
            .expect("README section");
        let block = readme[from..]
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a yaml block");
        let g = parse_rule_file(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert_eq!((g[0].records.len(), g[0].rules.len()), (2, 1));
    }
}
