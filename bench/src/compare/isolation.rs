//! The cost of tenancy: every query as one supplier's token, beside the same query as an
//! operator with the supplier's filter written into every selector.
//!
//! Both read the same rows (the supplier's); the difference is the scoped scan's barrier
//! (`ScopeExec`: keep the supplier's rows, rebuild dictionaries, compact strings). The two
//! answers must agree; the ratio of medians is printed, never asserted.

use std::time::Instant;

use anyhow::Context;
use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::Value;

use super::peers::System;
use super::queries::{Answer, Query, agree, parse_answer, request};
use super::{Dataset, TOKEN};

/// The supplier whose view is measured: the owner of the fleet's first GPUs.
const SUPPLIER: &str = "supplier-000";

/// `expr` with `supplier="…"` added to every metric selector (identifiers starting with
/// `gpu_` outside braces).
pub(super) fn with_supplier(expr: &str, supplier: &str) -> String {
    let matcher = format!("supplier=\"{supplier}\"");
    let b = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() + 32);
    let (mut i, mut depth, mut quoted) = (0, 0usize, false);
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        if quoted {
            quoted = c != b'"' || b[i - 1] == b'\\';
            out.push(c as char);
            i += 1;
            continue;
        }
        match c {
            b'"' => quoted = true,
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        let starts = depth == 0 && expr[i..].starts_with("gpu_") && (i == 0 || !ident(b[i - 1]));
        if !starts {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = (i..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
        out.push_str(&expr[i..end]);
        if b.get(end) == Some(&b'{') {
            out.push('{');
            out.push_str(&matcher);
            out.push(',');
            depth += 1;
            i = end + 1;
        } else {
            out.push('{');
            out.push_str(&matcher);
            out.push('}');
            i = end;
        }
    }
    out
}

/// One query's figures: (name, operator-with-filter median ms, supplier median ms).
pub(super) type Row = (&'static str, f64, f64);

/// One request: its parsed answer and how long it took, ms.
async fn once(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    q: &Query,
    expr: &str,
    ds: &Dataset,
) -> anyhow::Result<(Answer, f64)> {
    let (path, params) = request(q, expr, ds);
    let t = Instant::now();
    let resp = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .form(&params)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("rigwatch answered {status} to {expr}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let answer = parse_answer(&body).with_context(|| expr.to_string())?;
    Ok((answer, ms))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs every query both ways against the rigwatch `sys`; the rows, and how many answers
/// disagreed. The two ways alternate request by request (after one untimed run each, whose
/// answers are compared), so a burst of load on the machine falls on both alike.
pub(super) async fn measure(
    client: &reqwest::Client,
    sys: &System,
    queries: &[Query],
    ds: &Dataset,
    runs: usize,
) -> anyhow::Result<(Vec<Row>, usize)> {
    let auth = AuthStore::open(&sys.data_dir)?;
    if !auth.suppliers().iter().any(|(s, _)| s.name == SUPPLIER) {
        auth.add_supplier(SUPPLIER)?;
    }
    let token = auth
        .issue(Role::Supplier, Some(SUPPLIER), None, "bench")?
        .token;
    let mut rows = Vec::new();
    let mut disagreements = 0;
    for q in queries {
        let filtered = with_supplier(&q.expr, SUPPLIER);
        let (op, _) = once(client, &sys.base, TOKEN, q, &filtered, ds).await?;
        let (sup, _) = once(client, &sys.base, &token, q, &q.expr, ds).await?;
        if let Err(diff) = agree(&op, &sup, q.ties) {
            disagreements += 1;
            eprintln!(
                "DISAGREE {}: operator with filter vs supplier: {diff}",
                q.expr
            );
        }
        let (mut op_ms, mut sup_ms) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for i in 0..runs.max(1) {
            // Alternate which side goes first, too.
            if i % 2 == 0 {
                op_ms.push(once(client, &sys.base, TOKEN, q, &filtered, ds).await?.1);
                sup_ms.push(once(client, &sys.base, &token, q, &q.expr, ds).await?.1);
            } else {
                sup_ms.push(once(client, &sys.base, &token, q, &q.expr, ds).await?.1);
                op_ms.push(once(client, &sys.base, TOKEN, q, &filtered, ds).await?.1);
            }
        }
        rows.push((q.name, median(op_ms), median(sup_ms)));
    }
    Ok((rows, disagreements))
}

/// Prints the table.
pub(super) fn print(rows: &[Row]) {
    println!();
    println!(
        "tenancy cost: one supplier's token vs an operator's query filtered to that supplier (median ms)"
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "query", "operator+filter", "supplier", "ratio"
    );
    for (name, op, sup) in rows {
        println!("{name:<28} {op:>12.2} {sup:>12.2} {:>8.2}", sup / op);
    }
}

#[cfg(test)]
mod tests {
    use super::with_supplier;

    #[test]
    fn the_filter_goes_into_every_selector_and_nowhere_else() {
        let s = "supplier=\"x\"";
        assert_eq!(
            with_supplier("avg(gpu_utilization)", "x"),
            format!("avg(gpu_utilization{{{s}}})")
        );
        assert_eq!(
            with_supplier("gpu_utilization{gpu_uuid=\"gpu_a\"}", "x"),
            format!("gpu_utilization{{{s},gpu_uuid=\"gpu_a\"}}")
        );
        assert_eq!(
            with_supplier("sum(rate(gpu_energy_mj[5m])) / gpu_x", "x"),
            format!("sum(rate(gpu_energy_mj{{{s}}}[5m])) / gpu_x{{{s}}}")
        );
        assert_eq!(
            with_supplier("avg by (region) (gpu_power_watts)", "x"),
            format!("avg by (region) (gpu_power_watts{{{s}}})")
        );
    }
}
