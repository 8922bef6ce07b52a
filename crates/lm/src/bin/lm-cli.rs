//! Command-line entry points of the `lm` crate (called by `cargo xtask`):
//!
//!     cargo run --release -p lm --bin lm-cli -- export-tiny DIR     # random tiny checkpoint + our logits
//!     cargo run --release -p lm --bin lm-cli -- bench [--device cpu|cpu-flex|cpu-ndarray|cuda] [--json FILE]
//!     cargo run --release -p lm --features cuda --bin lm-cli -- device-check --device cuda  # CPU vs GPU
//!     cargo run --release -p lm --bin lm-cli -- startup [--device D] [--json FILE]  # first token, first step

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("export-tiny") => {
            let dir = args.get(1).context("usage: lm-cli export-tiny DIR")?;
            lm::export::export_tiny(&PathBuf::from(dir))
        }
        Some("bench") => lm::bench::main(&args[1..]),
        Some("device-check") => lm::bench::device_check(&args[1..]),
        Some("startup") => lm::bench::startup(&args[1..]),
        _ => bail!(
            "usage: lm-cli export-tiny DIR | lm-cli bench [--device D] [--json FILE] | lm-cli device-check [--device D] [--json FILE] | lm-cli startup [--device D] [--json FILE]"
        ),
    }
}
