//! Golden-file test of error messages: every query in `testdata/errors.golden` is parsed
//! and, if it parses, evaluated over a small fixed data set; the message must be exactly the
//! one recorded. The file is the reviewable record of what users are told.
//!
//! Format (sqllogictest-like): blocks separated by blank lines,
//!
//! ```text
//! # optional comment
//! query <PromQL on one line>
//! ----
//! <the error, or `ok` when the query succeeds>
//! ```
//!
//! Run with `RIGWATCH_UPDATE_GOLDEN=1` to rewrite the expected outputs from the current
//! messages (then review the diff).

use rigwatch_promql::eval::{EvalOptions, instant_query, range_query};
use rigwatch_promql::parse;
use rigwatch_promql::storage::MemStore;
use rigwatch_promql::value::Labels;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/errors.golden");

fn store() -> MemStore {
    let mut s = MemStore::new();
    for (gpu, model) in [("GPU-0", "H100"), ("GPU-1", "A100"), ("GPU-2", "H100")] {
        for (name, base) in [("gpu_utilization", 50.0), ("gpu_temperature", 60.0)] {
            let labels =
                Labels::from_pairs([("__name__", name), ("gpu_uuid", gpu), ("model", model)]);
            for i in 0..30 {
                s.add_sample(&labels, i * 10_000, base + i as f64);
            }
        }
    }
    // Two series that collide once the metric name is dropped.
    for name in ["a_total", "b_total"] {
        let labels = Labels::from_pairs([("__name__", name), ("job", "x")]);
        for i in 0..30 {
            s.add_sample(&labels, i * 10_000, i as f64);
        }
    }
    s
}

fn outcome(store: &MemStore, query: &str) -> String {
    let expr = match parse(query) {
        Ok(e) => e,
        Err(e) => return e.to_string(),
    };
    let opts = EvalOptions {
        max_samples: 1000,
        ..EvalOptions::default()
    };
    let result = if query.contains("[1h:") || query.starts_with("range ") {
        range_query(store, &expr, 0, 290_000, 10_000, &opts)
    } else {
        instant_query(store, &expr, 290_000, &opts)
    };
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("{} ({})", e, e.kind().as_str()),
    }
}

#[test]
fn error_messages_match_the_golden_file() {
    let text = std::fs::read_to_string(GOLDEN).expect("read errors.golden");
    let store = store();
    let update = std::env::var_os("RIGWATCH_UPDATE_GOLDEN").is_some();
    let mut out = String::new();
    let mut mismatches = Vec::new();
    let mut cases = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut comments = String::new();
        let mut query = None;
        let mut expected = String::new();
        let mut in_expected = false;
        for line in block.lines() {
            if in_expected {
                if !expected.is_empty() {
                    expected.push('\n');
                }
                expected.push_str(line);
            } else if line.starts_with('#') {
                comments.push_str(line);
                comments.push('\n');
            } else if let Some(q) = line.strip_prefix("query ") {
                query = Some(q.to_string());
            } else if line == "----" {
                in_expected = true;
            } else {
                panic!("errors.golden: unexpected line {line:?} in block:\n{block}");
            }
        }
        let query = query.unwrap_or_else(|| panic!("errors.golden: block without query:\n{block}"));
        let got = outcome(&store, &query);
        cases += 1;
        if got != expected {
            mismatches.push(format!(
                "query {query}\n  expected: {expected}\n  got:      {got}"
            ));
        }
        out.push_str(&format!("{comments}query {query}\n----\n{got}\n\n"));
    }
    if update {
        std::fs::write(GOLDEN, out.trim_end().to_string() + "\n").expect("write golden");
        eprintln!("rewrote {GOLDEN} ({cases} cases)");
        return;
    }
    assert!(cases >= 20, "only {cases} cases in errors.golden");
    assert!(
        mismatches.is_empty(),
        "{} of {cases} error messages changed (RIGWATCH_UPDATE_GOLDEN=1 rewrites the file):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
