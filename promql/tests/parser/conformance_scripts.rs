//! Every `eval` expression of Prometheus' conformance scripts parses and round-trips.

use super::*;

pub(crate) fn testdata_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RIGWATCH_PROMQL_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/promql-testdata"
            ))
        });
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "PromQL test data missing at {} (set RIGWATCH_PROMQL_TESTDATA)",
        dir.display()
    );
    eprintln!(
        "note: skipping conformance parse test, no test data at {}",
        dir.display()
    );
    None
}

pub(crate) struct EvalCase {
    file: String,
    line: usize,
    pub(crate) expr: String,
    expect_fail: bool,
}

/// Every `eval` expression of the `.test` scripts, with whether an `expect fail`
/// (or deprecated `eval_fail`) line follows it.
pub(crate) fn eval_cases(dir: &PathBuf) -> Vec<EvalCase> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            let Some((cmd, rest)) = line.split_once(' ') else {
                continue;
            };
            if !cmd.starts_with("eval") {
                continue;
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            // `instant at T expr` or `range from A to B step S expr`.
            let skip = match words.first() {
                Some(&"instant") => 3,
                Some(&"range") => 7,
                _ => panic!("{}:{}: unknown eval form", path.display(), i + 1),
            };
            let mut expr = rest;
            for _ in 0..skip {
                expr = expr.trim_start();
                expr = &expr[expr.find(char::is_whitespace).unwrap_or(expr.len())..];
            }
            let expect_fail = cmd == "eval_fail"
                || lines[i + 1..]
                    .iter()
                    .map(|l| l.trim())
                    .take_while(|l| l.starts_with("expect"))
                    .any(|l| l.starts_with("expect fail"));
            cases.push(EvalCase {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                line: i + 1,
                expr: expr.trim().to_owned(),
                expect_fail,
            });
        }
    }
    cases
}

/// `expect fail` cases we reject at parse time on purpose: Go strings may hold
/// invalid UTF-8 (`\xc5`, `\xff`), Rust strings may not. Prometheus fails them at
/// evaluation instead.
const REJECTED_ON_PURPOSE: &[&str] = &[
    r#"count_values("a\xc5z", version)"#,
    r#"label_replace(testmetric, "\xff", "", "src", "(.*)")"#,
];

#[test]
fn every_conformance_eval_expression_parses_and_round_trips() {
    let Some(dir) = testdata_dir() else {
        return;
    };
    let cases = eval_cases(&dir);
    assert!(cases.len() > 500, "only {} eval lines found", cases.len());
    let mut failures = Vec::new();
    let mut parsed = 0;
    let mut rejected = Vec::new();
    for c in &cases {
        match parse(&c.expr) {
            Ok(e) => {
                parsed += 1;
                let printed = e.to_string();
                match parse(&printed) {
                    Ok(again) if format!("{again:?}") == format!("{e:?}") => {}
                    Ok(_) => failures.push(format!(
                        "{}:{}: {} round-trips to a different tree via {printed}",
                        c.file, c.line, c.expr
                    )),
                    Err(err) => failures.push(format!(
                        "{}:{}: {} prints as {printed} which fails: {err}",
                        c.file, c.line, c.expr
                    )),
                }
            }
            Err(err) if c.expect_fail => {
                rejected.push(format!("{}:{}: {} ({err})", c.file, c.line, c.expr));
                if !REJECTED_ON_PURPOSE.contains(&c.expr.as_str()) {
                    failures.push(format!(
                        "{}:{}: {} is an evaluation failure in Prometheus but fails to parse: {err}",
                        c.file, c.line, c.expr
                    ));
                }
            }
            Err(err) => failures.push(format!("{}:{}: {}: {err}", c.file, c.line, c.expr)),
        }
    }
    println!(
        "conformance: {parsed} of {} eval expressions parse; rejected on purpose: {rejected:#?}",
        cases.len()
    );
    // Throughput, for the record (debug builds are several times slower).
    let exprs: Vec<&str> = cases.iter().map(|c| c.expr.as_str()).collect();
    let bytes: usize = exprs.iter().map(|e| e.len()).sum();
    let rounds = 20;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        for e in &exprs {
            let _ = std::hint::black_box(parse(e));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "throughput: {} parses of {} expressions ({bytes} bytes) in {elapsed:?}: {:.1} us/expression",
        rounds * exprs.len(),
        exprs.len(),
        elapsed.as_secs_f64() * 1e6 / (rounds * exprs.len()) as f64
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
