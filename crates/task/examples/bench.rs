//! The task benchmark (what `cargo xtask bench tasks [--json FILE]` runs, in release mode):
//! `cargo run --release -p task --example bench -- [--problems N] [--json FILE]`.
//!
//! Problems/s (op 2-20 uniform, both modes, three contexts, paper preset) on one core and on all cores, and
//! completions verified/s on one core, with their ratios to the paper's Python code on this machine kind
//! (8.6 problems/s per core; 3,600 completions/s for its parser-and-compare).

use anyhow::Context;

const REFERENCE_PROBLEMS_PER_S: f64 = 8.6;
const REFERENCE_VERIFIED_PER_S: f64 = 3600.0;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut opts = task::bench::BenchOptions::default();
    let mut json = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = Some(args.next().context("--json needs a file")?),
            "--problems" => {
                opts.problems = args.next().context("--problems needs a number")?.parse()?
            }
            other => {
                anyhow::bail!("unknown argument `{other}` (expected --json FILE, --problems N)")
            }
        }
    }
    let r = task::bench::run(opts);
    println!(
        "task benchmark ({} problems, {} completions, {} threads; one-core figures per CPU-second)",
        r.problems, r.completions, r.threads
    );
    println!(
        "  problems/s, one core:  {:>10.0}  ({:.0}x the reference's {REFERENCE_PROBLEMS_PER_S}; target 1000x; wall {:.0})",
        r.problems_per_s_one_core,
        r.problems_per_s_one_core / REFERENCE_PROBLEMS_PER_S,
        r.problems_per_s_one_core_wall
    );
    println!(
        "  problems/s, all cores: {:>10.0}",
        r.problems_per_s_all_cores
    );
    println!(
        "  verified/s, one core:  {:>10.0}  ({:.0}x the reference's {REFERENCE_VERIFIED_PER_S}; target 100x; wall {:.0})",
        r.verified_per_s,
        r.verified_per_s / REFERENCE_VERIFIED_PER_S,
        r.verified_per_s_wall
    );
    println!(
        "  verified/s incl. parsing the gold each time: {:.0}",
        r.verified_with_gold_parse_per_s
    );
    println!(
        "  mean generator attempts per problem: {:.1}",
        r.mean_attempts
    );
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
