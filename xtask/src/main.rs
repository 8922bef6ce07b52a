//! Project automation (see matklad/cargo-xtask): `cargo xtask <task>`.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("no tasks yet")
}
