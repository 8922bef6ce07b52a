//! The plugin interface of interplay.
//!
//! A *stage plugin* is a `cdylib` crate that implements [`Stage`] and calls [`export_stage!`]; a
//! *reward plugin* implements [`RewardFn`] and calls [`export_reward!`]. Plugin authors write safe
//! Rust only: the macros generate the C ABI in [`abi`].
//!
//! The key decision: only JSON bytes and filesystem paths cross the boundary. Rust has no stable
//! ABI, and every plugin links its own copy of std and burn, so no Rust type (and no tensor) may
//! cross. Stages hand each other *directories* (artifacts); the host hands a stage one
//! [`Request`] and receives [`Event`]s and one [`Outcome`]. See ARCHITECTURE.md.
//!
//! ```text
//! use stage_api::{ArtifactKind, RunContext, Stage, StageInfo, StageKind};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config { /** Number of steps. */ steps: u64 }
//!
//! pub struct Count;
//! impl Stage for Count {
//!     type Config = Config;
//!     fn info() -> StageInfo {
//!         StageInfo::new(StageKind::DataGenerator, "Counts.").output("data", ArtifactKind::Dataset, "numbers")
//!     }
//!     fn run(cfg: Config, ctx: &mut RunContext) -> anyhow::Result<()> {
//!         for step in 1..=cfg.steps { ctx.check_stop()?; ctx.progress(step, cfg.steps); }
//!         std::fs::write(ctx.output("data")?.join("n.txt"), cfg.steps.to_string())?;
//!         Ok(())
//!     }
//! }
//! stage_api::export_stage!(Count);
//! ```
#![deny(missing_docs)]

pub mod abi;
mod context;
mod messages;

pub use context::{Host, Interrupted, RunContext};
pub use messages::*;

/// Semver of the JSON messages in this crate. A host accepts a plugin whose API version has the
/// same major (for 0.x: the same minor) and is not newer than its own.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Re-exported so that plugin crates and the export macros agree on one version.
pub use schemars;
pub use serde_json;

/// A stage plugin: one step of a pipeline (data generation, training, evaluation, ...).
///
/// `run` reads its inputs from the directories in the request, writes its outputs into the
/// directories the host created, and reports through the context. It runs in a child process of
/// the runner, so a crash cannot take the runner down.
pub trait Stage {
    /// The stage's config: the `config` table of the stage in the pipeline file. Derive
    /// `Deserialize` with `#[serde(deny_unknown_fields)]` and `JsonSchema`; doc comments become
    /// the schema's descriptions, which editors show.
    type Config: serde::de::DeserializeOwned + schemars::JsonSchema;

    /// Kind, inputs, outputs, devices. Name and version come from the crate.
    fn info() -> StageInfo;

    /// Do the work. Return [`Interrupted`] (see [`RunContext::check_stop`]) when asked to stop.
    fn run(config: Self::Config, ctx: &mut RunContext<'_>) -> anyhow::Result<()>;
}

/// A reward-verifier plugin: scores completions. Loaded by the host of an RL stage (the RL
/// plugin calls [`RunContext::score`]) and by tools that score a dataset directly.
pub trait RewardFn: Sized {
    /// The reward's config, from `rewards = [{ plugin = "...", config = { ... } }]`.
    type Config: serde::de::DeserializeOwned + schemars::JsonSchema;

    /// One line for people.
    const DESCRIPTION: &'static str;

    /// Build the reward once; it then scores many batches.
    fn new(config: Self::Config) -> anyhow::Result<Self>;

    /// One score per sample, in order. `None` means "not applicable to this sample".
    fn score(&self, batch: &[RewardSample]) -> Vec<Option<f32>>;
}

/// What a stage plugin declares about itself; built with the methods below.
#[derive(Clone, Debug)]
pub struct StageInfo {
    /// What the stage does.
    pub kind: StageKind,
    /// One paragraph for people.
    pub description: String,
    /// Named inputs.
    pub inputs: Vec<Port>,
    /// Named outputs.
    pub outputs: Vec<Port>,
    /// Device families, `["cpu"]` unless [`StageInfo::devices`] says otherwise.
    pub devices: Vec<String>,
    /// See [`Manifest::supports_resume`].
    pub supports_resume: bool,
}

impl StageInfo {
    /// A stage of `kind` with no ports that runs on CPU.
    pub fn new(kind: StageKind, description: &str) -> StageInfo {
        StageInfo {
            kind,
            description: description.to_string(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            devices: vec!["cpu".to_string()],
            supports_resume: false,
        }
    }

    /// Adds a required input that takes exactly one reference.
    pub fn input(mut self, name: &str, kind: ArtifactKind, description: &str) -> StageInfo {
        self.inputs.push(port(name, kind, description));
        self
    }

    /// Adds an input that takes a list of references (possibly empty).
    pub fn input_many(mut self, name: &str, kind: ArtifactKind, description: &str) -> StageInfo {
        self.inputs.push(Port {
            many: true,
            optional: true,
            ..port(name, kind, description)
        });
        self
    }

    /// Adds an input that may be left out.
    pub fn input_optional(
        mut self,
        name: &str,
        kind: ArtifactKind,
        description: &str,
    ) -> StageInfo {
        self.inputs.push(Port {
            optional: true,
            ..port(name, kind, description)
        });
        self
    }

    /// Adds an output directory.
    pub fn output(mut self, name: &str, kind: ArtifactKind, description: &str) -> StageInfo {
        self.outputs.push(port(name, kind, description));
        self
    }

    /// Sets the device families (`"cpu"`, `"cuda"`).
    pub fn devices(mut self, devices: &[&str]) -> StageInfo {
        self.devices = devices.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Declares that the stage resumes from `ckpt_dir` when [`RunContext::resuming`] is true.
    pub fn resumable(mut self) -> StageInfo {
        self.supports_resume = true;
        self
    }
}

fn port(name: &str, kind: ArtifactKind, description: &str) -> Port {
    Port {
        name: name.to_string(),
        kind,
        description: description.to_string(),
        many: false,
        optional: false,
    }
}

/// Checks what a reward returned for a batch of `samples`: exactly one score per sample, each
/// `None` (not applicable) or finite. The message says what is wrong, without naming the reward
/// (callers add that): `returned 3 scores for 2 samples`, `returned NaN for sample 1 (of 2)`.
pub fn check_scores(scores: &[Option<f32>], samples: usize) -> Result<(), String> {
    if scores.len() != samples {
        return Err(format!(
            "returned {} scores for {samples} samples",
            scores.len()
        ));
    }
    match scores
        .iter()
        .enumerate()
        .find(|(_, s)| s.is_some_and(|s| !s.is_finite()))
    {
        Some((i, Some(s))) => Err(format!(
            "returned {s} for sample {i} (of {samples}); a score must be finite, or None where the reward does not apply"
        )),
        _ => Ok(()),
    }
}

/// JSON Schema of a config type, as a plain JSON value.
pub fn config_schema<C: schemars::JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(C).to_value()
}
