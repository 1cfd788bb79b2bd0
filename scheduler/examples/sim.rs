//! The simulator without the rest of rigwatch (builds in seconds, also in release):
//!
//! ```text
//! cargo run -p rigwatch-scheduler --release --no-default-features --example sim -- \
//!     --mode packing --policy all [--nodes F] [--pods F] [--runtimes F] [--seed N]
//!     [--load 0.9] [--node-stride N] [--bench-latency GPUS] [--json FILE]
//!     [--variant SPEC]            # a generated variant of --pods (see sim::variant)
//!     [--sweep N|FROM-TO]         # packing: the shared lists + the standard variants, seeds 1..N or FROM..TO
//!     [--no-reserve]              # time mode: plain backfilling, no EASY reservation
//!     [--oracle-dist]             # fragmentation against the whole list, not the online estimate
//! ```

use std::process::ExitCode;

use rigwatch_scheduler::sim::{self, Mode, SimOptions, VariantSpec, sweep};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut o = SimOptions::default();
    let mut json = None;
    let mut sweep_seeds = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => {
                o.mode = match val()?.as_str() {
                    "packing" => Mode::Packing,
                    "time" => Mode::Time,
                    m => return Err(format!("--mode {m:?}: expected packing or time")),
                }
            }
            "--policy" => o.policies = val()?.split(',').map(str::to_owned).collect(),
            "--nodes" => o.nodes = val()?.into(),
            "--pods" => o.pods = val()?.into(),
            "--runtimes" => o.runtimes = val()?.into(),
            "--seed" => o.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--load" => o.load = val()?.parse().map_err(|e| format!("--load: {e}"))?,
            "--node-stride" => {
                o.node_stride = val()?.parse().map_err(|e| format!("--node-stride: {e}"))?
            }
            "--bench-latency" => {
                o.latency_gpus = val()?
                    .parse()
                    .map_err(|e| format!("--bench-latency: {e}"))?
            }
            "--json" => json = Some(val()?),
            "--top-shapes" => {
                o.top_shapes = val()?.parse().map_err(|e| format!("--top-shapes: {e}"))?
            }
            "--oracle-dist" => o.oracle_dist = true,
            "--no-reserve" => o.reserve = false,
            "--variant" => {
                o.variant = Some(VariantSpec::parse(&val()?).map_err(|e| e.to_string())?)
            }
            "--sweep" => {
                let v = val()?;
                sweep_seeds = Some(
                    sweep::parse_seeds(&v)
                        .ok_or_else(|| format!("--sweep {v:?}: expected N or FROM-TO"))?,
                )
            }
            f => return Err(format!("unknown flag {f:?}")),
        }
    }
    if let Some(seeds) = sweep_seeds {
        let rows = sweep::standard(&o, seeds).map_err(|e| e.to_string())?;
        print!("{}", sweep::render(&rows, 100));
        if let Some(path) = json {
            let s = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
            std::fs::write(&path, s).map_err(|e| format!("{path}: {e}"))?;
        }
        return Ok(());
    }
    let report = sim::run(&o).map_err(|e| e.to_string())?;
    print!("{}", report.render_table());
    if let Some(path) = json {
        let s = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(&path, s).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}
