//! `rl-grpo`: GRPO, the paper's RL stage (spec §6.1), on the `lm` sampler and trainer.
//!
//! ```toml
//! [stages.rl]
//! plugin = "rl-grpo"
//! inputs = { model = "pretrain.model", data = "data.data" }
//! rewards = [
//!   { plugin = "reward-process" },                                        # what the policy learns from
//!   { plugin = "reward-process", name = "verified", weight = 0, config = { value = "verified" } },
//! ]
//! config = { dataset = "rl", steps = 60, prompts_per_step = 16, group_size = 8, lr = 1e-4 }
//! ```
//!
//! Each step: draw `prompts_per_step` prompts (without replacement, epoch by epoch, in a seeded order), sample
//! `group_size` completions of each at `temperature`, score them with every reward plugin of the stage
//! through `RunContext::score`, turn the weighted sum into group-normalised advantages, and update the policy
//! with the clipped-ratio loss and a KL penalty to the input model, in `mini_batches` × `epochs` optimizer
//! steps (all mini-batches after the first are off-policy; the ratio is what corrects them).
//!
//! The stage never calls a verifier: every number it learns from or reports comes from a reward plugin. The
//! one named by `verified_reward` (weight 0 by convention, so that it only watches) says which samples are
//! VerifiedCorrect, for the batch pass@1 / pass@n, the validation accuracy and the edge filter.
//!
//! Outputs: `model` (Hugging Face layout, like pretrain's, with `training.json`) and `report` (`report.json`:
//! the settings after defaults, the per-step curves, validation, the edge filter's counts and the compute;
//! `completions.jsonl`: sampled completions with their rewards every `log_completions_every` steps).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use lm::data::Batch;
use lm::device::OnBackend;
use lm::grpo::{KlEstimator, LossAgg, PolicyBatch, PolicyLossConfig};
use lm::sample::{Finish, SampleConfig};
use lm::tokenizer::{PAD_ID, Tokenizer};
use lm::train::{Checkpoint, TrainConfig, Trainer};
use lm::{DeviceSpec, Qwen2, Rng};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stage_api::{
    ArtifactKind, RewardSample, RewardScores, RunContext, Stage, StageInfo, StageKind,
    combine_rewards,
};
use task::dataset::{Record, read_paper_jsonl};

/// The RL settings. Defaults follow the paper's recipe (spec §6.1) where it carries over to a tiny model;
/// `lr` is scaled up, as a tiny model's pre-training rate is too (see pipelines/rl.toml).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RlConfig {
    /// Prompts: `<dataset>.jsonl` in the `data` input, records with gold solutions (a datagen `train` set
    /// with `gold = true`, or any JSONL with the paper's fields).
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// RL steps to run. Give this or `prompts`.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Prompts to train on in all (rounded down to whole steps); the alternative to `steps`.
    #[serde(default)]
    pub prompts: Option<usize>,
    /// A compute budget in training tokens, the unit of pre- and mid-training's `tokens_seen` (the report's
    /// `compute.train_equivalent_tokens`, the edge filter not counted): RL ends after the first step that
    /// reaches it, or at `steps` / `prompts`, whichever comes first. With it a pipeline splits one budget B
    /// between mid-training (`train.token_budget = β·B`) and RL (`token_budget = (1 - β)·B`), as the paper does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    /// Prompts per step (the paper: 1024).
    #[serde(default = "default_prompts_per_step")]
    pub prompts_per_step: usize,
    /// Completions sampled per prompt, the group of GRPO (the paper: 6).
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// Rollout sampling temperature; the loss recomputes log-probs at the same temperature.
    #[serde(default = "one_f64")]
    pub temperature: f64,
    /// Nucleus mass of rollout sampling (1 = the whole distribution, the paper's).
    #[serde(default = "one_f64")]
    pub top_p: f64,
    /// A completion stops after this many tokens if `</answer>` or `[EOS]` did not come first.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Rows decoded together while sampling (memory grows with it).
    #[serde(default = "default_rollout_batch")]
    pub rollout_batch: usize,
    /// Optimizer steps per RL step: the step's groups are split into this many mini-batches (the paper: 4).
    /// Must divide `prompts_per_step`.
    #[serde(default = "one")]
    pub mini_batches: usize,
    /// Passes over the step's mini-batches (PPO epochs; the paper: 1).
    #[serde(default = "one")]
    pub epochs: usize,
    /// Learning rate, constant after the warm-up.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// RL steps of linear warm-up from 0 (the paper: none).
    #[serde(default)]
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay (the paper: 0.01).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// AdamW betas (the paper: 0.9, 0.999).
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Global gradient-norm bound (0 disables clipping).
    #[serde(default = "one_f64")]
    pub grad_clip: f64,
    /// ε_low: the ratio is clipped below at 1 - clip_low.
    #[serde(default = "default_clip")]
    pub clip_low: f64,
    /// ε_high: the ratio is clipped above at 1 + clip_high.
    #[serde(default = "default_clip")]
    pub clip_high: f64,
    /// Dual clip c: for negative advantages the per-token loss is at most -c·A. `null` turns it off.
    #[serde(default = "default_dual_clip")]
    pub dual_clip: Option<f64>,
    /// β of the KL penalty to the input model; 0 skips the reference model's forward pass altogether.
    #[serde(default = "default_kl_coef")]
    pub kl_coef: f64,
    /// KL estimator: `k3` (verl's low_var_kl, clamped to ±10) or `k1`.
    #[serde(default)]
    pub kl: Kl,
    /// How per-token losses are averaged: `token-mean` (the paper's), `seq-mean-token-mean`,
    /// `seq-mean-token-sum`.
    #[serde(default)]
    pub loss_agg: Agg,
    /// Where π_old's log-probs come from: `sampler` (the log-probs and entropies the sampler computed while it
    /// drew each token, the same distribution at the same weights: no extra forward pass) or `recompute` (a
    /// forward pass over the rollouts before the updates, as verl does because its vLLM sampler's numerics
    /// differ from the trainer's; here the two agree to ~1e-5).
    #[serde(default)]
    pub old_logprobs: OldLogprobs,
    /// Divide each group's centred rewards by their std (+1e-6); false is Dr. GRPO's unnormalised form.
    #[serde(default = "yes")]
    pub normalize_std: bool,
    /// Name of the stage's reward entry whose score says whether a completion is VerifiedCorrect (1) or not.
    #[serde(default = "default_verified_reward")]
    pub verified_reward: String,
    /// Keep only prompts at the edge of the starting model's competence before RL starts (spec §8.5).
    #[serde(default)]
    pub edge_filter: Option<EdgeFilter>,
    /// Greedy validation on held-out problems.
    #[serde(default)]
    pub validation: Option<Validation>,
    /// Every N steps, this step's first group goes to `completions.jsonl` with its rewards (0: never).
    #[serde(default = "default_every")]
    pub log_completions_every: usize,
    /// A resumable checkpoint every N steps (0: only when stopped).
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
}

/// Before RL: sample `samples` completions of each of `candidates` prompts under the starting model and
/// keep the prompts whose verified pass@1 (c / samples) is at most `max_pass_at_1` while at least
/// `min_correct` completions are verified (pass@samples above zero).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeFilter {
    /// Prompts tried (the first ones of the seeded order; 0 = every prompt of the dataset).
    #[serde(default)]
    pub candidates: usize,
    /// Completions per candidate (the k of pass@k).
    #[serde(default = "default_filter_samples")]
    pub samples: usize,
    /// Keep a prompt only if at most this share of its completions are verified.
    #[serde(default = "default_max_pass")]
    pub max_pass_at_1: f64,
    /// Keep a prompt only if at least this many of its completions are verified (0: unsolved prompts are kept
    /// too, and only `max_pass_at_1` filters).
    #[serde(default = "one")]
    pub min_correct: usize,
}

/// Greedy decoding of held-out problems every `every` steps (and before the first and after the last).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// `<dataset>.jsonl` in the `data` input (e.g. a datagen eval set).
    pub dataset: String,
    /// Steps between validations (0: only before and after).
    #[serde(default = "default_every")]
    pub every: usize,
    /// At most this many problems of each op, in file order (0 = all).
    #[serde(default)]
    pub max_per_op: usize,
}

/// Where the loss's π_old log-probs come from (see [`RlConfig::old_logprobs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OldLogprobs {
    #[default]
    Sampler,
    Recompute,
}

/// [`KlEstimator`] for the config schema.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kl {
    K1,
    #[default]
    K3,
}

/// [`LossAgg`] for the config schema.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Agg {
    #[default]
    TokenMean,
    SeqMeanTokenMean,
    SeqMeanTokenSum,
}

fn default_dataset() -> String {
    "rl".into()
}
fn default_prompts_per_step() -> usize {
    16
}
fn default_group_size() -> usize {
    8
}
fn one() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_max_new_tokens() -> usize {
    320
}
fn default_rollout_batch() -> usize {
    256
}
fn default_lr() -> f64 {
    1e-4
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_clip() -> f64 {
    0.2
}
fn default_dual_clip() -> Option<f64> {
    Some(3.0)
}
fn default_kl_coef() -> f64 {
    0.001
}
fn default_verified_reward() -> String {
    "verified".into()
}
fn default_every() -> usize {
    10
}
fn default_filter_samples() -> usize {
    8
}
fn default_max_pass() -> f64 {
    0.5
}

impl RlConfig {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.steps.is_some() != self.prompts.is_some(),
            "config: give exactly one of `steps` and `prompts` (the RL budget)"
        );
        ensure!(
            self.total_steps() >= 1,
            "config: the budget is less than one step"
        );
        ensure!(
            self.token_budget != Some(0),
            "config `token_budget`: expected at least 1 token, got 0"
        );
        let positive = [
            ("prompts_per_step", self.prompts_per_step),
            ("group_size", self.group_size),
            ("max_new_tokens", self.max_new_tokens),
            ("rollout_batch", self.rollout_batch),
            ("mini_batches", self.mini_batches),
            ("epochs", self.epochs),
        ];
        for (name, v) in positive {
            ensure!(v >= 1, "config `{name}`: expected at least 1, got 0");
        }
        ensure!(
            self.group_size >= 2,
            "config `group_size` = {}: GRPO compares completions of the same prompt; expected at least 2",
            self.group_size
        );
        ensure!(
            self.prompts_per_step.is_multiple_of(self.mini_batches),
            "config `mini_batches` = {}: must divide `prompts_per_step` = {} (a mini-batch holds whole groups)",
            self.mini_batches,
            self.prompts_per_step
        );
        ensure!(
            self.temperature > 0.0,
            "config `temperature` = {}: expected > 0 (GRPO samples its rollouts)",
            self.temperature
        );
        ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "config `top_p` = {}: expected in (0, 1]",
            self.top_p
        );
        ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "config `lr` = {}: expected a positive number",
            self.lr
        );
        ensure!(
            self.clip_low > 0.0 && self.clip_low < 1.0,
            "config `clip_low` = {}: expected in (0, 1)",
            self.clip_low
        );
        ensure!(
            self.clip_high > 0.0,
            "config `clip_high` = {}: expected > 0",
            self.clip_high
        );
        if let Some(c) = self.dual_clip {
            ensure!(
                c > 1.0,
                "config `dual_clip` = {c}: expected > 1 (or null to turn it off)"
            );
        }
        ensure!(
            self.kl_coef >= 0.0,
            "config `kl_coef` = {}: expected >= 0",
            self.kl_coef
        );
        ensure!(
            self.weight_decay >= 0.0 && self.grad_clip >= 0.0,
            "config `weight_decay` and `grad_clip`: expected >= 0"
        );
        if let Some(f) = &self.edge_filter {
            ensure!(
                f.samples >= 1,
                "config `edge_filter.samples`: expected at least 1"
            );
            ensure!(
                (0.0..=1.0).contains(&f.max_pass_at_1),
                "config `edge_filter.max_pass_at_1` = {}: expected a share in [0, 1]",
                f.max_pass_at_1
            );
            ensure!(
                f.min_correct <= f.samples,
                "config `edge_filter.min_correct` = {}: more than `edge_filter.samples` = {}",
                f.min_correct,
                f.samples
            );
        }
        Ok(())
    }

    fn total_steps(&self) -> usize {
        match (self.steps, self.prompts) {
            (Some(s), _) => s,
            (None, Some(p)) => p / self.prompts_per_step.max(1),
            (None, None) => 0,
        }
    }

    fn loss_config(&self) -> PolicyLossConfig {
        PolicyLossConfig {
            clip_low: self.clip_low,
            clip_high: self.clip_high,
            dual_clip: self.dual_clip,
            kl_coef: self.kl_coef,
            kl: match self.kl {
                Kl::K1 => KlEstimator::K1,
                Kl::K3 => KlEstimator::K3,
            },
            agg: match self.loss_agg {
                Agg::TokenMean => LossAgg::TokenMean,
                Agg::SeqMeanTokenMean => LossAgg::SeqMeanTokenMean,
                Agg::SeqMeanTokenSum => LossAgg::SeqMeanTokenSum,
            },
            temperature: self.temperature,
        }
    }

    /// The trainer's schedule counts optimizer steps (see [`Trainer::without_data`]): constant `lr` after a
    /// linear warm-up.
    fn train_config(&self, seed: u64) -> TrainConfig {
        let updates = self.mini_batches * self.epochs;
        let total = (self.total_steps() * updates) as u64;
        TrainConfig {
            seq_len: 1,
            batch_size: 1,
            grad_accum: 1,
            token_budget: total,
            lr: self.lr,
            min_lr: self.lr,
            warmup_frac: (self.warmup_steps * updates) as f64 / total.max(1) as f64,
            weight_decay: self.weight_decay,
            beta1: self.betas[0],
            beta2: self.betas[1],
            eps: 1e-8,
            grad_clip: self.grad_clip,
            eval_every: 0,
            checkpoint_every: 0,
            seed,
            ..TrainConfig::default()
        }
    }
}

/// The stage.
pub struct RlGrpo;

impl Stage for RlGrpo {
    type Config = RlConfig;

    fn info() -> StageInfo {
        StageInfo::new(
            StageKind::RlOptimizer,
            "GRPO against the stage's reward plugins: group-normalised advantages, clipped and dual-clipped \
             ratio, KL to the input model, PPO mini-batches; edge-of-competence filter, validation, exact resume.",
        )
        .input("model", ArtifactKind::Model, "the starting policy, also the frozen KL reference")
        .input("data", ArtifactKind::Dataset, "a directory holding `<dataset>.jsonl` (and the validation set)")
        .output("model", ArtifactKind::Model, "model.safetensors, config.json, tokenizer.json, training.json")
        .output("report", ArtifactKind::Report, "report.json (settings, curves, validation, compute) and completions.jsonl")
        .devices(&["cpu", "cuda"])
        .resumable()
    }

    fn run(config: RlConfig, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        config.validate()?;
        struct Run<'a, 'c> {
            config: &'a RlConfig,
            ctx: &'a mut RunContext<'c>,
        }
        impl OnBackend for Run<'_, '_> {
            type Output = anyhow::Result<()>;
            fn run<B: Backend>(self, device: B::Device) -> Self::Output {
                rl::<Autodiff<B>>(self.config, self.ctx, device)
            }
        }
        let device: DeviceSpec = ctx.device().parse()?;
        device.check_available()?;
        device.run(Run {
            config: &config,
            ctx,
        })?
    }
}

stage_api::export_stage!(RlGrpo);

// ---- state -----------------------------------------------------------------------------------------

/// Everything besides the policy and its optimizer that an exact resume needs, saved inside the trainer's
/// checkpoint (so that the two are written, checksummed and swapped in together).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RlState {
    /// RL steps done.
    step: usize,
    /// SHA-256 of the reference (input) model's weights: a resume against another model is refused.
    reference: String,
    /// Indices into the prompt file of the prompts RL draws from (all of them, or the edge filter's).
    pool: Vec<usize>,
    /// Position in the seeded prompt order: epoch and index into that epoch's permutation of `pool`.
    epoch: u64,
    cursor: usize,
    /// The rollout sampler's RNG.
    rng: Rng,
    filter: Option<FilterReport>,
    curves: Vec<StepRecord>,
    validation: Vec<ValidationRecord>,
    completions: Vec<serde_json::Value>,
    compute: Compute,
}

const STATE_FILE: &str = "rl_state.json";

/// What the edge filter kept, per op.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FilterReport {
    candidates: usize,
    kept: usize,
    /// op -> (kept, dropped because too easy, dropped because never solved).
    per_op: BTreeMap<u32, FilterCounts>,
    seconds: f64,
    rollout_tokens: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct FilterCounts {
    kept: usize,
    too_easy: usize,
    unsolved: usize,
}

/// RL's cost, in tokens (spec §5). Generated and forward-only tokens cost a forward pass (2N FLOPs per
/// token for N parameters); an update token costs a forward and a backward pass (6N), like a token of
/// pre- or mid-training. `train_equivalent_tokens` is the sum in update-token units.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Compute {
    /// Prompt tokens prefilled for rollouts.
    prompt_tokens: u64,
    /// Tokens generated for rollouts.
    rollout_tokens: u64,
    /// Tokens forwarded for π_old and π_ref log-probs.
    logprob_tokens: u64,
    /// Tokens forwarded and backpropagated in updates (every epoch counted).
    update_tokens: u64,
}

impl Compute {
    fn train_equivalent_tokens(&self) -> u64 {
        self.update_tokens + (self.prompt_tokens + self.rollout_tokens + self.logprob_tokens) / 3
    }
    fn add(&mut self, o: &Compute) {
        self.prompt_tokens += o.prompt_tokens;
        self.rollout_tokens += o.rollout_tokens;
        self.logprob_tokens += o.logprob_tokens;
        self.update_tokens += o.update_tokens;
    }
}

/// One step's metrics, as the report's curves hold them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StepRecord {
    step: usize,
    /// Name -> value (the same names as the events, without the `rl/` prefix).
    metrics: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ValidationRecord {
    step: usize,
    verified: f64,
    per_op: BTreeMap<u32, f64>,
    problems: usize,
}

// ---- the stage ---------------------------------------------------------------------------------------

/// A prompt with what scoring it needs.
struct Prompt {
    record: Record,
    text: String,
    tokens: Vec<u32>,
}

fn load_prompts(path: &Path, tokenizer: &Tokenizer) -> anyhow::Result<Vec<Prompt>> {
    let records = read_paper_jsonl(path)?;
    ensure!(!records.is_empty(), "{}: no records", path.display());
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            ensure!(
                !record.solution.trim().is_empty(),
                "{} record {}: no gold solution (RL rewards compare against it; build the set with `gold = true`)",
                path.display(),
                i + 1
            );
            let text = record.prompt();
            let tokens = tokenizer.encode(&text)?;
            Ok(Prompt {
                record,
                text,
                tokens,
            })
        })
        .collect()
}

fn rl<B: AutodiffBackend>(
    config: &RlConfig,
    ctx: &mut RunContext<'_>,
    device: B::Device,
) -> anyhow::Result<()> {
    let stage_start = Instant::now();
    let seed = ctx.seed();
    let total_steps = config.total_steps();
    let finished = |state: &RlState| {
        state.step >= total_steps
            || config
                .token_budget
                .is_some_and(|b| state.compute.train_equivalent_tokens() >= b)
    };

    // ---- rewards: at least one that trains, and the one that says "verified"
    let rewards = ctx.rewards().to_vec();
    ensure!(
        !rewards.is_empty(),
        "this stage has no rewards: add e.g. `rewards = [{{ plugin = \"reward-process\" }}, {{ plugin = \
         \"reward-process\", name = \"verified\", weight = 0, config = {{ value = \"verified\" }} }}]`"
    );
    ensure!(
        rewards.iter().any(|r| r.weight != 0.0),
        "every reward of this stage has weight 0: nothing to learn from"
    );
    ensure!(
        rewards.iter().any(|r| r.name == config.verified_reward),
        "config `verified_reward` = {:?}: no reward of this stage has that name (rewards: {}); add \
         `{{ plugin = \"reward-process\", name = \"{}\", weight = 0, config = {{ value = \"verified\" }} }}`",
        config.verified_reward,
        rewards
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        config.verified_reward
    );

    // ---- the starting model, which is also the frozen reference
    let model_dir = ctx.input("model")?.to_path_buf();
    let tokenizer = Tokenizer::from_file(&model_dir.join("tokenizer.json"))?;
    let (model_config, reference) =
        lm::checkpoint::load_model::<B::InnerBackend>(&model_dir, &device)
            .with_context(|| format!("loading the input model from {}", model_dir.display()))?;
    let reference_sha = lm::checkpoint::sha256_file(&model_dir.join(lm::checkpoint::WEIGHTS_FILE))
        .with_context(|| format!("hashing the weights in {}", model_dir.display()))?
        .0;

    // ---- prompts and validation problems
    let data_dir = ctx.input("data")?.to_path_buf();
    let path = data_file(&data_dir, &config.dataset, "dataset")?;
    let prompts = load_prompts(&path, &tokenizer)?;
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    ensure!(
        longest + config.max_new_tokens <= model_config.max_position_embeddings,
        "config `max_new_tokens` = {}: with the longest prompt of {} ({longest} tokens) it exceeds the model's \
         max_position_embeddings = {}",
        config.max_new_tokens,
        path.display(),
        model_config.max_position_embeddings
    );
    let validation = match &config.validation {
        Some(v) => {
            let path = data_file(&data_dir, &v.dataset, "validation.dataset")?;
            Some(select_per_op(
                load_prompts(&path, &tokenizer)?,
                v.max_per_op,
            ))
        }
        None => None,
    };
    let loss_cfg = config.loss_config();
    let sampling = SampleConfig {
        max_new_tokens: config.max_new_tokens,
        temperature: config.temperature,
        top_p: config.top_p,
        ..SampleConfig::default()
    };
    let env = Env {
        config,
        ctx: &*ctx,
        tokenizer: &tokenizer,
        prompts: &prompts,
        sampling: &sampling,
    };

    // ---- resume, or start: the edge filter and the first validation
    let ckpt = env.ctx.ckpt_dir().join("policy");
    let checkpoint = if env.ctx.resuming() {
        Checkpoint::open(&ckpt).with_context(|| {
            format!(
                "{}: the checkpoint of the last attempt is unusable; rerun with `--force {}` to start this \
                 stage over",
                ckpt.display(),
                env.ctx.request().stage
            )
        })?
    } else {
        None
    };
    let (mut trainer, mut state) = match checkpoint {
        Some(checkpoint) => {
            let state_path = checkpoint.dir().join(STATE_FILE);
            let state: RlState = serde_json::from_str(
                &std::fs::read_to_string(&state_path)
                    .with_context(|| format!("reading {}", state_path.display()))?,
            )
            .with_context(|| format!("parsing {}", state_path.display()))?;
            ensure!(
                state.reference == reference_sha,
                "{}: this checkpoint was trained from another input model (weights sha256 {}, now {}); rerun \
                 with `--force {}`",
                ckpt.display(),
                state.reference,
                reference_sha,
                env.ctx.request().stage
            );
            let trainer = Trainer::<B>::resume_without_data(checkpoint, device.clone())?;
            let updates = state.step * config.mini_batches * config.epochs;
            ensure!(
                trainer.state.step == updates,
                "{}: the policy took {} optimizer steps but the RL state records {} RL steps ({updates} \
                 updates); rerun with `--force {}`",
                ckpt.display(),
                trainer.state.step,
                state.step,
                env.ctx.request().stage
            );
            if finished(&state) {
                env.ctx.log(format!(
                    "the checkpoint has finished its {} steps: nothing left to train, writing the outputs",
                    state.step
                ));
            } else {
                env.ctx
                    .log(format!("resuming at step {} of {total_steps}", state.step));
            }
            (trainer, state)
        }
        None => {
            if env.ctx.resuming() {
                env.ctx
                    .log("the last attempt ended before its first checkpoint; starting over");
            }
            let policy = lm::checkpoint::load_model::<B>(&model_dir, &device)?.1;
            let trainer = Trainer::<B>::without_data(
                policy,
                model_config.clone(),
                config.train_config(seed),
                device.clone(),
            );
            let mut state = RlState {
                step: 0,
                reference: reference_sha.clone(),
                pool: (0..prompts.len()).collect(),
                epoch: 0,
                cursor: 0,
                rng: Rng::new(seed ^ 0x005e_ed0f_a110_u64),
                filter: None,
                curves: vec![],
                validation: vec![],
                completions: vec![],
                compute: Compute::default(),
            };
            if let Some(f) = &config.edge_filter {
                let (pool, report) = env.edge_filter(&reference, f, seed)?;
                ensure!(
                    !pool.is_empty(),
                    "the edge filter kept none of {} prompts (pass@1 at most {}, at least {} of {} verified): \
                     the starting model solves all or none of them; widen the filter or change `dataset`",
                    report.candidates,
                    f.max_pass_at_1,
                    f.min_correct,
                    f.samples
                );
                state.pool = pool;
                state.filter = Some(report);
            }
            if let Some(v) = &validation {
                let rec = env.validate(&reference, v, 0)?;
                state.validation.push(rec);
            }
            (trainer, state)
        }
    };
    env.ctx.log(format!(
        "{} parameters; {} prompts in the pool; {} steps of {} prompts x {} completions, {} mini-batch(es) x {} \
         epoch(s)",
        model_config.num_params(),
        state.pool.len(),
        total_steps,
        config.prompts_per_step,
        config.group_size,
        config.mini_batches,
        config.epochs
    ));

    // ---- the RL loop
    while !finished(&state) {
        if env.ctx.should_stop() {
            save(&trainer, &state, &ckpt)?;
            env.ctx.checkpointed(state.step as u64);
            return Err(stage_api::Interrupted.into());
        }
        // A stop request during the rollouts ends the step before anything changed but the prompt cursor
        // and the sampler's RNG: put those back, so that the checkpoint is the state after the last step.
        let before = (state.epoch, state.cursor, state.rng.clone());
        let record = match env.step(&mut trainer, &reference, &loss_cfg, &mut state, seed) {
            Err(e) if e.is::<stage_api::Interrupted>() => {
                (state.epoch, state.cursor, state.rng) = before;
                save(&trainer, &state, &ckpt)?;
                env.ctx.checkpointed(state.step as u64);
                return Err(e);
            }
            r => r?,
        };
        state.step += 1;
        let step = state.step;
        for (name, value) in &record.metrics {
            env.ctx.metric(step as u64, &format!("rl/{name}"), *value);
        }
        env.ctx.progress(step as u64, total_steps as u64);
        let m = |k: &str| record.metrics.get(k).copied().unwrap_or(f64::NAN);
        env.ctx.log(format!(
            "step {step}/{total_steps}: reward {:.3} verified pass@1 {:.3} pass@{} {:.3} kl {:.4} entropy {:.3} \
             length {:.0} ({:.2} s: sample {:.2}, score {:.2}, logprobs {:.2}, update {:.2})",
            m("reward/mean"),
            m("verified/pass@1"),
            config.group_size,
            m("verified/pass@n"),
            m("kl"),
            m("entropy"),
            m("response_length/mean"),
            m("time/step_s"),
            m("time/sample_s"),
            m("time/score_s"),
            m("time/logprob_s"),
            m("time/update_s"),
        ));
        state.curves.push(record);
        let last = finished(&state);
        if last && step < total_steps {
            env.ctx.log(format!(
                "the compute budget of {} tokens is reached after step {step}: {} train-equivalent tokens",
                config.token_budget.unwrap_or_default(),
                state.compute.train_equivalent_tokens()
            ));
        }
        if let (Some(problems), Some(v)) = (&validation, &config.validation)
            && ((v.every > 0 && step.is_multiple_of(v.every)) || last)
        {
            let rec = env.validate(&trainer.model.valid(), problems, step)?;
            state.validation.push(rec);
        }
        if (config.checkpoint_every > 0 && step.is_multiple_of(config.checkpoint_every)) || last {
            save(&trainer, &state, &ckpt)?;
            env.ctx.checkpointed(step as u64);
        }
    }

    // ---- outputs
    let out = env.ctx.output("model")?.to_path_buf();
    lm::checkpoint::save_model(&out, &trainer.model, &trainer.model_config)?;
    tokenizer.save(&out.join("tokenizer.json"))?;
    let base_tokens = train_stage::previous_total_tokens(&model_dir)?;
    let rl_tokens = state.compute.train_equivalent_tokens();
    let training = serde_json::json!({
        "stage": "rl-grpo",
        "steps": state.step,
        "optimizer_steps": trainer.state.step,
        "tokens_seen": rl_tokens,
        "base_tokens_seen": base_tokens,
        "total_tokens_seen": base_tokens + rl_tokens,
        "compute": state.compute,
        "parameters": trainer.model_config.num_params(),
        "dataset": config.dataset,
    });
    let path = out.join(train_stage::TRAINING_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&training)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    lm::checkpoint::write_sums(&out)?;

    let report_dir = env.ctx.output("report")?.to_path_buf();
    let completions = report_dir.join("completions.jsonl");
    let mut text = String::new();
    for c in &state.completions {
        text.push_str(&serde_json::to_string(c)?);
        text.push('\n');
    }
    std::fs::write(&completions, text)
        .with_context(|| format!("writing {}", completions.display()))?;
    let report = serde_json::json!({
        "settings": config,
        "rewards": rewards,
        "model_parameters": model_config.num_params(),
        "pool": state.pool.len(),
        "edge_filter": state.filter,
        "validation": state.validation,
        "curves": state.curves,
        "compute": {
            "prompt_tokens": state.compute.prompt_tokens,
            "rollout_tokens": state.compute.rollout_tokens,
            "logprob_tokens": state.compute.logprob_tokens,
            "update_tokens": state.compute.update_tokens,
            "train_equivalent_tokens": rl_tokens,
            "base_tokens_seen": base_tokens,
        },
        "time": time_summary(&state.curves),
        "stage_seconds": stage_start.elapsed().as_secs_f64(),
    });
    let path = report_dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    if let (Some(first), Some(last)) = (state.validation.first(), state.validation.last()) {
        env.ctx.log(format!(
            "validation verified accuracy {:.3} at step {} -> {:.3} at step {}",
            first.verified, first.step, last.verified, last.step
        ));
    }
    env.ctx.log(format!(
        "{} RL steps, {rl_tokens} train-equivalent tokens ({} generated)",
        state.step, state.compute.rollout_tokens
    ));
    Ok(())
}

fn data_file(dir: &Path, name: &str, field: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.jsonl"));
    ensure!(
        path.exists(),
        "config `{field}` = {name:?}: {} does not exist",
        path.display()
    );
    Ok(path)
}

/// Keeps at most `max_per_op` prompts of each op, in file order (0 keeps all).
fn select_per_op(prompts: Vec<Prompt>, max_per_op: usize) -> Vec<Prompt> {
    if max_per_op == 0 {
        return prompts;
    }
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    prompts
        .into_iter()
        .filter(|p| {
            let n = seen.entry(p.record.op).or_default();
            *n += 1;
            *n <= max_per_op
        })
        .collect()
}

/// Writes the policy, its optimizer and the RL state as one checkpoint.
fn save<B: AutodiffBackend>(
    trainer: &Trainer<B>,
    state: &RlState,
    dir: &Path,
) -> anyhow::Result<()> {
    let json = serde_json::to_string(state)? + "\n";
    trainer.save_with(dir, &[(STATE_FILE, json.as_bytes())])
}

/// Mean seconds per step of each part, and the step time over sampling time.
fn time_summary(curves: &[StepRecord]) -> serde_json::Value {
    let mean = |k: &str| {
        let v: Vec<f64> = curves
            .iter()
            .filter_map(|c| c.metrics.get(k).copied())
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (step, sample) = (mean("time/step_s"), mean("time/sample_s"));
    serde_json::json!({
        "step_s": step,
        "sample_s": sample,
        "score_s": mean("time/score_s"),
        "logprob_s": mean("time/logprob_s"),
        "update_s": mean("time/update_s"),
        "step_over_sampling": step / sample,
        "rollout_tokens_per_s": mean("rollout_tokens_per_s"),
    })
}

/// What every part of a step reads.
struct Env<'a, 'c> {
    config: &'a RlConfig,
    ctx: &'a RunContext<'c>,
    tokenizer: &'a Tokenizer,
    prompts: &'a [Prompt],
    sampling: &'a SampleConfig,
}

/// Completions of some prompts, decoded and scored.
struct Rollouts {
    /// Per completion: the prompt index, its tokens, its text and how it ended.
    prompt: Vec<usize>,
    samples: Vec<lm::sample::Sample>,
    texts: Vec<String>,
    scores: Vec<RewardScores>,
    sample_s: f64,
    score_s: f64,
}

impl Env<'_, '_> {
    /// Samples `n` completions of each prompt in `which` with `model` under `cfg` and scores them.
    fn rollouts<B: Backend>(
        &self,
        model: &Qwen2<B>,
        which: &[usize],
        n: usize,
        cfg: &SampleConfig,
        rng: &mut Rng,
        stoppable: bool,
    ) -> anyhow::Result<Rollouts> {
        let t0 = Instant::now();
        let rows: Vec<usize> = which
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p, n))
            .collect();
        let mut samples = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.config.rollout_batch) {
            if stoppable {
                self.ctx.check_stop()?;
            }
            let batch: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&p| self.prompts[p].tokens.clone())
                .collect();
            samples.extend(lm::sample::generate(model, &batch, cfg, rng));
        }
        let sample_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let texts = samples
            .iter()
            .map(|s| self.tokenizer.decode(&s.tokens))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let batch: Vec<RewardSample> = rows
            .iter()
            .zip(&texts)
            .enumerate()
            .map(|(i, (&p, text))| {
                let r = &self.prompts[p].record;
                RewardSample {
                    prompt: self.prompts[p].text.clone(),
                    completion: text.clone(),
                    // The gold solution (what the task's rewards verify against) and its final answer
                    // (for a reward that reads the answer alone).
                    reference: serde_json::json!({
                        "solution": r.solution,
                        "answer": task::text::split_answer(&r.solution).1,
                    }),
                    meta: serde_json::json!({ "id": r.id, "op": r.op, "group": i / n }),
                }
            })
            .collect();
        let scores = self.ctx.score(&batch)?;
        for s in &scores {
            if let Some((i, v)) = s
                .scores
                .iter()
                .enumerate()
                .find_map(|(i, v)| v.filter(|v| !v.is_finite()).map(|v| (i, v)))
            {
                bail!(
                    "reward `{}` returned {v} for sample {i}: a reward must be a finite number (or null where \
                     it does not apply)",
                    s.name
                );
            }
        }
        Ok(Rollouts {
            prompt: rows,
            samples,
            texts,
            scores,
            sample_s,
            score_s: t1.elapsed().as_secs_f64(),
        })
    }

    /// 1 / 0 per completion from the `verified_reward` entry (a missing score counts as not verified).
    fn verified(&self, r: &Rollouts) -> Vec<bool> {
        let s = r
            .scores
            .iter()
            .find(|s| s.name == self.config.verified_reward)
            .expect("checked at the start: the verified reward is one of the stage's");
        s.scores.iter().map(|v| v.unwrap_or(0.0) >= 0.5).collect()
    }

    /// The edge-of-competence filter: the prompt indices kept, in file order, and the counts.
    fn edge_filter<B: Backend>(
        &self,
        model: &Qwen2<B>,
        f: &EdgeFilter,
        seed: u64,
    ) -> anyhow::Result<(Vec<usize>, FilterReport)> {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..self.prompts.len()).collect();
        Rng::new(seed ^ 0xed9e).shuffle(&mut order);
        let n = if f.candidates == 0 {
            order.len()
        } else {
            f.candidates.min(order.len())
        };
        let mut candidates = order[..n].to_vec();
        candidates.sort_unstable();
        self.ctx.log(format!(
            "edge filter: {} completions of each of {n} candidate prompts",
            f.samples
        ));
        let mut rng = Rng::new(seed ^ 0xf117e5);
        let mut kept = vec![];
        let mut report = FilterReport {
            candidates: n,
            ..FilterReport::default()
        };
        // In pieces, so that a stop request is seen and progress shows.
        let per_chunk = (self.config.rollout_batch / f.samples).max(1);
        for (ci, chunk) in candidates.chunks(per_chunk).enumerate() {
            let r = self.rollouts(model, chunk, f.samples, self.sampling, &mut rng, true)?;
            report.rollout_tokens += r.samples.iter().map(|s| s.tokens.len() as u64).sum::<u64>();
            let verified = self.verified(&r);
            for (j, &p) in chunk.iter().enumerate() {
                let c = verified[j * f.samples..(j + 1) * f.samples]
                    .iter()
                    .filter(|&&v| v)
                    .count();
                let counts = report.per_op.entry(self.prompts[p].record.op).or_default();
                if c < f.min_correct {
                    counts.unsolved += 1;
                } else if c as f64 / f.samples as f64 > f.max_pass_at_1 {
                    counts.too_easy += 1;
                } else {
                    counts.kept += 1;
                    kept.push(p);
                }
            }
            self.ctx.log(format!(
                "edge filter: {} of {} candidates tried, {} kept",
                ((ci + 1) * per_chunk).min(n),
                n,
                kept.len()
            ));
        }
        report.kept = kept.len();
        report.seconds = t0.elapsed().as_secs_f64();
        for (op, c) in &report.per_op {
            self.ctx.log(format!(
                "edge filter op {op}: kept {}, too easy {}, never verified {}",
                c.kept, c.too_easy, c.unsolved
            ));
        }
        Ok((kept, report))
    }

    /// Greedy decoding of the validation problems, scored; verified accuracy per op as events.
    fn validate<B: Backend>(
        &self,
        model: &Qwen2<B>,
        problems: &[Prompt],
        step: usize,
    ) -> anyhow::Result<ValidationRecord> {
        // The validation problems are not `self.prompts`; score them through an `Env` over them.
        let env = Env {
            prompts: problems,
            ..*self
        };
        let greedy = SampleConfig::greedy(self.config.max_new_tokens);
        let all: Vec<usize> = (0..problems.len()).collect();
        // Not stoppable: a few seconds of greedy decoding, and a checkpoint after a step must hold its
        // validation.
        let r = env.rollouts(model, &all, 1, &greedy, &mut Rng::new(0), false)?;
        let verified = env.verified(&r);
        let mut per_op: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for (p, v) in problems.iter().zip(&verified) {
            let e = per_op.entry(p.record.op).or_default();
            e.0 += *v as usize;
            e.1 += 1;
        }
        let per_op: BTreeMap<u32, f64> = per_op
            .into_iter()
            .map(|(op, (c, n))| (op, c as f64 / n as f64))
            .collect();
        let overall = verified.iter().filter(|&&v| v).count() as f64 / verified.len().max(1) as f64;
        self.ctx.metric(step as u64, "val/verified", overall);
        for (op, acc) in &per_op {
            self.ctx
                .metric(step as u64, &format!("val/op{op}/verified"), *acc);
        }
        let ops: Vec<String> = per_op
            .iter()
            .map(|(op, a)| format!("op {op} {a:.3}"))
            .collect();
        self.ctx.log(format!(
            "validation at step {step}: verified {overall:.3} ({})",
            ops.join(", ")
        ));
        Ok(ValidationRecord {
            step,
            verified: overall,
            per_op,
            problems: problems.len(),
        })
    }

    /// The next `prompts_per_step` prompts of the seeded order, moving the cursor (epoch by epoch).
    fn draw(&self, state: &mut RlState, seed: u64) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.config.prompts_per_step);
        let mut order = epoch_order(&state.pool, seed, state.epoch);
        while out.len() < self.config.prompts_per_step {
            if state.cursor == order.len() {
                state.epoch += 1;
                state.cursor = 0;
                order = epoch_order(&state.pool, seed, state.epoch);
            }
            out.push(order[state.cursor]);
            state.cursor += 1;
        }
        out
    }

    /// One GRPO step: rollouts, rewards, advantages, log-probs, updates. Returns its metrics.
    fn step<B: AutodiffBackend>(
        &self,
        trainer: &mut Trainer<B>,
        reference: &Qwen2<B::InnerBackend>,
        loss_cfg: &PolicyLossConfig,
        state: &mut RlState,
        seed: u64,
    ) -> anyhow::Result<StepRecord> {
        let c = self.config;
        let t0 = Instant::now();
        let which = self.draw(state, seed);
        let policy = trainer.model.valid();
        let r = self.rollouts(
            &policy,
            &which,
            c.group_size,
            self.sampling,
            &mut state.rng,
            true,
        )?;
        let mut m: BTreeMap<String, f64> = BTreeMap::new();

        // ---- rewards and advantages
        let n = r.samples.len();
        for s in &r.scores {
            let v: Vec<f64> = s.scores.iter().flatten().map(|&x| x as f64).collect();
            let (mean, std) = mean_std(&v);
            m.insert(format!("reward/{}/mean", s.name), mean);
            m.insert(format!("reward/{}/std", s.name), std);
        }
        let combined = combine_rewards(&r.scores, n);
        let (mean, std) = mean_std(&combined.iter().map(|&x| x as f64).collect::<Vec<_>>());
        m.insert("reward/mean".into(), mean);
        m.insert("reward/std".into(), std);
        let g = c.group_size;
        let flat_groups = combined
            .chunks(g)
            .filter(|grp| grp.iter().all(|&x| x == grp[0]))
            .count();
        m.insert(
            "groups_all_equal".into(),
            flat_groups as f64 / which.len() as f64,
        );
        let advantages = lm::grpo::group_advantages(&combined, g, c.normalize_std);
        let verified = self.verified(&r);
        m.insert(
            "verified/pass@1".into(),
            verified.iter().filter(|&&v| v).count() as f64 / n as f64,
        );
        m.insert(
            "verified/pass@n".into(),
            verified
                .chunks(g)
                .filter(|grp| grp.iter().any(|&v| v))
                .count() as f64
                / which.len() as f64,
        );
        let lengths: Vec<f64> = r.samples.iter().map(|s| s.tokens.len() as f64).collect();
        m.insert("response_length/mean".into(), mean_std(&lengths).0);
        m.insert(
            "response_length/max".into(),
            lengths.iter().copied().fold(0.0, f64::max),
        );
        m.insert(
            "response_length/clip_frac".into(),
            r.samples
                .iter()
                .filter(|s| s.finish == Finish::Length)
                .count() as f64
                / n as f64,
        );

        // ---- completions worth keeping: this step's first group
        if c.log_completions_every > 0 && (state.step + 1).is_multiple_of(c.log_completions_every) {
            for i in 0..g {
                let p = &self.prompts[r.prompt[i]].record;
                let rewards: BTreeMap<&str, Option<f32>> = r
                    .scores
                    .iter()
                    .map(|s| (s.name.as_str(), s.scores[i]))
                    .collect();
                let line = serde_json::json!({
                    "step": state.step + 1, "id": p.id, "op": p.op, "completion": r.texts[i],
                    "rewards": rewards, "reward": combined[i], "advantage": advantages[i],
                });
                self.ctx.sample(state.step as u64 + 1, line.clone());
                state.completions.push(line);
            }
        }

        // ---- π_old (and π_ref) log-probs of every mini-batch, before any update
        let t2 = Instant::now();
        let per_mb = which.len() / c.mini_batches * g;
        let mut mbs: Vec<PolicyBatch> = vec![];
        let mut compute = Compute {
            prompt_tokens: which
                .iter()
                .map(|&p| self.prompts[p].tokens.len() as u64)
                .sum::<u64>()
                * g as u64,
            rollout_tokens: lengths.iter().sum::<f64>() as u64,
            ..Compute::default()
        };
        let (mut entropy_sum, mut mask_sum) = (0.0f64, 0.0f64);
        for start in (0..n).step_by(per_mb) {
            let rows: Vec<usize> = (start..start + per_mb).collect();
            let batch = self.rollout_batch(&r, &rows);
            let old = match c.old_logprobs {
                OldLogprobs::Sampler => self.sampled_logprobs(&r, &rows, &batch),
                OldLogprobs::Recompute => lm::grpo::token_logprobs(&policy, &batch, c.temperature),
            };
            let ref_logp = (c.kl_coef > 0.0)
                .then(|| lm::grpo::token_logprobs(reference, &batch, c.temperature).logp);
            let forwarded = (batch.rows * batch.seq_len) as u64;
            let passes =
                (c.old_logprobs == OldLogprobs::Recompute) as u64 + ref_logp.is_some() as u64;
            compute.logprob_tokens += forwarded * passes;
            for (e, w) in old.entropy.iter().zip(&batch.weights) {
                entropy_sum += (*e * *w) as f64;
                mask_sum += *w as f64;
            }
            mbs.push(PolicyBatch {
                advantages: rows.iter().map(|&i| advantages[i]).collect(),
                old_logp: old.logp,
                ref_logp,
                batch,
            });
        }
        m.insert("entropy".into(), entropy_sum / mask_sum.max(1.0));
        let logprob_s = t2.elapsed().as_secs_f64();

        // ---- updates
        let t3 = Instant::now();
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        let mut updates = 0usize;
        for _ in 0..c.epochs {
            for pb in &mbs {
                let (s, l) = trainer.policy_step(pb, loss_cfg);
                s.check_finite()?;
                updates += 1;
                compute.update_tokens += (pb.batch.rows * pb.batch.seq_len) as u64;
                for (k, v) in [
                    ("loss", s.loss),
                    ("grad_norm", s.grad_norm),
                    ("lr", s.lr),
                    ("pg_loss", l.pg_loss),
                    ("kl", l.kl),
                    ("clip_frac/low", l.clip_low_frac),
                    ("clip_frac/high", l.clip_high_frac),
                    ("clip_frac/dual", l.dual_clip_frac),
                    ("ratio/mean", l.ratio_mean),
                ] {
                    *sums.entry(k).or_default() += v;
                }
            }
        }
        for (k, v) in sums {
            m.insert(k.into(), v / updates as f64);
        }
        let update_s = t3.elapsed().as_secs_f64();
        state.compute.add(&compute);
        m.insert(
            "tokens/train_equivalent".into(),
            state.compute.train_equivalent_tokens() as f64,
        );
        m.insert("time/sample_s".into(), r.sample_s);
        m.insert("time/score_s".into(), r.score_s);
        m.insert("time/logprob_s".into(), logprob_s);
        m.insert("time/update_s".into(), update_s);
        m.insert("time/step_s".into(), t0.elapsed().as_secs_f64());
        m.insert(
            "rollout_tokens_per_s".into(),
            compute.rollout_tokens as f64 / r.sample_s.max(1e-9),
        );
        Ok(StepRecord {
            step: state.step + 1,
            metrics: m,
        })
    }

    /// π_old's log-probs and entropies as the sampler computed them, laid out like `batch` (the rows `rows` of
    /// [`Self::rollout_batch`]): the completion's token j of a prompt of length p is the target at p - 1 + j.
    fn sampled_logprobs(
        &self,
        r: &Rollouts,
        rows: &[usize],
        batch: &Batch,
    ) -> lm::grpo::TokenLogprobs {
        let n = batch.rows * batch.seq_len;
        let (mut logp, mut entropy) = (vec![0.0f32; n], vec![0.0f32; n]);
        for (row, &i) in rows.iter().enumerate() {
            let start = row * batch.seq_len + self.prompts[r.prompt[i]].tokens.len() - 1;
            let s = &r.samples[i];
            logp[start..start + s.logprobs.len()].copy_from_slice(&s.logprobs);
            entropy[start..start + s.entropy.len()].copy_from_slice(&s.entropy);
        }
        lm::grpo::TokenLogprobs { logp, entropy }
    }

    /// The rows `rows` of the rollouts as a training batch: `prompt ++ completion`, right-padded to the
    /// longest; the response mask is 1 where the target is a completion token.
    fn rollout_batch(&self, r: &Rollouts, rows: &[usize]) -> Batch {
        let seqs: Vec<(usize, Vec<u32>)> = rows
            .iter()
            .map(|&i| {
                let p = &self.prompts[r.prompt[i]].tokens;
                let mut s = p.clone();
                s.extend_from_slice(&r.samples[i].tokens);
                (p.len(), s)
            })
            .collect();
        let seq_len = seqs
            .iter()
            .map(|(_, s)| s.len() - 1)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut b = Batch {
            rows: rows.len(),
            seq_len,
            inputs: Vec::with_capacity(rows.len() * seq_len),
            targets: Vec::with_capacity(rows.len() * seq_len),
            weights: Vec::with_capacity(rows.len() * seq_len),
        };
        for (prompt_len, s) in &seqs {
            for t in 0..seq_len {
                b.inputs.push(*s.get(t).unwrap_or(&PAD_ID) as i32);
                b.targets.push(*s.get(t + 1).unwrap_or(&PAD_ID) as i32);
                b.weights.push(if t + 1 >= *prompt_len && t + 1 < s.len() {
                    1.0
                } else {
                    0.0
                });
            }
        }
        b
    }
}

/// The permutation of `pool` for `epoch`: seeded by the stage seed and the epoch alone, so that a resume
/// rebuilds it from (epoch, cursor).
fn epoch_order(pool: &[usize], seed: u64, epoch: u64) -> Vec<usize> {
    let mut order = pool.to_vec();
    Rng::new(seed ^ 0x0bde_0000 ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)).shuffle(&mut order);
    order
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}
