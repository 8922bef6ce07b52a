//! Hand-written forward + backward of [`crate::model::Qwen2`] over host `f32` buffers: what CPU training
//! runs instead of burn autodiff. It computes exactly what `train::shard_grads` computes (the summed weighted
//! token NLL of a batch and the gradients of that sum / `denom`, every parameter, canonical order), checked
//! against burn autodiff in the tests below.
//!
//! Why: on CPU, burn's autodiff graph spends as long on strided copies, memmoves and single-threaded
//! element-wise kernels as on GEMMs. Here every projection is one GEMM over all `rows × seq_len` tokens (the
//! `gemm` crate, multi-threaded), attention runs per (row, kv head) in parallel and skips the masked upper
//! triangle, and every element-wise step (RMSNorm, RoPE, SwiGLU, softmax + cross-entropy) is one fused pass
//! over rows. Activations live in a [`Workspace`] that is reused from step to step.
//!
//! Determinism: every parallel split is static (fixed chunks of rows, or one task per (row, kv head) that
//! owns its outputs), and every sum across rows — norm-weight and bias gradients, the loss, the embedding
//! scatter-add — adds fixed chunks in a fixed order. The same inputs give the same bits however rayon
//! schedules the work.

use crate::data::{Batch, document_starts};
use crate::host::{HostModel, matmul};
use rayon::prelude::*;

/// Rows per chunk of the reductions across rows: partial sums per chunk, then added chunk by chunk in order.
const REDUCE_ROWS: usize = 64;
/// Minimum rows per rayon task in the element-wise passes (smaller tasks cost more to schedule than to run).
const MIN_ROWS: usize = 16;

/// What the forward pass keeps of one layer for the backward pass. The normalised inputs of the two
/// projections and the SwiGLU output are recomputed instead (one cheap pass each; saves memory bandwidth).
#[derive(Default)]
struct LayerActs {
    /// 1 / rms of the layer input (the residual stream), per token.
    inv_attn: Vec<f32>,
    /// Fused q | k | v projection `[n, (nh + 2 nkv) hd]`, q and k after RoPE.
    qkv: Vec<f32>,
    /// Attention probabilities `[rows, nh, t, t]`; each row is written and read only up to the end of its
    /// query block (`ATT_BLOCK`), zero above the diagonal.
    probs: Vec<f32>,
    /// Attention output, heads side by side `[n, nh hd]` (the input of `wo`).
    att: Vec<f32>,
    /// 1 / rms of the residual stream after attention.
    inv_mlp: Vec<f32>,
    /// gate | up `[n, 2 ffn]`.
    gu: Vec<f32>,
}

/// Reusable buffers for [`Workspace::loss_and_grads`]; sized on first use and whenever the batch shape or
/// the model changes.
#[derive(Default)]
pub struct Workspace {
    /// (seq_len, head_dim, rope_theta bits) that `cos` and `sin` were computed for.
    rope_for: (usize, usize, u64),
    acts: Vec<LayerActs>,
    /// Residual stream: `resid[2l]` enters layer `l`, `resid[2l + 1]` is after its attention, `resid[2L]`
    /// enters the final norm.
    resid: Vec<Vec<f32>>,
    inv_final: Vec<f32>,
    h_final: Vec<f32>,
    /// Logits, turned in place into d(loss / denom) / d(logits).
    logits: Vec<f32>,
    // Scratch shared by all layers.
    h: Vec<f32>,
    act: Vec<f32>,
    dact: Vec<f32>,
    dgu: Vec<f32>,
    dx: Vec<f32>,
    dh: Vec<f32>,
    datt: Vec<f32>,
    dqkv: Vec<f32>,
    /// Head-major attention buffers: `[rows, nh, t, hd]` (the output / dq) and `[rows, nkv, t, hd]` (dk, dv),
    /// so that each (row, kv head) task owns one contiguous slice of each.
    head_out: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// RMSNorm forward as the burn model computes it (`x · inv · w`, `inv = 1 / sqrt(mean(x²) + eps)`); also
/// returns `inv` per row.
fn rms_norm_fwd(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], inv: &mut [f32]) {
    let h = w.len();
    out.par_chunks_mut(h)
        .zip(inv.par_iter_mut())
        .zip(x.par_chunks(h))
        .with_min_len(MIN_ROWS)
        .for_each(|((o, s), r)| {
            let ms = r.iter().map(|v| v * v).sum::<f32>() / h as f32;
            *s = 1.0 / (ms + eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(r).zip(w) {
                *o = v * *s * w;
            }
        });
}

/// RMSNorm output again from the saved `inv` (bit-identical to the forward's).
fn rms_norm_apply(x: &[f32], w: &[f32], inv: &[f32], out: &mut [f32]) {
    let h = w.len();
    out.par_chunks_mut(h)
        .zip(inv.par_iter())
        .zip(x.par_chunks(h))
        .with_min_len(MIN_ROWS)
        .for_each(|((o, s), r)| {
            for ((o, v), w) in o.iter_mut().zip(r).zip(w) {
                *o = v * s * w;
            }
        });
}

/// RMSNorm backward: `dx (+)= inv · (dy ⊙ w) − x · inv³ / h · Σ(dy ⊙ w ⊙ x)` per row; returns
/// `dw = Σ_rows dy ⊙ x · inv`, summed in fixed chunks in a fixed order.
fn rms_norm_bwd(
    x: &[f32],
    w: &[f32],
    inv: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) -> Vec<f32> {
    let h = w.len();
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(REDUCE_ROWS * h)
        .zip(x.par_chunks(REDUCE_ROWS * h))
        .zip(dy.par_chunks(REDUCE_ROWS * h))
        .zip(inv.par_chunks(REDUCE_ROWS))
        .map(|(((dxc, xc), dyc), ic)| {
            let mut dw = vec![0.0f32; h];
            for (((dxr, xr), dyr), &s) in dxc
                .chunks_mut(h)
                .zip(xc.chunks(h))
                .zip(dyc.chunks(h))
                .zip(ic)
            {
                let mut proj = 0.0f32;
                for k in 0..h {
                    proj += dyr[k] * w[k] * xr[k];
                    dw[k] += dyr[k] * xr[k] * s;
                }
                let c = proj * s * s * s / h as f32;
                if accumulate {
                    for k in 0..h {
                        dxr[k] += s * dyr[k] * w[k] - xr[k] * c;
                    }
                } else {
                    for k in 0..h {
                        dxr[k] = s * dyr[k] * w[k] - xr[k] * c;
                    }
                }
            }
            dw
        })
        .collect();
    sum_in_order(partials, h)
}

/// Column sums of `x` `[rows, width]`, in fixed chunks in a fixed order.
fn column_sums(x: &[f32], width: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = x
        .par_chunks(REDUCE_ROWS * width)
        .map(|c| {
            let mut s = vec![0.0f32; width];
            for r in c.chunks(width) {
                for (s, v) in s.iter_mut().zip(r) {
                    *s += v;
                }
            }
            s
        })
        .collect();
    sum_in_order(partials, width)
}

fn sum_in_order(partials: Vec<Vec<f32>>, width: usize) -> Vec<f32> {
    let mut it = partials.into_iter();
    let mut acc = it.next().unwrap_or_else(|| vec![0.0; width]);
    for p in it {
        for (a, v) in acc.iter_mut().zip(&p) {
            *a += v;
        }
    }
    acc
}

/// Half-rotation RoPE on the q and k heads of every `qkv` row (token `i` of its row at position `i`).
/// `inverse` applies the transposed rotation, which is the backward pass of the forward one.
fn rope(qkv: &mut [f32], d: Dims, cos: &[f32], sin: &[f32], inverse: bool) {
    let (width, rope_heads, hd, t) = (d.width(), d.nh + d.nkv, d.hd, d.t);
    let half = hd / 2;
    qkv.par_chunks_mut(width)
        .enumerate()
        .with_min_len(MIN_ROWS)
        .for_each(|(ri, row)| {
            let i = ri % t;
            let (cs, sn) = (
                &cos[i * half..(i + 1) * half],
                &sin[i * half..(i + 1) * half],
            );
            for head in row[..rope_heads * hd].chunks_mut(hd) {
                let (a, b) = head.split_at_mut(half);
                for d in 0..half {
                    let (x1, x2) = (a[d], b[d]);
                    if inverse {
                        a[d] = x1 * cs[d] + x2 * sn[d];
                        b[d] = x2 * cs[d] - x1 * sn[d];
                    } else {
                        a[d] = x1 * cs[d] - x2 * sn[d];
                        b[d] = x2 * cs[d] + x1 * sn[d];
                    }
                }
            }
        });
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// e^x to within ~2 ulp, for x ≤ 88.3 (larger x saturates there; x below −87.3 gives ~1e-38, not 0), with
/// no branch and no libm call so that loops over it vectorise: `e^x = 2^n · e^r` with `n = round(x / ln 2)`,
/// `|r| ≤ ln 2 / 2` and e^r by its degree-6 Taylor polynomial (truncation error < 1.2e-7 relative). The
/// softmaxes and sigmoids evaluate ~30M of these per bench-3m step.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n · LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer (|x · log2 e| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// `x ← e^(x − max)` over the slice; returns the sum (in 8 interleaved partial sums, so the loop vectorises).
fn exp_sub_sum(x: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(&mut acc) {
            *v = exp(*v - max);
            *a += *v;
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

/// Shapes of one call, to keep the argument lists short.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    t: usize,
    h: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    f: usize,
    v: usize,
}

impl Dims {
    fn n(&self) -> usize {
        self.rows * self.t
    }
    fn width(&self) -> usize {
        (self.nh + 2 * self.nkv) * self.hd
    }
    fn g(&self) -> usize {
        self.nh / self.nkv
    }
}

/// Query rows per attention block. Block `b` attends to keys `0..(b + 1) · ATT_BLOCK` only, so the causal
/// upper triangle is skipped at block granularity (10 of 16 blocks at t = 256); inside a block the masked
/// entries are zeroed.
const ATT_BLOCK: usize = 64;

/// A strided row-major view: element `(i, j)` at `data[i · rs + j · cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn rows(data: &'a [f32], rs: usize) -> Self {
        View { data, rs, cs: 1 }
    }
    /// The view without its first `n` rows.
    fn skip_rows(self, n: usize) -> Self {
        View {
            data: &self.data[n * self.rs..],
            ..self
        }
    }
    /// The transpose (no copy).
    fn t(self) -> Self {
        View {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Single-threaded `dst[m, n] (+)= beta · a[m, k] · b[k, n]` over strided views (`dst` rows `dst_rs` apart):
/// the small GEMMs inside one attention task, which already runs on its own rayon worker.
#[allow(clippy::too_many_arguments)]
fn gemm_view(
    dst: &mut [f32],
    dst_rs: usize,
    a: View,
    b: View,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    beta: f32,
) {
    let end = |v: View, r: usize, c: usize| (r - 1) * v.rs + (c - 1) * v.cs + 1;
    assert!(m > 0 && k > 0 && n > 0);
    assert!(end(a, m, k) <= a.data.len() && end(b, k, n) <= b.data.len());
    assert!((m - 1) * dst_rs + n <= dst.len());
    // SAFETY: every accessed element is inside its slice (asserted above); `dst` is a distinct `&mut`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Causal attention forward, one task per (row, kv head) over its `g` query heads: normalised probabilities
/// into `probs` `[rows, nh, t, t]` and outputs into `out` `[rows, nh, t, hd]` (head-major). Query `i` of row
/// `r` sees keys `starts[r · t + i]..=i` (`starts` empty: all of `0..=i`). Masked probabilities are exactly 0,
/// so the backward needs no mask of its own.
fn attention_fwd(d: Dims, qkv: &[f32], starts: &[usize], probs: &mut [f32], out: &mut [f32]) {
    let (t, hd, g, width) = (d.t, d.hd, d.g(), d.width());
    let scale = 1.0 / (hd as f32).sqrt();
    probs
        .par_chunks_mut(g * t * t)
        .zip(out.par_chunks_mut(g * t * hd))
        .enumerate()
        .for_each(|(task, (pc, oc))| {
            let (r, kv) = (task / d.nkv, task % d.nkv);
            let rows = &qkv[r * t * width..(r + 1) * t * width];
            let k = View::rows(&rows[(d.nh + kv) * hd..], width);
            let v = View::rows(&rows[(d.nh + d.nkv + kv) * hd..], width);
            for j in 0..g {
                let head = kv * g + j;
                let q = View::rows(&rows[head * hd..], width);
                for i0 in (0..t).step_by(ATT_BLOCK) {
                    let (bm, keys) = (ATT_BLOCK.min(t - i0), (i0 + ATT_BLOCK).min(t));
                    // The block's first query has the lowest document start: no key before it is seen.
                    let k0 = starts.get(r * t + i0).copied().unwrap_or(0);
                    let q_blk = View {
                        data: &q.data[i0 * width..],
                        ..q
                    };
                    let p_blk = &mut pc[(j * t + i0) * t..(j * t + i0 + bm) * t];
                    // S = scale · Q Kᵀ over keys k0..keys, then a causal softmax per row.
                    let k_from = k.skip_rows(k0);
                    gemm_view(
                        &mut p_blk[k0..],
                        t,
                        q_blk,
                        k_from.t(),
                        bm,
                        hd,
                        keys - k0,
                        false,
                        scale,
                    );
                    for (ii, row) in p_blk.chunks_mut(t).enumerate() {
                        let qpos = i0 + ii;
                        let first = starts.get(r * t + qpos).copied().unwrap_or(0);
                        let (seen, masked) = row[..keys].split_at_mut(qpos + 1);
                        masked.fill(0.0);
                        let (before, live) = seen.split_at_mut(first);
                        before.fill(0.0);
                        let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let inv = 1.0 / exp_sub_sum(live, max);
                        for s in live.iter_mut() {
                            *s *= inv;
                        }
                    }
                    // O = P V.
                    let o_blk = &mut oc[(j * t + i0) * hd..(j * t + i0 + bm) * hd];
                    let v_from = v.skip_rows(k0);
                    let p_from = View::rows(&p_blk[k0..], t);
                    gemm_view(o_blk, hd, p_from, v_from, bm, keys - k0, hd, false, 1.0);
                }
            }
        });
}

/// Causal attention backward, one task per (row, kv head): from `datt` `[n, nh hd]` to dq (head-major into
/// `dq` `[rows, nh, t, hd]`, before the RoPE backward) and dk, dv (`[rows, nkv, t, hd]`). The `g` query
/// heads of a group add into their shared dk, dv in a fixed order, inside the one task. `starts` as in
/// [`attention_fwd`].
#[allow(clippy::too_many_arguments)]
fn attention_bwd(
    d: Dims,
    qkv: &[f32],
    starts: &[usize],
    probs: &[f32],
    datt: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t, hd, g, width, nh) = (d.t, d.hd, d.g(), d.width(), d.nh);
    let scale = 1.0 / (hd as f32).sqrt();
    dq.par_chunks_mut(g * t * hd)
        .zip(dk.par_chunks_mut(t * hd))
        .zip(dv.par_chunks_mut(t * hd))
        .enumerate()
        .for_each(|(task, ((dqc, dkc), dvc))| {
            let (r, kv) = (task / d.nkv, task % d.nkv);
            let rows = &qkv[r * t * width..(r + 1) * t * width];
            let k = View::rows(&rows[(nh + kv) * hd..], width);
            let v = View::rows(&rows[(nh + d.nkv + kv) * hd..], width);
            let pc = &probs[(r * nh + kv * g) * t * t..][..g * t * t];
            let grads = &datt[r * t * nh * hd..(r + 1) * t * nh * hd];
            dkc.fill(0.0);
            dvc.fill(0.0);
            let mut ds = vec![0.0f32; ATT_BLOCK * t];
            for j in 0..g {
                let head = kv * g + j;
                let q = View::rows(&rows[head * hd..], width);
                let o_grad = View::rows(&grads[head * hd..], nh * hd);
                for i0 in (0..t).step_by(ATT_BLOCK) {
                    let (bm, keys) = (ATT_BLOCK.min(t - i0), (i0 + ATT_BLOCK).min(t));
                    // Keys before k0 have probability 0 for every query of the block (see attention_fwd).
                    let k0 = starts.get(r * t + i0).copied().unwrap_or(0);
                    let nk = keys - k0;
                    let (k_from, v_from) = (k.skip_rows(k0), v.skip_rows(k0));
                    let q_blk = View {
                        data: &q.data[i0 * width..],
                        ..q
                    };
                    let do_blk = View {
                        data: &o_grad.data[i0 * nh * hd..],
                        ..o_grad
                    };
                    let p_blk = &pc[(j * t + i0) * t..(j * t + i0 + bm) * t];
                    let ds = &mut ds[..bm * t];
                    // dP = dO Vᵀ; softmax backward dS = P ⊙ (dP − Σ P ⊙ dP), times the score scale.
                    gemm_view(&mut ds[k0..], t, do_blk, v_from.t(), bm, hd, nk, false, 1.0);
                    for (dsr, pr) in ds.chunks_mut(t).zip(p_blk.chunks(t)) {
                        let (dsr, pr) = (&mut dsr[k0..keys], &pr[k0..keys]);
                        let pdp: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                        for (s, p) in dsr.iter_mut().zip(pr) {
                            *s = p * (*s - pdp) * scale;
                        }
                    }
                    let ds = View::rows(&ds[k0..], t);
                    // dQ = dS K;  dK += dSᵀ Q;  dV += Pᵀ dO (keys k0..keys only).
                    let dq_blk = &mut dqc[(j * t + i0) * hd..(j * t + i0 + bm) * hd];
                    gemm_view(dq_blk, hd, ds, k_from, bm, nk, hd, false, 1.0);
                    gemm_view(
                        &mut dkc[k0 * hd..],
                        hd,
                        ds.t(),
                        q_blk,
                        nk,
                        bm,
                        hd,
                        true,
                        1.0,
                    );
                    let p_from = View::rows(&p_blk[k0..], t);
                    gemm_view(
                        &mut dvc[k0 * hd..],
                        hd,
                        p_from.t(),
                        do_blk,
                        nk,
                        bm,
                        hd,
                        true,
                        1.0,
                    );
                }
            }
        });
}

/// Softmax cross-entropy over each row of `logits` `[n, v]`, replaced in place by its gradient
/// `weight / denom · (softmax − onehot(target))`. Returns Σ weight · NLL (rows added in order, in f64).
fn cross_entropy_fwd_bwd(
    logits: &mut [f32],
    v: usize,
    targets: &[i32],
    weights: &[f32],
    denom: f64,
) -> f64 {
    let per_row: Vec<f64> = logits
        .par_chunks_mut(v)
        .zip(targets.par_iter().zip(weights.par_iter()))
        .with_min_len(MIN_ROWS)
        .map(|(l, (&tgt, &w))| {
            if w == 0.0 {
                l.fill(0.0);
                return 0.0;
            }
            let tgt = tgt as usize;
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // NLL = ln z − (l[tgt] − max), from the logit itself: finite even where e^(l[tgt] − max) underflows.
            let shifted = l[tgt] - max;
            let z = exp_sub_sum(l, max);
            let nll = z.ln() - shifted;
            let scale = (w as f64 / denom) as f32;
            let c = scale / z;
            for x in l.iter_mut() {
                *x *= c;
            }
            l[tgt] -= scale;
            w as f64 * nll as f64
        })
        .collect();
    per_row.iter().sum()
}

/// Σ e^(x / t − max) over the slice, leaving it untouched. The same 8 partial sums as [`exp_sub_sum`], so
/// that at t = 1 the normaliser (and with it every log-prob and gradient of [`Workspace::logprob_grads`])
/// has the bits of the pre-training path's.
fn exp_scaled_sum(x: &[f32], t: f32, max: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (v, a) in c.iter().zip(&mut acc) {
            *a += exp(v / t - max);
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.remainder() {
        tail += exp(v / t - max);
    }
    acc.iter().sum::<f32>() + tail
}

/// Per row of `logits` `[n, v]` divided by `t`: the target's log-prob, the entropy of the distribution
/// (`entropy`; else all 0), and the row's `(max, Σ e^(z − max))` for [`logprob_bwd`]. Reads the logits only,
/// since the backward pass needs them afterwards.
fn target_logprobs(
    logits: &[f32],
    v: usize,
    targets: &[i32],
    t: f32,
    entropy: bool,
) -> (Vec<f32>, Vec<f32>, Vec<(f32, f32)>) {
    let per_row: Vec<(f32, f32, (f32, f32))> = logits
        .par_chunks(v)
        .zip(targets.par_iter())
        .with_min_len(MIN_ROWS)
        .map(|(l, &tgt)| {
            // Dividing by t > 0 is monotone, so the max of the scaled row is the scaled max.
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) / t;
            let z = exp_scaled_sum(l, t, max);
            let ln_z = z.ln();
            // From the logit itself, as cross_entropy_fwd_bwd: finite where e^(z_tgt − max) underflows.
            let logp = (l[tgt as usize] / t - max) - ln_z;
            let h = if entropy {
                // H = −Σ p log p = ln Z − Σ e^y · y / Z with y = z − max.
                let s: f64 = l
                    .iter()
                    .map(|&x| {
                        let y = x / t - max;
                        (exp(y) * y) as f64
                    })
                    .sum();
                (ln_z as f64 - s / z as f64) as f32
            } else {
                0.0
            };
            (logp, h, (max, z))
        })
        .collect();
    let mut logp = Vec::with_capacity(per_row.len());
    let mut ent = Vec::with_capacity(per_row.len());
    let mut norms = Vec::with_capacity(per_row.len());
    for (a, b, c) in per_row {
        logp.push(a);
        ent.push(b);
        norms.push(c);
    }
    (logp, ent, norms)
}

/// Replaces `logits` by the gradient of Σ w · (−logp) at temperature `t`: `w / t · (softmax(l / t) −
/// onehot(target))` per row (the 1 / t is the scaling's own derivative), with `norms` from
/// [`target_logprobs`] on the same logits. At t = 1 this is [`cross_entropy_fwd_bwd`]'s arithmetic with
/// `denom` 1.
fn logprob_bwd(
    logits: &mut [f32],
    v: usize,
    targets: &[i32],
    weights: &[f32],
    t: f32,
    norms: &[(f32, f32)],
) {
    logits
        .par_chunks_mut(v)
        .zip(
            targets
                .par_iter()
                .zip(weights.par_iter().zip(norms.par_iter())),
        )
        .with_min_len(MIN_ROWS)
        .for_each(|(l, (&tgt, (&w, &(max, z))))| {
            if w == 0.0 {
                l.fill(0.0);
                return;
            }
            let scale = w / t;
            let c = scale / z;
            for x in l.iter_mut() {
                *x = exp(*x / t - max) * c;
            }
            l[tgt as usize] -= scale;
        });
}

impl Workspace {
    pub fn new() -> Self {
        Self::default()
    }

    fn ensure(&mut self, d: Dims, layers: usize, theta: f64) {
        let (n, h) = (d.n(), d.h);
        let resize = |b: &mut Vec<f32>, len: usize| {
            if b.len() != len {
                *b = vec![0.0; len];
            }
        };
        self.acts.resize_with(layers, LayerActs::default);
        for a in &mut self.acts {
            resize(&mut a.inv_attn, n);
            resize(&mut a.qkv, n * d.width());
            resize(&mut a.probs, d.rows * d.nh * d.t * d.t);
            resize(&mut a.att, n * d.nh * d.hd);
            resize(&mut a.inv_mlp, n);
            resize(&mut a.gu, n * 2 * d.f);
        }
        self.resid.resize_with(2 * layers + 1, Vec::new);
        for r in &mut self.resid {
            resize(r, n * h);
        }
        resize(&mut self.inv_final, n);
        resize(&mut self.h_final, n * h);
        resize(&mut self.logits, n * d.v);
        resize(&mut self.h, n * h);
        resize(&mut self.act, n * d.f);
        resize(&mut self.dact, n * d.f);
        resize(&mut self.dgu, n * 2 * d.f);
        resize(&mut self.dx, n * h);
        resize(&mut self.dh, n * h);
        resize(&mut self.datt, n * d.nh * d.hd);
        resize(&mut self.dqkv, n * d.width());
        resize(&mut self.head_out, n * d.nh * d.hd);
        resize(&mut self.dk, n * d.nkv * d.hd);
        resize(&mut self.dv, n * d.nkv * d.hd);
        if self.rope_for != (d.t, d.hd, theta.to_bits()) {
            // cos/sin per position, computed in f32 exactly as `model::rope_tables` does.
            let half = d.hd / 2;
            let inv: Vec<f32> = (0..half)
                .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / d.hd as f32))
                .collect();
            self.cos.clear();
            self.sin.clear();
            for p in 0..d.t {
                for f in &inv {
                    let a = p as f32 * f;
                    self.cos.push(a.cos());
                    self.sin.push(a.sin());
                }
            }
            self.rope_for = (d.t, d.hd, theta.to_bits());
        }
    }

    /// Forward and backward of one batch (causal, unpadded rows, positions from 0): returns the summed weighted
    /// token NLL and the gradients of (that sum / `denom`) for every parameter, canonical order and shapes
    /// (as `Qwen2::param_shapes`). With `document_mask`, attention does not cross an `[EOS]`
    /// ([`crate::data::document_starts`]).
    pub fn loss_and_grads(
        &mut self,
        m: &HostModel,
        batch: &Batch,
        denom: f64,
        document_mask: bool,
    ) -> (f64, Vec<Vec<f32>>) {
        let (d, starts) = self.forward(m, batch, document_mask);
        let loss =
            cross_entropy_fwd_bwd(&mut self.logits, d.v, &batch.targets, &batch.weights, denom);
        let grads = self.backward(m, batch, d, &starts);
        (loss, grads)
    }

    /// Forward only: the log-prob of every target of `batch` (logits divided by `temperature`) and the
    /// entropy of each position's predicted distribution, both `[rows * seq_len]`. Shares the training
    /// forward pass, so a batch gets the same bits here as inside [`Self::logprob_grads`].
    pub fn token_logprobs(
        &mut self,
        m: &HostModel,
        batch: &Batch,
        document_mask: bool,
        temperature: f64,
    ) -> (Vec<f32>, Vec<f32>) {
        let (d, _) = self.forward(m, batch, document_mask);
        let (logp, entropy, _) =
            target_logprobs(&self.logits, d.v, &batch.targets, temperature as f32, true);
        (logp, entropy)
    }

    /// Gradients of `Σ_t w_t · (−logp_t)` for weights chosen after the forward pass: `weights_of` receives the
    /// log-prob of every target (at `temperature`, as [`Self::token_logprobs`]) and returns one weight per
    /// token (0 leaves a token out). A loss `L(logp)` that is a sum of per-token terms has the gradient of
    /// this with `w_t = −dL/dlogp_t`, which is how the GRPO loss gets its exact gradient from one weighted
    /// cross-entropy backward pass ([`crate::grpo`]). The batch's own `weights` are not read.
    pub fn logprob_grads(
        &mut self,
        m: &HostModel,
        batch: &Batch,
        document_mask: bool,
        temperature: f64,
        weights_of: impl FnOnce(&[f32]) -> Vec<f32>,
    ) -> Vec<Vec<f32>> {
        let (d, starts) = self.forward(m, batch, document_mask);
        let t = temperature as f32;
        let (logp, _, norms) = target_logprobs(&self.logits, d.v, &batch.targets, t, false);
        let w = weights_of(&logp);
        assert_eq!(w.len(), logp.len(), "one weight per token");
        logprob_bwd(&mut self.logits, d.v, &batch.targets, &w, t, &norms);
        self.backward(m, batch, d, &starts)
    }

    /// The forward pass up to the logits (in `self.logits`); returns the shapes and the document starts
    /// that the backward pass needs.
    fn forward(&mut self, m: &HostModel, batch: &Batch, document_mask: bool) -> (Dims, Vec<usize>) {
        let c = &m.cfg;
        let d = Dims {
            rows: batch.rows,
            t: batch.seq_len,
            h: c.hidden_size,
            nh: c.num_attention_heads,
            nkv: c.num_key_value_heads,
            hd: c.head_dim(),
            f: c.intermediate_size,
            v: c.vocab_size,
        };
        let (n, h, f, width, nl) = (d.n(), d.h, d.f, d.width(), m.layers.len());
        let att_w = d.nh * d.hd;
        let eps = c.rms_norm_eps as f32;
        assert_eq!(batch.inputs.len(), n, "batch inputs");
        assert_eq!(batch.targets.len(), n, "batch targets");
        assert_eq!(batch.weights.len(), n, "batch weights");
        for &tok in batch.inputs.iter().chain(&batch.targets) {
            assert!(
                (0..d.v as i32).contains(&tok),
                "token id {tok} outside the vocabulary of {}",
                d.v
            );
        }
        self.ensure(d, nl, c.rope_theta);
        let starts = if document_mask {
            document_starts(&batch.inputs, d.t)
        } else {
            vec![]
        };
        let ws = self;

        // ---- Forward ----
        for (row, &tok) in ws.resid[0].chunks_mut(h).zip(&batch.inputs) {
            row.copy_from_slice(&m.embed[tok as usize * h..(tok as usize + 1) * h]);
        }
        for (li, l) in m.layers.iter().enumerate() {
            let a = &mut ws.acts[li];
            let (before, after) = ws.resid.split_at_mut(2 * li + 1);
            let (mid, rest) = after.split_first_mut().expect("2L + 1 residual buffers");
            let (x, out) = (&before[2 * li], &mut rest[0]);

            rms_norm_fwd(x, &l.attn_norm, eps, &mut ws.h, &mut a.inv_attn);
            for row in a.qkv.chunks_mut(width) {
                row.copy_from_slice(&l.bqkv);
            }
            matmul(&mut a.qkv, &ws.h, false, &l.wqkv, false, n, h, width, true);
            rope(&mut a.qkv, d, &ws.cos, &ws.sin, false);
            attention_fwd(d, &a.qkv, &starts, &mut a.probs, &mut ws.head_out);
            heads_to_tokens(d, &ws.head_out, &mut a.att);
            mid.copy_from_slice(x);
            matmul(mid, &a.att, false, &l.wo, false, n, att_w, h, true);

            rms_norm_fwd(mid, &l.mlp_norm, eps, &mut ws.h, &mut a.inv_mlp);
            matmul(
                &mut a.gu,
                &ws.h,
                false,
                &l.wgate_up,
                false,
                n,
                h,
                2 * f,
                false,
            );
            swiglu_fwd(&a.gu, f, &mut ws.act);
            out.copy_from_slice(mid);
            matmul(out, &ws.act, false, &l.wdown, false, n, f, h, true);
        }
        let x_final = &ws.resid[2 * nl];
        rms_norm_fwd(
            x_final,
            &m.final_norm,
            eps,
            &mut ws.h_final,
            &mut ws.inv_final,
        );
        // Tied head: logits = h · Eᵀ.
        matmul(
            &mut ws.logits,
            &ws.h_final,
            false,
            &m.embed,
            true,
            n,
            h,
            d.v,
            false,
        );
        (d, starts)
    }

    /// Backward from `self.logits`, which must hold d loss / d logits, through the activations the last
    /// [`Self::forward`] left: every parameter's gradient, canonical order.
    fn backward(
        &mut self,
        m: &HostModel,
        batch: &Batch,
        d: Dims,
        starts: &[usize],
    ) -> Vec<Vec<f32>> {
        let (n, h, f, width, nl) = (d.n(), d.h, d.f, d.width(), m.layers.len());
        let att_w = d.nh * d.hd;
        let ws = self;
        let x_final = &ws.resid[2 * nl];

        // ---- Backward ----
        let mut g_embed = vec![0.0f32; d.v * h];
        matmul(
            &mut g_embed,
            &ws.logits,
            true,
            &ws.h_final,
            false,
            d.v,
            n,
            h,
            false,
        );
        matmul(
            &mut ws.dh, &ws.logits, false, &m.embed, false, n, d.v, h, false,
        );
        let g_final = rms_norm_bwd(
            x_final,
            &m.final_norm,
            &ws.inv_final,
            &ws.dh,
            &mut ws.dx,
            false,
        );

        let mut g_layers: Vec<[Vec<f32>; 7]> = Vec::with_capacity(nl);
        for (li, l) in m.layers.iter().enumerate().rev() {
            let a = &ws.acts[li];
            let (x, mid) = (&ws.resid[2 * li], &ws.resid[2 * li + 1]);
            // MLP: out = mid + swiglu(norm(mid) · Wgu) · Wdown; ws.dx holds d out.
            matmul(&mut ws.dact, &ws.dx, false, &l.wdown, true, n, h, f, false);
            swiglu_bwd(&a.gu, &ws.dact, f, &mut ws.dgu, &mut ws.act);
            let mut g_wdown = vec![0.0f32; f * h];
            matmul(&mut g_wdown, &ws.act, true, &ws.dx, false, f, n, h, false);
            rms_norm_apply(mid, &l.mlp_norm, &a.inv_mlp, &mut ws.h);
            let mut g_wgu = vec![0.0f32; h * 2 * f];
            matmul(&mut g_wgu, &ws.h, true, &ws.dgu, false, h, n, 2 * f, false);
            matmul(
                &mut ws.dh,
                &ws.dgu,
                false,
                &l.wgate_up,
                true,
                n,
                2 * f,
                h,
                false,
            );
            let g_mlp_norm = rms_norm_bwd(mid, &l.mlp_norm, &a.inv_mlp, &ws.dh, &mut ws.dx, true);

            // Attention: mid = x + attn(norm(x)) · Wo; ws.dx holds d mid.
            let mut g_wo = vec![0.0f32; att_w * h];
            matmul(&mut g_wo, &a.att, true, &ws.dx, false, att_w, n, h, false);
            matmul(&mut ws.datt, &ws.dx, false, &l.wo, true, n, h, att_w, false);
            attention_bwd(
                d,
                &a.qkv,
                starts,
                &a.probs,
                &ws.datt,
                &mut ws.head_out,
                &mut ws.dk,
                &mut ws.dv,
            );
            grads_to_tokens(d, &ws.head_out, &ws.dk, &ws.dv, &mut ws.dqkv);
            rope(&mut ws.dqkv, d, &ws.cos, &ws.sin, true);
            let g_bqkv = column_sums(&ws.dqkv, width);
            rms_norm_apply(x, &l.attn_norm, &a.inv_attn, &mut ws.h);
            let mut g_wqkv = vec![0.0f32; h * width];
            matmul(
                &mut g_wqkv,
                &ws.h,
                true,
                &ws.dqkv,
                false,
                h,
                n,
                width,
                false,
            );
            matmul(
                &mut ws.dh, &ws.dqkv, false, &l.wqkv, true, n, width, h, false,
            );
            let g_attn_norm = rms_norm_bwd(x, &l.attn_norm, &a.inv_attn, &ws.dh, &mut ws.dx, true);
            g_layers.push([
                g_attn_norm,
                g_wqkv,
                g_bqkv,
                g_wo,
                g_mlp_norm,
                g_wgu,
                g_wdown,
            ]);
        }
        // Embedding lookup backward: scatter-add in token order (sequential, so the order is fixed).
        for (row, &tok) in ws.dx.chunks(h).zip(&batch.inputs) {
            for (g, v) in g_embed[tok as usize * h..(tok as usize + 1) * h]
                .iter_mut()
                .zip(row)
            {
                *g += v;
            }
        }

        let mut grads = Vec::with_capacity(2 + 7 * nl);
        grads.push(g_embed);
        for gl in g_layers.into_iter().rev() {
            grads.extend(gl);
        }
        grads.push(g_final);
        grads
    }
}

/// SwiGLU forward: `act = silu(gate) ⊙ up` from `gu` = gate | up per row.
fn swiglu_fwd(gu: &[f32], f: usize, act: &mut [f32]) {
    act.par_chunks_mut(f)
        .zip(gu.par_chunks(2 * f))
        .with_min_len(MIN_ROWS)
        .for_each(|(a, gu)| {
            let (gate, up) = gu.split_at(f);
            for ((a, g), u) in a.iter_mut().zip(gate).zip(up) {
                *a = g * sigmoid(*g) * u;
            }
        });
}

/// SwiGLU backward: d gate = dact ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))), d up = dact ⊙ silu(g); also recomputes the
/// forward output `act` (which `wdown`'s gradient needs) from the same sigmoid.
fn swiglu_bwd(gu: &[f32], dact: &[f32], f: usize, dgu: &mut [f32], act: &mut [f32]) {
    dgu.par_chunks_mut(2 * f)
        .zip(act.par_chunks_mut(f))
        .zip(gu.par_chunks(2 * f))
        .zip(dact.par_chunks(f))
        .with_min_len(MIN_ROWS)
        .for_each(|(((dgu, act), gu), da)| {
            let (gate, up) = gu.split_at(f);
            let (dg, du) = dgu.split_at_mut(f);
            for k in 0..f {
                let (g, s) = (gate[k], sigmoid(gate[k]));
                let silu = g * s;
                act[k] = silu * up[k];
                dg[k] = da[k] * up[k] * s * (1.0 + g * (1.0 - s));
                du[k] = da[k] * silu;
            }
        });
}

/// `[rows, nh, t, hd]` -> `[rows · t, nh · hd]`.
fn heads_to_tokens(d: Dims, heads: &[f32], out: &mut [f32]) {
    let (t, hd, nh) = (d.t, d.hd, d.nh);
    out.par_chunks_mut(nh * hd)
        .enumerate()
        .with_min_len(MIN_ROWS)
        .for_each(|(ri, row)| {
            let (r, i) = (ri / t, ri % t);
            for head in 0..nh {
                row[head * hd..(head + 1) * hd]
                    .copy_from_slice(&heads[((r * nh + head) * t + i) * hd..][..hd]);
            }
        });
}

/// Head-major dq `[rows, nh, t, hd]`, dk and dv `[rows, nkv, t, hd]` -> token-major dqkv `[n, width]`.
fn grads_to_tokens(d: Dims, dq: &[f32], dk: &[f32], dv: &[f32], dqkv: &mut [f32]) {
    let (t, hd, nh, nkv) = (d.t, d.hd, d.nh, d.nkv);
    dqkv.par_chunks_mut(d.width())
        .enumerate()
        .with_min_len(MIN_ROWS)
        .for_each(|(ri, row)| {
            let (r, i) = (ri / t, ri % t);
            for head in 0..nh {
                row[head * hd..(head + 1) * hd]
                    .copy_from_slice(&dq[((r * nh + head) * t + i) * hd..][..hd]);
            }
            for kv in 0..nkv {
                let src = ((r * nkv + kv) * t + i) * hd;
                row[(nh + kv) * hd..(nh + kv + 1) * hd].copy_from_slice(&dk[src..src + hd]);
                row[(nh + nkv + kv) * hd..(nh + nkv + kv + 1) * hd]
                    .copy_from_slice(&dv[src..src + hd]);
            }
        });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::Qwen2;
    use crate::rng::Rng;
    use crate::tokenizer::EOS_ID;
    use crate::{Cpu, train::shard_grads};
    use burn::backend::Autodiff;

    /// tiny-test with every parameter random (norm weights around 1, non-zero biases), so that no gradient
    /// term is hidden by an identity norm or a zero bias.
    pub(crate) fn random_model(seed: u64) -> (ModelConfig, Vec<crate::model::HostParam>) {
        let cfg = ModelConfig::preset("tiny-test").unwrap();
        let mut rng = Rng::new(seed);
        let params = Qwen2::<Cpu>::param_shapes(&cfg)
            .into_iter()
            .map(|(name, shape)| {
                let vals = (0..shape[0] * shape[1])
                    .map(|_| {
                        let z = rng.normal() as f32;
                        if name.ends_with("norm") {
                            1.0 + 0.3 * z
                        } else if name.ends_with("bqkv") {
                            0.2 * z
                        } else {
                            0.15 * z
                        }
                    })
                    .collect();
                (name, shape, vals)
            })
            .collect();
        (cfg, params)
    }

    /// 3 rows of 70 tokens (two attention blocks, the second partial), loss weights switched off on about a
    /// third of the positions, and `[EOS]` inputs that end documents inside both attention blocks.
    fn batch(cfg: &ModelConfig, seed: u64) -> Batch {
        let (rows, t) = (3, ATT_BLOCK + 6);
        let mut rng = Rng::new(seed);
        let n = rows * t;
        let mut inputs: Vec<i32> = (0..n).map(|_| rng.below(cfg.vocab_size) as i32).collect();
        for i in [20, t + 5, t + 66, 2 * t + 63] {
            inputs[i] = EOS_ID as i32;
        }
        Batch {
            rows,
            seq_len: t,
            inputs,
            targets: (0..n).map(|_| rng.below(cfg.vocab_size) as i32).collect(),
            weights: (0..n)
                .map(|_| if rng.below(3) == 0 { 0.0 } else { 1.0 })
                .collect(),
        }
    }

    #[test]
    fn fast_exp_is_within_a_few_ulp_of_libm_over_the_range_softmax_and_sigmoid_use() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) < 1e-37 && exp(1e4).is_finite() && exp(1e4) > 1e38);
    }

    #[test]
    fn gradients_and_loss_match_burn_autodiff_with_and_without_the_document_mask() {
        for document_mask in [false, true] {
            grads_match_burn(document_mask);
        }
    }

    fn grads_match_burn(document_mask: bool) {
        type B = Autodiff<Cpu>;
        let (cfg, params) = random_model(11);
        let b = batch(&cfg, 5);
        let denom = 2.0 * b.weights.iter().sum::<f32>() as f64;
        let model = Qwen2::<B>::from_host(&cfg, params.clone(), &Default::default()).unwrap();
        let (want_loss, want) = shard_grads(&model, &b, denom, document_mask, &Default::default());
        let host = HostModel::new(&cfg, params);
        let (loss, got) = Workspace::new().loss_and_grads(&host, &b, denom, document_mask);

        assert!(
            ((loss - want_loss) / want_loss).abs() <= 1e-5,
            "document_mask {document_mask}: loss {loss} vs burn {want_loss}"
        );
        let names = Qwen2::<Cpu>::param_shapes(&cfg);
        assert_eq!(got.len(), names.len());
        for ((name, shape), (g, w)) in names.iter().zip(got.iter().zip(want)) {
            let w = w.into_data().to_vec::<f32>().unwrap();
            assert_eq!(g.len(), shape[0] * shape[1], "{name}");
            // Relative to the tensor's own largest gradient: these gradients are ~1e-2, so an absolute
            // floor of 1 would hide real errors.
            let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let diff = g
                .iter()
                .zip(&w)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-4 * scale,
                "document_mask {document_mask}, {name}: max |Δ| {diff} (max |g| {scale})"
            );
            assert!(
                w.iter().any(|x| *x != 0.0),
                "{name}: burn gradient is all zero"
            );
        }
    }

    #[test]
    fn with_the_document_mask_a_packed_document_trains_as_if_alone() {
        let (cfg, params) = random_model(7);
        let host = HostModel::new(&cfg, params);
        let mut rng = Rng::new(9);
        let mut doc = |len: usize| -> Vec<i32> {
            let mut d: Vec<i32> = (1..len)
                .map(|_| 4 + rng.below(cfg.vocab_size - 4) as i32)
                .collect();
            d.push(EOS_ID as i32);
            d
        };
        // Row of 72 inputs: a 30-token document, then a 42-token one whose last input is its [EOS]; the loss
        // counts only the second document's next-token predictions.
        let (first, second) = (doc(30), doc(43));
        let packed: Vec<i32> = first.iter().chain(&second).copied().collect();
        let t = packed.len() - 1;
        let one_row = |ids: &[i32], from: usize| Batch {
            rows: 1,
            seq_len: ids.len() - 1,
            inputs: ids[..ids.len() - 1].to_vec(),
            targets: ids[1..].to_vec(),
            weights: (0..ids.len() - 1)
                .map(|i| if i >= from { 1.0 } else { 0.0 })
                .collect(),
        };
        let together = one_row(&packed, first.len());
        let alone = one_row(&second, 0);
        assert_eq!(together.seq_len, t);
        let mut ws = Workspace::new();
        let (masked, g_masked) = ws.loss_and_grads(&host, &together, 1.0, true);
        let (open, _) = ws.loss_and_grads(&host, &together, 1.0, false);
        let (solo, g_solo) = ws.loss_and_grads(&host, &alone, 1.0, false);
        assert!(
            ((masked - solo) / solo).abs() < 1e-5,
            "masked {masked} vs alone {solo}"
        );
        assert!(
            ((open - solo) / solo).abs() > 1e-3,
            "without the mask the first document must change the loss ({open} vs {solo})"
        );
        for (a, b) in g_masked.iter().flatten().zip(g_solo.iter().flatten()) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "gradient {a} vs {b}"
            );
        }
    }

    #[test]
    fn two_calls_give_identical_bits_and_a_reused_workspace_forgets_the_previous_batch() {
        let (cfg, params) = random_model(3);
        let host = HostModel::new(&cfg, params);
        let (a, other) = (batch(&cfg, 1), batch(&cfg, 2));
        let bits = |(l, g): (f64, Vec<Vec<f32>>)| {
            (
                l.to_bits(),
                g.into_iter()
                    .flatten()
                    .map(f32::to_bits)
                    .collect::<Vec<_>>(),
            )
        };
        let mut ws = Workspace::new();
        let first = bits(ws.loss_and_grads(&host, &a, 7.0, false));
        ws.loss_and_grads(&host, &other, 7.0, true);
        let again = bits(ws.loss_and_grads(&host, &a, 7.0, false));
        let fresh = bits(Workspace::new().loss_and_grads(&host, &a, 7.0, false));
        assert!(
            first == again && first == fresh,
            "host gradients are not reproducible"
        );
    }
}
