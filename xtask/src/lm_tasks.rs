//! xtask commands owned by the `lm` crate; each forwards to `lm-cli` in release mode.
//!
//!     cargo xtask export-tiny DIR            # random tiny HF checkpoint + our logits (scripts/hf_parity.py)
//!     cargo xtask bench model [--device D] [--json FILE]   # bench-3m train/sample tok/s, peak RSS

use anyhow::{Context, Result, bail};
use std::process::Command;

/// `cargo xtask export-tiny DIR`.
pub fn export_tiny(args: &[String]) -> Result<()> {
    let [dir] = args else {
        bail!("usage: cargo xtask export-tiny DIR")
    };
    lm_cli(&["export-tiny".to_string(), dir.clone()])
}

/// `cargo xtask bench model [--device D] [--json FILE] [--dp N] [--only train|sample]`.
pub fn bench_model(args: &[String]) -> Result<()> {
    let mut forwarded = vec!["bench".to_string()];
    forwarded.extend_from_slice(args);
    lm_cli(&forwarded)
}

fn lm_cli(args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "lm",
            "--bin",
            "lm-cli",
            "--",
        ])
        .args(args)
        .status()
        .context("running lm-cli")?;
    if !status.success() {
        bail!("lm-cli {} failed ({status})", args.join(" "));
    }
    Ok(())
}
