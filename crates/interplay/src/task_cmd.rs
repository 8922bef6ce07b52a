//! `interplay task gen` and `interplay task score`: the reasoning task without a pipeline, for inspecting data
//! and for scoring another system's outputs.
//!
//! ```text
//! interplay task gen --ops 2..=20 --per-op 100 --seed 7 --out problems.jsonl
//! interplay task score --reward reward-process --set strict=true --input completions.jsonl --out scores.jsonl
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use stage_api::RewardSample;
use task::cli::{self, GenArgs};

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Generate problems (paper field names plus `seed` and `gold`), spread evenly over contexts and modes;
    /// writes OUT and OUT.stats.json.
    Gen {
        /// Ops: `2..=20`, `2..21`, `2-20`, `2,3,5`.
        #[arg(long, default_value = "2..=20")]
        ops: String,
        /// Problems per op.
        #[arg(long, default_value_t = 100)]
        per_op: u64,
        /// Seed: same seed and flags, same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output JSONL file.
        #[arg(long)]
        out: PathBuf,
        /// Task preset: `paper` (the paper's settings) or `cpu`.
        #[arg(long, default_value = "paper")]
        preset: String,
        /// Contexts: `all`, or a comma list of `zoo`, `teacher`, `movie` (or template ids).
        #[arg(long, default_value = "all")]
        contexts: String,
        /// Modes: `both`, `forward` or `reverse`.
        #[arg(long, default_value = "both")]
        modes: String,
        /// Override one task-config field, `key=value` (repeatable), e.g. `--set max_width=2`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Score completions through a reward plugin. Each input line has `problem`, `question`, `solution` (gold)
    /// and `completion`; each output line adds `outcome`, `process`, `strict`, `verified` and `reward`.
    Score {
        /// Reward plugin, e.g. `reward-process` or `reward-outcome`.
        #[arg(long)]
        reward: String,
        /// Reward config field, `key=value` (repeatable), e.g. `--set strict=true`. `check_arithmetic` and
        /// `modulus` also apply to the verdict columns.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Input JSONL.
        #[arg(long)]
        input: PathBuf,
        /// Output JSONL.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        plugins: super::PluginDirs,
    },
}

pub fn run(cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Gen {
            ops,
            per_op,
            seed,
            out,
            preset,
            contexts,
            modes,
            set,
        } => {
            let args = GenArgs {
                ops: cli::parse_ops(&ops)?,
                per_op,
                seed,
                out,
                preset,
                contexts: cli::parse_contexts(&contexts)?,
                modes: cli::parse_modes(&modes)?,
                set: cli::parse_sets(&set)?,
            };
            let stats = cli::generate_file(&args)?;
            eprintln!(
                "wrote {} problems to {} (ops {:?}; mean {:.0} tokens; stats in {}.stats.json)",
                stats.records,
                args.out.display(),
                stats.per_op.keys().collect::<Vec<_>>(),
                stats.length.mean,
                args.out.display()
            );
            Ok(())
        }
        TaskCommand::Score {
            reward,
            set,
            input,
            out,
            plugins,
        } => score(&reward, &set, &input, &out, &plugins.resolve()),
    }
}

fn score(
    reward: &str,
    set: &[String],
    input: &Path,
    out: &Path,
    plugin_dirs: &[PathBuf],
) -> anyhow::Result<()> {
    let config = serde_json::Value::Object(cli::parse_sets(set)?);
    let path = stage_host::find_plugin(reward, plugin_dirs)?;
    let plugin = stage_host::load_reward(&path)?
        .instantiate(&config)
        .with_context(|| format!("configuring {reward}"))?;
    let records = cli::read_completions(input)?;
    // The verdict columns use the same verifier switches as the reward.
    let mut opts = task::verify::VerifyOptions::default();
    if let Some(v) = config.get("check_arithmetic").and_then(|v| v.as_bool()) {
        opts.check_arithmetic = v;
    }
    if let Some(v) = config.get("modulus").and_then(|v| v.as_i64()) {
        opts.modulus = Some(v);
    }
    let verdicts =
        cli::verdicts(&records, opts).with_context(|| format!("scoring {}", input.display()))?;
    let mut rewards = Vec::with_capacity(records.len());
    for chunk in records.chunks(4096) {
        let batch: Vec<RewardSample> = chunk
            .iter()
            .map(|r| RewardSample {
                prompt: task::text::prompt_at(&r.problem, &r.question, r.question_position),
                completion: r.completion.clone(),
                reference: cli::reward_reference(r),
                meta: serde_json::Value::Null,
            })
            .collect();
        rewards.extend(plugin.score(&batch)?);
    }
    cli::write_scores(out, &records, &verdicts, &rewards)?;
    let n = records.len().max(1) as f64;
    let mean = |f: &dyn Fn(usize) -> f64| (0..records.len()).map(f).sum::<f64>() / n;
    eprintln!(
        "scored {} completions with {reward}: outcome {:.3}, process {:.3}, verified {:.3}, strict {:.3}, reward {:.3} -> {}",
        records.len(),
        mean(&|i| verdicts[i].outcome as u8 as f64),
        mean(&|i| verdicts[i].process),
        mean(&|i| verdicts[i].verified as u8 as f64),
        mean(&|i| verdicts[i].strict as u8 as f64),
        mean(&|i| rewards[i].unwrap_or(0.0) as f64),
        out.display()
    );
    Ok(())
}
