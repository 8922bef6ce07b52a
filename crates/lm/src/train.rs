//! The training loop, nanoGPT style: packed blocks, AdamW, linear warm-up then cosine to a minimum LR,
//! global-norm gradient clipping, gradient accumulation, a token budget, periodic held-out loss, and
//! checkpoints that resume exactly (model, AdamW moments, data cursor, step) — on CPU bit for bit.
//!
//! Checkpoint directory = HF model files (`model.safetensors`, `config.json`) + `optimizer.safetensors`
//! (AdamW first/second moments, named `m.<param>` / `v.<param>`) + `train_state.json`, which records the
//! SHA-256 and size of every other file of the checkpoint (and a checksum of itself): a checkpoint whose
//! files do not match is refused with a [`CheckpointError`] naming the file, never resumed.

use crate::checkpoint::{
    CONFIG_FILE, WEIGHTS_FILE, load_model, read_safetensors, save_model, sha256_file,
    write_safetensors,
};
use crate::config::ModelConfig;
use crate::data::{Batch, Cursor, LossOn, PackedData, Packing, document_starts};
use crate::host::HostModel;
use crate::host_train;
use crate::model::{Qwen2, cross_entropy, cross_entropy_sum};
use anyhow::{Context, Result, ensure};
use burn::module::{AutodiffModule, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "train_state.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Tokens per block (the context length used in training).
    pub seq_len: usize,
    /// Blocks per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Training stops after this many input tokens (rounded down to whole steps).
    pub token_budget: u64,
    pub lr: f64,
    pub min_lr: f64,
    /// Fraction of the steps spent warming up linearly from 0.
    pub warmup_frac: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm bound (0 disables clipping).
    pub grad_clip: f64,
    pub loss_on: LossOn,
    /// How documents are laid into blocks (`whole` by default: no document is cut; see [`crate::data`]).
    #[serde(default)]
    pub packing: Packing,
    /// Attention stays inside each document of a packed block (false: a token sees every earlier token of its
    /// block, as in the paper's packing). Sampling always sees one document, so masking makes training see
    /// what generation sees.
    #[serde(default)]
    pub document_mask: bool,
    /// Held-out loss every N steps (0: never), over `eval_blocks` fixed blocks.
    pub eval_every: usize,
    pub eval_blocks: usize,
    /// Checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    pub seed: u64,
    /// Replicas that each take an equal share of every micro-batch's rows on their own thread; gradients are
    /// summed in a fixed order, so results stay deterministic. Must divide `batch_size`. On CPU each replica
    /// of the host gradient path ([`crate::host_train`]) runs on its own rayon pool of threads / replicas
    /// threads: one replica per core spares small models most of the per-kernel synchronisation (results
    /// then depend on `data_parallel`, through f32 summation order, but never on the thread count). On the
    /// burn autodiff path (other backends), which runs most non-GEMM ops on one core, replicas use more cores.
    #[serde(default = "one")]
    pub data_parallel: usize,
}

fn one() -> usize {
    1
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seq_len: 256,
            batch_size: 16,
            grad_accum: 1,
            token_budget: 4_000_000,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_frac: 0.05,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            loss_on: LossOn::All,
            packing: Packing::Whole,
            document_mask: false,
            eval_every: 0,
            eval_blocks: 16,
            checkpoint_every: 0,
            seed: 0,
            data_parallel: 1,
        }
    }
}

impl TrainConfig {
    pub fn tokens_per_step(&self) -> u64 {
        (self.seq_len * self.batch_size * self.grad_accum) as u64
    }
    pub fn total_steps(&self) -> usize {
        (self.token_budget / self.tokens_per_step()) as usize
    }
    /// Learning rate at optimizer step `step` (0-based): linear warm-up, then cosine from `lr` to `min_lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let total = self.total_steps().max(1);
        let warm = ((self.warmup_frac * total as f64).round() as usize).max(1);
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let progress = ((step - warm) as f64 / (total - warm).max(1) as f64).min(1.0);
        self.min_lr
            + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (self.lr - self.min_lr)
    }
}

/// Everything besides weights and moments that a resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Input tokens consumed (the compute measure that mid-training and RL are matched on, spec §5).
    pub tokens_seen: u64,
    pub cursor: Cursor,
    pub config: TrainConfig,
    /// Seconds spent training under a wall-clock budget ([`Trainer::run_for`]) over every attempt of this run
    /// (a resumed run counts the killed attempts' time against the budget); 0 without one.
    #[serde(default)]
    pub train_seconds: f64,
    /// How a wall-clock budget sized the schedule ([`Trainer::run_for`]); `None` for a fixed token budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sized: Option<SizedSchedule>,
}

/// A schedule sized to a wall-clock budget from the measured speed of the first steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SizedSchedule {
    /// The token budget before sizing: the schedule never grows past it.
    pub token_cap: u64,
    /// Seconds per step that the last sizing measured.
    pub seconds_per_step: f64,
    /// The second (final) sizing happened: a resumed run keeps this schedule instead of sizing again, so
    /// that it finishes the schedule that the killed attempt started.
    pub last: bool,
}

/// What [`Trainer::run`] reports.
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent {
    Step(StepStats),
    Eval {
        step: usize,
        tokens_seen: u64,
        loss: f64,
    },
    Checkpoint {
        step: usize,
    },
    /// A wall-clock budget (re)sized the schedule to `total_steps`.
    Schedule {
        step: usize,
        total_steps: usize,
        seconds_per_step: f64,
    },
    /// The wall-clock budget ran out before the schedule's end (a slower machine than the sizing
    /// measured): training stops here, with a checkpoint.
    OutOfTime {
        step: usize,
        total_steps: usize,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_seen: u64,
}

impl StepStats {
    /// Whether the loss and the gradient norm are finite. A step that is not was not applied (see
    /// [`Trainer::step`]).
    pub fn is_finite(&self) -> bool {
        self.loss.is_finite() && self.grad_norm.is_finite()
    }

    /// `Err` naming the step, the loss, the gradient norm and the learning rate when the step diverged.
    pub fn check_finite(&self) -> Result<()> {
        ensure!(
            self.is_finite(),
            "training diverged at step {}: loss {}, gradient norm {} (learning rate {:e}); the step was not \
             applied and not saved, the last checkpoint stands. Lower the learning rate (or lengthen the \
             warm-up) and run again",
            self.step,
            self.loss,
            self.grad_norm,
            self.lr
        );
        Ok(())
    }
}

/// Size and SHA-256 of one checkpoint file, as `train_state.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub sha256: String,
    pub bytes: u64,
}

/// The state file on disk: the state, the checksum of every other file of the checkpoint, and a checksum
/// of those two, so that a flipped digit in the state itself (a step count, a cursor) is caught too.
#[derive(Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    state: TrainState,
    files: BTreeMap<String, FileSum>,
    sha256: String,
}

/// What the state file's own checksum covers (compact JSON of the parsed values, so that it does not
/// depend on the file's whitespace).
fn state_sha256(state: &TrainState, files: &BTreeMap<String, FileSum>) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(&(state, files)).expect("the state serializes");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The files [`Trainer::save`] writes besides the state: a directory holding any of them but no state file
/// is a broken checkpoint, not an absent one.
const CHECKPOINT_FILES: [&str; 3] = [WEIGHTS_FILE, CONFIG_FILE, OPTIMIZER_FILE];

/// Why a checkpoint cannot be resumed, and which file is at fault.
#[derive(Debug)]
pub struct CheckpointError {
    /// The file at fault.
    pub file: PathBuf,
    pub problem: CheckpointProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointProblem {
    /// The state file records the file, but it is gone.
    Missing,
    /// The file has another size than the state file recorded (truncated or replaced).
    Size { expected: u64, found: u64 },
    /// Same size, other bytes.
    Sha256 { expected: String, found: String },
    /// The state file does not record a file every checkpoint has.
    NotRecorded,
    /// The state file is absent although the directory holds checkpoint files.
    NoState { present: Vec<String> },
    /// The file cannot be read or parsed.
    Unreadable(String),
    /// The state file's contents do not match the checksum it carries.
    StateChecksum,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.problem {
            CheckpointProblem::Missing => {
                write!(
                    f,
                    "{file}: missing; expected it, as {STATE_FILE} records it"
                )
            }
            CheckpointProblem::Size { expected, found } => write!(
                f,
                "{file}: {found} bytes, expected {expected} (the size {STATE_FILE} recorded); the file was \
                 truncated or replaced"
            ),
            CheckpointProblem::Sha256 { expected, found } => write!(
                f,
                "{file}: sha256 {found}, expected {expected} (recorded in {STATE_FILE} when the checkpoint \
                 was saved); the file is corrupted"
            ),
            CheckpointProblem::NotRecorded => write!(
                f,
                "{file}: {STATE_FILE} records no checksum for it; expected one for every file of the checkpoint"
            ),
            CheckpointProblem::NoState { present } => write!(
                f,
                "{file}: missing, but the directory holds checkpoint files ({}); the checkpoint is incomplete",
                present.join(", ")
            ),
            CheckpointProblem::Unreadable(why) => write!(f, "{file}: cannot be read: {why}"),
            CheckpointProblem::StateChecksum => write!(
                f,
                "{file}: its contents do not match the checksum it carries; the file is corrupted"
            ),
        }
    }
}

impl std::error::Error for CheckpointError {}

fn broken(file: PathBuf, problem: CheckpointProblem) -> anyhow::Error {
    CheckpointError { file, problem }.into()
}

/// A checkpoint directory whose files all match the checksums its state file recorded.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    state: TrainState,
}

impl Checkpoint {
    /// Finishes an interrupted save (see [`recover_checkpoint`]), then verifies every file the state file
    /// records. `Ok(None)`: no checkpoint was saved yet (the directory is absent or holds only files that
    /// are not the trainer's, such as a tokenizer written before the first save). A checkpoint that exists
    /// but is incomplete, unparsable or altered is an `Err` holding a [`CheckpointError`].
    pub fn open(dir: &Path) -> Result<Option<Checkpoint>> {
        if !recover_checkpoint(dir)? {
            return Ok(None);
        }
        let path = dir.join(STATE_FILE);
        let unreadable = |why: String| broken(path.clone(), CheckpointProblem::Unreadable(why));
        let text = std::fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
        let file: StateFile = serde_json::from_str(&text)
            .map_err(|e| unreadable(format!("not a state file: {e}")))?;
        if state_sha256(&file.state, &file.files) != file.sha256 {
            return Err(broken(path, CheckpointProblem::StateChecksum));
        }
        for name in CHECKPOINT_FILES {
            if !file.files.contains_key(name) {
                return Err(broken(dir.join(name), CheckpointProblem::NotRecorded));
            }
        }
        for (name, want) in &file.files {
            let p = dir.join(name);
            let (sha256, bytes) = match sha256_file(&p) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(broken(p, CheckpointProblem::Missing));
                }
                Err(e) => return Err(broken(p, CheckpointProblem::Unreadable(e.to_string()))),
            };
            if bytes != want.bytes {
                let (expected, found) = (want.bytes, bytes);
                return Err(broken(p, CheckpointProblem::Size { expected, found }));
            }
            if sha256 != want.sha256 {
                let (expected, found) = (want.sha256.clone(), sha256);
                return Err(broken(p, CheckpointProblem::Sha256 { expected, found }));
            }
        }
        Ok(Some(Checkpoint {
            dir: dir.to_path_buf(),
            state: file.state,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }
}

/// AdamW (decoupled weight decay, bias-corrected moments, as `torch.optim.AdamW`). Weight decay applies
/// to matrices and embeddings only, not to norm weights and biases (nanoGPT's grouping).
pub struct AdamW<B: Backend> {
    pub m: Vec<Tensor<B, 2>>,
    pub v: Vec<Tensor<B, 2>>,
    decay: Vec<bool>,
}

pub struct Trainer<B: AutodiffBackend> {
    pub model: Qwen2<B>,
    pub model_config: ModelConfig,
    pub opt: AdamW<B::InnerBackend>,
    /// The corpus [`Self::step`] reads; `None` for a trainer whose caller builds every batch
    /// ([`Self::without_data`]).
    pub data: Option<PackedData>,
    pub state: TrainState,
    device: B::Device,
    /// Activation buffers of the host gradient path, one per data-parallel replica, reused across steps.
    host_ws: Vec<host_train::Workspace>,
    /// One rayon pool per replica of the host gradient path when there are several (built on first use).
    replica_pools: Vec<rayon::ThreadPool>,
    /// Devices of the data-parallel peers ([`Self::on_devices`]); empty: this trainer's device alone.
    #[cfg(feature = "collective")]
    devices: Vec<B::Device>,
}

/// True for the CPU backends, whose gradients [`crate::host_train`] computes on the host (as the sampler
/// uses [`crate::host::HostDecoder`]); every other backend goes through burn autodiff.
fn host_backend<B: Backend>() -> bool {
    use std::any::TypeId;
    TypeId::of::<B>() == TypeId::of::<crate::CpuFlex>()
        || TypeId::of::<B>() == TypeId::of::<crate::CpuNdArray>()
}

fn decays(cfg: &ModelConfig) -> Vec<bool> {
    Qwen2::<burn_flex::Flex>::param_shapes(cfg)
        .iter()
        .map(|(n, _)| !(n.ends_with("norm") || n.ends_with("bqkv")))
        .collect()
}

/// Runs each job on a thread of its own (the data-parallel replicas) and returns the results in job order;
/// a job's panic is raised again here.
fn on_own_threads<T: Send>(jobs: Vec<impl FnOnce() -> T + Send>) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs.into_iter().map(|job| s.spawn(job)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Forward + backward of one shard: returns its summed weighted NLL and the gradients of (that sum / denom).
pub(crate) fn shard_grads<B: AutodiffBackend>(
    model: &Qwen2<B>,
    shard: &Batch,
    denom: f64,
    document_mask: bool,
    device: &B::Device,
) -> (f64, Vec<Tensor<B::InnerBackend, 2>>) {
    let (logits, y, w) = batch_logits(model, shard, document_mask, device);
    let nll = cross_entropy_sum(logits, y, w);
    let grads = (nll.clone() / denom).backward();
    (nll.into_scalar().elem::<f64>(), param_grads(model, &grads))
}

/// Every parameter's gradient out of a backward pass, in canonical order.
pub(crate) fn param_grads<B: AutodiffBackend>(
    model: &Qwen2<B>,
    grads: &B::Gradients,
) -> Vec<Tensor<B::InnerBackend, 2>> {
    model
        .params()
        .iter()
        .map(|p| {
            p.val()
                .grad(grads)
                .expect("every parameter gets a gradient")
        })
        .collect()
}

/// Logits of a batch's inputs (attention kept inside documents when `document_mask`), with its targets and
/// loss weights.
pub fn batch_logits<B: Backend>(
    model: &Qwen2<B>,
    b: &Batch,
    document_mask: bool,
    device: &B::Device,
) -> (Tensor<B, 3>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let (x, y, w) = batch_tensors::<B>(b, device);
    let logits = if document_mask {
        model.forward_documents(x, &document_starts(&b.inputs, b.seq_len))
    } else {
        model.forward(x, None)
    };
    (logits, y, w)
}

pub fn batch_tensors<B: Backend>(
    b: &Batch,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let shape = [b.rows, b.seq_len];
    (
        Tensor::from_data(TensorData::new(b.inputs.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.targets.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.weights.clone(), shape), device),
    )
}

impl<B: AutodiffBackend> Trainer<B> {
    pub fn new(
        model: Qwen2<B>,
        model_config: ModelConfig,
        config: TrainConfig,
        mut data: PackedData,
        device: B::Device,
    ) -> Self {
        data.cursor = Cursor { epoch: 0, block: 0 };
        Self::build(model, model_config, config, Some(data), device)
    }

    fn build(
        model: Qwen2<B>,
        model_config: ModelConfig,
        config: TrainConfig,
        data: Option<PackedData>,
        device: B::Device,
    ) -> Self {
        let zeros: Vec<Tensor<B::InnerBackend, 2>> = model
            .params()
            .iter()
            .map(|p| p.val().inner().zeros_like())
            .collect();
        Trainer {
            opt: AdamW {
                m: zeros.clone(),
                v: zeros,
                decay: decays(&model_config),
            },
            model,
            model_config,
            data,
            state: TrainState {
                step: 0,
                tokens_seen: 0,
                cursor: Cursor { epoch: 0, block: 0 },
                config,
                train_seconds: 0.0,
                sized: None,
            },
            device,
            host_ws: vec![host_train::Workspace::new()],
            replica_pools: vec![],
            #[cfg(feature = "collective")]
            devices: vec![],
        }
    }

    /// Trains data-parallel over `devices` (feature `collective`): every micro-batch is split into one shard
    /// per device, each device computes its shard's gradients through burn autodiff, and burn-collective's
    /// all-reduce sums them ([`crate::collective`]); the optimizer step then runs once, on this trainer's
    /// device, whose weights every peer copies at the next step. `batch_size` must be a multiple of
    /// `devices.len()`; `data_parallel` is not used. An empty list goes back to this device alone.
    #[cfg(feature = "collective")]
    pub fn on_devices(mut self, devices: Vec<B::Device>) -> Self {
        self.devices = devices;
        self
    }

    pub fn config(&self) -> &TrainConfig {
        &self.state.config
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.state.config.total_steps()
    }

    /// One optimizer step (all micro-batches). Returns the mean loss over micro-batches. A step whose loss
    /// or gradient norm is not finite changes nothing (weights, moments, step count, data cursor): callers
    /// see it in [`StepStats::is_finite`] / [`StepStats::check_finite`], and the trainer never holds, so
    /// never saves, the NaN weights it would have produced.
    pub fn step(&mut self) -> StepStats {
        self.corpus();
        let tc = self.state.config.clone();
        let dp = tc.data_parallel.max(1);
        assert!(
            tc.batch_size.is_multiple_of(dp),
            "data_parallel {dp} must divide batch_size {}",
            tc.batch_size
        );
        let (grads, loss_sum) = match () {
            #[cfg(feature = "collective")]
            _ if !self.devices.is_empty() => self.collective_grads(&tc),
            _ if host_backend::<B::InnerBackend>() => self.host_grads(&tc, dp),
            _ => self.burn_grads(&tc, dp),
        };
        let s = self.apply(grads, loss_sum / tc.grad_accum as f64, tc.tokens_per_step());
        if s.is_finite() {
            self.state.cursor = self.corpus().cursor;
        } else {
            self.corpus().cursor = self.state.cursor;
        }
        s
    }

    fn corpus(&mut self) -> &mut PackedData {
        self.data.as_mut().expect(
            "Trainer::step reads a corpus, and this trainer has none (made by without_data or \
             resume_without_data): build the batches and call step_on or policy_step",
        )
    }

    /// One optimizer step on a batch built by the caller (reinforcement learning: per-token weights are
    /// advantages, possibly negative): the gradient of Σ weight · NLL / `denom`, then clipping and AdamW as
    /// in [`Self::step`], at the learning rate of this trainer's schedule. The data cursor does not move.
    pub fn step_on(&mut self, batch: &Batch, denom: f64) -> StepStats {
        let (nll, grads) = if host_backend::<B::InnerBackend>() {
            let host = HostModel::new(&self.model_config, self.model.to_host(&self.model_config));
            let (nll, gs) = self.host_ws[0].loss_and_grads(&host, batch, denom, false);
            (nll, self.host_grads_to_tensors(gs))
        } else {
            shard_grads(&self.model, batch, denom, false, &self.device)
        };
        self.apply(grads, nll / denom, (batch.rows * batch.seq_len) as u64)
    }

    /// A trainer with no corpus, for a caller that builds every batch itself ([`Self::step_on`],
    /// [`Self::policy_step`]): the schedule counts optimizer steps, `config.token_budget` /
    /// `config.tokens_per_step()` of them. [`Self::step`] must not be called on it (it panics).
    ///
    /// The plainest way to say "N optimizer steps" is `seq_len = batch_size = grad_accum = 1` and
    /// `token_budget = N`; only `total_steps()` reaches the schedule ([`TrainConfig::lr_at`]), so any shape
    /// with the same quotient gives the same learning rates. `tokens_seen` counts what the steps report, not
    /// the budget's unit. The checkpoint's data cursor stays at 0.
    pub fn without_data(
        model: Qwen2<B>,
        model_config: ModelConfig,
        config: TrainConfig,
        device: B::Device,
    ) -> Self {
        Self::build(model, model_config, config, None, device)
    }

    /// [`Self::resume`] for a trainer made by [`Self::without_data`]: from a verified checkpoint (see
    /// [`Checkpoint::open`]), with no corpus.
    pub fn resume_without_data(checkpoint: Checkpoint, device: B::Device) -> Result<Self> {
        Self::restore(checkpoint, None, device)
    }

    /// One optimizer step on the GRPO loss of one mini-batch ([`crate::grpo`]): gradients of the exact
    /// loss (on CPU through the host path, with per-token coefficients from the current log-probs; elsewhere
    /// burn autodiff of the same formula), global-norm clipping and AdamW at the scheduled learning rate, as
    /// [`Self::step`]. `tokens` is added to `tokens_seen`. A non-finite loss or gradient changes nothing
    /// ([`StepStats::is_finite`]).
    ///
    /// `tokens` is every position of the batch, `rows * seq_len`, as in [`Self::step_on`]: the forward and
    /// backward passes run over prompt and padding too. Rollout rows are single documents, so attention is
    /// not document-masked.
    pub fn policy_step(
        &mut self,
        pb: &crate::grpo::PolicyBatch,
        cfg: &crate::grpo::PolicyLossConfig,
    ) -> (StepStats, crate::grpo::PolicyLossStats) {
        let (stats, grads) = if host_backend::<B::InnerBackend>() {
            let host = HostModel::new(&self.model_config, self.model.to_host(&self.model_config));
            let (stats, gs) = crate::grpo::host_policy_grads(&mut self.host_ws[0], &host, pb, cfg);
            (stats, self.host_grads_to_tensors(gs))
        } else {
            crate::grpo::burn_policy_grads(&self.model, pb, cfg, &self.device)
        };
        let tokens = (pb.batch.rows * pb.batch.seq_len) as u64;
        (self.apply(grads, stats.loss, tokens), stats)
    }

    /// Clips `grads` to the global norm bound and takes one AdamW step at the scheduled learning rate.
    fn apply(
        &mut self,
        grads: Vec<Tensor<B::InnerBackend, 2>>,
        loss: f64,
        tokens: u64,
    ) -> StepStats {
        let tc = self.state.config.clone();
        // Global-norm clipping (as torch.nn.utils.clip_grad_norm_), not burn's per-tensor clipping.
        let sq: Vec<Tensor<B::InnerBackend, 1>> =
            grads.iter().map(|g| g.clone().square().sum()).collect();
        let grad_norm = Tensor::cat(sq, 0).sum().into_scalar().elem::<f64>().sqrt();
        let lr = tc.lr_at(self.state.step);
        if !(loss.is_finite() && grad_norm.is_finite()) {
            return StepStats {
                step: self.state.step + 1,
                loss,
                lr,
                grad_norm,
                tokens_seen: self.state.tokens_seen,
            };
        }
        let scale = if tc.grad_clip > 0.0 && grad_norm > tc.grad_clip {
            tc.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        };

        let t = (self.state.step + 1) as i32;
        let (bc1, bc2) = (1.0 - tc.beta1.powi(t), 1.0 - tc.beta2.powi(t));
        let host = host_backend::<B::InnerBackend>();
        let params = self.model.params_mut();
        for (i, (p, g)) in params.into_iter().zip(grads).enumerate() {
            let g = if scale != 1.0 { g * scale } else { g };
            let m = self.opt.m[i].clone() * tc.beta1 + g.clone() * (1.0 - tc.beta1);
            let v = self.opt.v[i].clone() * tc.beta2 + g.square() * (1.0 - tc.beta2);
            let mut w = p.val().inner();
            if self.opt.decay[i] && tc.weight_decay > 0.0 {
                w = w * (1.0 - lr * tc.weight_decay);
            }
            let update = (m.clone() / bc1) / ((v.clone() / bc2).sqrt() + tc.eps);
            let w = w - update * lr;
            self.opt.m[i] = m;
            self.opt.v[i] = v;
            // Host gradients never go through burn's autodiff; a tracked leaf would register a graph in
            // its global state that only a backward pass frees: ~1 KiB per parameter per step, 12 GB by
            // step 28k.
            let leaf = Tensor::from_inner(w);
            let leaf = if host { leaf } else { leaf.require_grad() };
            *p = Param::initialized(p.id, leaf);
        }
        self.state.step += 1;
        self.state.tokens_seen += tokens;
        StepStats {
            step: self.state.step,
            loss,
            lr,
            grad_norm,
            tokens_seen: self.state.tokens_seen,
        }
    }

    /// Summed gradients of all micro-batches and the summed loss, on the host (CPU backends): see
    /// [`crate::host_train`]. With `dp` replicas, each takes its share of every micro-batch's rows on its own
    /// rayon pool (an equal share of this thread's pool), with its own activation buffers.
    fn host_grads(
        &mut self,
        tc: &TrainConfig,
        dp: usize,
    ) -> (Vec<Tensor<B::InnerBackend, 2>>, f64) {
        let host = HostModel::new(&self.model_config, self.model.to_host(&self.model_config));
        if dp > 1 && self.replica_pools.len() != dp {
            let threads = (rayon::current_num_threads() / dp).max(1);
            self.replica_pools = (0..dp)
                .map(|i| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .thread_name(move |t| format!("replica-{i}-{t}"))
                        .build()
                        .expect("building a replica's thread pool")
                })
                .collect();
        }
        self.host_ws.resize_with(dp, host_train::Workspace::new);
        let mut acc: Vec<Vec<f32>> = vec![];
        let mut loss_sum = 0.0;
        for _ in 0..tc.grad_accum {
            let batch = self.corpus().next_batch(tc.batch_size);
            let denom = batch.weights.iter().sum::<f32>().max(1.0) as f64 * tc.grad_accum as f64;
            let mask = tc.document_mask;
            let results = if dp == 1 {
                vec![self.host_ws[0].loss_and_grads(&host, &batch, denom, mask)]
            } else {
                let (host, shards) = (&host, batch.split(dp));
                on_own_threads(
                    self.host_ws
                        .iter_mut()
                        .zip(&self.replica_pools)
                        .zip(&shards)
                        .map(|((ws, pool), shard)| {
                            move || pool.install(|| ws.loss_and_grads(host, shard, denom, mask))
                        })
                        .collect(),
                )
            };
            // Fixed summation order (micro-batch 0, 1, ...; replica 0, 1, ...): deterministic.
            for (nll, gs) in results {
                loss_sum += nll * tc.grad_accum as f64 / denom;
                if acc.is_empty() {
                    acc = gs;
                } else {
                    for (a, g) in acc.iter_mut().zip(&gs) {
                        for (a, g) in a.iter_mut().zip(g) {
                            *a += g;
                        }
                    }
                }
            }
        }
        (self.host_grads_to_tensors(acc), loss_sum)
    }

    /// Host gradients (canonical order) as tensors shaped like the parameters.
    fn host_grads_to_tensors(&self, gs: Vec<Vec<f32>>) -> Vec<Tensor<B::InnerBackend, 2>> {
        Qwen2::<B>::param_shapes(&self.model_config)
            .into_iter()
            .zip(gs)
            .map(|((_, shape), g)| Tensor::from_data(TensorData::new(g, shape), &self.device))
            .collect()
    }

    /// Summed gradients of all micro-batches and the summed loss through burn autodiff, with `dp`
    /// data-parallel replicas per micro-batch.
    fn burn_grads(
        &mut self,
        tc: &TrainConfig,
        dp: usize,
    ) -> (Vec<Tensor<B::InnerBackend, 2>>, f64) {
        let n_params = self.model.params().len();
        let mut grads: Vec<Option<Tensor<B::InnerBackend, 2>>> = vec![None; n_params];
        let mut loss_sum = 0.0;
        for _ in 0..tc.grad_accum {
            let batch = self.corpus().next_batch(tc.batch_size);
            // Each micro-batch contributes (its mean loss) / grad_accum; its mean is over all its rows.
            let denom = batch.weights.iter().sum::<f32>().max(1.0) as f64 * tc.grad_accum as f64;
            let shards = batch.split(dp);
            let results: Vec<(f64, Vec<Tensor<B::InnerBackend, 2>>)> = if dp == 1 {
                vec![shard_grads(
                    &self.model,
                    &shards[0],
                    denom,
                    tc.document_mask,
                    &self.device,
                )]
            } else {
                let (model, device, mask) = (&self.model, &self.device, tc.document_mask);
                on_own_threads(
                    shards
                        .iter()
                        .map(|shard| {
                            move || shard_grads(&model.fresh_leaves(), shard, denom, mask, device)
                        })
                        .collect(),
                )
            };
            // Fixed summation order (replica 0, 1, ...; micro-batch 0, 1, ...): deterministic.
            for (nll, gs) in results {
                loss_sum += nll * tc.grad_accum as f64 / denom;
                for (acc, g) in grads.iter_mut().zip(gs) {
                    *acc = Some(match acc.take() {
                        None => g,
                        Some(a) => a + g,
                    });
                }
            }
        }
        let grads = grads
            .into_iter()
            .map(|g| g.expect("grad_accum >= 1"))
            .collect();
        (grads, loss_sum)
    }

    /// Summed gradients of all micro-batches and the summed loss, each micro-batch split over
    /// [`Self::on_devices`]'s devices and all-reduced across them (peer 0's copy, moved to this device).
    #[cfg(feature = "collective")]
    fn collective_grads(&mut self, tc: &TrainConfig) -> (Vec<Tensor<B::InnerBackend, 2>>, f64) {
        let n = self.devices.len();
        assert!(
            tc.batch_size.is_multiple_of(n),
            "{n} devices must divide batch_size {}",
            tc.batch_size
        );
        let mut grads: Vec<Tensor<B::InnerBackend, 2>> = vec![];
        let mut loss_sum = 0.0;
        for _ in 0..tc.grad_accum {
            let batch = self.corpus().next_batch(tc.batch_size);
            let denom = batch.weights.iter().sum::<f32>().max(1.0) as f64 * tc.grad_accum as f64;
            let peers = crate::collective::data_parallel_grads(
                &self.model,
                &batch,
                denom,
                tc.document_mask,
                &self.devices,
            )
            .unwrap_or_else(|e| panic!("data-parallel step over {n} devices: {e:#}"));
            // Fixed order (peer 0, 1, ...): deterministic.
            for p in &peers {
                loss_sum += p.nll * tc.grad_accum as f64 / denom;
            }
            let g0 = peers.into_iter().next().expect("one peer per device").grads;
            let g0 = g0.into_iter().map(|g| g.to_device(&self.device));
            grads = if grads.is_empty() {
                g0.collect()
            } else {
                grads.into_iter().zip(g0).map(|(a, g)| a + g).collect()
            };
        }
        (grads, loss_sum)
    }

    /// Trains until the token budget is spent: held-out loss every `eval_every` steps, a resumable checkpoint
    /// in `ckpt_dir` every `checkpoint_every` steps and at the end, and every event passed to `on_event`
    /// (which may return `Err` to stop, e.g. on a stop request; the last checkpoint then resumes the run).
    /// A step whose loss or gradient norm is not finite ends the run with an error (see
    /// [`StepStats::check_finite`]) before anything is saved.
    pub fn run(
        &mut self,
        held_out: Option<&mut PackedData>,
        ckpt_dir: &Path,
        on_event: impl FnMut(&TrainEvent) -> Result<()>,
    ) -> Result<()> {
        self.run_for(held_out, ckpt_dir, None, on_event)
    }

    /// [`Self::run`], with a wall-clock budget of `train_seconds` seconds of training over all attempts of
    /// the run (`None`: the token budget alone). The cosine schedule must end when time does, so it is sized
    /// twice from measured speed: after this attempt's steps 6-25 (so that the warm-up starts early), then
    /// after steps 101-300, when the first steps' slowness (allocation, thread start) no longer skews it
    /// (sized from steps 6-25 alone, a 13-minute schedule had ~20 % too few steps). The configured token
    /// budget caps it. A machine that slows down later stops the run at 105 % of the budget, checkpointed.
    /// Unlike a token budget this is not reproducible: `training.json` records the steps for a rerun.
    pub fn run_for(
        &mut self,
        mut held_out: Option<&mut PackedData>,
        ckpt_dir: &Path,
        train_seconds: Option<f64>,
        mut on_event: impl FnMut(&TrainEvent) -> Result<()>,
    ) -> Result<()> {
        const SIZING: [(usize, usize); 2] = [(5, 25), (100, 300)];
        let (first_step, seconds_before) = (self.state.step, self.state.train_seconds);
        let started = std::time::Instant::now();
        let mut window_start = 0.0;
        if train_seconds.is_some() && self.state.sized.is_none() {
            self.state.sized = Some(SizedSchedule {
                token_cap: self.state.config.token_budget,
                seconds_per_step: 0.0,
                last: false,
            });
        }
        let sizing =
            |t: &Trainer<B>| train_seconds.is_some() && t.state.sized.is_some_and(|s| !s.last);
        // Until the first sizing the schedule is the token cap's (its warm-up keeps the first steps' rate low).
        while self.state.step < self.state.config.total_steps() {
            let s = self.step();
            s.check_finite()?;
            if train_seconds.is_some() {
                // Counted only under a time budget: a token-budget run's state stays bit-reproducible.
                self.state.train_seconds = seconds_before + started.elapsed().as_secs_f64();
            }
            on_event(&TrainEvent::Step(s))?;
            let here = s.step - first_step;
            if let Some(budget) = train_seconds.filter(|_| sizing(self)) {
                let elapsed = started.elapsed().as_secs_f64();
                for (i, &(from, to)) in SIZING.iter().enumerate() {
                    if here == from {
                        window_start = elapsed;
                    }
                    if here == to {
                        let per_step = (elapsed - window_start) / (to - from) as f64;
                        let left = (budget - self.state.train_seconds).max(0.0);
                        let steps = s.step as u64 + (left / per_step) as u64;
                        let sized = self.state.sized.as_mut().expect("set above");
                        self.state.config.token_budget = (steps
                            * self.state.config.tokens_per_step())
                        .min(sized.token_cap)
                        .max(s.step as u64 * self.state.config.tokens_per_step());
                        sized.seconds_per_step = per_step;
                        sized.last = i == SIZING.len() - 1;
                        on_event(&TrainEvent::Schedule {
                            step: s.step,
                            total_steps: self.state.config.total_steps(),
                            seconds_per_step: per_step,
                        })?;
                    }
                }
            }
            let out_of_time = train_seconds.is_some_and(|b| self.state.train_seconds > 1.05 * b)
                && s.step < self.state.config.total_steps();
            if out_of_time {
                // The rest of the schedule is given up: a resume must not train it either.
                on_event(&TrainEvent::OutOfTime {
                    step: s.step,
                    total_steps: self.state.config.total_steps(),
                })?;
                self.state.config.token_budget =
                    s.step as u64 * self.state.config.tokens_per_step();
            }
            let tc = &self.state.config;
            let last = s.step >= tc.total_steps();
            if tc.eval_every > 0
                && (s.step.is_multiple_of(tc.eval_every) || last)
                && let Some(h) = held_out.as_deref_mut()
            {
                let loss = self.eval_loss(h, self.state.config.eval_blocks);
                on_event(&TrainEvent::Eval {
                    step: s.step,
                    tokens_seen: s.tokens_seen,
                    loss,
                })?;
            }
            let every = self.state.config.checkpoint_every;
            if (every > 0 && s.step.is_multiple_of(every)) || last {
                self.save(ckpt_dir)?;
                on_event(&TrainEvent::Checkpoint { step: s.step })?;
            }
        }
        Ok(())
    }

    /// Mean loss over the first `blocks` blocks of `held_out` (read from its start each time; no gradients).
    pub fn eval_loss(&self, held_out: &mut PackedData, blocks: usize) -> f64 {
        eval_loss(
            &self.model.valid(),
            held_out,
            blocks,
            self.state.config.batch_size,
            self.state.config.document_mask,
            &self.device,
        )
    }

    /// Writes a resumable checkpoint into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with(dir, &[])
    }

    /// [`Self::save`] with extra files (a caller's own state, by file name) written into the checkpoint and
    /// recorded with the others: they are swapped in, checksummed and verified together with the weights,
    /// so that a kill can never leave the caller's state and the weights from different steps.
    pub fn save_with(&self, dir: &Path, extra: &[(&str, &[u8])]) -> Result<()> {
        // Written beside `dir`, then swapped in: a kill at any point leaves one whole checkpoint, the old or
        // the new (see `recover_checkpoint`), never new weights with old moments.
        let (partial, old) = (sibling(dir, "partial"), sibling(dir, "old"));
        remove_dir_if_present(&partial)?;
        save_model(&partial, &self.model, &self.model_config)?;
        for (name, bytes) in extra {
            let path = partial.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        // Files others keep in the checkpoint (the tokenizer) travel with it.
        if dir.is_dir() {
            for entry in
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let from = entry?.path();
                let to = partial.join(from.file_name().expect("a directory entry has a name"));
                if from.is_file()
                    && !to.exists()
                    && !from.ends_with(OPTIMIZER_FILE)
                    && !from.ends_with(STATE_FILE)
                {
                    std::fs::copy(&from, &to)
                        .with_context(|| format!("copying {}", from.display()))?;
                }
            }
        }
        let names = Qwen2::<B>::param_shapes(&self.model_config);
        let mut tensors = vec![];
        for (kind, moments) in [("m", &self.opt.m), ("v", &self.opt.v)] {
            for ((name, shape), t) in names.iter().zip(moments) {
                let values = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32");
                tensors.push((format!("{kind}.{name}"), shape.to_vec(), values));
            }
        }
        write_safetensors(&partial.join(OPTIMIZER_FILE), &tensors, None)?;
        // Every file, the ones that travelled with the checkpoint included: a resume trusts all of them.
        let mut files = BTreeMap::new();
        for entry in
            std::fs::read_dir(&partial).with_context(|| format!("reading {}", partial.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{}: not a UTF-8 file name", path.display()))?
                .to_string();
            if path.is_file() && name != STATE_FILE {
                let (sha256, bytes) =
                    sha256_file(&path).with_context(|| format!("hashing {}", path.display()))?;
                files.insert(name, FileSum { sha256, bytes });
            }
        }
        // The state last: a partial directory with it is complete.
        let path = partial.join(STATE_FILE);
        let file = StateFile {
            sha256: state_sha256(&self.state, &files),
            state: self.state.clone(),
            files,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&file)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        if dir.exists() {
            remove_dir_if_present(&old)?;
            rename(dir, &old)?;
        }
        rename(&partial, dir)?;
        remove_dir_if_present(&old)
    }

    /// Restores a trainer from a checkpoint written by [`Trainer::save`] after verifying every file of it
    /// (see [`Checkpoint::open`]); no checkpoint at all is an error too. `data` must be the same corpus.
    pub fn resume(dir: &Path, data: PackedData, device: B::Device) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir)?.with_context(|| {
            format!(
                "{}: no checkpoint to resume from; expected {STATE_FILE} and the files it records",
                dir.display()
            )
        })?;
        Self::resume_from(checkpoint, data, device)
    }

    /// Restores a trainer from a verified checkpoint. `data` must be the same corpus.
    pub fn resume_from(
        checkpoint: Checkpoint,
        data: PackedData,
        device: B::Device,
    ) -> Result<Self> {
        Self::restore(checkpoint, Some(data), device)
    }

    fn restore(
        checkpoint: Checkpoint,
        mut data: Option<PackedData>,
        device: B::Device,
    ) -> Result<Self> {
        let Checkpoint { dir, state } = checkpoint;
        let dir = dir.as_path();
        let (model_config, model) = load_model::<B>(dir, &device)?;
        let opt_path = dir.join(OPTIMIZER_FILE);
        let mut saved = read_safetensors(&opt_path)?;
        let inner = device.clone();
        let mut load = |kind: &str| -> Result<Vec<Tensor<B::InnerBackend, 2>>> {
            Qwen2::<B>::param_shapes(&model_config)
                .into_iter()
                .map(|(name, shape)| {
                    let key = format!("{kind}.{name}");
                    let (s, v) = saved.remove(&key).with_context(|| {
                        format!("{}: missing tensor `{key}`", opt_path.display())
                    })?;
                    ensure!(
                        s == shape,
                        "{}: `{key}` has shape {s:?}, expected {shape:?}",
                        opt_path.display()
                    );
                    Ok(Tensor::from_data(TensorData::new(v, shape), &inner))
                })
                .collect()
        };
        let (m, v) = (load("m")?, load("v")?);
        if let Some(d) = data.as_mut() {
            d.cursor = state.cursor;
        }
        let mut t = Trainer::build(model, model_config, state.config.clone(), data, device);
        t.opt.m = m;
        t.opt.v = v;
        t.state = state;
        Ok(t)
    }
}

/// Completes or rolls back a [`Trainer::save`] that a kill interrupted, and says whether `dir` now holds a
/// checkpoint to resume from. A save writes `<dir>.partial` (its state file last), moves `dir` to `<dir>.old`,
/// moves the partial directory to `dir` and deletes the old one; whichever step it died in, this finishes
/// with the newest complete checkpoint in `dir`. A `dir` that holds the trainer's files but no state file
/// is an error (a [`CheckpointError`]), not "no checkpoint": starting over would silently discard it. It
/// checks no checksums; [`Checkpoint::open`] does.
pub fn recover_checkpoint(dir: &Path) -> Result<bool> {
    let (partial, old) = (sibling(dir, "partial"), sibling(dir, "old"));
    if !dir.exists() {
        if partial.join(STATE_FILE).is_file() {
            rename(&partial, dir)?;
        } else if old.exists() {
            rename(&old, dir)?;
        }
    }
    remove_dir_if_present(&partial)?;
    if dir.join(STATE_FILE).is_file() {
        remove_dir_if_present(&old)?;
        return Ok(true);
    }
    let present: Vec<String> = CHECKPOINT_FILES
        .iter()
        .filter(|f| dir.join(f).exists())
        .map(|f| f.to_string())
        .collect();
    if !present.is_empty() {
        return Err(broken(
            dir.join(STATE_FILE),
            CheckpointProblem::NoState { present },
        ));
    }
    Ok(false)
}

/// `<dir>.<suffix>`, beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Mean masked loss over the first `blocks` blocks of `data` (its cursor is reset to the start).
pub fn eval_loss<B: Backend>(
    model: &Qwen2<B>,
    data: &mut PackedData,
    blocks: usize,
    batch: usize,
    document_mask: bool,
    device: &B::Device,
) -> f64 {
    data.cursor = Cursor { epoch: 0, block: 0 };
    let blocks = blocks.min(data.blocks_per_epoch()).max(1);
    let (mut total, mut n) = (0.0, 0);
    let mut left = blocks;
    while left > 0 {
        let rows = left.min(batch);
        let b = data.next_batch(rows);
        let (logits, y, w) = batch_logits(model, &b, document_mask, device);
        total += cross_entropy(logits, y, w).into_scalar().elem::<f64>() * rows as f64;
        n += rows;
        left -= rows;
    }
    total / n as f64
}

use burn::tensor::ElementConversion as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpo::{PolicyBatch, PolicyLossConfig, group_advantages};
    use crate::sample::{SampleConfig, generate};
    use crate::tokenizer::{Tokenizer, TokenizerKind};
    use crate::{Cpu, Rng};
    use burn::backend::Autodiff;

    type B = Autodiff<Cpu>;

    fn corpus(n: usize) -> Vec<String> {
        let names = ["fox", "wolf", "bear", "deer", "owl", "lynx"];
        let places = ["Cedar Valley", "Oakridge", "Maple Creek", "Glenfield"];
        (0..n)
            .map(|i| {
                let (a, p, v) = (names[i % names.len()], places[i % places.len()], 2 + i % 5);
                format!(
                    "<question> The number of adult {a} in {p} equals {v}. The number of adult owl in {p} equals 3 times the number of adult {a} in {p}. How many adult owl does {p} have? </question> <solution> Define adult {a} in {p} as A; so A = {v}. Define adult owl in {p} as B; so B = 3 * A = 3 * {v} = {}. </solution> <answer> {} </answer>[EOS]",
                    3 * v,
                    3 * v
                )
            })
            .collect()
    }

    fn setup(tc: &TrainConfig, texts: &[String]) -> (Tokenizer, ModelConfig, PackedData) {
        let tok = Tokenizer::train(TokenizerKind::Word, texts.iter()).unwrap();
        let docs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
        let mut cfg = ModelConfig::preset("tiny-test").unwrap();
        cfg.vocab_size = tok.vocab_size();
        let data = PackedData::new(docs, tc.loss_on, tc.packing, tc.seq_len, tc.seed, true);
        (tok, cfg, data)
    }

    #[test]
    fn a_wall_clock_budget_sizes_the_schedule_within_the_token_cap_and_a_resume_keeps_it() {
        let tc = TrainConfig {
            seq_len: 24,
            batch_size: 2,
            token_budget: 320 * 48,
            checkpoint_every: 100,
            ..Default::default()
        };
        let texts = corpus(12);
        let (_, cfg, data) = setup(&tc, &texts);
        let device = Default::default();
        let dir = std::env::temp_dir().join(format!("lm-wall-clock-{}", std::process::id()));
        let new = |tc: &TrainConfig, data| {
            Trainer::<B>::new(
                Qwen2::init(&cfg, 1, &device),
                cfg.clone(),
                tc.clone(),
                data,
                device,
            )
        };
        // An hour for 320 tiny steps: both sizings happen, and the token budget caps the schedule.
        let mut t = new(&tc, data);
        let mut schedules = vec![];
        t.run_for(None, &dir, Some(3600.0), |e| {
            if let TrainEvent::Schedule {
                step, total_steps, ..
            } = *e
            {
                schedules.push((step, total_steps));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(schedules, [(25, 320), (300, 320)]);
        assert_eq!(t.state.step, 320);
        let sized = t.state.sized.expect("sized");
        assert!(sized.last && sized.token_cap == 320 * 48 && sized.seconds_per_step > 0.0);
        assert!(t.state.train_seconds > 0.0);
        // Resuming the finished run trains nothing more and keeps its schedule.
        let (_, _, data) = setup(&tc, &texts);
        let mut again = Trainer::<B>::resume(&dir, data, device).unwrap();
        again.run_for(None, &dir, Some(3600.0), |_| Ok(())).unwrap();
        assert_eq!((again.state.step, again.state.sized), (320, Some(sized)));
        // No time at all: the first step is over the budget, and the run stops there, checkpointed, with a
        // schedule that a resume does not continue.
        let (_, _, data) = setup(&tc, &texts);
        let mut late = new(&tc, data);
        let mut out_of_time = vec![];
        late.run_for(None, &dir, Some(0.0), |e| {
            if let TrainEvent::OutOfTime { step, .. } = *e {
                out_of_time.push(step);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            (out_of_time, late.state.step, late.config().total_steps()),
            (vec![1], 1, 1)
        );
        let (_, _, data) = setup(&tc, &texts);
        assert!(Trainer::<B>::resume(&dir, data, device).unwrap().done());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn n_steps_equal_half_then_kill_and_resume_then_half_bit_for_bit() {
        let tc = TrainConfig {
            seq_len: 24,
            batch_size: 2,
            grad_accum: 2,
            data_parallel: 2,
            token_budget: 8 * 96,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_frac: 0.25,
            ..Default::default()
        };
        assert_eq!(tc.total_steps(), 8);
        let texts = corpus(12);
        let (_, cfg, data) = setup(&tc, &texts);
        let device = Default::default();
        let mut straight = Trainer::<B>::new(
            Qwen2::init(&cfg, 1, &device),
            cfg.clone(),
            tc.clone(),
            data,
            device,
        );
        let losses: Vec<f64> = (0..8).map(|_| straight.step().loss).collect();
        assert!(straight.done());

        let dir = std::env::temp_dir().join(format!("lm-resume-{}", std::process::id()));
        let (_, _, data) = setup(&tc, &texts);
        let tc_ck = TrainConfig {
            checkpoint_every: 4,
            ..tc.clone()
        };
        let mut first = Trainer::<B>::new(
            Qwen2::init(&cfg, 1, &device),
            cfg.clone(),
            tc_ck,
            data,
            device,
        );
        // Run with checkpoints every 4 steps and "kill" the run right after step 5 (past the checkpoint).
        let killed = first.run(None, &dir, |e| match e {
            TrainEvent::Step(s) if s.step == 5 => anyhow::bail!("killed"),
            _ => Ok(()),
        });
        assert!(killed.is_err());
        drop(first);
        let (_, _, data) = setup(&tc, &texts);
        let mut resumed = Trainer::<B>::resume(&dir, data, device).unwrap();
        assert_eq!(resumed.state.step, 4);
        resumed.state.config.checkpoint_every = 0;
        let tail: Vec<f64> = (0..4).map(|_| resumed.step().loss).collect();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(&losses[4..], &tail[..]);
        assert_eq!(straight.state, resumed.state);
        assert!(
            trainer_bits(&straight) == trainer_bits(&resumed),
            "weights or moments differ"
        );
        assert!(losses[7] < losses[0], "loss should fall: {losses:?}");
    }

    #[test]
    fn a_save_killed_at_any_point_leaves_the_newest_whole_checkpoint() {
        let tc = TrainConfig {
            seq_len: 24,
            batch_size: 2,
            token_budget: 8 * 48,
            ..Default::default()
        };
        let texts = corpus(6);
        let (_, cfg, data) = setup(&tc, &texts);
        let device = Default::default();
        let mut t = Trainer::<B>::new(Qwen2::init(&cfg, 1, &device), cfg, tc.clone(), data, device);
        let root = std::env::temp_dir().join(format!("lm-atomic-save-{}", std::process::id()));
        let (dir, partial, old) = (
            root.join("ckpt"),
            root.join("ckpt.partial"),
            root.join("ckpt.old"),
        );
        let copy_dir = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap().path();
                std::fs::copy(&e, to.join(e.file_name().unwrap())).unwrap();
            }
        };
        t.step();
        t.step();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        t.save(&dir).unwrap();
        assert!(!partial.exists() && !old.exists());
        assert!(
            dir.join("tokenizer.json").is_file(),
            "other files travel with the checkpoint"
        );
        let at_2 = root.join("at-2");
        copy_dir(&dir, &at_2);
        t.step();
        t.step();
        let at_4 = root.join("at-4");
        t.save(&at_4).unwrap();
        let resumed_step = || {
            let (_, _, data) = setup(&tc, &texts);
            Trainer::<B>::resume(&dir, data, Default::default())
                .unwrap()
                .state
                .step
        };
        let reset = |d: &Path, from: &Path| {
            let _ = std::fs::remove_dir_all(d);
            copy_dir(from, d);
        };
        // Killed while writing the partial directory: the old checkpoint stands.
        reset(&dir, &at_2);
        reset(&partial, &at_4);
        std::fs::remove_file(partial.join(STATE_FILE)).unwrap();
        assert_eq!(resumed_step(), 2);
        assert!(!partial.exists());
        // Killed after moving the old one aside, the new one complete: the new one.
        let _ = std::fs::remove_dir_all(&dir);
        reset(&old, &at_2);
        reset(&partial, &at_4);
        assert_eq!(resumed_step(), 4);
        assert!(!partial.exists() && !old.exists());
        // The same with the new one incomplete (cannot happen in that order, but must not lose the old).
        let _ = std::fs::remove_dir_all(&dir);
        reset(&old, &at_2);
        reset(&partial, &at_4);
        std::fs::remove_file(partial.join(STATE_FILE)).unwrap();
        assert_eq!(resumed_step(), 2);
        // Killed before deleting the old one: the new one.
        reset(&dir, &at_4);
        reset(&old, &at_2);
        assert!(recover_checkpoint(&dir).unwrap());
        assert_eq!(resumed_step(), 4);
        assert!(!old.exists());
        // Nothing saved yet: nothing to resume.
        assert!(!recover_checkpoint(&root.join("none")).unwrap());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Flips one byte in the middle of a file; for safetensors, inside the tensor data (past the header).
    fn flip_byte(path: &Path) {
        let mut b = std::fs::read(path).unwrap();
        let start = if path.extension().is_some_and(|e| e == "safetensors") {
            8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
        } else {
            0
        };
        let i = start + (b.len() - start) / 2;
        b[i] ^= 0x5a;
        std::fs::write(path, b).unwrap();
    }

    fn problem(r: Result<Option<Checkpoint>>) -> (PathBuf, CheckpointProblem) {
        let e = r.expect_err("the checkpoint should be refused");
        let e = e
            .downcast_ref::<CheckpointError>()
            .unwrap_or_else(|| panic!("not a CheckpointError: {e:#}"));
        (e.file.clone(), e.problem.clone())
    }

    #[test]
    fn a_checkpoint_with_any_file_altered_truncated_or_deleted_is_refused_naming_it() {
        let tc = TrainConfig {
            seq_len: 24,
            batch_size: 2,
            token_budget: 8 * 48,
            ..Default::default()
        };
        let texts = corpus(6);
        let (_, cfg, data) = setup(&tc, &texts);
        let device = Default::default();
        let mut t = Trainer::<B>::new(Qwen2::init(&cfg, 1, &device), cfg, tc.clone(), data, device);
        t.step();
        let root = std::env::temp_dir().join(format!("lm-checksums-{}", std::process::id()));
        let good = root.join("good");
        std::fs::create_dir_all(&good).unwrap();
        // A file the caller keeps in the checkpoint (before its first save) is covered too.
        std::fs::write(good.join("tokenizer.json"), "{\"model\": \"word\"}").unwrap();
        t.save(&good).unwrap();
        let opened = Checkpoint::open(&good).unwrap().expect("a checkpoint");
        assert_eq!(opened.state(), &t.state);
        let case = root.join("case");
        let fresh = || {
            let _ = std::fs::remove_dir_all(&case);
            std::fs::create_dir_all(&case).unwrap();
            for e in std::fs::read_dir(&good).unwrap() {
                let e = e.unwrap().path();
                std::fs::copy(&e, case.join(e.file_name().unwrap())).unwrap();
            }
        };
        for name in [WEIGHTS_FILE, CONFIG_FILE, OPTIMIZER_FILE, "tokenizer.json"] {
            let file = case.join(name);
            fresh();
            flip_byte(&file);
            let (f, p) = problem(Checkpoint::open(&case));
            assert_eq!(f, file);
            assert!(
                matches!(p, CheckpointProblem::Sha256 { .. }),
                "{name}: {p:?}"
            );
            fresh();
            let len = std::fs::metadata(&file).unwrap().len();
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
            let (f, p) = problem(Checkpoint::open(&case));
            assert_eq!(f, file);
            assert_eq!(
                p,
                CheckpointProblem::Size {
                    expected: len,
                    found: len / 2
                },
                "{name}"
            );
            fresh();
            std::fs::remove_file(&file).unwrap();
            let (f, p) = problem(Checkpoint::open(&case));
            assert_eq!((f, p), (file, CheckpointProblem::Missing), "{name}");
        }
        // The state file: a changed number parses but fails its own checksum; a cut one does not parse; a
        // deleted one leaves model files without a state, which is broken, not absent.
        let state = case.join(STATE_FILE);
        fresh();
        let text = std::fs::read_to_string(&state).unwrap();
        assert!(text.contains("\"step\": 1,"), "{text}");
        std::fs::write(&state, text.replace("\"step\": 1,", "\"step\": 7,")).unwrap();
        assert_eq!(
            problem(Checkpoint::open(&case)),
            (state.clone(), CheckpointProblem::StateChecksum)
        );
        fresh();
        std::fs::write(&state, &text[..text.len() / 2]).unwrap();
        let (f, p) = problem(Checkpoint::open(&case));
        assert_eq!(f, state);
        assert!(matches!(p, CheckpointProblem::Unreadable(_)), "{p:?}");
        fresh();
        std::fs::remove_file(&state).unwrap();
        let (f, p) = problem(Checkpoint::open(&case));
        assert_eq!(f, state);
        assert!(matches!(p, CheckpointProblem::NoState { .. }), "{p:?}");
        let (_, _, data) = setup(&tc, &texts);
        let e = Trainer::<B>::resume(&case, data, Default::default())
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains(STATE_FILE), "{e:#}");
        // Files written before the first save are not a checkpoint: nothing to resume, no error.
        let _ = std::fs::remove_dir_all(&case);
        std::fs::create_dir_all(&case).unwrap();
        std::fs::write(case.join("tokenizer.json"), "{}").unwrap();
        assert!(Checkpoint::open(&case).unwrap().is_none());
        assert!(Checkpoint::open(&root.join("absent")).unwrap().is_none());
        // The untouched original still resumes.
        let (_, _, data) = setup(&tc, &texts);
        let resumed = Trainer::<B>::resume(&good, data, Default::default()).unwrap();
        assert_eq!(resumed.state, t.state);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_diverging_run_stops_with_the_step_and_never_saves_non_finite_weights() {
        let tc = TrainConfig {
            seq_len: 24,
            batch_size: 2,
            token_budget: 20 * 48,
            lr: 1e12,
            min_lr: 1e12,
            warmup_frac: 0.0,
            grad_clip: 0.0,
            checkpoint_every: 1,
            ..Default::default()
        };
        let texts = corpus(6);
        let (_, cfg, data) = setup(&tc, &texts);
        let device = Default::default();
        let mut t = Trainer::<B>::new(
            Qwen2::init(&cfg, 1, &device),
            cfg.clone(),
            tc.clone(),
            data,
            device,
        );
        let dir = std::env::temp_dir().join(format!("lm-diverge-{}", std::process::id()));
        let mut last_good = None;
        let err = t
            .run(None, &dir, |e| {
                if let TrainEvent::Step(s) = e {
                    last_good = Some(s.step);
                }
                Ok(())
            })
            .expect_err("lr 1e12 should diverge");
        let msg = format!("{err:#}");
        let failed = last_good.unwrap_or(0) + 1;
        assert!(
            msg.contains(&format!("diverged at step {failed}:"))
                && msg.contains("loss")
                && msg.contains("gradient norm")
                && msg.contains("Lower the learning rate"),
            "{msg}"
        );
        assert_eq!(
            t.state.step,
            failed - 1,
            "the diverged step was not applied"
        );
        let finite = |w: Vec<f32>| w.iter().all(|x| x.is_finite());
        assert!(finite(
            t.model
                .to_host(&cfg)
                .into_iter()
                .flat_map(|p| p.2)
                .collect()
        ));
        // Checkpoints every step: the one on disk is the last good step's, whole and finite.
        let c = Checkpoint::open(&dir)
            .unwrap()
            .expect("a checkpoint of the steps before");
        assert_eq!(c.state().step, failed - 1, "only good steps are saved");
        let (_, saved) = load_model::<B>(&dir, &Default::default()).unwrap();
        assert!(finite(
            saved.to_host(&cfg).into_iter().flat_map(|p| p.2).collect()
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_non_finite_step_on_changes_nothing_and_says_so() {
        let tc = TrainConfig::default();
        let texts = corpus(2);
        let (_, cfg, _) = setup(&tc, &texts);
        let device = Default::default();
        let one = PackedData::new(vec![vec![0]], LossOn::All, Packing::Whole, 1, 0, false);
        let mut t = Trainer::<B>::new(Qwen2::init(&cfg, 4, &device), cfg.clone(), tc, one, device);
        let b = Batch {
            rows: 1,
            seq_len: 4,
            inputs: vec![1, 2, 3, 4],
            targets: vec![2, 3, 4, 5],
            weights: vec![1.0, f32::NAN, 1.0, 1.0],
        };
        let before: Vec<f32> = t
            .model
            .to_host(&cfg)
            .into_iter()
            .flat_map(|p| p.2)
            .collect();
        let s = t.step_on(&b, 4.0);
        assert!(!s.is_finite(), "{s:?}");
        let e = s.check_finite().unwrap_err().to_string();
        assert!(
            e.contains("diverged at step 1:") && e.contains("NaN"),
            "{e}"
        );
        let after: Vec<f32> = t
            .model
            .to_host(&cfg)
            .into_iter()
            .flat_map(|p| p.2)
            .collect();
        assert!(before == after, "weights changed");
        assert_eq!(t.state.step, 0);
        let good = Batch {
            weights: vec![1.0; 4],
            ..b
        };
        let s = t.step_on(&good, 4.0);
        assert!(s.check_finite().is_ok() && s.step == 1, "{s:?}");
    }

    #[test]
    fn non_finite_tensors_are_never_written() {
        let path = std::env::temp_dir().join(format!("lm-nan-{}.safetensors", std::process::id()));
        let e = write_safetensors(
            &path,
            &[("w".into(), vec![2], vec![1.0, f32::INFINITY])],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`w`") && e.contains("inf") && !path.exists(),
            "{e}"
        );
    }

    #[test]
    fn step_on_raises_positively_weighted_tokens_and_lowers_negatively_weighted_ones() {
        let tc = TrainConfig {
            lr: 3e-3,
            min_lr: 3e-3,
            warmup_frac: 0.0,
            weight_decay: 0.0,
            ..Default::default()
        };
        let texts = corpus(2);
        let (tok, cfg, _) = setup(&tc, &texts);
        let docs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
        let device = Default::default();
        let one = PackedData::new(vec![vec![0]], LossOn::All, Packing::Whole, 1, 0, false);
        let mut t = Trainer::<B>::new(Qwen2::init(&cfg, 4, &device), cfg, tc, one, device);
        let solution_loss = |t: &Trainer<B>, ids: &[u32]| {
            let mut d = PackedData::new(
                vec![ids.to_vec()],
                LossOn::Solution,
                Packing::Whole,
                ids.len() - 1,
                0,
                false,
            );
            eval_loss(&t.model.valid(), &mut d, 1, 1, false, &Default::default())
        };
        // Row 0: the first problem, solution tokens weighted +1; row 1: the second, weighted -1.
        let len = docs.iter().map(Vec::len).max().unwrap() - 1;
        let mut b = Batch {
            rows: 2,
            seq_len: len,
            inputs: vec![],
            targets: vec![],
            weights: vec![],
        };
        for (ids, sign) in docs.iter().zip([1.0f32, -1.0]) {
            let flags = crate::data::loss_flags(ids, LossOn::Solution);
            let n = ids.len() - 1;
            b.inputs.extend(ids[..n].iter().map(|&x| x as i32));
            b.targets.extend(ids[1..].iter().map(|&x| x as i32));
            b.weights
                .extend(flags[1..].iter().map(|&f| if f { sign } else { 0.0 }));
            b.inputs.extend(std::iter::repeat_n(0, len - n));
            b.targets.extend(std::iter::repeat_n(0, len - n));
            b.weights.extend(std::iter::repeat_n(0.0, len - n));
        }
        let before = [solution_loss(&t, &docs[0]), solution_loss(&t, &docs[1])];
        for _ in 0..5 {
            t.step_on(&b, 40.0);
        }
        let after = [solution_loss(&t, &docs[0]), solution_loss(&t, &docs[1])];
        assert!(
            after[0] < before[0] - 0.1,
            "positive: {before:?} -> {after:?}"
        );
        assert!(
            after[1] > before[1] + 0.1,
            "negative: {before:?} -> {after:?}"
        );
        assert_eq!(t.state.step, 5);
    }

    /// Replicas on their own pools: the same bits on 1, 2 or 3 threads (each replica's work is split
    /// statically and the replicas are summed in a fixed order), and the losses of one replica up to f32
    /// summation order (weights are not compared across replica counts: AdamW turns a rounding-level sign
    /// flip of a near-zero gradient into a full step).
    #[test]
    fn data_parallel_replicas_give_the_same_bits_on_any_thread_count() {
        let texts = corpus(16);
        let train = |dp: usize, threads: usize| -> (Vec<f64>, Vec<f32>) {
            let tc = TrainConfig {
                seq_len: 32,
                batch_size: 4,
                grad_accum: 2,
                data_parallel: dp,
                token_budget: 3 * 256,
                lr: 3e-3,
                document_mask: true,
                ..Default::default()
            };
            let (_, cfg, data) = setup(&tc, &texts);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let device = Default::default();
                let mut t =
                    Trainer::<B>::new(Qwen2::init(&cfg, 3, &device), cfg.clone(), tc, data, device);
                let mut losses = vec![];
                while !t.done() {
                    losses.push(t.step().loss);
                }
                assert_eq!(t.host_ws.len(), dp, "one workspace per replica");
                assert_eq!(t.replica_pools.len(), if dp > 1 { dp } else { 0 });
                let weights = t
                    .model
                    .to_host(&cfg)
                    .into_iter()
                    .flat_map(|p| p.2)
                    .collect();
                (losses, weights)
            })
        };
        let (losses, weights) = train(2, 2);
        assert_eq!(losses.len(), 3);
        for threads in [1, 3] {
            let (l, w) = train(2, threads);
            assert!(
                l == losses && w == weights,
                "2 replicas on {threads} threads differ from 2 replicas on 2 threads"
            );
        }
        let (one_replica, _) = train(1, 2);
        for (a, b) in one_replica.iter().zip(&losses) {
            assert!(
                (a - b).abs() < 1e-4 * a.abs(),
                "1 vs 2 replicas: loss {a} vs {b}"
            );
        }
    }

    /// A rollout mini-batch of two completions of one prompt (5 response tokens each after a 3-token prompt),
    /// rewards 1 and 0 or, with `equal`, both 1; the old and reference log-probs are made up.
    fn policy_batch(cfg: &ModelConfig, seed: u64, equal: bool) -> PolicyBatch {
        let (rows, t) = (2, 8);
        let mut rng = Rng::new(seed);
        let mut ids = || -> Vec<i32> {
            (0..rows * t)
                .map(|_| rng.below(cfg.vocab_size) as i32)
                .collect()
        };
        let (inputs, targets) = (ids(), ids());
        let weights = (0..rows * t)
            .map(|i| if i % t >= 3 { 1.0 } else { 0.0 })
            .collect();
        let rewards = if equal { [1.0, 1.0] } else { [1.0, 0.0] };
        PolicyBatch {
            batch: Batch {
                rows,
                seq_len: t,
                inputs,
                targets,
                weights,
            },
            advantages: group_advantages(&rewards, 2, true),
            old_logp: (0..rows * t)
                .map(|i| -3.0 + 0.25 * (i % 7) as f32)
                .collect(),
            ref_logp: Some(vec![-3.2; rows * t]),
        }
    }

    /// Weights and AdamW moments, as bits.
    fn trainer_bits(t: &Trainer<B>) -> Vec<u32> {
        let mut out: Vec<u32> = t
            .model
            .to_host(&t.model_config)
            .into_iter()
            .flat_map(|p| p.2)
            .map(f32::to_bits)
            .collect();
        for x in t.opt.m.iter().chain(&t.opt.v) {
            out.extend(
                x.clone()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(f32::to_bits),
            );
        }
        out
    }

    /// Six policy steps straight, and three, a save, a resume without data and three more: the same losses,
    /// state, weights and moments, bit for bit. The schedule counts optimizer steps (seq_len = batch_size =
    /// grad_accum = 1, token_budget = 6).
    #[test]
    fn a_trainer_without_data_resumes_its_policy_steps_bit_for_bit() {
        let tc = TrainConfig {
            seq_len: 1,
            batch_size: 1,
            grad_accum: 1,
            token_budget: 6,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_frac: 0.34,
            ..Default::default()
        };
        let texts = corpus(4);
        let (_, cfg, _) = setup(&tc, &texts);
        let device = Default::default();
        let batches: Vec<PolicyBatch> = (0..6).map(|i| policy_batch(&cfg, i, false)).collect();
        let loss_cfg = PolicyLossConfig {
            temperature: 0.8,
            kl_coef: 0.05,
            ..Default::default()
        };
        let new = || {
            Trainer::<B>::without_data(
                Qwen2::init(&cfg, 1, &device),
                cfg.clone(),
                tc.clone(),
                device,
            )
        };
        let mut straight = new();
        assert_eq!(straight.config().total_steps(), 6);
        let mut losses = vec![];
        for (i, pb) in batches.iter().enumerate() {
            let (s, st) = straight.policy_step(pb, &loss_cfg);
            assert!(s.check_finite().is_ok(), "{s:?}");
            assert_eq!((s.step, s.lr, s.loss), (i + 1, tc.lr_at(i), st.loss));
            assert_eq!(s.tokens_seen, 16 * (i as u64 + 1));
            assert!(s.grad_norm > 0.0 && st.tokens == 10, "{s:?} {st:?}");
            losses.push(s.loss);
        }
        assert!(straight.done());

        let dir = std::env::temp_dir().join(format!("lm-no-data-{}", std::process::id()));
        let mut first = new();
        for pb in &batches[..3] {
            first.policy_step(pb, &loss_cfg);
        }
        first.save(&dir).unwrap();
        drop(first);
        let checkpoint = Checkpoint::open(&dir).unwrap().expect("a checkpoint");
        assert_eq!(checkpoint.state().step, 3);
        assert_eq!(checkpoint.state().cursor, Cursor { epoch: 0, block: 0 });
        let mut resumed = Trainer::<B>::resume_without_data(checkpoint, device).unwrap();
        assert!(resumed.data.is_none());
        let tail: Vec<f64> = batches[3..]
            .iter()
            .map(|pb| resumed.policy_step(pb, &loss_cfg).0.loss)
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&losses[3..], &tail[..]);
        assert_eq!(straight.state, resumed.state);
        assert!(
            trainer_bits(&straight) == trainer_bits(&resumed),
            "weights or moments differ"
        );
    }

    #[test]
    #[should_panic(expected = "this trainer has none (made by without_data")]
    fn step_on_a_trainer_without_data_panics_with_what_to_call_instead() {
        let tc = TrainConfig::default();
        let (_, cfg, _) = setup(&tc, &corpus(2));
        let device = Default::default();
        let mut t = Trainer::<B>::without_data(Qwen2::init(&cfg, 1, &device), cfg, tc, device);
        t.step();
    }

    /// Advantages 0 and no KL term: the policy step's gradient is exactly 0, so without weight decay the
    /// weights keep their bits (AdamW's update is 0 / (0 + eps)), while the step still counts. The old
    /// log-probs are far from the model's: ratios away from 1 do not matter when A = 0.
    #[test]
    fn a_policy_step_on_a_group_of_equal_rewards_leaves_the_weights_as_they_were() {
        let tc = TrainConfig {
            seq_len: 1,
            batch_size: 1,
            token_budget: 10,
            weight_decay: 0.0,
            warmup_frac: 0.0,
            ..Default::default()
        };
        let (_, cfg, _) = setup(&tc, &corpus(2));
        let device = Default::default();
        let mut t =
            Trainer::<B>::without_data(Qwen2::init(&cfg, 2, &device), cfg.clone(), tc, device);
        let before = trainer_bits(&t);
        let pb = policy_batch(&cfg, 7, true);
        assert_eq!(pb.advantages, [0.0, 0.0]);
        let loss_cfg = PolicyLossConfig {
            kl_coef: 0.0,
            ..Default::default()
        };
        let (s, st) = t.policy_step(&pb, &loss_cfg);
        assert_eq!((s.step, s.grad_norm, st.loss), (1, 0.0, 0.0), "{s:?}");
        // The moments stay 0 as well.
        assert!(trainer_bits(&t) == before, "weights or moments changed");
    }

    #[test]
    fn tiny_model_overfits_a_handful_of_problems() {
        let tc = TrainConfig {
            // Every problem fits a block whole.
            seq_len: 128,
            batch_size: 2,
            token_budget: 400 * 256,
            lr: 1e-2,
            min_lr: 1e-3,
            warmup_frac: 0.05,
            weight_decay: 0.0,
            loss_on: LossOn::Solution,
            ..Default::default()
        };
        let texts = corpus(4);
        let (tok, cfg, data) = setup(&tc, &texts);
        let device = Default::default();
        let mut t = Trainer::<B>::new(
            Qwen2::init(&cfg, 2, &device),
            cfg.clone(),
            tc.clone(),
            data,
            device,
        );
        while !t.done() {
            t.step();
        }
        let model = t.model.valid();
        // Loss on each whole problem, read from its start, solution tokens only.
        for text in &texts {
            let ids = tok.encode(text).unwrap();
            let one = PackedData::new(
                vec![ids.clone()],
                LossOn::Solution,
                Packing::Whole,
                ids.len() - 1,
                0,
                false,
            );
            let loss = eval_loss(&model, &mut { one }, 1, 1, false, &device);
            assert!(loss < 0.05, "loss {loss} on {text}");
        }
        // And greedy decoding reproduces every gold solution.
        let prompts: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                tok.encode(&t[..t.find("<solution>").unwrap() + "<solution>".len()])
                    .unwrap()
            })
            .collect();
        let out = generate(
            &model,
            &prompts,
            &SampleConfig::greedy(60),
            &mut Rng::new(0),
        );
        for (text, (p, s)) in texts.iter().zip(prompts.iter().zip(&out)) {
            let full: Vec<u32> = p.iter().chain(&s.tokens).copied().collect();
            let want = text.trim_end_matches("[EOS]");
            assert_eq!(tok.decode(&full).unwrap(), want);
        }
    }
}
