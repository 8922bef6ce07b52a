//! The run context: what a running stage sees of the host.

use std::path::Path;

use crate::{ArtifactRef, Event, Level, Request, RewardSample, RewardScores, RewardSpec};

/// Services the host lends a running stage. The export macro implements it over the C ABI; tests
/// may implement it directly to run a stage in-process.
pub trait Host {
    /// Record one event.
    fn emit(&self, event: &Event);
    /// True once the host asked the stage to stop (Ctrl-C, SIGTERM).
    fn should_stop(&self) -> bool;
    /// Score a batch with every reward plugin of the stage.
    fn score(&self, batch: &[RewardSample]) -> anyhow::Result<Vec<RewardScores>>;
}

/// The error a stage returns when it stopped because the host asked it to. The host then keeps
/// `ckpt/` for the next attempt and does not mark the stage done.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped on request")
    }
}

impl std::error::Error for Interrupted {}

/// A stage's view of its run: the request plus the host's services.
pub struct RunContext<'h> {
    request: Request,
    host: &'h dyn Host,
}

impl<'h> RunContext<'h> {
    /// Context for `request`, served by `host`.
    pub fn new(request: Request, host: &'h dyn Host) -> RunContext<'h> {
        RunContext { request, host }
    }

    /// The full request.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Seed for this stage; use it for every RNG (never an unseeded one).
    pub fn seed(&self) -> u64 {
        self.request.seed
    }

    /// Device string from the pipeline (`"cpu"`, `"cuda:0"`).
    pub fn device(&self) -> &str {
        &self.request.device
    }

    /// The single artifact connected to input `name`.
    pub fn input(&self, name: &str) -> anyhow::Result<&Path> {
        match self.inputs(name) {
            [one] => Ok(&one.path),
            [] => anyhow::bail!("input `{name}` is not connected"),
            many => anyhow::bail!(
                "input `{name}` has {} references; use `inputs()`",
                many.len()
            ),
        }
    }

    /// All artifacts connected to input `name` (empty when not connected).
    pub fn inputs(&self, name: &str) -> &[ArtifactRef] {
        self.request
            .inputs
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The (existing, initially empty) directory for output `name`.
    pub fn output(&self, name: &str) -> anyhow::Result<&Path> {
        match self.request.outputs.get(name) {
            Some(p) => Ok(p),
            None => {
                anyhow::bail!("`{name}` is not an output of this stage (see `StageInfo::output`)")
            }
        }
    }

    /// Directory for resumable state. Survives an interrupted or crashed attempt.
    pub fn ckpt_dir(&self) -> &Path {
        &self.request.ckpt_dir
    }

    /// True when [`RunContext::ckpt_dir`] holds state from an earlier attempt of this exact stage
    /// (same fingerprint). Only set for plugins that declared [`crate::StageInfo::resumable`].
    pub fn resuming(&self) -> bool {
        self.request.resume
    }

    /// Reward plugins attached to this stage.
    pub fn rewards(&self) -> &[RewardSpec] {
        &self.request.rewards
    }

    /// Scores `batch` with every attached reward plugin (in the host process). One
    /// [`RewardScores`] per reward, each with one score per sample: `None` where the reward does
    /// not apply, otherwise a finite number. A reward that panics, fails, returns the wrong number
    /// of scores or a NaN/infinite score makes this an error that names the reward and its plugin;
    /// return it (`?`) so the stage fails rather than train on a wrong reward.
    pub fn score(&self, batch: &[RewardSample]) -> anyhow::Result<Vec<RewardScores>> {
        let scores = self.host.score(batch)?;
        // The host checks too; this holds for any host (tests may implement `Host` directly).
        for s in &scores {
            if let Err(e) = crate::check_scores(&s.scores, batch.len()) {
                let plugin = self
                    .request
                    .rewards
                    .iter()
                    .find(|r| r.name == s.name)
                    .map(|r| r.plugin.as_str())
                    .unwrap_or("unknown");
                anyhow::bail!("reward `{}` (plugin `{plugin}`) {e}", s.name);
            }
        }
        Ok(scores)
    }

    /// True once the host asked the stage to stop. Check it every step; save a checkpoint and
    /// return [`Interrupted`].
    pub fn should_stop(&self) -> bool {
        self.host.should_stop()
    }

    /// `Err(Interrupted)` once the host asked the stage to stop, so `ctx.check_stop()?` ends a loop.
    pub fn check_stop(&self) -> anyhow::Result<()> {
        if self.should_stop() {
            Err(Interrupted.into())
        } else {
            Ok(())
        }
    }

    /// Reports any event.
    pub fn emit(&self, event: Event) {
        self.host.emit(&event)
    }

    /// Reports that `step` of `total` steps are done (drives the progress bar and ETA).
    pub fn progress(&self, step: u64, total: u64) {
        self.emit(Event::Progress { step, total })
    }

    /// Reports a scalar.
    pub fn metric(&self, step: u64, name: &str, value: f64) {
        self.emit(Event::Metric {
            step,
            name: name.to_string(),
            value,
        })
    }

    /// Reports a line of text.
    pub fn log(&self, message: impl Into<String>) {
        self.emit(Event::Log {
            level: Level::Info,
            message: message.into(),
        })
    }

    /// Reports a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Log {
            level: Level::Warn,
            message: message.into(),
        })
    }

    /// Records an example worth keeping in `events.jsonl` (a completion with its rewards, say).
    pub fn sample(&self, step: u64, data: serde_json::Value) {
        self.emit(Event::Sample { step, data })
    }

    /// Reports that a resumable checkpoint for `step` is complete in `ckpt_dir`.
    pub fn checkpointed(&self, step: u64) {
        self.emit(Event::Checkpoint { step })
    }
}
