//! `rigwatch supplier ...`: manage suppliers and their tokens in `<data-dir>/auth.json`.
//!
//! Works whether or not a server is running on the same data directory: the auth store
//! locks and rewrites the file atomically, and a running server reloads it on change.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use rigwatch_storage::auth::{AuthStore, Role};

/// Options of `rigwatch supplier`.
#[derive(Debug, Args)]
pub struct SupplierArgs {
    /// The server's data directory (where `auth.json` lives).
    #[arg(
        long,
        env = "RIGWATCH_DATA_DIR",
        default_value = "rigwatch-data",
        global = true
    )]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: SupplierCommand,
}

#[derive(Debug, Subcommand)]
pub enum SupplierCommand {
    /// Add a supplier and print its first agent token (shown once).
    Add {
        /// Supplier name: letters, digits, `-`, `_`, `.` (it becomes the `supplier` tag).
        name: String,
    },
    /// List suppliers and tokens (ids only; secrets are never stored).
    List,
    /// Revoke one token (by id) or a whole supplier (disables it and all its tokens).
    Revoke {
        /// A token id (10 hex digits) or a supplier name.
        what: String,
    },
    /// Issue another token for a supplier.
    Token {
        supplier: String,
        /// `agent` (writes telemetry), `supplier` (reads its own data: portal, queries) or
        /// `extender` (the Kubernetes scheduler extender of the supplier's cluster: `/k8s/*`
        /// only).
        #[arg(long, default_value = "agent")]
        role: Role,
        /// Expire the token after this long (e.g. 90d); never by default.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// A note shown in `supplier list` (e.g. the machine it is for).
        #[arg(long, default_value = "")]
        label: String,
    },
}

fn open(dir: &std::path::Path) -> anyhow::Result<AuthStore> {
    AuthStore::open(dir).with_context(|| format!("cannot open the auth file in {}", dir.display()))
}

fn age(created: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(created);
    humantime::format_duration(Duration::from_secs(secs - secs % 60)).to_string() + " ago"
}

pub fn run(args: SupplierArgs) -> anyhow::Result<ExitCode> {
    let auth = open(&args.data_dir)?;
    match args.command {
        SupplierCommand::Add { name } => {
            let t = auth.add_supplier(&name)?;
            println!("supplier `{name}` added (in {})", auth.path().display());
            println!("agent token {} (shown once, store it now):", t.id);
            println!("token: {}", t.token);
            println!("on each GPU machine run:");
            println!(
                "  rigwatch agent --server http://SERVER:9800 --token {}",
                t.token
            );
        }
        SupplierCommand::List => {
            let suppliers = auth.suppliers();
            if suppliers.is_empty() {
                println!("no suppliers yet: add one with `rigwatch supplier add NAME`");
            } else {
                println!(
                    "{:<24} {:<10} {:>6}  CREATED",
                    "SUPPLIER", "STATUS", "TOKENS"
                );
                for (s, tokens) in suppliers {
                    let status = if s.disabled { "disabled" } else { "active" };
                    println!(
                        "{:<24} {:<10} {:>6}  {}",
                        s.name,
                        status,
                        tokens,
                        age(s.created_unix_s)
                    );
                }
            }
            let tokens = auth.tokens();
            if !tokens.is_empty() {
                println!();
                println!(
                    "{:<12} {:<9} {:<24} {:<8} {:<16} LABEL",
                    "TOKEN ID", "ROLE", "SUPPLIER", "STATUS", "CREATED"
                );
                for t in tokens {
                    let status = if t.revoked { "revoked" } else { "active" };
                    println!(
                        "{:<12} {:<9} {:<24} {:<8} {:<16} {}",
                        t.id,
                        t.role.as_str(),
                        t.supplier.as_deref().unwrap_or("-"),
                        status,
                        age(t.created_unix_s),
                        t.label
                    );
                }
            }
        }
        SupplierCommand::Revoke { what } => {
            let n = auth.revoke(&what)?;
            println!("revoked `{what}` ({n} token(s) newly revoked)");
        }
        SupplierCommand::Token {
            supplier,
            role,
            ttl,
            label,
        } => {
            if !role.is_scoped() {
                anyhow::bail!(
                    "`supplier token` issues agent, supplier or extender tokens; got role `{role}`"
                );
            }
            let label = if label.is_empty() {
                role.as_str()
            } else {
                &label
            };
            let t = auth.issue(role, Some(&supplier), ttl.map(|d| d.as_secs()), label)?;
            println!("{role} token {} for `{supplier}` (shown once):", t.id);
            println!("token: {}", t.token);
        }
    }
    Ok(ExitCode::SUCCESS)
}
