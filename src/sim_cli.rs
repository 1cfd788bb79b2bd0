//! `rigwatch sim`: replay the Alibaba openb trace through the allocator's placement
//! policies (packing or time mode) and print them side by side.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rigwatch_scheduler::sim::{self, Mode, SimOptions, VariantSpec, sweep};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SimMode {
    /// Tasks in file order, no departures, until arrived GPU demand is 1.3× capacity.
    Packing,
    /// Compressed arrivals, Philly runtimes, queueing, utilization and fairness.
    Time,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Node list (`sn,cpu_milli,memory_mib,gpu,model`).
    #[arg(long, env = "RIGWATCH_SIM_NODES", default_value = sim::DEFAULT_NODES)]
    nodes: PathBuf,
    /// Pod list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...`).
    #[arg(long, env = "RIGWATCH_SIM_PODS", default_value = sim::DEFAULT_PODS)]
    pods: PathBuf,
    /// Philly runtimes in seconds (time mode).
    #[arg(long, env = "RIGWATCH_SIM_RUNTIMES", default_value = sim::DEFAULT_RUNTIMES)]
    runtimes: PathBuf,
    /// Policy: first-fit, best-fit, spread, random, fgd, rigwatch, a comma list, or `all`.
    #[arg(
        long,
        env = "RIGWATCH_SIM_POLICY",
        default_value = "all",
        value_delimiter = ','
    )]
    policy: Vec<String>,
    /// Experiment.
    #[arg(long, env = "RIGWATCH_SIM_MODE", value_enum, default_value = "packing")]
    mode: SimMode,
    /// Seed of every random choice (random policy, durations, arrivals).
    #[arg(long, env = "RIGWATCH_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Time mode: in-window offered load (GPU-time / capacity × horizon).
    #[arg(long, env = "RIGWATCH_SIM_LOAD", default_value_t = 0.9)]
    load: f64,
    /// Nodes are grouped into this many suppliers by hashing their serial number.
    #[arg(long, env = "RIGWATCH_SIM_SUPPLIERS", default_value_t = 25)]
    suppliers: u32,
    /// Keep every n-th node only (a deterministic subset; 1 = all).
    #[arg(long, env = "RIGWATCH_SIM_NODE_STRIDE", default_value_t = 1)]
    node_stride: usize,
    /// Also time single placement decisions on a synthetic fleet of this many GPUs
    /// (p50/p99), e.g. 10000; 0 = skip.
    #[arg(long, env = "RIGWATCH_SIM_BENCH_LATENCY", default_value_t = 0)]
    bench_latency: usize,
    /// Decisions timed by --bench-latency.
    #[arg(long, default_value_t = 20_000)]
    latency_decisions: usize,
    /// Replace the pod list by a generated variant of it (FGD's method): `key=value` pairs
    /// joined by `+` (share, multi, spec, cpu, cpux, seed) or a family name such as
    /// `gpushare60`, e.g. `share=0.6+cpux=1.5+seed=2`.
    #[arg(long, env = "RIGWATCH_SIM_VARIANT", value_parser = parse_variant)]
    variant: Option<VariantSpec>,
    /// Packing mode over the shared openb pod lists next to --pods and the standard
    /// variants of --pods, for seeds 1..=N (`3`) or FROM..=TO (`4-6`): one table of the
    /// allocation ratio at 100 % arrived demand per list and policy.
    #[arg(long, env = "RIGWATCH_SIM_SWEEP", value_parser = parse_seeds)]
    sweep: Option<std::ops::RangeInclusive<u64>>,
    /// Time mode: plain backfilling (no EASY reservation for the first blocked job).
    #[arg(long, env = "RIGWATCH_SIM_NO_RESERVE")]
    no_reserve: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "RIGWATCH_SIM_JSON")]
    json: Option<PathBuf>,
}

fn parse_variant(s: &str) -> Result<VariantSpec, String> {
    VariantSpec::parse(s).map_err(|e| e.to_string())
}

fn parse_seeds(s: &str) -> Result<std::ops::RangeInclusive<u64>, String> {
    sweep::parse_seeds(s).ok_or_else(|| format!("{s:?}: expected N or FROM-TO"))
}

fn must_exist(what: &str, p: &Path) -> anyhow::Result<()> {
    if !p.exists() {
        bail!(
            "{what} file {} not found (the defaults are relative to the repository root; \
             run from there or pass --{what})",
            p.display()
        );
    }
    Ok(())
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    must_exist("nodes", &args.nodes)?;
    must_exist("pods", &args.pods)?;
    let mode = match args.mode {
        SimMode::Packing => Mode::Packing,
        SimMode::Time => {
            must_exist("runtimes", &args.runtimes)?;
            Mode::Time
        }
    };
    let opts = SimOptions {
        nodes: args.nodes,
        pods: args.pods,
        runtimes: args.runtimes,
        policies: args.policy,
        mode,
        seed: args.seed,
        suppliers: args.suppliers,
        load: args.load,
        node_stride: args.node_stride.max(1),
        latency_gpus: args.bench_latency,
        latency_decisions: args.latency_decisions,
        variant: args.variant,
        reserve: !args.no_reserve,
        ..SimOptions::default()
    };
    if let Some(seeds) = args.sweep {
        let rows = sweep::standard(&opts, seeds)?;
        print!("{}", sweep::render(&rows, 100));
        if let Some(path) = args.json {
            let text = serde_json::to_string_pretty(&rows)?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = sim::run(&opts)?;
    print!("{}", report.render_table());
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
