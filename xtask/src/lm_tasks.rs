//! xtask commands owned by the `lm` crate; each forwards to `lm-cli` in release mode.
//!
//!     cargo xtask export-tiny DIR            # random tiny HF checkpoint + our logits (scripts/hf_parity.py)
//!     cargo xtask bench model [--device D] [--json FILE]   # bench-3m train/sample tok/s, peak RSS

use anyhow::{Context, Result, bail};
use std::process::Command;

/// Runs the task if it is one of ours; `None` when `args` names another task.
pub fn dispatch(args: &[String]) -> Option<Result<()>> {
    match args.first().map(String::as_str) {
        Some("export-tiny") => Some(lm_cli(&args[..])),
        Some("bench") if args.get(1).map(String::as_str) == Some("model") => {
            let mut forwarded = vec!["bench".to_string()];
            forwarded.extend_from_slice(&args[2..]);
            Some(lm_cli(&forwarded))
        }
        _ => None,
    }
}

fn lm_cli(args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--release", "-p", "lm", "--bin", "lm-cli", "--"])
        .args(args)
        .status()
        .context("running lm-cli")?;
    if !status.success() {
        bail!("lm-cli {} failed ({status})", args.join(" "));
    }
    Ok(())
}
