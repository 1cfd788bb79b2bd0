//! Prometheus PromQL conformance: runs every `*.test` script of Prometheus' test
//! suite (in `shared/promql-testdata`, or `$RIGWATCH_PROMQL_TESTDATA`) through the
//! rigwatch parser and evaluator, compares like Prometheus' `promqltest` does
//! (relative tolerance 1e-6, NaN equals NaN, order only with `expect ordered`),
//! prints `file: passed/total (excluded N)` per file and fails on any eval that is
//! neither passing nor on the exclusion list below.
//!
//! Exclusions:
//! * native histograms (out of scope): decided by rule, not listed: an eval is
//!   excluded when its expected output holds a `{{...}}` histogram, when one of its
//!   selectors matches a series that was loaded with histogram samples (or created by
//!   `load_with_nhcb`), or when it calls a native-histogram-only function;
//! * [`EXCLUDED`]: one entry per eval (file and line of the `eval`) with a reason:
//!   experimental Prometheus features rigwatch does not implement, and honestly
//!   labelled known failures.
//!
//! Like `promqltest`, every passing instant query is run twice more and must give
//! the same result: as a one-step range query, and (unless it already uses `@` or
//! calls a function whose value depends on the evaluation time) with `@ <t>` added
//! to every selector and subquery.
//!
//! Deviation from `promqltest`: warn/info annotations carry no position in rigwatch
//! (the AST has no spans), so a trailing ` (line:col)` is removed from expected
//! messages and regexes before matching.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rigwatch_promql::ast::{AtModifier, Expr};
use rigwatch_promql::eval::{EvalOptions, instant_query, range_query, selections};
use rigwatch_promql::parser::parse;
use rigwatch_promql::storage::MemStore;
use rigwatch_promql::testscript::{
    Command, EvalCmd, EvalKind, Expected, MsgMatch, SeqValue, SeriesDesc, parse_script,
};
use rigwatch_promql::value::{Labels, QueryResult, Value};

/// An eval that is allowed not to pass, and why.
struct Exclusion {
    file: &'static str,
    /// Line of the `eval` command.
    line: usize,
    reason: &'static str,
}

/// Builds an [`EXCLUDED`] entry.
const fn ex(file: &'static str, line: usize, reason: &'static str) -> Exclusion {
    Exclusion { file, line, reason }
}

/// Evals that do not pass, one entry each: `ex("file.test", line, "reason")`, with
/// reasons "experimental: ..." or "known failure: <why>". Every other eval that does
/// not touch native histograms passes (including Prometheus' experimental
/// functions that rigwatch implements: `double_exponential_smoothing`, `sort_by_label`,
/// `limitk`, `limit_ratio`, `mad_over_time`, `first_over_time`, `ts_of_*_over_time`,
/// `step()`, `range()`, `min_of`, `max_of`, `histogram_quantiles`).
const EXCLUDED: &[Exclusion] = &[ex(
    "aggregators.test",
    481,
    "known failure: count_values(\"a\\xc5z\", ...) is rejected by rigwatch's parser \
     (\"string escapes produce invalid UTF-8\") instead of failing at evaluation with \
     Prometheus' \"invalid label name\" message; it fails either way, only the message differs",
)];

/// Functions that only work on native histograms.
const NATIVE_ONLY_FUNCTIONS: &[&str] = &[
    "histogram_count(",
    "histogram_sum(",
    "histogram_avg(",
    "histogram_stddev(",
    "histogram_stdvar(",
];

fn testdata_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("RIGWATCH_PROMQL_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/promql-testdata"
        )),
    };
    dir.is_dir().then_some(dir)
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Pass,
    Fail(String),
    /// Touches native histograms; `passes` tells whether it passed anyway on the
    /// float samples alone (reported, not counted as passing).
    NativeHistogram {
        passes: bool,
    },
}

/// Prometheus' `almost.Equal` with the test suite's epsilon.
fn almost_equal(a: f64, b: f64) -> bool {
    const EPS: f64 = 1e-6;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPS * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPS
}

/// Removes a trailing annotation position ` (1:5)` / ` \(1:5\)` / ` \([0-9]+:[0-9]+\)`.
fn strip_position(s: &str, regex: bool) -> String {
    let s = s.trim_end();
    if regex {
        if let Some(i) = s.rfind(" \\(")
            && s.ends_with("\\)")
        {
            return s[..i].to_string();
        }
    } else if let Some(i) = s.rfind(" (")
        && s.ends_with(')')
        && s[i + 2..s.len() - 1]
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    {
        return s[..i].to_string();
    }
    s.to_string()
}

fn msg_matches(m: &MsgMatch, actual: &str, annotation: bool) -> bool {
    match m {
        MsgMatch::Any => true,
        MsgMatch::Exact(e) => {
            let e = if annotation {
                strip_position(e, false)
            } else {
                e.clone()
            };
            e == actual
        }
        MsgMatch::Regex(r) => {
            let r = if annotation {
                strip_position(r, true)
            } else {
                r.clone()
            };
            regex::Regex::new(&r).is_ok_and(|re| re.is_match(actual))
        }
    }
}

fn check_annotations(
    kind: &str,
    expected: &[MsgMatch],
    none: bool,
    actual: &[String],
) -> Result<(), String> {
    if none && !actual.is_empty() {
        return Err(format!("expected no {kind} annotations, got {actual:?}"));
    }
    for e in expected {
        if !actual.iter().any(|a| msg_matches(e, a, true)) {
            return Err(format!("expected {kind} {e:?}, got {actual:?}"));
        }
    }
    if !expected.is_empty() {
        for a in actual {
            if !expected.iter().any(|e| msg_matches(e, a, true)) {
                return Err(format!("unexpected {kind} annotation {a:?}"));
            }
        }
    }
    Ok(())
}

fn fmt_series(l: &Labels, pts: &[(i64, f64)]) -> String {
    let p: Vec<String> = pts.iter().map(|(t, v)| format!("{v}@{t}")).collect();
    format!("{l} {}", p.join(" "))
}

/// Compares a result with the expected series (points at `t0 + i*step`).
fn compare_series(
    exp: &[SeriesDesc],
    actual: Vec<(Labels, Vec<(i64, f64)>)>,
    t0: i64,
    step: i64,
    ordered: bool,
    values_only: bool,
) -> Result<(), String> {
    let mut want: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    for e in exp {
        let mut pts = Vec::new();
        for (i, v) in e.values.iter().enumerate() {
            if let SeqValue::Float(f) = v {
                pts.push((t0 + i as i64 * step, *f));
            }
        }
        want.push((e.labels.clone(), pts));
    }
    if want.len() != actual.len() {
        let a: Vec<String> = actual.iter().map(|(l, p)| fmt_series(l, p)).collect();
        let w: Vec<String> = want.iter().map(|(l, p)| fmt_series(l, p)).collect();
        return Err(format!(
            "expected {} series, got {}:\n      got:  {}\n      want: {}",
            want.len(),
            actual.len(),
            a.join("\n            "),
            w.join("\n            ")
        ));
    }
    for (i, (al, ap)) in actual.iter().enumerate() {
        let Some(wi) = want.iter().position(|(wl, _)| wl == al) else {
            return Err(format!("unexpected series {}", fmt_series(al, ap)));
        };
        if ordered && wi != i {
            return Err(format!(
                "series {al} at position {i}, expected at {wi} (ordered)"
            ));
        }
        let wp = &want[wi].1;
        let ok = wp.len() == ap.len()
            && wp
                .iter()
                .zip(ap)
                .all(|((wt, wv), (at, av))| (values_only || wt == at) && almost_equal(*wv, *av));
        if !ok {
            return Err(format!(
                "series {al}: got {}, want {}",
                fmt_series(al, ap),
                fmt_series(al, wp)
            ));
        }
    }
    Ok(())
}

fn compare(cmd: &EvalCmd, res: &QueryResult) -> Result<(), String> {
    check_annotations("warn", &cmd.warn, cmd.no_warn, &res.warnings)?;
    check_annotations("info", &cmd.info, cmd.no_info, &res.infos)?;
    match (&cmd.expected, &res.value) {
        (Expected::String(e), Value::String { s, .. }) => {
            if e == s {
                Ok(())
            } else {
                Err(format!("got string {s:?}, want {e:?}"))
            }
        }
        (Expected::Scalar(e), Value::Scalar { v, .. }) => {
            if almost_equal(*e, *v) {
                Ok(())
            } else {
                Err(format!("got scalar {v}, want {e}"))
            }
        }
        (Expected::Series, Value::Vector(v)) => {
            let actual = v.iter().map(|(l, s)| (l.clone(), vec![(0, s.v)])).collect();
            compare_series(&cmd.series, actual, 0, 0, cmd.ordered, false)
        }
        (Expected::Series, Value::Matrix(m)) => {
            let actual = m
                .iter()
                .map(|s| {
                    (
                        s.labels.clone(),
                        s.samples.iter().map(|x| (x.t, x.v)).collect(),
                    )
                })
                .collect();
            match (&cmd.kind, cmd.range_vector) {
                (EvalKind::Range { start, step, .. }, _) => {
                    compare_series(&cmd.series, actual, *start, *step, cmd.ordered, false)
                }
                (EvalKind::Instant { .. }, Some((from, _, step))) => {
                    compare_series(&cmd.series, actual, from, step, cmd.ordered, false)
                }
                (EvalKind::Instant { .. }, None) => {
                    compare_series(&cmd.series, actual, 0, 0, cmd.ordered, true)
                }
            }
        }
        (e, v) => Err(format!("expected {e:?}, got {} {v:?}", v.type_name())),
    }
}

struct Runner {
    store: MemStore,
    /// Series that had native histogram samples (or NHCB conversions).
    histograms: Vec<Labels>,
    opts: EvalOptions,
}

impl Runner {
    fn load(&mut self, interval: i64, series: &[SeriesDesc], with_nhcb: bool) {
        for s in series {
            let mut hist = false;
            for (i, v) in s.values.iter().enumerate() {
                match v {
                    SeqValue::Float(f) => self.store.add_sample(&s.labels, i as i64 * interval, *f),
                    SeqValue::Histogram => hist = true,
                    SeqValue::Omitted => {}
                }
            }
            if hist {
                self.histograms.push(s.labels.clone());
            }
            if with_nhcb && let Some(name) = s.labels.metric_name() {
                for suffix in ["_bucket", "_count", "_sum"] {
                    if let Some(base) = name.strip_suffix(suffix) {
                        self.histograms
                            .push(s.labels.with("__name__", base).without(&["le"]));
                    }
                }
            }
        }
    }

    fn touches_histograms(&self, cmd: &EvalCmd, expr: &rigwatch_promql::ast::Expr) -> bool {
        if cmd
            .series
            .iter()
            .any(|s| s.values.contains(&SeqValue::Histogram))
        {
            return true;
        }
        if NATIVE_ONLY_FUNCTIONS.iter().any(|f| cmd.query.contains(f)) {
            return true;
        }
        let (s, e) = match cmd.kind {
            EvalKind::Instant { t } => (t, t),
            EvalKind::Range { start, end, .. } => (start, end),
        };
        selections(expr, s, e, &self.opts).iter().any(|sel| {
            self.histograms.iter().any(|h| {
                sel.matchers
                    .iter()
                    .all(|m| m.matches(h.get(&m.name).unwrap_or("")))
            })
        })
    }

    fn run_eval(&self, cmd: &EvalCmd) -> Outcome {
        if NATIVE_ONLY_FUNCTIONS.iter().any(|f| cmd.query.contains(f)) {
            return Outcome::NativeHistogram { passes: false };
        }
        let expr = match parse(&cmd.query) {
            Ok(e) => e,
            Err(e) => {
                // A parse error satisfies `expect fail`, and its message must match
                // like an evaluation error's.
                return match &cmd.fail {
                    Some(m) if msg_matches(m, &e.to_string(), false) => Outcome::Pass,
                    Some(m) => Outcome::Fail(format!("parse error {e} does not match {m:?}")),
                    None => Outcome::Fail(format!("parse error: {e}")),
                };
            }
        };
        let native = self.touches_histograms(cmd, &expr);
        let outcome = self.evaluate(cmd, &expr);
        if native {
            return Outcome::NativeHistogram {
                passes: outcome == Outcome::Pass,
            };
        }
        outcome
    }

    fn evaluate(&self, cmd: &EvalCmd, expr: &rigwatch_promql::ast::Expr) -> Outcome {
        let res = match cmd.kind {
            EvalKind::Instant { t } => instant_query(&self.store, expr, t, &self.opts),
            EvalKind::Range { start, end, step } => {
                range_query(&self.store, expr, start, end, step, &self.opts)
            }
        };
        if let (EvalKind::Instant { t }, None, Ok(r)) = (&cmd.kind, &cmd.fail, &res)
            && let Err(e) = self.check_variants(cmd, expr, *t, r)
        {
            return Outcome::Fail(e);
        }
        match (&cmd.fail, res) {
            (Some(m), Err(e)) => {
                let msg = e.to_string();
                if msg_matches(m, &msg, false) {
                    Outcome::Pass
                } else {
                    Outcome::Fail(format!("error {msg:?} does not match {m:?}"))
                }
            }
            (Some(_), Ok(r)) => Outcome::Fail(format!("expected an error, got {:?}", r.value)),
            (None, Err(e)) => Outcome::Fail(format!("error: {e}")),
            (None, Ok(r)) => match compare(cmd, &r) {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(e),
            },
        }
    }
}

/// Functions whose result depends on the evaluation time even with step-invariant
/// arguments (Prometheus' `AtModifierUnsafeFunctions`).
const AT_UNSAFE_FUNCTIONS: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
];

/// Adds `@ t` to every selector and subquery outside subqueries (as promqltest
/// does); returns false when the expression
/// already had one or calls an [`AT_UNSAFE_FUNCTIONS`] function.
fn add_at(e: &mut Expr, t: i64) -> bool {
    match e {
        Expr::Number(_) | Expr::String(_) => true,
        Expr::VectorSelector(vs) | Expr::MatrixSelector { selector: vs, .. } => {
            if vs.at.is_some() {
                return false;
            }
            vs.at = Some(AtModifier::Timestamp(t));
            true
        }
        Expr::Subquery(sq) => {
            if sq.at.is_some() {
                return false;
            }
            // Selectors inside keep their times: they are relative to the
            // subquery's (now fixed) evaluation steps.
            sq.at = Some(AtModifier::Timestamp(t));
            true
        }
        Expr::Paren(x) | Expr::Unary { expr: x, .. } => add_at(x, t),
        Expr::Binary(b) => add_at(&mut b.lhs, t) & add_at(&mut b.rhs, t),
        Expr::Call { func, args } => {
            if AT_UNSAFE_FUNCTIONS.contains(&func.as_str()) {
                return false;
            }
            args.iter_mut().fold(true, |ok, a| add_at(a, t) & ok)
        }
        Expr::Aggregate(a) => {
            let p = a.param.as_mut().is_none_or(|p| add_at(p, t));
            add_at(&mut a.expr, t) & p
        }
    }
}

/// A result as comparable (labels, value) pairs, sorted by labels.
fn flatten(v: &Value) -> Option<Vec<(Labels, f64)>> {
    let mut out: Vec<(Labels, f64)> = match v {
        Value::Scalar { v, .. } => vec![(Labels::empty(), *v)],
        Value::Vector(v) => v.iter().map(|(l, s)| (l.clone(), s.v)).collect(),
        Value::Matrix(m) => {
            let mut o = Vec::new();
            for s in m {
                if s.samples.len() != 1 {
                    return None;
                }
                o.push((s.labels.clone(), s.samples[0].v));
            }
            o
        }
        Value::String { .. } => return None,
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

fn same(a: &[(Labels, f64)], b: &[(Labels, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && almost_equal(x.1, y.1))
}

impl Runner {
    /// The one-step range query and `@` re-runs of a successful instant query.
    fn check_variants(
        &self,
        cmd: &EvalCmd,
        expr: &Expr,
        t: i64,
        res: &QueryResult,
    ) -> Result<(), String> {
        let Some(base) = flatten(&res.value) else {
            return Ok(());
        };
        // step() and range() describe the query's shape, which differs by design.
        let shape_dependent = cmd.query.contains("step()") || cmd.query.contains("range()");
        if !matches!(res.value, Value::Matrix(_)) && !shape_dependent {
            let r = range_query(&self.store, expr, t, t, 1000, &self.opts)
                .map_err(|e| format!("as a one-step range query: error {e}"))?;
            let got = flatten(&r.value).unwrap_or_default();
            if !same(&base, &got) {
                return Err(format!(
                    "as a one-step range query: got {got:?}, instant gave {base:?}"
                ));
            }
        }
        if cmd.query.contains('@') {
            return Ok(());
        }
        let mut at = expr.clone();
        if add_at(&mut at, t) {
            let r = instant_query(&self.store, &at, t, &self.opts)
                .map_err(|e| format!("with @ {t}ms added ({at}): error {e}"))?;
            let got = flatten(&r.value).unwrap_or_default();
            if !same(&base, &got) {
                return Err(format!(
                    "with @ added ({at}): got {got:?}, without gave {base:?}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct FileStats {
    passed: usize,
    total: usize,
    excluded: usize,
    native: usize,
    native_passing: usize,
}

fn run_file(path: &Path, failures: &mut Vec<String>, stale: &mut Vec<String>) -> FileStats {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let cmds = parse_script(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut r = Runner {
        store: MemStore::new(),
        histograms: Vec::new(),
        opts: EvalOptions::default(),
    };
    let mut st = FileStats::default();
    for c in &cmds {
        match c {
            Command::Clear => {
                r.store.clear();
                r.histograms.clear();
            }
            Command::Load {
                interval_ms,
                series,
                with_nhcb,
                ..
            } => r.load(*interval_ms, series, *with_nhcb),
            Command::Eval(cmd) => {
                st.total += 1;
                let outcome = r.run_eval(cmd);
                let excl = EXCLUDED
                    .iter()
                    .find(|x| x.file == file && x.line == cmd.line);
                match (outcome, excl) {
                    (Outcome::NativeHistogram { passes }, _) => {
                        st.excluded += 1;
                        st.native += 1;
                        st.native_passing += usize::from(passes);
                    }
                    (Outcome::Pass, None) => st.passed += 1,
                    (Outcome::Pass, Some(x)) => {
                        st.passed += 1;
                        stale.push(format!(
                            "{file}:{} passes but is excluded ({})",
                            cmd.line, x.reason
                        ));
                    }
                    (Outcome::Fail(_), Some(_)) => st.excluded += 1,
                    (Outcome::Fail(why), None) => {
                        failures.push(format!("{file}:{}: {}\n    {why}", cmd.line, cmd.query))
                    }
                }
            }
        }
    }
    st
}

/// rigwatch's own functions, in the same script format
/// (`tests/testdata/rigwatch_extensions.test`); every eval must pass.
#[test]
fn rigwatch_extensions_script() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/rigwatch_extensions.test"
    ));
    let (mut failures, mut stale) = (Vec::new(), Vec::new());
    let st = run_file(path, &mut failures, &mut stale);
    println!("rigwatch_extensions.test: {}/{}", st.passed, st.total);
    assert!(st.total >= 9, "script has {} evals", st.total);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(st.passed, st.total);
}

#[test]
fn prometheus_conformance() {
    let Some(dir) = testdata_dir() else {
        if std::env::var_os("CI").is_some() {
            panic!("PromQL test data not found (set RIGWATCH_PROMQL_TESTDATA)");
        }
        eprintln!("skipping: PromQL test data not found (set RIGWATCH_PROMQL_TESTDATA)");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test files in {}", dir.display());
    let mut failures = Vec::new();
    let mut stale = Vec::new();
    let mut totals = FileStats::default();
    let mut per_file = BTreeMap::new();
    for f in &files {
        let st = run_file(f, &mut failures, &mut stale);
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        println!(
            "{name}: {}/{} (excluded {}: {} native histogram, {} listed)",
            st.passed,
            st.total,
            st.excluded,
            st.native,
            st.excluded - st.native
        );
        totals.passed += st.passed;
        totals.total += st.total;
        totals.excluded += st.excluded;
        totals.native += st.native;
        totals.native_passing += st.native_passing;
        per_file.insert(name, st.total);
    }
    let known_failures = EXCLUDED
        .iter()
        .filter(|x| x.reason.starts_with("known failure"))
        .count();
    println!(
        "total: {}/{} passed, excluded {} ({} native histogram, {} listed of which {} known failures), failing {}",
        totals.passed,
        totals.total,
        totals.excluded,
        totals.native,
        totals.excluded - totals.native,
        known_failures,
        failures.len()
    );
    println!(
        "native-histogram evals that pass anyway on their float samples (not counted): {}/{}",
        totals.native_passing, totals.native
    );
    for s in &stale {
        println!("note: {s}");
    }
    for x in EXCLUDED {
        assert!(
            per_file.contains_key(x.file),
            "exclusion for unknown file {}",
            x.file
        );
    }
    assert!(
        failures.is_empty(),
        "{} evals failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
