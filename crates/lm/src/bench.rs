pub fn main(_args: &[String]) -> anyhow::Result<()> { anyhow::bail!("todo") }
