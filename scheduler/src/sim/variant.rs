//! Pod-list variants made the way the FGD paper (Weng et al., ATC'23, §6) makes its
//! `gpushare*`, `multigpu*`, `gpuspec*` and non-GPU variants of openb: tasks are resampled
//! from a base list (with replacement, seeded) so that one class of task takes a chosen share
//! of the GPU demand, a chosen share of GPU tasks is constrained to GPU models, or CPU demand
//! is scaled. The total GPU demand stays that of the base list.
//!
//! A spec is `key=value` pairs joined by `+` (or `,`), or a family name:
//!
//! | key      | meaning                                                                    |
//! |----------|----------------------------------------------------------------------------|
//! | `share`  | share of GPU demand from GPU-sharing (fractional, one-GPU) tasks, 0..=1     |
//! | `multi`  | share of GPU demand from multi-GPU tasks, 0..=1                             |
//! | `spec`   | share of GPU tasks constrained to one or two GPU models, 0..=1              |
//! | `cpu`    | CPU-only tasks × this (relative to the base list's share of them)           |
//! | `cpux`   | every task's host CPU × this (capped at the largest node's CPU)            |
//! | `seed`   | resampling seed                                                            |
//!
//! Family names: `gpushare60` = `share=0.6`, `multigpu40` = `multi=0.4`, `gpuspec20` =
//! `spec=0.2`, `cpu200` = `cpu=2`, `cpux150` = `cpux=1.5`. Which models a constrained task
//! asks for is drawn from per-seed random weights over the fleet's models (capacity × a
//! factor in [0.2, 3]), so some seeds oversubscribe one model, as `gpuspec33`'s T4 demand
//! (1,028 GPUs for 842 T4s) does.

use std::fmt;

use super::trace::{TraceNode, TracePod};
use crate::model::GpuDemand;
use crate::rng::SplitMix64;
use crate::{Error, Result, WHOLE_GPU};

/// How to derive a pod list from a base list.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantSpec {
    pub share: Option<f64>,
    pub multi: Option<f64>,
    pub spec: f64,
    pub cpu: f64,
    pub cpux: f64,
    pub seed: u64,
}

impl Default for VariantSpec {
    fn default() -> Self {
        VariantSpec {
            share: None,
            multi: None,
            spec: 0.0,
            cpu: 1.0,
            cpux: 1.0,
            seed: 1,
        }
    }
}

fn bad(spec: &str, key: &str, reason: String) -> Error {
    Error::Trace {
        path: format!("variant spec {spec:?}"),
        line: 0,
        column: key.to_owned(),
        reason,
    }
}

impl VariantSpec {
    /// Parses `share=0.6+cpu=2+seed=3`, a family name (`gpushare60`, `multigpu40`,
    /// `gpuspec20`, `cpu200`, `cpux150`) or both joined by `+`.
    pub fn parse(s: &str) -> Result<VariantSpec> {
        let mut v = VariantSpec::default();
        for part in s.split(['+', ',']).filter(|p| !p.trim().is_empty()) {
            let part = part.trim();
            let (k, val) = match part.split_once('=') {
                Some((k, val)) => (k.to_owned(), val.to_owned()),
                None => {
                    let fam = [
                        ("gpushare", "share", 100.0),
                        ("multigpu", "multi", 100.0),
                        ("gpuspec", "spec", 100.0),
                        ("cpux", "cpux", 100.0),
                        ("cpu", "cpu", 100.0),
                    ]
                    .into_iter()
                    .find(|(p, _, _)| part.starts_with(p));
                    let Some((p, k, div)) = fam else {
                        return Err(bad(s, part, "expected key=value or a family name".into()));
                    };
                    let n: f64 = part[p.len()..]
                        .parse()
                        .map_err(|_| bad(s, part, "family name needs a number".into()))?;
                    (k.to_owned(), (n / div).to_string())
                }
            };
            let x: f64 = val
                .parse()
                .map_err(|_| bad(s, &k, format!("cannot parse {val:?} as a number")))?;
            let unit = |x: f64| {
                if (0.0..=1.0).contains(&x) {
                    Ok(x)
                } else {
                    Err(bad(s, &k, format!("{x} is not a share in 0..=1")))
                }
            };
            let pos = |x: f64| {
                if x.is_finite() && x >= 0.0 {
                    Ok(x)
                } else {
                    Err(bad(s, &k, format!("{x} is not a non-negative factor")))
                }
            };
            match k.as_str() {
                "share" => v.share = Some(unit(x)?),
                "multi" => v.multi = Some(unit(x)?),
                "spec" => v.spec = unit(x)?,
                "cpu" => v.cpu = pos(x)?,
                "cpux" => v.cpux = pos(x)?,
                "seed" => v.seed = x as u64,
                _ => return Err(bad(s, &k, "unknown key".into())),
            }
        }
        if v.share.unwrap_or(0.0) + v.multi.unwrap_or(0.0) > 1.0 + 1e-9 {
            return Err(bad(s, "share", "share + multi must be at most 1".into()));
        }
        Ok(v)
    }
}

impl fmt::Display for VariantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(s) = self.share {
            parts.push(format!("share={s}"));
        }
        if let Some(m) = self.multi {
            parts.push(format!("multi={m}"));
        }
        if self.spec > 0.0 {
            parts.push(format!("spec={}", self.spec));
        }
        if self.cpu != 1.0 {
            parts.push(format!("cpu={}", self.cpu));
        }
        if self.cpux != 1.0 {
            parts.push(format!("cpux={}", self.cpux));
        }
        parts.push(format!("seed={}", self.seed));
        f.write_str(&parts.join("+"))
    }
}

/// The standard sweep: each family at several levels, some mixes, each with every seed in
/// `seeds`.
pub fn sweep(seeds: std::ops::RangeInclusive<u64>) -> Vec<VariantSpec> {
    let families = [
        "share=0.4",
        "share=0.6",
        "share=0.8",
        "share=1",
        "multi=0.2",
        "multi=0.3",
        "multi=0.4",
        "multi=0.5",
        "spec=0.1",
        "spec=0.2",
        "spec=0.33",
        "cpu=1.5",
        "cpu=2",
        "cpu=2.5",
        "cpux=1.5",
        "cpux=2",
        "share=0.6+spec=0.2",
        "multi=0.4+cpu=2",
        "share=0.8+cpux=1.5",
        "spec=0.33+cpu=2",
    ];
    let mut out = Vec::new();
    for f in families {
        for seed in seeds.clone() {
            if let Ok(mut v) = VariantSpec::parse(f) {
                v.seed = seed;
                out.push(v);
            }
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Cpu,
    Share,
    Whole,
    Multi,
}

fn class(p: &TracePod) -> Class {
    match p.demand {
        GpuDemand::None => Class::Cpu,
        GpuDemand::Fraction(_) => Class::Share,
        GpuDemand::Whole(1) => Class::Whole,
        GpuDemand::Whole(_) => Class::Multi,
    }
}

/// Builds the variant `v` of `base` for the fleet `nodes` (model constraints are drawn among
/// models that can host the task).
pub fn generate(base: &[TracePod], nodes: &[TraceNode], v: &VariantSpec) -> Vec<TracePod> {
    let mut rng = SplitMix64::new(v.seed.wrapping_mul(0x9E37_79B9).wrapping_add(0x7a11));
    let by = |c: Class| -> Vec<&TracePod> { base.iter().filter(|p| class(p) == c).collect() };
    let (cpu_only, share, whole, multi) = (
        by(Class::Cpu),
        by(Class::Share),
        by(Class::Whole),
        by(Class::Multi),
    );
    let demand = |ps: &[&TracePod]| -> f64 {
        ps.iter()
            .map(|p| f64::from(p.demand.total_milli()))
            .sum::<f64>()
    };
    let (ds, dw, dm) = (demand(&share), demand(&whole), demand(&multi));
    let total = ds + dw + dm;
    let gpu_tasks = share.len() + whole.len() + multi.len();
    if total == 0.0 || gpu_tasks == 0 {
        return base.to_vec();
    }
    // Target demand shares: the fixed ones as asked, the others keep their base ratio.
    let (mut ts, mut tw, mut tm) = (ds / total, dw / total, dm / total);
    match (v.share, v.multi) {
        (Some(s), Some(m)) => (ts, tm, tw) = (s, m, (1.0 - s - m).max(0.0)),
        (Some(s), None) => {
            let rest = (tw + tm).max(1e-12);
            (ts, tw, tm) = (s, (1.0 - s) * tw / rest, (1.0 - s) * tm / rest);
        }
        (None, Some(m)) => {
            let rest = (tw + ts).max(1e-12);
            (tm, tw, ts) = (m, (1.0 - m) * tw / rest, (1.0 - m) * ts / rest);
        }
        (None, None) => {}
    }
    // Draw probability of a class ∝ its target demand share / its mean task demand.
    let classes = [(&share, ts, ds), (&whole, tw, dw), (&multi, tm, dm)];
    let weights: Vec<f64> = classes
        .iter()
        .map(|(ps, t, d)| {
            if ps.is_empty() {
                0.0
            } else {
                t / (d / ps.len() as f64)
            }
        })
        .collect();
    let wsum: f64 = weights.iter().sum();
    let palette = model_palette(nodes, &mut rng);
    let max_cpu = nodes.iter().map(|n| n.cpu_milli).max().unwrap_or(u32::MAX);
    let cpu_share = cpu_only.len() as f64 / gpu_tasks as f64 * v.cpu;
    let mut out: Vec<TracePod> = Vec::new();
    let mut drawn = 0.0;
    let mut cpu_debt = 0.0;
    while drawn < total && wsum > 0.0 {
        let mut r = rng.next_f64() * wsum;
        let mut k = 0;
        while k + 1 < weights.len() && r >= weights[k] {
            r -= weights[k];
            k += 1;
        }
        let ps = classes[k].0;
        if ps.is_empty() {
            continue;
        }
        let mut p = ps[rng.below(ps.len() as u64) as usize].clone();
        drawn += f64::from(p.demand.total_milli());
        if rng.next_f64() < v.spec {
            p.models = constrain(&p, nodes, &palette, &mut rng);
        }
        out.push(p);
        // CPU-only tasks interleaved at the asked rate.
        cpu_debt += cpu_share;
        while cpu_debt >= 1.0 && !cpu_only.is_empty() {
            cpu_debt -= 1.0;
            let c = cpu_only[rng.below(cpu_only.len() as u64) as usize].clone();
            let at = out.len() - rng.below(out.len().min(8) as u64) as usize;
            out.insert(at, c);
        }
    }
    for (i, p) in out.iter_mut().enumerate() {
        p.cpu_milli = ((f64::from(p.cpu_milli) * v.cpux).round() as u32).min(max_cpu);
        p.name = format!("variant-{i:05}");
        p.creation_time = i as i64;
    }
    out
}

/// Per-seed weights over models: GPU capacity × a random factor in [0.2, 3].
fn model_palette(nodes: &[TraceNode], rng: &mut SplitMix64) -> Vec<(String, f64)> {
    let mut models: Vec<(String, f64)> = Vec::new();
    for n in nodes {
        match models.iter_mut().find(|m| m.0 == n.model) {
            Some(m) => m.1 += f64::from(n.gpus),
            None => models.push((n.model.clone(), f64::from(n.gpus))),
        }
    }
    models.sort_by(|a, b| a.0.cmp(&b.0));
    for m in &mut models {
        m.1 *= 0.2 + 2.8 * rng.next_f64();
    }
    models
}

/// One or two models (weighted by the palette) that some node could host `p` on.
fn constrain(
    p: &TracePod,
    nodes: &[TraceNode],
    palette: &[(String, f64)],
    rng: &mut SplitMix64,
) -> Vec<String> {
    let k = p.demand.gpu_count() as u32;
    let hosts = |m: &str| {
        nodes.iter().any(|n| {
            n.model == m
                && n.gpus >= k
                && n.cpu_milli >= p.cpu_milli
                && n.memory_mib >= p.memory_mib
        })
    };
    let ok: Vec<&(String, f64)> = palette.iter().filter(|m| hosts(&m.0)).collect();
    let pick = |rng: &mut SplitMix64| -> Option<String> {
        let sum: f64 = ok.iter().map(|m| m.1).sum();
        let mut r = rng.next_f64() * sum;
        for m in &ok {
            if r < m.1 {
                return Some(m.0.clone());
            }
            r -= m.1;
        }
        ok.last().map(|m| m.0.clone())
    };
    let mut out: Vec<String> = pick(rng).into_iter().collect();
    if rng.next_f64() < 0.3
        && let Some(m) = pick(rng)
        && !out.contains(&m)
    {
        out.push(m);
    }
    out
}

/// Share of the GPU demand of `pods` in each class: (sharing, whole one-GPU, multi-GPU).
pub fn demand_shares(pods: &[TracePod]) -> (f64, f64, f64) {
    let mut d = [0.0f64; 3];
    for p in pods {
        let m = f64::from(p.demand.total_milli());
        match class(p) {
            Class::Share => d[0] += m,
            Class::Whole => d[1] += m,
            Class::Multi => d[2] += m,
            Class::Cpu => {}
        }
    }
    let t = (d[0] + d[1] + d[2]).max(f64::from(WHOLE_GPU));
    (d[0] / t, d[1] / t, d[2] / t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(i: usize, demand: GpuDemand, cpu: u32) -> TracePod {
        TracePod {
            name: format!("p{i}"),
            cpu_milli: cpu,
            memory_mib: 1024,
            demand,
            models: Vec::new(),
            qos: String::new(),
            creation_time: i as i64,
        }
    }

    fn base() -> Vec<TracePod> {
        let mut v = Vec::new();
        for i in 0..600 {
            let d = match i % 6 {
                0 => GpuDemand::None,
                1 | 2 => GpuDemand::Fraction(500),
                3 | 4 => GpuDemand::Whole(1),
                _ => GpuDemand::Whole(4),
            };
            v.push(pod(i, d, 4000));
        }
        v
    }

    fn nodes() -> Vec<TraceNode> {
        (0..10)
            .map(|i| TraceNode {
                sn: format!("n{i}"),
                cpu_milli: 64_000,
                memory_mib: 262_144,
                gpus: if i < 5 { 8 } else { 2 },
                model: if i < 5 { "A".into() } else { "B".into() },
            })
            .collect()
    }

    #[test]
    fn resampling_hits_the_asked_demand_shares() {
        let b = base();
        for target in [0.2, 0.6, 0.9] {
            let v = VariantSpec::parse(&format!("share={target}+seed=5")).unwrap();
            let out = generate(&b, &nodes(), &v);
            let (s, _, _) = demand_shares(&out);
            assert!((s - target).abs() < 0.05, "share {s} for target {target}");
        }
        let v = VariantSpec::parse("multigpu50").unwrap();
        let (_, _, m) = demand_shares(&generate(&b, &nodes(), &v));
        assert!((m - 0.5).abs() < 0.05, "multi {m}");
    }

    #[test]
    fn constraints_cpu_and_seeds() {
        let b = base();
        let n = nodes();
        let v = VariantSpec::parse("spec=0.5+cpu=2+cpux=1.5+seed=2").unwrap();
        let out = generate(&b, &n, &v);
        let gpu = out.iter().filter(|p| p.demand != GpuDemand::None).count();
        let constrained: Vec<&TracePod> = out.iter().filter(|p| !p.models.is_empty()).collect();
        let frac = constrained.len() as f64 / gpu as f64;
        assert!((frac - 0.5).abs() < 0.07, "constrained {frac}");
        // A 4-GPU task is never constrained to the 2-GPU model B only.
        assert!(
            constrained
                .iter()
                .filter(|p| p.demand == GpuDemand::Whole(4))
                .all(|p| p.models.iter().any(|m| m == "A"))
        );
        let cpu_only = out.iter().filter(|p| p.demand == GpuDemand::None).count();
        let ratio = cpu_only as f64 / gpu as f64;
        assert!((ratio - 0.4).abs() < 0.06, "cpu-only per GPU task {ratio}");
        assert!(out.iter().all(|p| p.cpu_milli == 6000));
        // Deterministic per seed, different across seeds.
        assert_eq!(out, generate(&b, &n, &v));
        let v2 = VariantSpec { seed: 3, ..v };
        assert_ne!(out, generate(&b, &n, &v2));
    }

    #[test]
    fn parse_rejects_nonsense() {
        assert!(VariantSpec::parse("share=1.5").is_err());
        assert!(VariantSpec::parse("share=0.7+multi=0.5").is_err());
        assert!(VariantSpec::parse("bogus=1").is_err());
        assert!(VariantSpec::parse("gpusharexx").is_err());
        assert_eq!(
            VariantSpec::parse("gpushare60+cpu200+seed=4").unwrap(),
            VariantSpec {
                share: Some(0.6),
                cpu: 2.0,
                seed: 4,
                ..VariantSpec::default()
            }
        );
    }
}
