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
use crate::model::Qwen2;
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
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
///
/// A group of one also gets 0 (verl instead leaves `R / (1 + 1e-6)`: with nothing to compare against, no
/// relative advantage exists). Equal rewards are tested as such rather than left to the arithmetic, where a
/// rounding residue of the mean divided by `0 + 1e-6` would become a spurious advantage (torch's f32 mean
/// can leave one; the f64 sums here happen to be exact). Computed in f64.
pub fn group_advantages(rewards: &[f32], group_size: usize, normalize_std: bool) -> Vec<f32> {
    assert!(group_size > 0, "group_size must be at least 1");
    assert!(
        rewards.len().is_multiple_of(group_size),
        "{} rewards are not whole groups of {group_size}",
        rewards.len()
    );
    assert!(
        rewards.iter().all(|r| r.is_finite()),
        "rewards must be finite"
    );
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size) {
        if g.iter().all(|&r| r == g[0]) {
            out.extend(std::iter::repeat_n(0.0, g.len()));
            continue;
        }
        let k = g.len() as f64;
        let mean = g.iter().map(|&r| r as f64).sum::<f64>() / k;
        let var = g.iter().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / (k - 1.0);
        let div = if normalize_std {
            var.sqrt() + 1e-6
        } else {
            1.0
        };
        out.extend(g.iter().map(|&r| ((r as f64 - mean) / div) as f32));
    }
    out
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

/// Whether position `i` of a batch is a response token: the mask is `weight > 0`.
fn in_mask(w: f32) -> bool {
    w > 0.0
}

/// The per-token scale `s_t` of `agg` for this batch's response mask (0 off the mask). Rows without response
/// tokens count for nothing (not even in the number of sequences a mean is over), and a batch without any
/// gets all 0.
pub fn aggregation_scales(agg: LossAgg, batch: &Batch) -> Vec<f32> {
    assert!(batch.seq_len > 0, "a batch of empty rows");
    assert_eq!(
        batch.weights.len(),
        batch.rows * batch.seq_len,
        "batch weights"
    );
    let counts: Vec<usize> = batch
        .weights
        .chunks(batch.seq_len)
        .map(|r| r.iter().filter(|&&w| in_mask(w)).count())
        .collect();
    let total: usize = counts.iter().sum();
    let rows_with = counts.iter().filter(|&&c| c > 0).count();
    let mut out = Vec::with_capacity(batch.weights.len());
    for (row, &c) in batch.weights.chunks(batch.seq_len).zip(&counts) {
        let s = match agg {
            LossAgg::TokenMean => 1.0 / total as f64,
            LossAgg::SeqMeanTokenMean => 1.0 / (rows_with * c) as f64,
            LossAgg::SeqMeanTokenSum => 1.0 / rows_with as f64,
        } as f32;
        out.extend(row.iter().map(|&w| if in_mask(w) { s } else { 0.0 }));
    }
    out
}

/// Panics, naming the problem, when `pb` does not fit together or `cfg` is out of range.
fn validate(cfg: &PolicyLossConfig, pb: &PolicyBatch) {
    let b = &pb.batch;
    let n = b.rows * b.seq_len;
    assert!(
        b.inputs.len() == n && b.targets.len() == n && b.weights.len() == n,
        "batch of {} x {}: inputs {}, targets {}, weights {}",
        b.rows,
        b.seq_len,
        b.inputs.len(),
        b.targets.len(),
        b.weights.len()
    );
    assert_eq!(pb.advantages.len(), b.rows, "one advantage per row");
    assert_eq!(pb.old_logp.len(), n, "old_logp: one log-prob per token");
    if cfg.kl_coef > 0.0 {
        let r = pb
            .ref_logp
            .as_ref()
            .expect("kl_coef > 0 needs the reference model's log-probs (ref_logp)");
        assert_eq!(r.len(), n, "ref_logp: one log-prob per token");
    }
    assert!(
        cfg.clip_low >= 0.0 && cfg.clip_high >= 0.0,
        "clip_low and clip_high must be >= 0"
    );
    if let Some(c) = cfg.dual_clip {
        assert!(c > 1.0, "dual_clip must be > 1, got {c}");
    }
    assert!(
        cfg.temperature > 0.0 && cfg.temperature.is_finite(),
        "temperature must be > 0, got {}",
        cfg.temperature
    );
    assert!(
        cfg.kl_coef >= 0.0 && cfg.kl_coef.is_finite(),
        "kl_coef must be >= 0"
    );
}

/// verl clamps the log-ratio (and k3's log-ratio) to ±20 before `exp`, so that a token the policy has moved
/// far from cannot make a ratio infinite (nor autodiff's `0 · e^x` a NaN); past the clamp the derivative is 0.
const LOG_RATIO_CLAMP: f64 = 20.0;

/// One token's policy term.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PgTerm {
    loss: f64,
    /// d loss / d logp.
    grad: f64,
    ratio: f64,
    clip_low: bool,
    clip_high: bool,
    dual: bool,
}

/// verl's "vanilla" PPO term with dual clip for advantage `a` at log-ratio `logp − old`:
/// `max(−a·r, −a·clamp(r, 1 − ε_low, 1 + ε_high))`, bounded by `−a·c` when `a < 0`.
///
/// Ties follow torch's backward, which splits the gradient evenly between equal inputs of
/// `torch.maximum` / `torch.min`: for the clip's maximum both branches then have the same derivative
/// (equal values mean the ratio is inside the clamp, whose boundary is inclusive), so a tie is the unclipped
/// branch; for the dual clip at exactly `r = c` the token keeps half the unclipped gradient. Clip fractions
/// count strict inequalities, as verl's `torch.gt`.
fn pg_term(cfg: &PolicyLossConfig, a: f64, log_ratio: f64) -> PgTerm {
    let inside = (-LOG_RATIO_CLAMP..=LOG_RATIO_CLAMP).contains(&log_ratio);
    let r = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp();
    // dr / dlogp.
    let dr = if inside { r } else { 0.0 };
    let (lo, hi) = (1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let (l1, d1) = (-a * r, -a * dr);
    let l2 = -a * r.clamp(lo, hi);
    let d2 = if (lo..=hi).contains(&r) { -a * dr } else { 0.0 };
    let (mut loss, mut grad) = if l1 > l2 {
        (l1, d1)
    } else if l2 > l1 {
        (l2, d2)
    } else {
        (l1, 0.5 * (d1 + d2))
    };
    let clipped = l2 > l1;
    let mut dual = false;
    if a < 0.0
        && let Some(c) = cfg.dual_clip
    {
        let l3 = -a * c;
        if loss > l3 {
            (loss, grad, dual) = (l3, 0.0, true);
        } else if loss == l3 {
            grad *= 0.5;
        }
    }
    PgTerm {
        loss,
        grad,
        ratio: r,
        clip_low: clipped && a < 0.0,
        clip_high: clipped && a > 0.0,
        dual,
    }
}

/// One token's KL estimate and its derivative with respect to `logp`. k3's clamp to [−10, 10] is inclusive
/// (torch.clamp passes the gradient at the bounds); k3 ≥ 0, so only the upper bound ever acts.
fn kl_term(kind: KlEstimator, logp: f64, ref_logp: f64) -> (f64, f64) {
    match kind {
        KlEstimator::K1 => (logp - ref_logp, 1.0),
        KlEstimator::K3 => {
            let x = ref_logp - logp;
            let inside = (-LOG_RATIO_CLAMP..=LOG_RATIO_CLAMP).contains(&x);
            let x = x.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
            let k = x.exp() - x - 1.0;
            // dk/dlogp = (e^x − 1) · dx/dlogp, dx/dlogp = −1.
            let dk = if inside { 1.0 - x.exp() } else { 0.0 };
            if (-10.0..=10.0).contains(&k) {
                (k, dk)
            } else {
                (k.clamp(-10.0, 10.0), 0.0)
            }
        }
    }
}

/// The loss at the current log-probs `logp` (indexed like `targets`) and dL/dlogp per token (0 off the
/// mask), with `scales` from [`aggregation_scales`].
///
/// Per response token, in f64: `ℓ_t = pg_t + β · KL_t` with `pg_t` verl's clipped and dual-clipped term
/// (see `pg_term` for ties) at `r_t = exp(clamp(logp_t − old_t, ±20))`, and `KL_t` k1 = `logp − ref` or k3 =
/// `clamp(e^x − x − 1, ±10)`, `x = clamp(ref − logp, ±20)` (the inner clamp is newer verl's and changes
/// nothing: k3 is already at its bound there). `L = Σ s_t · ℓ_t`; the coefficient is the exact derivative of
/// that piecewise function (0 where a clamp or the dual clip is active). The reference log-probs are read
/// only when `kl_coef > 0`. Off the mask nothing is read.
pub fn token_terms(
    cfg: &PolicyLossConfig,
    pb: &PolicyBatch,
    scales: &[f32],
    logp: &[f32],
) -> (PolicyLossStats, Vec<f32>) {
    validate(cfg, pb);
    let b = &pb.batch;
    let n = b.rows * b.seq_len;
    assert_eq!(scales.len(), n, "scales: one per token");
    assert_eq!(logp.len(), n, "logp: one per token");
    let ref_logp = pb.ref_logp.as_deref().filter(|_| cfg.kl_coef > 0.0);
    let beta = cfg.kl_coef;
    let mut coef = vec![0.0f32; n];
    let mut st = PolicyLossStats::default();
    let (mut kl_sum, mut ratio_sum) = (0.0, 0.0);
    let (mut low, mut high, mut dual) = (0u64, 0u64, 0u64);
    for i in (0..n).filter(|&i| in_mask(b.weights[i])) {
        let (lp, s) = (logp[i] as f64, scales[i] as f64);
        let a = pb.advantages[i / b.seq_len] as f64;
        let pg = pg_term(cfg, a, lp - pb.old_logp[i] as f64);
        let (kl, dkl) = match ref_logp {
            Some(r) => kl_term(cfg.kl, lp, r[i] as f64),
            None => (0.0, 0.0),
        };
        st.loss += s * (pg.loss + beta * kl);
        st.pg_loss += s * pg.loss;
        coef[i] = (s * (pg.grad + beta * dkl)) as f32;
        kl_sum += kl;
        ratio_sum += pg.ratio;
        low += pg.clip_low as u64;
        high += pg.clip_high as u64;
        dual += pg.dual as u64;
        st.tokens += 1;
    }
    let mean = |x: f64| {
        if st.tokens > 0 {
            x / st.tokens as f64
        } else {
            0.0
        }
    };
    st.kl = mean(kl_sum);
    st.ratio_mean = mean(ratio_sum);
    st.clip_low_frac = mean(low as f64);
    st.clip_high_frac = mean(high as f64);
    st.dual_clip_frac = mean(dual as f64);
    (st, coef)
}

/// The loss of `pb` as burn tensor ops on the log-probs `logp` `[rows, seq_len]`: `(L, policy term)`, both
/// `[1]`, for autodiff to differentiate. The same formula as [`token_terms`], written independently of it
/// (its scales from the mask by tensor ops too), in the backend's precision; the tests hold the two to each
/// other. Off-mask old and reference log-probs are replaced by 0 first: the caller may leave anything there,
/// and the clamps keep every term finite, so a scale of 0 removes them exactly.
pub(crate) fn policy_loss_tensor<B: Backend>(
    logp: Tensor<B, 2>,
    pb: &PolicyBatch,
    cfg: &PolicyLossConfig,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    validate(cfg, pb);
    let device = logp.device();
    let (rows, t) = (pb.batch.rows, pb.batch.seq_len);
    let tensor = |v: Vec<f32>, shape: [usize; 2]| {
        Tensor::<B, 2>::from_data(TensorData::new(v, shape), &device)
    };
    let mask = tensor(pb.batch.weights.clone(), [rows, t]).greater_elem(0.0);
    let off = mask.clone().bool_not();
    let maskf = mask.float();
    let count = maskf.clone().sum_dim(1);
    let total = maskf.clone().sum().reshape([1, 1]).clamp_min(1.0);
    let rows_with = count
        .clone()
        .greater_elem(0.0)
        .float()
        .sum()
        .reshape([1, 1])
        .clamp_min(1.0);
    let denom = match cfg.agg {
        LossAgg::TokenMean => total.expand([rows, t]),
        LossAgg::SeqMeanTokenMean => (count.clamp_min(1.0) * rows_with).expand([rows, t]),
        LossAgg::SeqMeanTokenSum => rows_with.expand([rows, t]),
    };
    let scales = maskf / denom;

    let adv = tensor(pb.advantages.clone(), [rows, 1]).expand([rows, t]);
    let neg_adv = -adv.clone();
    let old = tensor(pb.old_logp.clone(), [rows, t]).mask_fill(off.clone(), 0.0);
    let ratio = (logp.clone() - old)
        .clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        .exp();
    let l1 = neg_adv.clone() * ratio.clone();
    let l2 = neg_adv.clone() * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    // burn's max_pair keeps its left operand on a tie: the unclipped branch, whose derivative there is
    // torch's too (see pg_term).
    let clipped = l1.max_pair(l2);
    let pg = match cfg.dual_clip {
        None => clipped,
        Some(c) => {
            let l3 = neg_adv * c;
            let over = clipped.clone().greater(l3.clone());
            let tie = clipped.clone().equal(l3.clone());
            // (x + l3) / 2 equals x at a tie and carries half of x's gradient, as torch.min's backward.
            let bounded = clipped
                .clone()
                .mask_where(tie, (clipped.clone() + l3.clone()) * 0.5)
                .mask_where(over, l3);
            clipped.mask_where(adv.lower_elem(0.0), bounded)
        }
    };
    let pg_loss = (scales.clone() * pg).sum();
    if cfg.kl_coef <= 0.0 {
        return (pg_loss.clone(), pg_loss);
    }
    let ref_logp = pb.ref_logp.clone().expect("checked by validate");
    let ref_logp = tensor(ref_logp, [rows, t]).mask_fill(off, 0.0);
    let kl = match cfg.kl {
        KlEstimator::K1 => logp - ref_logp,
        KlEstimator::K3 => {
            let x = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
            (x.clone().exp() - x - 1.0).clamp(-10.0, 10.0)
        }
    };
    let loss = pg_loss.clone() + (scales * kl).sum() * cfg.kl_coef;
    (loss, pg_loss)
}

/// The GRPO loss's statistics and every parameter's gradient (canonical order) on the host path: the
/// forward pass, then [`token_terms`] at its log-probs, whose coefficients weigh one cross-entropy backward
/// pass ([`crate::host_train::Workspace::logprob_grads`] with `w_t = −dL/dlogp_t`).
pub(crate) fn host_policy_grads(
    ws: &mut crate::host_train::Workspace,
    model: &crate::host::HostModel,
    pb: &PolicyBatch,
    cfg: &PolicyLossConfig,
) -> (PolicyLossStats, Vec<Vec<f32>>) {
    validate(cfg, pb);
    let scales = aggregation_scales(cfg.agg, &pb.batch);
    let mut stats = PolicyLossStats::default();
    let grads = ws.logprob_grads(model, &pb.batch, false, cfg.temperature, |logp| {
        let (s, coef) = token_terms(cfg, pb, &scales, logp);
        stats = s;
        coef.into_iter().map(|c| -c).collect()
    });
    (stats, grads)
}

/// [`host_policy_grads`] through burn autodiff of [`policy_loss_tensor`]. The statistics besides the loss
/// come from [`token_terms`] at the same log-probs; `loss` and `pg_loss` are the autodiff graph's own.
pub(crate) fn burn_policy_grads<B: AutodiffBackend>(
    model: &Qwen2<B>,
    pb: &PolicyBatch,
    cfg: &PolicyLossConfig,
    device: &B::Device,
) -> (PolicyLossStats, Vec<Tensor<B::InnerBackend, 2>>) {
    validate(cfg, pb);
    let logp = burn_logprobs(model, &pb.batch, cfg.temperature, device).0;
    let host_logp = to_vec(logp.clone());
    let (loss, pg_loss) = policy_loss_tensor(logp, pb, cfg);
    let grads = loss.backward();
    let gs = crate::train::param_grads(model, &grads);
    let scales = aggregation_scales(cfg.agg, &pb.batch);
    let (mut stats, _) = token_terms(cfg, pb, &scales, &host_logp);
    stats.loss = loss.into_scalar().elem::<f64>();
    stats.pg_loss = pg_loss.into_scalar().elem::<f64>();
    (stats, gs)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// Target log-probs `[rows, seq_len]` (logits / temperature, log-softmax, the target's entry) and the
/// log-softmax itself `[rows, seq_len, vocab]`, through burn ops. Rollout rows are single documents: no
/// document mask.
fn burn_logprobs<B: Backend>(
    model: &Qwen2<B>,
    batch: &Batch,
    temperature: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let (logits, y, _) = crate::train::batch_logits(model, batch, false, device);
    let all = log_softmax(logits / temperature, 2);
    let (rows, t) = (batch.rows, batch.seq_len);
    let picked = all
        .clone()
        .gather(2, y.reshape([rows, t, 1]))
        .reshape([rows, t]);
    (picked, all)
}

/// Whether [`token_logprobs`] runs on the host: the CPU backends, with or without autodiff (the trainer's
/// model is an autodiff one).
fn host_forward<B: Backend>() -> bool {
    use burn::backend::Autodiff;
    use std::any::TypeId;
    let b = TypeId::of::<B>();
    [
        TypeId::of::<crate::CpuFlex>(),
        TypeId::of::<crate::CpuNdArray>(),
        TypeId::of::<Autodiff<crate::CpuFlex>>(),
        TypeId::of::<Autodiff<crate::CpuNdArray>>(),
    ]
    .contains(&b)
}

/// Log-probs (at `temperature`) of every target of `batch` under `model`, and the entropy of the predicted
/// distribution at each position, both indexed like `targets` (computed everywhere; callers mask). Forward
/// only. On the CPU backends the host forward pass does the work ([`crate::host_train`]).
pub fn token_logprobs<B: Backend>(
    model: &Qwen2<B>,
    batch: &Batch,
    temperature: f64,
) -> TokenLogprobs {
    assert!(
        temperature > 0.0 && temperature.is_finite(),
        "temperature must be > 0, got {temperature}"
    );
    if host_forward::<B>() {
        host_token_logprobs(model, batch, temperature)
    } else {
        burn_token_logprobs(model, batch, temperature)
    }
}

/// [`token_logprobs`] by the host forward pass.
pub(crate) fn host_token_logprobs<B: Backend>(
    model: &Qwen2<B>,
    batch: &Batch,
    temperature: f64,
) -> TokenLogprobs {
    let cfg = model.config();
    let host = crate::host::HostModel::new(&cfg, model.to_host(&cfg));
    let (logp, entropy) =
        crate::host_train::Workspace::new().token_logprobs(&host, batch, false, temperature);
    TokenLogprobs { logp, entropy }
}

/// [`token_logprobs`] by burn ops. An autodiff model's parameters are marked as not requiring gradients for
/// this call, so that the forward pass records no graph (pass `model.valid()` to skip autodiff entirely).
pub(crate) fn burn_token_logprobs<B: Backend>(
    model: &Qwen2<B>,
    batch: &Batch,
    temperature: f64,
) -> TokenLogprobs {
    let model = model.clone().no_grad();
    let device = model.embed.val().device();
    let (logp, all) = burn_logprobs(&model, batch, temperature, &device);
    let entropy = -(all.clone().exp() * all).sum_dim(2);
    TokenLogprobs {
        logp: to_vec(logp),
        entropy: to_vec(entropy),
    }
}

/// [`token_logprobs`]' result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenLogprobs {
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::host::HostModel;
    use crate::host_train::Workspace;
    use crate::host_train::tests::random_model;
    use crate::rng::Rng;
    use crate::{Cpu, CpuNdArray};
    use burn::backend::Autodiff;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(close(g as f64, w, tol), "{what}[{i}]: {g} vs {w}");
        }
    }

    /// A batch of `weights.len()` rows of `seq_len` (token ids 0: only the mask matters to the loss).
    fn rows(weights: &[&[f32]]) -> Batch {
        let t = weights[0].len();
        let n = weights.len() * t;
        Batch {
            rows: weights.len(),
            seq_len: t,
            inputs: vec![0; n],
            targets: vec![0; n],
            weights: weights.concat(),
        }
    }

    fn loss_cfg(
        dual_clip: Option<f64>,
        kl_coef: f64,
        kl: KlEstimator,
        agg: LossAgg,
    ) -> PolicyLossConfig {
        PolicyLossConfig {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip,
            kl_coef,
            kl,
            agg,
            temperature: 1.0,
        }
    }

    #[test]
    fn advantages_with_and_without_the_std_against_hand_computed_numbers() {
        // Groups of 4: mean 0.5 with unbiased std 1/√3; all equal; mean 1 with unbiased std √2.
        let rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 3.0, 0.0, 1.0, 0.0];
        let a = 0.866_023_903_787_036_5;
        let (b, c) = (1.414_212_562_373_802_2, -0.707_106_281_186_901_1);
        let want = [a, -a, -a, a, 0.0, 0.0, 0.0, 0.0, b, c, 0.0, c];
        assert_close(&group_advantages(&rewards, 4, true), &want, 1e-6, "std");
        let want = [
            0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0, -1.0, 0.0, -1.0,
        ];
        assert_close(&group_advantages(&rewards, 4, false), &want, 1e-7, "no std");
        // Equal rewards give exactly 0, with or without the std; so does a group of one.
        for norm in [true, false] {
            assert!(
                group_advantages(&[0.1; 6], 6, norm)
                    .iter()
                    .all(|&x| x == 0.0)
            );
            assert_eq!(group_advantages(&[0.3, 1.0, -2.0], 1, norm), [0.0; 3]);
        }
    }

    #[test]
    fn aggregation_scales_count_only_rows_with_response_tokens() {
        let b = rows(&[&[1.0, 1.0, 0.0], &[0.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]);
        let s = |agg| aggregation_scales(agg, &b);
        let third = 1.0 / 3.0;
        assert_close(
            &s(LossAgg::TokenMean),
            &[third, third, 0.0, 0.0, 0.0, 0.0, 0.0, third, 0.0],
            1e-7,
            "token-mean",
        );
        // Two sequences with tokens: (1/2)(1/2) each for the first's two tokens, (1/2)(1/1) for the last's.
        assert_close(
            &s(LossAgg::SeqMeanTokenMean),
            &[0.25, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0],
            1e-7,
            "seq-mean-token-mean",
        );
        assert_close(
            &s(LossAgg::SeqMeanTokenSum),
            &[0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0],
            1e-7,
            "seq-mean-token-sum",
        );
        let empty = rows(&[&[0.0, 0.0]]);
        assert_eq!(aggregation_scales(LossAgg::TokenMean, &empty), [0.0, 0.0]);
    }

    /// `old = 0` everywhere, so the log-prob of a token is its log-ratio.
    fn policy(b: Batch, advantages: Vec<f32>, ref_logp: Option<Vec<f32>>) -> PolicyBatch {
        let n = b.rows * b.seq_len;
        PolicyBatch {
            batch: b,
            advantages,
            old_logp: vec![0.0; n],
            ref_logp,
        }
    }

    fn ln(r: f64) -> f32 {
        r.ln() as f32
    }

    #[test]
    fn low_and_high_clipping_with_token_mean_against_hand_computed_numbers() {
        let mut c = loss_cfg(None, 0.0, KlEstimator::K3, LossAgg::TokenMean);
        c.clip_high = 0.28;
        let pb = policy(
            rows(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0]]),
            vec![1.0, -2.0],
            None,
        );
        // A = 1: r = 1.5 is clipped at 1.28 (no gradient), 1.1 is inside, 0.5 is below 0.8 but the
        // pessimistic max keeps the unclipped -0.5. A = -2: r = 0.5 is clipped at 0.8 (2 · 0.8 = 1.6 beats
        // 2 · 0.5), r = 1.5 is not (3 beats 2 · 1.28). The masked-out token reads logp 7, which would count.
        let logp = [ln(1.5), ln(1.1), ln(0.5), ln(0.5), ln(1.5), 7.0];
        let scales = aggregation_scales(c.agg, &pb.batch);
        let (st, coef) = token_terms(&c, &pb, &scales, &logp);
        let loss = 0.2 * (-1.28 - 1.1 - 0.5 + 1.6 + 3.0);
        assert!(close(st.loss, loss, 1e-6), "{st:?}");
        assert!(close(st.pg_loss, loss, 1e-6) && st.kl == 0.0, "{st:?}");
        assert_close(
            &coef,
            &[0.0, -0.22, -0.1, 0.0, 0.6, 0.0],
            1e-6,
            "coefficients",
        );
        assert_eq!(st.tokens, 5);
        assert!(close(st.clip_high_frac, 0.2, 1e-12) && close(st.clip_low_frac, 0.2, 1e-12));
        assert_eq!(st.dual_clip_frac, 0.0);
        assert!(close(st.ratio_mean, 5.1 / 5.0, 1e-6), "{st:?}");
    }

    #[test]
    fn the_dual_clip_bounds_negative_advantages_only_with_seq_mean_token_sum() {
        let c = loss_cfg(Some(3.0), 0.0, KlEstimator::K3, LossAgg::SeqMeanTokenSum);
        let pb = policy(
            rows(&[&[1.0, 1.0, 1.0], &[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0]]),
            vec![-1.0, 1.0, -1.0],
            None,
        );
        // A = -1: r = 4 is dual-clipped to 3 (no gradient), r = 2.5 is below c (gradient -A · r), r = 1 is a
        // tie of the clip's max whose gradient is the unclipped one. A = 1, r = 4: clipped at 1.2, and the
        // dual clip does not apply. A = -1, r = 0.5: clipped at 0.8.
        let logp = [ln(4.0), ln(2.5), 0.0, ln(4.0), 0.0, 0.0, ln(0.5), 0.0, 0.0];
        let scales = aggregation_scales(c.agg, &pb.batch);
        let (st, coef) = token_terms(&c, &pb, &scales, &logp);
        assert!(
            close(st.loss, (3.0 + 2.5 + 1.0 - 1.2 + 0.8) / 3.0, 1e-6),
            "{st:?}"
        );
        let third = 1.0 / 3.0;
        assert_close(
            &coef,
            &[0.0, 2.5 * third, third, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            1e-6,
            "coefficients",
        );
        assert_eq!(st.tokens, 5);
        for f in [st.dual_clip_frac, st.clip_high_frac, st.clip_low_frac] {
            assert!(close(f, 0.2, 1e-12), "{st:?}");
        }
    }

    #[test]
    fn a_tie_with_the_dual_clip_keeps_half_the_gradient_as_torch_min_does() {
        // c = e^0.5 and a log-ratio of 0.5: l_clip = -A · r equals -A · c exactly.
        let c = loss_cfg(Some(0.5f64.exp()), 0.0, KlEstimator::K3, LossAgg::TokenMean);
        let tie = pg_term(&c, -1.0, 0.5);
        assert_eq!(tie.loss, 0.5f64.exp());
        assert_eq!(tie.grad, 0.5 * 0.5f64.exp());
        assert!(!tie.dual);
        let above = pg_term(&c, -1.0, 0.500001);
        assert!(above.dual && above.grad == 0.0 && above.loss == 0.5f64.exp());
        let below = pg_term(&c, -1.0, 0.499999);
        assert!(!below.dual && below.grad == below.ratio);
        // burn's side of the same tie (its max_pair / min_pair alone would give the whole gradient): c is
        // the ratio burn computes at a log-ratio of 0.5, A = -1, one token.
        type B = Autodiff<Cpu>;
        let device = Default::default();
        let one = |x: f32| Tensor::<B, 2>::from_data(TensorData::new(vec![x], [1, 1]), &device);
        let r = to_vec((one(0.5) - one(0.0)).exp())[0];
        let pb = policy(rows(&[&[1.0]]), vec![-1.0], None);
        let logp = one(0.5).require_grad();
        let c = loss_cfg(Some(r as f64), 0.0, KlEstimator::K3, LossAgg::TokenMean);
        let (loss, _) = policy_loss_tensor(logp.clone(), &pb, &c);
        let grads = loss.clone().backward();
        assert_eq!(to_vec(loss)[0], r);
        assert_eq!(to_vec(logp.grad(&grads).unwrap())[0], 0.5 * r);
        // Past verl's ±20 clamp of the log-ratio the ratio stops moving: no gradient.
        let far = pg_term(
            &loss_cfg(None, 0.0, KlEstimator::K3, LossAgg::TokenMean),
            -1.0,
            25.0,
        );
        assert_eq!((far.ratio, far.grad), (20f64.exp(), 0.0));
    }

    #[test]
    fn k3_with_its_clamp_and_k1_with_seq_mean_token_mean_against_hand_computed_numbers() {
        // A = 0: only the KL term remains. ref - logp = x per token: 0, ln 2, -1 in the first row; 3 and -12
        // (both past k3's bound of 10: no gradient) in the second; the third row has no response tokens.
        let b = rows(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0], &[0.0, 0.0, 0.0]]);
        let x = [0.0, 2f64.ln(), -1.0, 3.0, -12.0, 0.0, 0.0, 0.0, 0.0];
        let logp = [-1.0f32, -2.0, -0.5, -3.0, -1.5, -1.0, -1.0, -1.0, -1.0];
        let ref_logp: Vec<f32> = logp
            .iter()
            .zip(&x)
            .map(|(&l, &x)| (l as f64 + x) as f32)
            .collect();
        let mut pb = policy(b, vec![0.0; 3], Some(ref_logp));
        pb.old_logp = logp.to_vec();
        let (r0, r1) = (1.0 / 6.0, 1.0 / 4.0);
        let c = loss_cfg(Some(3.0), 0.5, KlEstimator::K3, LossAgg::SeqMeanTokenMean);
        let scales = aggregation_scales(c.agg, &pb.batch);
        let (st, coef) = token_terms(&c, &pb, &scales, &logp);
        let k = [0.0, 2.0 - 2f64.ln() - 1.0, (-1f64).exp(), 10.0, 10.0];
        let loss = 0.5 * ((k[0] + k[1] + k[2]) * r0 + (k[3] + k[4]) * r1);
        assert!(close(st.loss, loss, 1e-6) && st.pg_loss == 0.0, "{st:?}");
        assert!(close(st.kl, k.iter().sum::<f64>() / 5.0, 1e-6), "{st:?}");
        // dk3/dlogp = 1 - e^x.
        // (1 - e^(ln 2)) = -1 for the second token.
        let d = [0.0, -0.5 * r0, 0.5 * (1.0 - (-1f64).exp()) * r0];
        assert_close(
            &coef,
            &[d[0], d[1], d[2], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            1e-6,
            "k3 coefficients",
        );
        let c = loss_cfg(Some(3.0), 0.5, KlEstimator::K1, LossAgg::SeqMeanTokenMean);
        let (st, coef) = token_terms(&c, &pb, &scales, &logp);
        let k1: Vec<f64> = x[..5].iter().map(|x| -x).collect();
        let loss = 0.5 * ((k1[0] + k1[1] + k1[2]) * r0 + (k1[3] + k1[4]) * r1);
        assert!(close(st.loss, loss, 1e-6), "{st:?} vs {loss}");
        assert_close(
            &coef,
            &[
                0.5 * r0,
                0.5 * r0,
                0.5 * r0,
                0.5 * r1,
                0.5 * r1,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
            1e-7,
            "k1 coefficients",
        );
        // With kl_coef 0 the reference log-probs are not needed.
        pb.ref_logp = None;
        let c = loss_cfg(Some(3.0), 0.0, KlEstimator::K3, LossAgg::TokenMean);
        let (st, coef) = token_terms(&c, &pb, &scales, &logp);
        assert!(st.loss == 0.0 && st.kl == 0.0 && coef.iter().all(|&c| c == 0.0));
    }

    /// A random mini-batch for the numeric tests: log-ratios and k3 arguments drawn away from every kink (the
    /// clip bounds, c, and k3's bound, which it crosses at x ≈ 2.61 and x ≈ -11), so that a finite difference
    /// never straddles one.
    fn random_terms(seed: u64) -> (PolicyBatch, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let (r, t) = (4, 6);
        let weights: Vec<f32> = (0..r * t)
            .map(|i| {
                if i % t < 1 + i / t || i == 7 {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let b = Batch {
            rows: r,
            seq_len: t,
            inputs: vec![0; r * t],
            targets: vec![0; r * t],
            weights,
        };
        let mut uniform = |lo: f64, hi: f64, avoid: &[f64]| loop {
            let x = lo + (hi - lo) * rng.below(1_000_000) as f64 / 1e6;
            if avoid.iter().all(|k| (x - k).abs() > 0.02) {
                break x;
            }
        };
        let kinks = [0.8f64.ln(), 1.2f64.ln(), 3f64.ln()];
        let logp: Vec<f32> = (0..r * t)
            .map(|_| uniform(-4.0, -0.1, &[]) as f32)
            .collect();
        let old: Vec<f32> = logp
            .iter()
            .map(|&l| (l as f64 - uniform(-1.5, 1.6, &kinks)) as f32)
            .collect();
        let ref_logp: Vec<f32> = logp
            .iter()
            .map(|&l| (l as f64 + uniform(-3.0, 3.2, &[2.61])) as f32)
            .collect();
        let advantages = vec![1.3, -0.6, -1.7, 0.4];
        let pb = PolicyBatch {
            batch: b,
            advantages,
            old_logp: old,
            ref_logp: Some(ref_logp),
        };
        (pb, logp)
    }

    #[test]
    fn coefficients_are_the_finite_difference_of_the_loss() {
        let (pb, logp) = random_terms(3);
        for agg in [
            LossAgg::TokenMean,
            LossAgg::SeqMeanTokenMean,
            LossAgg::SeqMeanTokenSum,
        ] {
            for (dual, kl) in [(Some(3.0), KlEstimator::K3), (None, KlEstimator::K1)] {
                let c = loss_cfg(dual, 0.3, kl, agg);
                let scales = aggregation_scales(agg, &pb.batch);
                let (st, coef) = token_terms(&c, &pb, &scales, &logp);
                assert!(st.clip_low_frac > 0.0 && st.clip_high_frac > 0.0, "{st:?}");
                assert!(dual.is_none() || st.dual_clip_frac > 0.0, "{st:?}");
                for i in 0..logp.len() {
                    // The steps f32 can represent around logp_i, not the nominal ±1e-3.
                    let (up, down) = (logp[i] + 1e-3, logp[i] - 1e-3);
                    let at = |x: f32| {
                        let mut l = logp.clone();
                        l[i] = x;
                        token_terms(&c, &pb, &scales, &l).0.loss
                    };
                    let fd = (at(up) - at(down)) / (up as f64 - down as f64);
                    assert!(
                        (fd - coef[i] as f64).abs() <= 1e-3 * (coef[i].abs() as f64) + 1e-6,
                        "{agg:?} {dual:?} {kl:?} token {i}: coefficient {} vs finite difference {fd}",
                        coef[i]
                    );
                }
            }
        }
    }

    /// burn autodiff of the tensor formula, at the log-probs directly (no model), against the coefficients
    /// that the finite differences above check, and the two losses against each other.
    #[test]
    fn the_tensor_formula_differentiates_to_the_token_coefficients() {
        type B = Autodiff<Cpu>;
        let device = Default::default();
        let (mut pb, logp) = random_terms(5);
        // Off the mask anything may stand, even NaN: neither path may read it.
        pb.old_logp[0] = f32::NAN;
        pb.ref_logp.as_mut().unwrap()[0] = f32::NAN;
        let shape = [pb.batch.rows, pb.batch.seq_len];
        for agg in [
            LossAgg::TokenMean,
            LossAgg::SeqMeanTokenMean,
            LossAgg::SeqMeanTokenSum,
        ] {
            for (dual, kl) in [(Some(3.0), KlEstimator::K3), (None, KlEstimator::K1)] {
                let c = loss_cfg(dual, 0.3, kl, agg);
                let (st, coef) = token_terms(&c, &pb, &aggregation_scales(agg, &pb.batch), &logp);
                let leaf = Tensor::<B, 2>::from_data(TensorData::new(logp.clone(), shape), &device)
                    .require_grad();
                let (loss, pg) = policy_loss_tensor(leaf.clone(), &pb, &c);
                let grads = loss.clone().backward();
                let g = to_vec(leaf.grad(&grads).unwrap());
                let (loss, pg) = (to_vec(loss)[0] as f64, to_vec(pg)[0] as f64);
                assert!(
                    close(loss, st.loss, 1e-6) && close(pg, st.pg_loss, 1e-6),
                    "{agg:?}: {loss} {pg} vs {st:?}"
                );
                for (i, (g, c)) in g.iter().zip(&coef).enumerate() {
                    assert!(
                        (g - c).abs() <= 1e-6 * (1.0 + c.abs()),
                        "{agg:?} {dual:?} {kl:?} token {i}: burn {g} vs {c}"
                    );
                }
            }
        }
    }

    /// Three rollouts of 14 positions: a prompt of 3 + row positions (mask 0), a completion, then padding
    /// (mask 0) in the first two rows.
    fn rollouts(cfg: &ModelConfig, seed: u64) -> Batch {
        let (r, t) = (3, 14);
        let mut rng = Rng::new(seed);
        let ids = |rng: &mut Rng| {
            (0..r * t)
                .map(|_| rng.below(cfg.vocab_size) as i32)
                .collect()
        };
        let inputs = ids(&mut rng);
        let targets = ids(&mut rng);
        let ends = [10, 12, 14];
        let weights = (0..r * t)
            .map(|i| {
                let (row, pos) = (i / t, i % t);
                if pos >= 3 + row && pos < ends[row] {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Batch {
            rows: r,
            seq_len: t,
            inputs,
            targets,
            weights,
        }
    }

    fn max_abs(x: &[f32]) -> f32 {
        x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    #[test]
    fn token_logprobs_of_the_host_and_of_burn_agree() {
        let (cfg, params) = random_model(5);
        let b = rollouts(&cfg, 2);
        let model = Qwen2::<Cpu>::from_host(&cfg, params.clone(), &Default::default()).unwrap();
        for temperature in [1.0, 0.7] {
            let host = host_token_logprobs(&model, &b, temperature);
            let burn = burn_token_logprobs(&model, &b, temperature);
            for (what, h, w) in [
                ("logp", &host.logp, &burn.logp),
                ("entropy", &host.entropy, &burn.entropy),
            ] {
                assert_eq!(h.len(), b.rows * b.seq_len);
                for (i, (a, c)) in h.iter().zip(w.iter()).enumerate() {
                    assert!(
                        (a - c).abs() <= 2e-6 * (1.0 + c.abs()),
                        "T {temperature}, {what}[{i}]: host {a} vs burn {c}"
                    );
                }
            }
            let max_entropy = (cfg.vocab_size as f32).ln();
            assert!(host.entropy.iter().all(|&h| h > 0.0 && h <= max_entropy));
            assert!(host.logp.iter().all(|&l| l < 0.0));
        }
        // A lower temperature sharpens every distribution.
        let (hot, cold) = (
            host_token_logprobs(&model, &b, 1.0),
            host_token_logprobs(&model, &b, 0.5),
        );
        assert!(hot.entropy.iter().zip(&cold.entropy).all(|(h, c)| c < h));
        // The dispatch: an autodiff CPU model goes through the host, NdArray too, with the same numbers.
        let ad =
            Qwen2::<Autodiff<Cpu>>::from_host(&cfg, params.clone(), &Default::default()).unwrap();
        assert_eq!(
            token_logprobs(&ad, &b, 0.7),
            host_token_logprobs(&model, &b, 0.7)
        );
        let nd = Qwen2::<CpuNdArray>::from_host(&cfg, params, &Default::default()).unwrap();
        assert_eq!(
            token_logprobs(&nd, &b, 0.7),
            host_token_logprobs(&model, &b, 0.7)
        );
    }

    /// Host gradients (one weighted cross-entropy backward at the token coefficients) against burn autodiff
    /// of the tensor formula, with every clip active somewhere, k3 partly past its bound, T = 0.7.
    #[test]
    fn host_and_burn_autodiff_policy_gradients_agree() {
        type B = Autodiff<Cpu>;
        let (cfg, params) = random_model(11);
        let b = rollouts(&cfg, 4);
        let n = b.rows * b.seq_len;
        let temperature = 0.7;
        let host = HostModel::new(&cfg, params.clone());
        let (now, _) = Workspace::new().token_logprobs(&host, &b, false, temperature);
        let mut rng = Rng::new(8);
        let mut noise = |lo: f64, hi: f64| lo + (hi - lo) * rng.below(1_000_000) as f64 / 1e6;
        let old: Vec<f32> = now
            .iter()
            .map(|&l| (l as f64 - noise(-1.4, 1.4)) as f32)
            .collect();
        let ref_logp: Vec<f32> = now
            .iter()
            .map(|&l| (l as f64 + noise(-1.0, 3.5)) as f32)
            .collect();
        let k3_clamped = (0..n)
            .filter(|&i| b.weights[i] > 0.0)
            .filter(|&i| kl_term(KlEstimator::K3, now[i] as f64, ref_logp[i] as f64).1 == 0.0)
            .count();
        assert!(k3_clamped > 0, "no token past k3's bound");
        let pb = PolicyBatch {
            batch: b,
            advantages: vec![1.1, -0.8, -1.6],
            old_logp: old,
            ref_logp: Some(ref_logp),
        };
        let names = Qwen2::<Cpu>::param_shapes(&cfg);
        for (agg, dual, kl) in [
            (LossAgg::TokenMean, Some(3.0), KlEstimator::K3),
            (LossAgg::SeqMeanTokenMean, Some(3.0), KlEstimator::K3),
            (LossAgg::SeqMeanTokenSum, None, KlEstimator::K1),
        ] {
            let mut c = cfg_(dual, kl, agg);
            c.temperature = temperature;
            let (hs, hg) = host_policy_grads(&mut Workspace::new(), &host, &pb, &c);
            let model = Qwen2::<B>::from_host(&cfg, params.clone(), &Default::default()).unwrap();
            let (bs, bg) = burn_policy_grads(&model, &pb, &c, &Default::default());
            assert!(
                hs.clip_low_frac > 0.0 && hs.clip_high_frac > 0.0,
                "{agg:?}: {hs:?}"
            );
            assert!(dual.is_none() || hs.dual_clip_frac > 0.0, "{agg:?}: {hs:?}");
            assert!(
                close(hs.loss, bs.loss, 1e-5) && close(hs.pg_loss, bs.pg_loss, 1e-5),
                "{agg:?}: host {hs:?} vs burn {bs:?}"
            );
            assert_eq!(
                (
                    hs.tokens,
                    hs.clip_low_frac,
                    hs.clip_high_frac,
                    hs.dual_clip_frac
                ),
                (
                    bs.tokens,
                    bs.clip_low_frac,
                    bs.clip_high_frac,
                    bs.dual_clip_frac
                )
            );
            for ((name, _), (g, w)) in names.iter().zip(hg.iter().zip(bg)) {
                let w = w.into_data().to_vec::<f32>().unwrap();
                let scale = max_abs(&w);
                let diff = g
                    .iter()
                    .zip(&w)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(scale > 0.0, "{agg:?} {name}: burn gradient is all zero");
                assert!(
                    diff <= 1e-5 * scale,
                    "{agg:?} {name}: max |Δ| {diff} (max |g| {scale})"
                );
            }
        }
    }

    fn cfg_(dual: Option<f64>, kl: KlEstimator, agg: LossAgg) -> PolicyLossConfig {
        loss_cfg(dual, 0.05, kl, agg)
    }

    /// On policy (old = the current log-probs, the first mini-batch of the first epoch) every ratio is 1 and
    /// the loss's gradient is the advantage-weighted NLL gradient, `w_t = A · s_t`: here the host path's
    /// numbers are those of the pre-training path.
    #[test]
    fn on_policy_the_gradient_is_the_advantage_weighted_nll_gradient() {
        let (cfg, params) = random_model(2);
        let host = HostModel::new(&cfg, params);
        let b = rollouts(&cfg, 9);
        let (now, _) = Workspace::new().token_logprobs(&host, &b, false, 1.0);
        let pb = PolicyBatch {
            batch: b.clone(),
            advantages: vec![0.9, -1.3, 0.4],
            old_logp: now.clone(),
            // k3 at ref = logp is 0 with derivative 0: it must add nothing.
            ref_logp: Some(now),
        };
        for agg in [LossAgg::TokenMean, LossAgg::SeqMeanTokenSum] {
            let c = cfg_(Some(3.0), KlEstimator::K3, agg);
            let (st, grads) = host_policy_grads(&mut Workspace::new(), &host, &pb, &c);
            assert_eq!(st.ratio_mean, 1.0, "{st:?}");
            assert_eq!(st.kl, 0.0);
            assert_eq!(
                (st.clip_low_frac, st.clip_high_frac, st.dual_clip_frac),
                (0.0, 0.0, 0.0)
            );
            let scales = aggregation_scales(agg, &b);
            let weighted = Batch {
                weights: (0..scales.len())
                    .map(|i| pb.advantages[i / b.seq_len] * scales[i])
                    .collect(),
                ..b.clone()
            };
            let (nll, want) = Workspace::new().loss_and_grads(&host, &weighted, 1.0, false);
            // With every ratio 1 the loss itself is -Σ s · A.
            let sa: f64 = weighted.weights.iter().map(|&w| w as f64).sum();
            assert!(close(st.loss, -sa, 1e-6), "{st:?} vs {}", -sa);
            assert!(nll.is_finite());
            // Not just close: at T = 1 the weighted backward is the pre-training path's arithmetic, and the
            // weights are A · s to the bit (r = e^0 = 1 exactly).
            for (i, (g, w)) in grads.iter().zip(&want).enumerate() {
                assert!(max_abs(w) > 0.0, "parameter {i}: zero gradient");
                assert!(g == w, "{agg:?}: parameter {i} differs from loss_and_grads");
            }
        }
    }

    /// A group whose rewards are all equal has advantage 0: without the KL term its tokens carry no
    /// coefficient at all, on either path, however far the policy has moved from the old one.
    #[test]
    fn a_group_of_equal_rewards_contributes_no_policy_gradient() {
        let (cfg, params) = random_model(4);
        let host = HostModel::new(&cfg, params.clone());
        let b = rollouts(&cfg, 1);
        let advantages = group_advantages(&[0.5, 0.5, 0.5], 3, true);
        assert_eq!(advantages, [0.0; 3]);
        let (now, _) = Workspace::new().token_logprobs(&host, &b, false, 1.0);
        let pb = PolicyBatch {
            old_logp: now
                .iter()
                .enumerate()
                .map(|(i, l)| l + 0.3 * (i % 5) as f32 - 0.6)
                .collect(),
            batch: b,
            advantages,
            ref_logp: None,
        };
        let c = loss_cfg(Some(3.0), 0.0, KlEstimator::K3, LossAgg::TokenMean);
        let (st, hg) = host_policy_grads(&mut Workspace::new(), &host, &pb, &c);
        assert_eq!((st.loss, st.tokens > 0), (0.0, true));
        assert!(hg.iter().flatten().all(|&g| g == 0.0), "host gradient");
        let model = Qwen2::<Autodiff<Cpu>>::from_host(&cfg, params, &Default::default()).unwrap();
        let (_, bg) = burn_policy_grads(&model, &pb, &c, &Default::default());
        for g in bg {
            assert!(
                g.into_data()
                    .to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .all(|&g| g == 0.0),
                "burn gradient"
            );
        }
    }
}
