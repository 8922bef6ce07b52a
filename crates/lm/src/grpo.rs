//! The GRPO policy loss (paper-spec §6.1, verl's `core_algos`): group-normalised advantages, the clipped and
//! dual-clipped importance ratio, a KL penalty to a frozen reference model, and three ways to aggregate
//! per-token losses. Everything here is per token and knows nothing of prompts, rewards or plugins.
//!
//! A rollout batch is a [`Batch`] whose rows are `prompt ++ completion` sequences: `inputs[t]` predicts
//! `targets[t]`, and `weights[t]` is 1 on the completion's tokens (the response mask) and 0 on prompt and
//! padding. Every per-token vector below (`old_logp`, `ref_logp`, log-probs, coefficients) is indexed like
//! `targets`, `[rows * seq_len]`, and is ignored where the mask is 0.
//!
//! The loss of a mini-batch is a sum of per-token terms, `L = Σ_t s_t · ℓ_t(logp_t)`, with `s_t` the
//! aggregation's scale ([`LossAgg`]) and
//! `ℓ_t = -clipped(r_t, A_t) + β · KL_t`, `r_t = exp(logp_t - old_t)`. So dL/dlogp_t is a per-token number
//! computed from the current log-probs ([`token_terms`]); the CPU path turns it into gradients with one
//! weighted cross-entropy backward pass, other backends let burn autodiff differentiate the same formula
//! ([`Trainer::policy_step`]).

use crate::data::Batch;
use serde::{Deserialize, Serialize};

/// How per-token losses become one number (verl's `loss_agg_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAgg {
    /// Mean over every response token of the mini-batch (the paper's).
    #[default]
    TokenMean,
    /// Mean over sequences of each sequence's token mean.
    SeqMeanTokenMean,
    /// Mean over sequences of each sequence's token sum (Dr. GRPO's length-unbiased form).
    SeqMeanTokenSum,
}

/// The per-token estimator of KL(π_θ ‖ π_ref).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `logp - ref` (unbiased, high variance).
    K1,
    /// `exp(ref - logp) - (ref - logp) - 1`, clamped to [-10, 10] (verl's `low_var_kl`, the paper's).
    #[default]
    K3,
}

/// The loss's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyLossConfig {
    /// ε_low: the ratio is clipped below at `1 - clip_low`.
    pub clip_low: f64,
    /// ε_high: the ratio is clipped above at `1 + clip_high` (DAPO's clip-higher when above `clip_low`).
    pub clip_high: f64,
    /// Dual clip c (> 1): for negative advantages the per-token loss is at most `-c · A`. `None`: off.
    pub dual_clip: Option<f64>,
    /// β, the KL coefficient. 0 means no reference model is needed (its log-probs are never read).
    pub kl_coef: f64,
    pub kl: KlEstimator,
    pub agg: LossAgg,
    /// Logits are divided by this before the log-softmax: the temperature the rollouts were sampled at, so
    /// that the recomputed log-probs are those of the sampling distribution. Must be > 0.
    pub temperature: f64,
}

impl Default for PolicyLossConfig {
    fn default() -> Self {
        PolicyLossConfig {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: Some(3.0),
            kl_coef: 0.001,
            kl: KlEstimator::K3,
            agg: LossAgg::TokenMean,
            temperature: 1.0,
        }
    }
}

/// Group-relative advantages, one per sequence: `rewards` holds consecutive groups of `group_size`
/// completions of the same prompt; each gets `R - mean_g`, divided by `std_g + 1e-6` (the unbiased std, as
/// verl) when `normalize_std` (false: Dr. GRPO). A group whose rewards are all equal gets 0 everywhere.
pub fn group_advantages(rewards: &[f32], group_size: usize, normalize_std: bool) -> Vec<f32> {
    let _ = (rewards, group_size, normalize_std);
    todo!()
}

/// One mini-batch of rollouts for a policy update.
#[derive(Clone, Debug)]
pub struct PolicyBatch {
    /// Sequences, targets and the response mask (see the module docs).
    pub batch: Batch,
    /// One advantage per row.
    pub advantages: Vec<f32>,
    /// Log-probs of each target under the policy that sampled the rollouts (π_old).
    pub old_logp: Vec<f32>,
    /// Log-probs under the reference model; required when `kl_coef > 0`.
    pub ref_logp: Option<Vec<f32>>,
}

/// What one evaluation of the loss saw, averaged over the response tokens of the mini-batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyLossStats {
    /// The aggregated loss L (policy term plus β · KL term).
    pub loss: f64,
    /// The aggregated policy term alone.
    pub pg_loss: f64,
    /// Mean per-token KL estimate (0 when `kl_coef` is 0).
    pub kl: f64,
    /// Fraction of response tokens whose ratio was clipped at `1 - clip_low` (with A < 0) ...
    pub clip_low_frac: f64,
    /// ... at `1 + clip_high` (with A > 0) ...
    pub clip_high_frac: f64,
    /// ... and whose loss the dual clip bounded (A < 0, ratio above c).
    pub dual_clip_frac: f64,
    /// Mean ratio r_t.
    pub ratio_mean: f64,
    /// Response tokens in the mini-batch.
    pub tokens: u64,
}

/// The per-token scale `s_t` of `agg` for this batch's response mask (0 off the mask).
pub fn aggregation_scales(agg: LossAgg, batch: &Batch) -> Vec<f32> {
    let _ = (agg, batch);
    todo!()
}

/// The loss at the current log-probs `logp` (indexed like `targets`) and dL/dlogp per token (0 off the
/// mask), with `scales` from [`aggregation_scales`].
pub fn token_terms(
    cfg: &PolicyLossConfig,
    pb: &PolicyBatch,
    scales: &[f32],
    logp: &[f32],
) -> (PolicyLossStats, Vec<f32>) {
    let _ = (cfg, pb, scales, logp);
    todo!()
}

/// Log-probs (at `temperature`) of every target of `batch` under `model`, and the entropy of the predicted
/// distribution at each position, both indexed like `targets` (computed everywhere; callers mask). Forward
/// only. On the CPU backends the host forward pass does the work ([`crate::host_train`]).
pub fn token_logprobs<B: burn::tensor::backend::Backend>(
    model: &crate::model::Qwen2<B>,
    batch: &Batch,
    temperature: f64,
) -> TokenLogprobs {
    let _ = (model, batch, temperature);
    todo!()
}

/// [`token_logprobs`]' result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenLogprobs {
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
}
