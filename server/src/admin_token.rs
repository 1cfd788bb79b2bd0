//! Where the operator's admin token comes from: `--admin-token-file`, or `--admin-token` /
//! `RIGWATCH_ADMIN_TOKEN` (noticed, with a warning, when typed on the command line).

use anyhow::Context;

use crate::ServeArgs;

/// The admin token from --admin-token (or RIGWATCH_ADMIN_TOKEN) or the first line of
/// --admin-token-file; warns when it was typed on the command line.
pub(crate) fn admin_token(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.admin_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --admin-token-file {}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "--admin-token-file {} is empty: its first line must be the token",
            path.display()
        );
        return Ok(Some(token));
    }
    if args.admin_token.is_some() && on_command_line(std::env::args()) {
        tracing::warn!(
            "the admin token was given on the command line, where every user of this machine can read it (ps, /proc); use RIGWATCH_ADMIN_TOKEN or --admin-token-file instead"
        );
        eprintln!(
            "rigwatch: warning: the admin token is on the command line, readable by every user of this machine; use RIGWATCH_ADMIN_TOKEN or --admin-token-file"
        );
    }
    Ok(args.admin_token.clone())
}

/// Whether `--admin-token` (not `--admin-token-file`) is among the process's arguments.
fn on_command_line(mut argv: impl Iterator<Item = String>) -> bool {
    argv.any(|a| a == "--admin-token" || a.starts_with("--admin-token="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_a_file_and_a_command_line_token_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServeArgs::with_defaults(dir.path().join("data")).unwrap();
        args.admin_token = None;
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "file-token-0123456789\nignored\n").unwrap();
        args.admin_token_file = Some(file.clone());
        assert_eq!(
            admin_token(&args).unwrap().as_deref(),
            Some("file-token-0123456789")
        );
        std::fs::write(&file, "\n").unwrap();
        let e = admin_token(&args).unwrap_err().to_string();
        assert!(
            e.contains("--admin-token-file") && e.contains("empty"),
            "{e}"
        );
        args.admin_token_file = Some(dir.path().join("missing"));
        assert!(
            admin_token(&args)
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );

        let argv = |a: &[&str]| {
            a.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert!(on_command_line(argv(&[
            "rigwatch",
            "serve",
            "--admin-token",
            "x"
        ])));
        assert!(on_command_line(argv(&[
            "rigwatch",
            "serve",
            "--admin-token=x"
        ])));
        assert!(!on_command_line(argv(&[
            "rigwatch",
            "serve",
            "--admin-token-file",
            "f"
        ])));
    }
}
