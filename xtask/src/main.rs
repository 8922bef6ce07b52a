//! Project automation (see matklad/cargo-xtask): `cargo xtask <task>`.
mod lm_tasks;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(result) = lm_tasks::dispatch(&args) {
        return result;
    }
    anyhow::bail!("unknown task {:?}; tasks: export-tiny DIR, bench model [--json FILE]", args)
}
