//! `rigwatch rules check FILE...`: validates alerting and recording rule files offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Alerting and recording rule files.
#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate rule files (Prometheus format): YAML shape, durations, PromQL expressions,
    /// templates, recording rule names and labels. Prints FILE:LINE:COLUMN: REASON for each
    /// problem; exits 1 if any.
    /// `rigwatch rules check --defaults` checks the embedded default rules.
    Check {
        /// Rule files to check.
        files: Vec<PathBuf>,
        /// Also check (or print, with --print) the embedded default rules.
        #[arg(long)]
        defaults: bool,
        /// Print the embedded default rules and exit.
        #[arg(long)]
        print: bool,
    },
}

pub fn run(args: RulesArgs) -> anyhow::Result<ExitCode> {
    let RulesCommand::Check {
        files,
        defaults,
        print,
    } = args.command;
    if print {
        print!("{}", rigwatch_query::rules::DEFAULT_RULES);
        return Ok(ExitCode::SUCCESS);
    }
    if files.is_empty() && !defaults {
        anyhow::bail!("give rule files to check (or --defaults for the embedded rules)");
    }
    let mut inputs: Vec<(String, String)> = Vec::new();
    if defaults {
        inputs.push((
            "<default rules>".into(),
            rigwatch_query::rules::DEFAULT_RULES.into(),
        ));
    }
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        inputs.push((f.display().to_string(), text));
    }
    let mut ok = true;
    for (name, text) in inputs {
        match rigwatch_query::rules::parse_rule_file(&text) {
            Ok(groups) => {
                let alerting: usize = groups.iter().map(|g| g.rules.len()).sum();
                let recording: usize = groups.iter().map(|g| g.records.len()).sum();
                println!(
                    "{name}: OK, {} group(s), {} rule(s) ({alerting} alerting, {recording} recording)",
                    groups.len(),
                    alerting + recording
                );
            }
            Err(errs) => {
                ok = false;
                for e in errs.0 {
                    match (e.line, e.column) {
                        (0, _) => eprintln!("{name}: {}", e.reason),
                        (l, 0) => eprintln!("{name}:{l}: {}", e.reason),
                        (l, c) => eprintln!("{name}:{l}:{c}: {}", e.reason),
                    }
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
