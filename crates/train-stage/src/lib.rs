//! The body of the `pretrain` and `midtrain` stage plugins (spec §4, §5): read a corpus that `datagen`
//! wrote, turn it into the paper's training text, pack it, and train a Qwen2 with `lm::Trainer`, emitting
//! progress and metrics and checkpointing so that a killed stage resumes where it stopped.
//!
//! The two plugins differ only in where the tokenizer and the starting weights come from: pre-training
//! trains a tokenizer on its corpus and starts from a seeded random init; mid-training continues from the
//! model (and tokenizer) of its `model` input with a fresh optimizer and its own schedule. Both report the
//! tokens they trained on, and mid-training also the running total, so that mid-training and RL compute
//! can be matched as the paper does.
//!
//! Output `model/`: `model.safetensors`, `config.json`, `tokenizer.json` (Hugging Face layout) and
//! `training.json` (tokens seen, steps, final losses, the settings).

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use lm::checkpoint::{load_model, save_model};
use lm::data::{LossOn, PackedData, Packing};
use lm::device::OnBackend;
use lm::tokenizer::{Tokenizer, TokenizerKind};
use lm::train::{TrainConfig, TrainEvent, Trainer};
use lm::{DeviceSpec, ModelConfig, Qwen2};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stage_api::{ArtifactKind, RunContext, StageInfo, StageKind};
use task::dataset::read_paper_jsonl;

/// Where the file `training.json` records what a training stage did.
pub const TRAINING_FILE: &str = "training.json";

/// Pre-training from scratch.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The corpus: `<dataset>.jsonl` in the `data` input.
    #[serde(default = "pretrain_dataset")]
    pub dataset: String,
    /// Records taken from the end of the corpus for the held-out loss (never trained on).
    #[serde(default = "default_held_out")]
    pub held_out: usize,
    /// Tokenizer trained on the corpus: `word` (whole words and numbers, punctuation split), `word+names`
    /// (`word`, with each multi-word name of the task as one token: the learnability recipe's, which binds an
    /// item to its place in 3 tokens instead of 5-7) or `bpe:N` (byte-level BPE with N tokens; the paper's is
    /// ~2,200).
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// More datasets of the `data` input whose texts the tokenizer learns from, without the model training on
    /// them: a context the model never sees in pre-training still gets its words as tokens (the paper builds
    /// one tokenizer over all its data), so that a later stage can train or evaluate on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokenizer_datasets: Vec<String>,
    /// Other corpora of the `data` input mixed into this one, each a share of the training records (the
    /// paper's long-tail context exposure: 0.1 %, 1 % or 10 % of pre-training from a corpus of its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mix: Vec<Replay>,
    /// Model shape: `tiny-0.4m` (the learnability recipe's), `tiny-1m`, `bench-3m`, `small-10m` or
    /// `paper-100m` (the vocabulary comes from the tokenizer).
    #[serde(default = "default_model")]
    pub model: String,
    /// The optimisation.
    #[serde(default)]
    pub train: TrainSettings,
}

/// Continued pre-training of an existing model on another corpus.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MidtrainConfig {
    /// The corpus: `<dataset>.jsonl` in the `data` input.
    #[serde(default = "midtrain_dataset")]
    pub dataset: String,
    /// Records taken from the end of the corpus for the held-out loss (never trained on).
    #[serde(default = "default_held_out")]
    pub held_out: usize,
    /// Replay of another corpus of the `data` input (the pre-training one) mixed into this one, so that
    /// mid-training keeps what pre-training taught (the paper's mid-training mixture is 20 % op 2-10, its
    /// pre-training range). Unset: the corpus alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
    /// The optimisation (a fresh optimizer and schedule).
    #[serde(default)]
    pub train: TrainSettings,
}

/// Records of another corpus mixed into a training corpus (mid-training's replay, pre-training's `mix`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// The corpus replayed: `<dataset>.jsonl` in the `data` input (its first records: what pre-training
    /// trained on first).
    pub dataset: String,
    /// Share of the training records that come from it, in [0, 1) (all shares together below 1).
    pub fraction: f64,
}

/// Optimisation settings shared by both stages. The defaults are the learnability recipe's (op 2-4 of the
/// `cpu` task preset learnt on 2 CPU cores in under 15 minutes: see `pipelines/learnability.toml`), with a
/// token budget of about what it trains on in that time.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Tokens per packed block.
    pub seq_len: usize,
    /// Blocks per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Stop after this many training tokens (whole steps). With `max_minutes`, the most the schedule may
    /// grow to.
    pub token_budget: u64,
    /// A wall-clock budget: minutes from the stage's start (reading the corpus and training the tokenizer
    /// count) to the end of training. The cosine schedule is sized to fit from the speed of the first steps
    /// (at most `token_budget`), so the number of steps depends on the machine: `training.json` records it,
    /// and a `token_budget` of that many steps reruns the same schedule reproducibly. Unset: the token budget
    /// alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_minutes: Option<f64>,
    /// Peak learning rate, reached after the warm-up.
    pub lr: f64,
    /// The cosine schedule ends here.
    pub min_lr: f64,
    /// Share of the steps spent warming up linearly.
    pub warmup_frac: f64,
    /// AdamW weight decay (matrices only).
    pub weight_decay: f64,
    /// AdamW beta1.
    pub beta1: f64,
    /// AdamW beta2.
    pub beta2: f64,
    /// Global gradient-norm bound; 0 disables clipping.
    pub grad_clip: f64,
    /// Which tokens the loss counts: `all` (the paper) or `solution` (solution and answer only, which is
    /// what lets a tiny model learn on a CPU, see learnability.md).
    pub loss_on: LossOnSetting,
    /// How documents are laid into blocks: `whole` (documents bin-packed whole, best-fit decreasing, the rest
    /// of a block is padding, so no problem is cut from its solution) or `stream` (our first layout: one
    /// stream cut every `seq_len` tokens).
    pub packing: PackingSetting,
    /// Keep attention inside each document of a block (`false`: a token sees every earlier token of its
    /// block, as in the paper's packing). Generation always sees one document.
    pub document_mask: bool,
    /// Held-out loss every N steps (0: only at the end).
    pub eval_every: usize,
    /// Blocks of held-out data per evaluation.
    pub eval_blocks: usize,
    /// Resumable checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Replicas on threads, each taking an equal share of every micro-batch (must divide `batch_size`);
    /// gradients are summed in a fixed order. On CPU each replica runs on its own share of the threads (2 = one
    /// per core on 2 cores: the fastest for small models); results depend on it, never on the thread count.
    pub data_parallel: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            seq_len: 512,
            batch_size: 2,
            grad_accum: 1,
            token_budget: 20_000_000,
            max_minutes: None,
            lr: 1.4e-3,
            min_lr: 1.4e-4,
            warmup_frac: 0.03,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            loss_on: LossOnSetting::Solution,
            packing: PackingSetting::Whole,
            document_mask: true,
            eval_every: 1000,
            eval_blocks: 8,
            checkpoint_every: 1000,
            data_parallel: 2,
        }
    }
}

/// How documents are laid into blocks.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PackingSetting {
    /// Whole documents per block, padded.
    Whole,
    /// One stream cut every `seq_len` tokens (our first layout).
    Stream,
}

/// Which tokens count in the loss.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LossOnSetting {
    /// Every token.
    All,
    /// The solution and answer tokens only.
    Solution,
}

fn pretrain_dataset() -> String {
    "pretrain".into()
}
fn midtrain_dataset() -> String {
    "midtrain".into()
}
fn default_held_out() -> usize {
    200
}
fn default_tokenizer() -> String {
    "word+names".into()
}
fn default_model() -> String {
    "tiny-0.4m".into()
}

impl TrainSettings {
    fn to_train_config(&self, seed: u64) -> anyhow::Result<TrainConfig> {
        ensure!(
            self.seq_len >= 8,
            "config `train.seq_len`: expected at least 8, got {}",
            self.seq_len
        );
        ensure!(
            self.batch_size >= 1 && self.grad_accum >= 1,
            "config `train.batch_size` and `train.grad_accum`: expected at least 1"
        );
        ensure!(
            self.data_parallel >= 1 && self.batch_size.is_multiple_of(self.data_parallel),
            "config `train.data_parallel` = {}: expected a divisor of `train.batch_size` = {}",
            self.data_parallel,
            self.batch_size
        );
        let per_step = (self.seq_len * self.batch_size * self.grad_accum) as u64;
        ensure!(
            self.token_budget >= per_step,
            "config `train.token_budget` = {}: less than one step ({per_step} tokens = seq_len x batch_size x grad_accum)",
            self.token_budget
        );
        ensure!(
            self.lr > 0.0 && self.min_lr >= 0.0 && self.min_lr <= self.lr,
            "config `train.lr`/`train.min_lr`: expected 0 <= min_lr <= lr, lr > 0"
        );
        ensure!(
            (0.0..1.0).contains(&self.warmup_frac),
            "config `train.warmup_frac`: expected in [0, 1)"
        );
        if let Some(m) = self.max_minutes {
            ensure!(
                m.is_finite() && m > 0.0,
                "config `train.max_minutes` = {m}: expected a positive number of minutes"
            );
        }
        Ok(TrainConfig {
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            token_budget: self.token_budget,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_frac: self.warmup_frac,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            grad_clip: self.grad_clip,
            loss_on: self.loss_on(),
            packing: match self.packing {
                PackingSetting::Whole => Packing::Whole,
                PackingSetting::Stream => Packing::Stream,
            },
            document_mask: self.document_mask,
            eval_every: self.eval_every,
            eval_blocks: self.eval_blocks,
            checkpoint_every: self.checkpoint_every,
            seed,
            data_parallel: self.data_parallel,
            ..TrainConfig::default()
        })
    }

    fn loss_on(&self) -> LossOn {
        match self.loss_on {
            LossOnSetting::All => LossOn::All,
            LossOnSetting::Solution => LossOn::Solution,
        }
    }
}

/// The manifest of the `pretrain` plugin.
pub fn pretrain_info() -> StageInfo {
    StageInfo::new(
        StageKind::PreTrainer,
        "Pre-trains a Qwen2 from scratch on a task corpus: trains the tokenizer, packs the paper's training \
         text, AdamW with warm-up + cosine, global-norm clipping; resumable.",
    )
    .input("data", ArtifactKind::Dataset, "a directory holding `<dataset>.jsonl`")
    .output("model", ArtifactKind::Model, "model.safetensors, config.json, tokenizer.json, training.json")
    .devices(&["cpu", "cuda"])
    .resumable()
}

/// The manifest of the `midtrain` plugin.
pub fn midtrain_info() -> StageInfo {
    StageInfo::new(
        StageKind::MidTrainer,
        "Continues pre-training a model on another corpus (the paper's mid-training) with its own schedule; \
         reports its tokens and the running total; resumable.",
    )
    .input("model", ArtifactKind::Model, "the model to continue from")
    .input("data", ArtifactKind::Dataset, "a directory holding `<dataset>.jsonl`")
    .output("model", ArtifactKind::Model, "model.safetensors, config.json, tokenizer.json, training.json")
    .devices(&["cpu", "cuda"])
    .resumable()
}

/// Where the weights and the tokenizer start from.
enum Start {
    Scratch {
        tokenizer: String,
        tokenizer_datasets: Vec<String>,
        model: String,
    },
    From(PathBuf),
}

/// Corpora mixed into the training records, each under the config key that named it (for errors).
type Mixes = Vec<(String, Replay)>;

/// Checks that every share is in [0, 1) and that together they leave room for the corpus itself.
fn check_mixes(mixes: &Mixes) -> anyhow::Result<()> {
    for (key, m) in mixes {
        ensure!(
            (0.0..1.0).contains(&m.fraction),
            "config `{key}.fraction` = {}: expected a share in [0, 1)",
            m.fraction
        );
    }
    let total: f64 = mixes.iter().map(|(_, m)| m.fraction).sum();
    ensure!(
        total < 1.0,
        "config `mix`: the shares add up to {total}; they must leave room for `dataset` (sum < 1)"
    );
    Ok(())
}

/// Runs the `pretrain` stage.
pub fn pretrain(config: PretrainConfig, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
    let mixes: Mixes = config
        .mix
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("mix[{i}]"), m.clone()))
        .collect();
    check_mixes(&mixes)?;
    let start = Start::Scratch {
        tokenizer: config.tokenizer.clone(),
        tokenizer_datasets: config.tokenizer_datasets.clone(),
        model: config.model.clone(),
    };
    dispatch(
        ctx,
        &config.dataset,
        config.held_out,
        &config.train,
        start,
        mixes,
    )
}

/// Runs the `midtrain` stage.
pub fn midtrain(config: MidtrainConfig, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
    let mixes: Mixes = config
        .replay
        .iter()
        .map(|r| ("replay".to_string(), r.clone()))
        .collect();
    check_mixes(&mixes)?;
    let start = Start::From(ctx.input("model")?.to_path_buf());
    dispatch(
        ctx,
        &config.dataset,
        config.held_out,
        &config.train,
        start,
        mixes,
    )
}

fn dispatch(
    ctx: &mut RunContext<'_>,
    dataset: &str,
    held_out: usize,
    settings: &TrainSettings,
    start: Start,
    mixes: Mixes,
) -> anyhow::Result<()> {
    struct Train<'a, 'c> {
        ctx: &'a mut RunContext<'c>,
        dataset: &'a str,
        held_out: usize,
        settings: &'a TrainSettings,
        start: Start,
        mixes: Mixes,
    }
    impl OnBackend for Train<'_, '_> {
        type Output = anyhow::Result<()>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            let Train {
                ctx,
                dataset,
                held_out,
                settings,
                start,
                mixes,
            } = self;
            train::<Autodiff<B>>(ctx, dataset, held_out, settings, start, mixes, device)
        }
    }
    let device: DeviceSpec = ctx.device().parse()?;
    device.run(Train {
        ctx,
        dataset,
        held_out,
        settings,
        start,
        mixes,
    })?
}

fn train<B: AutodiffBackend>(
    ctx: &mut RunContext<'_>,
    dataset: &str,
    held_out: usize,
    settings: &TrainSettings,
    start: Start,
    mixes: Mixes,
    device: B::Device,
) -> anyhow::Result<()> {
    // The wall-clock budget counts from here: reading the corpus and the tokenizer are part of the cost.
    let stage_start = std::time::Instant::now();
    let seed = ctx.seed();
    let train_config = settings.to_train_config(seed)?;
    let ckpt = ctx.ckpt_dir().join("trainer");

    // ---- corpus: the paper's training text, the last `held_out` records set aside
    let (path, mut train_texts) = corpus_texts(ctx, "dataset", dataset)?;
    ensure!(
        train_texts.len() > held_out,
        "config `held_out` = {held_out}: {} has only {} records; leave some to train on",
        path.display(),
        train_texts.len()
    );
    let held_texts = train_texts.split_off(train_texts.len() - held_out);
    let corpus_records = train_texts.len() + held_out;
    // Each mixed corpus gives `fraction` of the final records: n_i = f_i / (1 - sum f) * corpus records.
    let rest = 1.0 - mixes.iter().map(|(_, m)| m.fraction).sum::<f64>();
    let own = train_texts.len() as f64;
    for (key, mix) in &mixes {
        let n = (mix.fraction / rest * own).round() as usize;
        let (path, mixed) = corpus_texts(ctx, &format!("{key}.dataset"), &mix.dataset)?;
        ensure!(
            mixed.len() >= n,
            "config `{key}.fraction` = {}: needs {n} records of {}, which has {}",
            mix.fraction,
            path.display(),
            mixed.len()
        );
        // Packing shuffles documents, so appending them mixes them in.
        train_texts.extend(mixed.into_iter().take(n));
        ctx.log(format!("mixing in {n} records of {}", path.display()));
    }
    let read_s = stage_start.elapsed().as_secs_f64();

    // ---- tokenizer and starting weights
    // Verified before anything is read from it; a checkpoint that does not verify fails the stage (with
    // the way out), as starting over would silently discard it.
    let checkpoint = match ctx.resuming() {
        true => lm::train::Checkpoint::open(&ckpt).with_context(|| unusable(ctx, &ckpt))?,
        false => None,
    };
    let resuming = checkpoint.is_some();
    if ctx.resuming() && !resuming {
        ctx.log("the last attempt ended before its first checkpoint; training from the start");
    }
    let mut base_tokens = 0u64;
    let tokenizer = match &start {
        _ if resuming => Tokenizer::from_file(&ckpt.join("tokenizer.json"))
            .with_context(|| unusable(ctx, &ckpt))?,
        Start::Scratch {
            tokenizer,
            tokenizer_datasets,
            ..
        } => {
            let kind: TokenizerKind = tokenizer.parse().context("config `tokenizer`")?;
            let mut extra = Vec::new();
            for (i, name) in tokenizer_datasets.iter().enumerate() {
                extra.extend(corpus_texts(ctx, &format!("tokenizer_datasets[{i}]"), name)?.1);
            }
            Tokenizer::train_with_phrases(kind, train_texts.iter().chain(&extra), &task_names())?
        }
        Start::From(dir) => Tokenizer::from_file(&dir.join("tokenizer.json"))?,
    };
    if let Start::From(dir) = &start {
        base_tokens = previous_total_tokens(dir)?;
    }
    let tokenizer_s = stage_start.elapsed().as_secs_f64();
    // In parallel: 200,000 texts take ~20 s to encode on one core.
    let encode = |texts: &[String]| {
        use rayon::prelude::*;
        texts
            .par_iter()
            .map(|t| tokenizer.encode(t))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let train_docs = encode(&train_texts)?;
    let too_long = train_docs
        .iter()
        .filter(|d| d.len() > train_config.seq_len + 1)
        .count();
    if too_long > 0 {
        ctx.log(format!(
            "warning: {too_long} of {} documents are longer than `train.seq_len` + 1 = {} tokens and are cut \
             into pieces that lose their problem text; raise `train.seq_len`",
            train_docs.len(),
            train_config.seq_len + 1
        ));
    }
    let data = PackedData::new(
        train_docs,
        train_config.loss_on,
        train_config.packing,
        train_config.seq_len,
        seed,
        true,
    );
    let mut held = match held_out {
        0 => None,
        _ => Some(PackedData::new(
            encode(&held_texts)?,
            train_config.loss_on,
            train_config.packing,
            train_config.seq_len,
            seed,
            false,
        )),
    };

    ctx.log(format!(
        "setup: {corpus_records} records read in {read_s:.1} s, tokenizer {:.1} s, encoding and packing {:.1} s",
        tokenizer_s - read_s,
        stage_start.elapsed().as_secs_f64() - tokenizer_s
    ));
    let mut trainer = if let Some(checkpoint) = checkpoint {
        let t = Trainer::<B>::resume_from(checkpoint, data, device)
            .with_context(|| unusable(ctx, &ckpt))?;
        ctx.log(format!(
            "resuming at step {} of {} ({} tokens seen)",
            t.state.step,
            t.config().total_steps(),
            t.state.tokens_seen
        ));
        t
    } else {
        let (model_config, model) = match &start {
            Start::Scratch { model, .. } => {
                let mut cfg = ModelConfig::preset(model).context("config `model`")?;
                cfg.vocab_size = tokenizer.vocab_size();
                let m = Qwen2::<B>::init(&cfg, seed, &device);
                (cfg, m)
            }
            Start::From(dir) => load_model::<B>(dir, &device)
                .with_context(|| format!("loading the input model from {}", dir.display()))?,
        };
        ensure!(
            train_config.seq_len <= model_config.max_position_embeddings,
            "config `train.seq_len` = {}: longer than the model's max_position_embeddings = {}",
            train_config.seq_len,
            model_config.max_position_embeddings
        );
        std::fs::create_dir_all(&ckpt).with_context(|| format!("creating {}", ckpt.display()))?;
        tokenizer.save(&ckpt.join("tokenizer.json"))?;
        ctx.log(format!(
            "{} parameters, vocab {}, {} training records, {} steps of {} tokens",
            model_config.num_params(),
            model_config.vocab_size,
            train_texts.len(),
            train_config.total_steps(),
            train_config.tokens_per_step()
        ));
        Trainer::<B>::new(model, model_config, train_config, data, device)
    };

    // ---- train: every step reported, checkpoints as configured, a stop request ends at the last one
    let mut total = trainer.config().total_steps() as u64;
    let mut last_loss = f64::NAN;
    let mut last_held_out = None;
    let train_seconds = settings
        .max_minutes
        .map(|m| m * 60.0 - stage_start.elapsed().as_secs_f64());
    if let Some(t) = train_seconds {
        ctx.log(format!(
            "{:.0} s of the {}-minute budget left for training after setup; the schedule is sized from \
             the first steps' speed",
            t.max(0.0),
            settings.max_minutes.unwrap_or_default()
        ));
    }
    trainer.run_for(held.as_mut(), &ckpt, train_seconds, |event| {
        match *event {
            TrainEvent::Step(s) => {
                last_loss = s.loss;
                ctx.progress(s.step as u64, total);
                let step = s.step as u64;
                ctx.metric(step, "train/loss", s.loss);
                ctx.metric(step, "train/lr", s.lr);
                ctx.metric(step, "train/grad_norm", s.grad_norm);
                ctx.metric(step, "train/tokens_seen", s.tokens_seen as f64);
            }
            TrainEvent::Eval { step, loss, .. } => {
                last_held_out = Some(loss);
                ctx.metric(step as u64, "held_out/loss", loss);
            }
            TrainEvent::Checkpoint { step } => ctx.checkpointed(step as u64),
            TrainEvent::Schedule {
                step,
                total_steps,
                seconds_per_step,
            } => {
                total = total_steps as u64;
                ctx.log(format!(
                    "schedule sized to the wall-clock budget at step {step}: {total_steps} steps \
                     ({seconds_per_step:.4} s/step)"
                ));
            }
            TrainEvent::OutOfTime { step, total_steps } => ctx.warn(format!(
                "the wall-clock budget ran out at step {step} of {total_steps}: training stops early \
                 (the machine ran slower than the first steps measured)"
            )),
        }
        ctx.check_stop()
    })?;

    // ---- the output model directory
    let out = ctx.output("model")?;
    save_model(out, &trainer.model, &trainer.model_config)?;
    tokenizer.save(&out.join("tokenizer.json"))?;
    let summary = serde_json::json!({
        "steps": trainer.state.step,
        "tokens_seen": trainer.state.tokens_seen,
        "base_tokens_seen": base_tokens,
        "total_tokens_seen": base_tokens + trainer.state.tokens_seen,
        "final_train_loss": last_loss,
        "train_seconds": trainer.state.train_seconds,
        "schedule_sized": trainer.state.sized,
        "stage_seconds": stage_start.elapsed().as_secs_f64(),
        "final_held_out_loss": last_held_out,
        "parameters": trainer.model_config.num_params(),
        "dataset": dataset,
        "train": settings,
    });
    let path = out.join(TRAINING_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    // Last: the directory can then be checked wherever it is copied, not only inside a run.
    lm::checkpoint::write_sums(out)?;
    ctx.log(format!(
        "trained on {} tokens ({} in all)",
        trainer.state.tokens_seen,
        base_tokens + trainer.state.tokens_seen
    ));
    Ok(())
}

/// The training texts (the paper's format, each ending in `[EOS]`) of `<dataset>.jsonl` in the `data`
/// input, and its path; `field` is the config key that named it, for the error when it is missing.
fn corpus_texts(
    ctx: &RunContext<'_>,
    field: &str,
    dataset: &str,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let path = ctx.input("data")?.join(format!("{dataset}.jsonl"));
    ensure!(
        path.exists(),
        "config `{field}` = {dataset:?}: {} does not exist",
        path.display()
    );
    let texts = read_paper_jsonl(&path)?
        .iter()
        .map(|r| r.training_text() + "[EOS]")
        .collect();
    Ok((path, texts))
}

/// The multi-word names of the task's contexts, which the `word+names` tokenizer keeps as one token each.
fn task_names() -> Vec<&'static str> {
    task::Context::ALL
        .iter()
        .flat_map(|c| c.phrases())
        .collect()
}

/// The context of an error in a checkpoint: which one, and the way out (lm knows no stages).
fn unusable(ctx: &RunContext<'_>, ckpt: &Path) -> String {
    let stage = &ctx.request().stage;
    format!(
        "the checkpoint in {} cannot be resumed; rerun with `--force {stage}` to train stage `{stage}` \
         from the start",
        ckpt.display()
    )
}

/// The training tokens behind a model directory (0 for a model this project did not train).
pub fn previous_total_tokens(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join(TRAINING_FILE);
    if !path.exists() {
        return Ok(0);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    json["total_tokens_seen"].as_u64().with_context(|| {
        format!(
            "{}: `total_tokens_seen` is missing or not a number",
            path.display()
        )
    })
}
