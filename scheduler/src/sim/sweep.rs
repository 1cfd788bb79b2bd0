//! Many pod lists × every policy in packing mode, summarised as one matrix of the allocation
//! ratio at 100% arrived demand (the FGD paper's figure of merit), with the best policy per
//! row and rigwatch's gap to it.

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::Serialize;

use super::{Mode, SimOptions, SimReport, VariantSpec};
use crate::Result;

/// One row of a sweep: a pod list (shared file or generated variant) and its report.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub label: String,
    pub report: SimReport,
}

/// Runs packing mode for the shared pod list in `opts` under each of `variants` (none: the
/// list as it is).
pub fn run(opts: &SimOptions, variants: &[Option<VariantSpec>]) -> Result<Vec<SweepRow>> {
    let mut rows = Vec::new();
    for v in variants {
        let o = SimOptions {
            mode: Mode::Packing,
            variant: v.clone(),
            ..opts.clone()
        };
        let report = super::run(&o)?;
        let label = match v {
            Some(v) => v.to_string(),
            None => o
                .pods
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
        };
        rows.push(SweepRow { label, report });
    }
    Ok(rows)
}

/// The shared openb pod lists next to the one in `opts.pods` (default, gpushare40,
/// multigpu30, gpuspec33, as they are), then the standard variants of `opts.pods`
/// ([`super::variant::sweep`]) for every seed in `seeds`.
pub fn standard(opts: &SimOptions, seeds: RangeInclusive<u64>) -> Result<Vec<SweepRow>> {
    let dir = opts
        .pods
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut rows = Vec::new();
    for f in SHARED_LISTS {
        let so = SimOptions {
            pods: dir.join(format!("openb_pod_list_{f}.csv")),
            ..opts.clone()
        };
        rows.extend(run(&so, &[None])?);
    }
    let specs: Vec<Option<VariantSpec>> =
        super::variant::sweep(seeds).into_iter().map(Some).collect();
    rows.extend(run(opts, &specs)?);
    Ok(rows)
}

/// The shared openb pod lists a sweep starts with.
pub const SHARED_LISTS: [&str; 4] = ["default", "gpushare40", "multigpu30", "gpuspec33"];

/// Parses a seed range: `3` is seeds 1 to 3, `4-6` seeds 4 to 6.
pub fn parse_seeds(s: &str) -> Option<RangeInclusive<u64>> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => (1, s.trim().parse().ok()?),
    };
    (a <= b && b > 0).then_some(a.max(1)..=b)
}

/// Allocation ratio (%) at `pct`% arrived demand per policy, in report order.
pub fn ratios_at(r: &SimReport, pct: u32) -> Vec<(String, f64)> {
    r.results
        .iter()
        .map(|p| {
            let v = p
                .packing
                .as_ref()
                .and_then(|k| k.snapshots.iter().find(|s| s.arrived_pct == pct))
                .map_or(f64::NAN, |s| s.allocation_ratio * 100.0);
            (p.policy.clone(), v)
        })
        .collect()
}

/// The matrix as a Markdown table: one row per pod list, one column per policy, then the
/// best other policy and rigwatch's gap to it (negative: rigwatch behind).
pub fn render(rows: &[SweepRow], pct: u32) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else {
        return out;
    };
    let names: Vec<String> = first
        .report
        .results
        .iter()
        .map(|r| r.policy.clone())
        .collect();
    let _ = write!(out, "| pod list @{pct}% |");
    for n in &names {
        let _ = write!(out, " {n} |");
    }
    out.push_str(" best other | rigwatch − best |\n|---|");
    for _ in 0..names.len() + 2 {
        out.push_str("---|");
    }
    out.push('\n');
    let mut worst = f64::INFINITY;
    for row in rows {
        let r = ratios_at(&row.report, pct);
        let _ = write!(out, "| {} |", row.label);
        for (_, v) in &r {
            let _ = write!(out, " {v:.2} |");
        }
        let best = r
            .iter()
            .filter(|(n, _)| n != "rigwatch")
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let ours = r.iter().find(|(n, _)| n == "rigwatch").map(|x| x.1);
        match (best, ours) {
            (Some((bn, bv)), Some(o)) => {
                worst = worst.min(o - bv);
                let _ = writeln!(out, " {bn} {bv:.2} | {:+.2} |", o - bv);
            }
            _ => out.push_str(" - | - |\n"),
        }
    }
    if worst.is_finite() {
        let _ = writeln!(out, "\nworst rigwatch − best other: {worst:+.2} points");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_seeds;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("3"), Some(1..=3));
        assert_eq!(parse_seeds("4-6"), Some(4..=6));
        assert_eq!(parse_seeds("6-4"), None);
        assert_eq!(parse_seeds("0"), None);
        assert_eq!(parse_seeds("x"), None);
    }
}
