//! Prometheus rule files: parsing and validation with line numbers.
//!
//! The format is Prometheus' (`groups:` → `name`, `interval`, `rules:` → `alert`, `expr`,
//! `for`, `keep_firing_for`, `labels`, `annotations`). Recording rules (`record:`) are
//! rejected with a clear error: rigwatch evaluates alerting rules only.
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

/// A validated rule group.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub name: String,
    pub interval: Duration,
    pub rules: Vec<AlertRule>,
}

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
    crate::promql::api::parse_duration(s)
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
    let mut groups = Vec::new();
    let mut seen_groups = HashSet::new();
    let mut rule_index = 0usize;
    let mut for_index = 0usize;
    let mut keep_index = 0usize;
    for (gi, g) in raw.groups.into_iter().enumerate() {
        let gline = lines.groups.get(gi).copied().unwrap_or(0);
        let mut err = |line: usize, column: usize, reason: String| {
            errors.push(RuleFileError {
                line,
                column,
                reason,
            })
        };
        if g.name.trim().is_empty() {
            err(gline, 0, "group name is empty".into());
        } else if !seen_groups.insert(g.name.clone()) {
            err(gline, 0, format!("group {:?} is defined twice", g.name));
        }
        let _ = (g.limit, &g.query_offset);
        let interval = match g.interval.as_deref().map(parse_duration) {
            None => DEFAULT_INTERVAL,
            Some(Ok(d)) if d.is_zero() => {
                err(
                    gline,
                    0,
                    format!("group {:?}: interval must be > 0", g.name),
                );
                DEFAULT_INTERVAL
            }
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                err(gline, 0, format!("group {:?}: {e}", g.name));
                DEFAULT_INTERVAL
            }
        };
        let mut rules = Vec::new();
        for r in g.rules {
            let rline = lines.rules.get(rule_index).copied().unwrap_or(0);
            let (eline, ecol, block) = lines
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
            let name = match (&r.alert, &r.record) {
                (Some(a), None) if !a.trim().is_empty() => a.clone(),
                (Some(_), None) => {
                    err(rline, 0, format!("{what}: alert name is empty"));
                    continue;
                }
                (None, Some(_)) => {
                    err(
                        rline,
                        0,
                        format!("{what}: recording rules are not supported; use `alert:`"),
                    );
                    continue;
                }
                (Some(_), Some(_)) => {
                    err(
                        rline,
                        0,
                        format!("{what}: a rule has either `alert` or `record`, not both"),
                    );
                    continue;
                }
                (None, None) => {
                    err(rline, 0, format!("{what}: rule needs an `alert:` name"));
                    continue;
                }
            };
            let for_ = match r.for_.as_deref().map(parse_duration) {
                None => Duration::ZERO,
                Some(res) => {
                    let l = lines.fors.get(for_index).copied().unwrap_or(rline);
                    for_index += 1;
                    res.unwrap_or_else(|e| {
                        err(l, 0, format!("{what}: `for`: {e}"));
                        Duration::ZERO
                    })
                }
            };
            let keep_firing_for = match r.keep_firing_for.as_deref().map(parse_duration) {
                None => Duration::ZERO,
                Some(res) => {
                    let l = lines.keeps.get(keep_index).copied().unwrap_or(rline);
                    keep_index += 1;
                    res.unwrap_or_else(|e| {
                        err(l, 0, format!("{what}: `keep_firing_for`: {e}"));
                        Duration::ZERO
                    })
                }
            };
            let expr = match rigwatch_promql::parse(&r.expr) {
                Ok(e) => Some(e),
                Err(pe) => {
                    // Place the error inside the expr value.
                    let (line, column) = if eline == 0 {
                        (rline, 0)
                    } else if block {
                        let file_line = eline + pe.line;
                        // The block's indentation is its first line's.
                        let indent = text
                            .lines()
                            .nth(eline)
                            .map_or(0, |l| l.len() - l.trim_start().len());
                        (file_line, indent + pe.column)
                    } else {
                        let quoted = text
                            .lines()
                            .nth(eline - 1)
                            .and_then(|l| l.get(ecol..))
                            .is_some_and(|v| v.starts_with('"') || v.starts_with('\''));
                        (eline, ecol + quoted as usize + pe.column)
                    };
                    err(
                        line,
                        column,
                        format!(
                            "{what}: invalid expr: {} (at expr line {}, column {})",
                            pe.message, pe.line, pe.column
                        ),
                    );
                    None
                }
            };
            let mut templates = |m: BTreeMap<String, String>, kind: &str| {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    if !valid_label_name(&k) {
                        err(rline, 0, format!("{what}: invalid {kind} name {k:?}"));
                        continue;
                    }
                    match Template::parse(&v) {
                        Ok(t) => {
                            out.insert(k, t);
                        }
                        Err(e) => err(rline, 0, format!("{what}: {kind} {k:?}: {e}")),
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
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(RuleFileErrors(errors))
    }
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
}
