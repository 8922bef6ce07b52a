//! `cargo xtask new-plugin <name> --kind stage|reward`: a plugin crate that builds, loads and
//! runs as generated, written to show every part of the interface once.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What to scaffold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A stage plugin (plus `pipelines/<name>.toml` that runs it).
    Stage,
    /// A reward plugin (plus `plugins/<name>/samples.jsonl` to score).
    Reward,
}

impl std::str::FromStr for Kind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Kind> {
        match s {
            "stage" => Ok(Kind::Stage),
            "reward" => Ok(Kind::Reward),
            other => bail!("unknown kind `{other}`; expected stage or reward"),
        }
    }
}

/// Writes the plugin under `root/plugins/<name>/` (and its pipeline under `root/pipelines/`).
/// Returns the files written. Refuses to overwrite anything.
pub fn generate(root: &Path, name: &str, kind: Kind) -> anyhow::Result<Vec<PathBuf>> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let dir = root.join("plugins").join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let camel: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let fill = |t: &str| t.replace("__NAME__", name).replace("__CAMEL__", &camel);
    let mut files = vec![(dir.join("Cargo.toml"), fill(CARGO_TOML))];
    match kind {
        Kind::Stage => {
            files.push((dir.join("src/lib.rs"), fill(STAGE_LIB)));
            files.push((
                root.join("pipelines").join(format!("{name}.toml")),
                fill(STAGE_PIPELINE),
            ));
        }
        Kind::Reward => {
            files.push((dir.join("src/lib.rs"), fill(REWARD_LIB)));
            files.push((dir.join("samples.jsonl"), REWARD_SAMPLES.to_string()));
        }
    }
    for (path, _) in &files {
        if path.exists() {
            bail!("{} already exists", path.display());
        }
    }
    for (path, text) in &files {
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

const CARGO_TOML: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition.workspace = true
publish = false

# cdylib: the runner loads it; rlib: tests can link it directly.
[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
anyhow.workspace = true
schemars.workspace = true
serde.workspace = true
serde_json.workspace = true
stage-api.workspace = true
"#;

const STAGE_LIB: &str = r#"//! __NAME__: writes `count` pseudo-random numbers, one per line, checkpointing as it goes.
//!
//! ```text
//! cargo xtask pipeline pipelines/__NAME__.toml
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

pub struct __CAMEL__;

impl Stage for __CAMEL__ {
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

stage_api::export_stage!(__CAMEL__);
"#;

const STAGE_PIPELINE: &str = r#"#:schema ../schemas/pipeline.schema.json
# Runs the `__NAME__` plugin twice, the second stage reading the first one's output.
#   cargo xtask pipeline pipelines/__NAME__.toml [stages.first.config.count=50]
[pipeline]
name = "__NAME__"
seed = 1

[stages.first]
plugin = "__NAME__"
config = { count = 1000 }

[stages.second]
plugin = "__NAME__"
inputs = { previous = "first.numbers" }
config = { count = 500, checkpoint_every = 50 }
"#;

const REWARD_LIB: &str = r#"//! __NAME__: a reward plugin. 1.0 when the completion's last line equals the reference answer,
//! `partial_credit` when the answer appears anywhere in it, else 0.0; `None` (not applicable)
//! when the reference has no answer.
//!
//! Attach it to an RL stage in a pipeline file, or score a file directly:
//!
//! ```text
//! rewards = [{ plugin = "__NAME__", weight = 1.0, config = { partial_credit = 0.1 } }]
//! target/debug/interplay score --reward __NAME__ plugins/__NAME__/samples.jsonl
//! ```

use schemars::JsonSchema;
use serde::Deserialize;
use stage_api::{RewardFn, RewardSample};

/// The reward's `config` table. Checked against its JSON Schema before any stage runs.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Key of the gold answer in each sample's `reference`.
    #[serde(default = "default_answer_key")]
    pub answer_key: String,
    /// Score when the answer appears in the completion but is not its last line.
    #[serde(default)]
    pub partial_credit: f32,
}

fn default_answer_key() -> String {
    "answer".to_string()
}

pub struct __CAMEL__ {
    cfg: Config,
}

impl RewardFn for __CAMEL__ {
    type Config = Config;
    const DESCRIPTION: &'static str =
        "1 if the last line of the completion is the reference answer.";

    fn new(cfg: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&cfg.partial_credit),
            "partial_credit must be in [0, 1]"
        );
        Ok(__CAMEL__ { cfg })
    }

    fn score(&self, batch: &[RewardSample]) -> Vec<Option<f32>> {
        batch
            .iter()
            .map(|s| {
                let gold = s.reference.get(&self.cfg.answer_key)?.as_str()?.trim();
                let last = s.completion.trim().lines().last().unwrap_or("").trim();
                Some(if last == gold {
                    1.0
                } else if s.completion.contains(gold) {
                    self.cfg.partial_credit
                } else {
                    0.0
                })
            })
            .collect()
    }
}

stage_api::export_reward!(__CAMEL__);
"#;

const REWARD_SAMPLES: &str = r#"{"prompt": "2+2=", "completion": "4", "reference": {"answer": "4"}}
{"prompt": "2+3=", "completion": "it is 5\n6", "reference": {"answer": "5"}}
{"prompt": "2+4=", "completion": "7", "reference": {"answer": "6"}}
{"prompt": "hi", "completion": "hello", "reference": {}}
"#;
