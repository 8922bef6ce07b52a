//! example: writes `count` pseudo-random numbers, one per line, checkpointing as it goes.
//!
//! ```text
//! cargo xtask pipeline pipelines/example.toml
//! ```
//!
//! Replace the body of `run` with real work; keep the shape: read inputs from `ctx.input(..)`,
//! write outputs into `ctx.output(..)`, report with `ctx.progress/metric/log`, check
//! `ctx.check_stop()` every step, and keep whatever a restart needs in `ctx.ckpt_dir()`.
//! The stage runs in its own process, so a panic or crash here is reported, not fatal.

use std::fs::OpenOptions;
use std::io::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stage_api::{ArtifactKind, RunContext, Stage, StageInfo, StageKind};

/// The `config` table of this stage in a pipeline file. Doc comments become the JSON Schema's
/// descriptions; unknown keys and wrong types are rejected before any stage runs.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How many numbers to write.
    #[serde(default = "default_count")]
    pub count: u64,
    /// Save a checkpoint every this many numbers.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_count() -> u64 {
    1000
}

fn default_checkpoint_every() -> u64 {
    100
}

/// Everything a restart needs. Saved after the numbers it covers are on disk.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    done: u64,
    sum: u64,
    rng: u64,
    bytes: u64,
}

pub struct Example;

impl Stage for Example {
    type Config = Config;

    fn info() -> StageInfo {
        StageInfo::new(
            StageKind::DataGenerator,
            "Writes `count` pseudo-random numbers (seeded), one per line.",
        )
        .input_optional(
            "previous",
            ArtifactKind::Dataset,
            "numbers.txt of an earlier stage, counted in the log",
        )
        .output("numbers", ArtifactKind::Dataset, "numbers.txt")
        .resumable()
    }

    fn run(cfg: Config, ctx: &mut RunContext) -> anyhow::Result<()> {
        anyhow::ensure!(
            cfg.checkpoint_every > 0,
            "checkpoint_every must be positive"
        );
        if let Ok(prev) = ctx.input("previous") {
            let n = std::fs::read_to_string(prev.join("numbers.txt"))?
                .lines()
                .count();
            ctx.log(format!("the previous stage wrote {n} numbers"));
        }

        // ---- start fresh, or continue from the last checkpoint
        // The work file lives in ckpt/ so that it survives a crash; lines written after the last
        // checkpoint are cut off on resume, so a resumed run writes exactly the same bytes.
        let work = ctx.ckpt_dir().join("numbers.txt");
        let state = ctx.ckpt_dir().join("state.json");
        let mut ck = Checkpoint {
            done: 0,
            sum: 0,
            rng: ctx.seed(),
            bytes: 0,
        };
        if ctx.resuming() {
            ck = serde_json::from_slice(&std::fs::read(&state)?)?;
            ctx.log(format!("resuming after {} numbers", ck.done));
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&work)?;
        file.set_len(ck.bytes)?;
        let mut file = OpenOptions::new().append(true).open(&work)?;

        // ---- the loop
        while ck.done < cfg.count {
            ctx.check_stop()?; // Ctrl-C: stop here; the next run resumes from the checkpoint
            let x = splitmix64(&mut ck.rng) % 1000;
            let line = format!("{x}\n");
            file.write_all(line.as_bytes())?;
            ck.done += 1;
            ck.sum += x;
            ck.bytes += line.len() as u64;
            if ck.done.is_multiple_of(cfg.checkpoint_every) || ck.done == cfg.count {
                file.flush()?;
                std::fs::write(&state, serde_json::to_vec(&ck)?)?;
                ctx.checkpointed(ck.done);
                ctx.progress(ck.done, cfg.count);
                ctx.metric(ck.done, "mean", ck.sum as f64 / ck.done as f64);
            }
        }

        // ---- outputs: the host promotes them atomically once `run` returns Ok
        std::fs::copy(&work, ctx.output("numbers")?.join("numbers.txt"))?;
        Ok(())
    }
}

/// SplitMix64: tiny, seeded and the same on every machine.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

stage_api::export_stage!(Example);
