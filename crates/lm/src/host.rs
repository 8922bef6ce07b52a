//! Inference-only CPU decoder: the same Qwen2 forward as [`crate::model`], written directly over host
//! `f32` buffers (GEMMs through the `gemm` crate that burn-flex uses, attention and element-wise work in
//! plain loops, parallel over rows with rayon). No autodiff bookkeeping, no per-op tensor allocation, and
//! the KV cache is written in place instead of being re-concatenated each step. The sampler uses it for
//! CPU backends; `tests` check it against the burn model.

use crate::config::ModelConfig;
use crate::model::HostParam;
use rayon::prelude::*;

pub(crate) struct HostLayer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) wqkv: Vec<f32>,
    pub(crate) bqkv: Vec<f32>,
    pub(crate) wo: Vec<f32>,
    pub(crate) mlp_norm: Vec<f32>,
    pub(crate) wgate_up: Vec<f32>,
    pub(crate) wdown: Vec<f32>,
}

/// Weights on the host in the model's internal layout (`[in, out]` row-major).
pub struct HostModel {
    pub cfg: ModelConfig,
    pub(crate) embed: Vec<f32>,
    pub(crate) layers: Vec<HostLayer>,
    pub(crate) final_norm: Vec<f32>,
}

impl HostModel {
    pub fn new(cfg: &ModelConfig, params: Vec<HostParam>) -> Self {
        let mut it = params.into_iter().map(|p| p.2);
        let mut next = || it.next().expect("canonical parameter list");
        let embed = next();
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| HostLayer {
                attn_norm: next(),
                wqkv: next(),
                bqkv: next(),
                wo: next(),
                mlp_norm: next(),
                wgate_up: next(),
                wdown: next(),
            })
            .collect();
        HostModel {
            cfg: cfg.clone(),
            embed,
            layers,
            final_norm: next(),
        }
    }
}

/// `out[m, n] (+)= op(a) · op(b)`, row-major, where `op(a)` is `a` `[m, k]` or, with `a_t`, the transpose of
/// `a` stored `[k, m]`; likewise `op(b)` is `b` `[k, n]` or, with `b_t`, `b` stored `[n, k]` transposed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    out: &mut [f32],
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    let (lhs_cs, lhs_rs) = if a_t {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    let (rhs_cs, rhs_rs) = if b_t {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    let par = if m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices hold at least the accessed extents (asserted above) and `out` does not alias the
    // inputs (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            lhs_cs,
            lhs_rs,
            b.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Dot product with 16 independent accumulators (so the compiler can vectorise it; a plain `sum()` of
/// products is a serial dependency chain), compiled for AVX2+FMA when the CPU has it.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_generic(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `o += w * v`, vectorised like [`dot`].
#[inline]
fn axpy(o: &mut [f32], w: f32, v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { axpy_avx2(o, w, v) };
        }
    }
    axpy_generic(o, w, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(o: &mut [f32], w: f32, v: &[f32]) {
    axpy_generic(o, w, v)
}

#[inline(always)]
fn axpy_generic(o: &mut [f32], w: f32, v: &[f32]) {
    for (o, v) in o.iter_mut().zip(v) {
        *o = w.mul_add(*v, *o);
    }
}

fn rms_norm_rows(x: &[f32], w: &[f32], eps: f64, out: &mut [f32]) {
    let h = w.len();
    out.par_chunks_mut(h)
        .zip(x.par_chunks(h))
        .for_each(|(o, r)| {
            let ms = r.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let inv = 1.0 / (ms + eps as f32).sqrt();
            for ((o, v), w) in o.iter_mut().zip(r).zip(w) {
                *o = v * inv * w;
            }
        });
}

/// KV cache + running state for one batch of rows.
pub struct HostDecoder<'m> {
    m: &'m HostModel,
    rows: usize,
    cap: usize,
    len: usize,
    pad: Vec<usize>,
    k: Vec<Vec<f32>>, // per layer [rows, kv, cap, hd]
    v: Vec<Vec<f32>>,
    inv_freq: Vec<f32>,
}

impl<'m> HostDecoder<'m> {
    /// `left_pad[r]` leading positions of row `r` are padding (empty = none); `capacity` bounds the total length.
    pub fn new(m: &'m HostModel, rows: usize, capacity: usize, left_pad: &[usize]) -> Self {
        let c = &m.cfg;
        let hd = c.head_dim();
        let size = rows * c.num_key_value_heads * capacity * hd;
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / (c.rope_theta as f32).powf((2 * i) as f32 / hd as f32))
            .collect();
        HostDecoder {
            m,
            rows,
            cap: capacity,
            len: 0,
            pad: if left_pad.is_empty() {
                vec![0; rows]
            } else {
                left_pad.to_vec()
            },
            k: (0..c.num_hidden_layers).map(|_| vec![0.0; size]).collect(),
            v: (0..c.num_hidden_layers).map(|_| vec![0.0; size]).collect(),
            inv_freq,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the given rows (ascending original order), compacting the cache in place.
    pub fn retain_rows(&mut self, keep: &[usize]) {
        let per_row = self.m.cfg.num_key_value_heads * self.cap * self.m.cfg.head_dim();
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            for (new, &old) in keep.iter().enumerate() {
                debug_assert!(new <= old);
                if new != old {
                    buf.copy_within(old * per_row..(old + 1) * per_row, new * per_row);
                }
            }
            buf.truncate(keep.len() * per_row);
        }
        self.pad = keep.iter().map(|&r| self.pad[r]).collect();
        self.rows = keep.len();
    }

    /// Feeds `t` tokens per row (`tokens` row-major `[rows, t]`); returns the last position's logits
    /// `[rows, vocab]`.
    pub fn forward(&mut self, tokens: &[u32], t: usize) -> Vec<f32> {
        let c = &self.m.cfg;
        let (rows, h, hd) = (self.rows, c.hidden_size, c.head_dim());
        let (nh, nkv, f, vocab) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.intermediate_size,
            c.vocab_size,
        );
        let g = nh / nkv;
        let n = rows * t;
        assert_eq!(tokens.len(), n);
        let pos0 = self.len;
        assert!(
            pos0 + t <= self.cap,
            "KV cache capacity {} exceeded",
            self.cap
        );
        let width = (nh + 2 * nkv) * hd;
        let half = hd / 2;
        // cos/sin per new position, f32 as in the burn model.
        let (cos, sin): (Vec<f32>, Vec<f32>) = (0..t)
            .flat_map(|i| self.inv_freq.iter().map(move |fr| (pos0 + i) as f32 * fr))
            .map(|a| (a.cos(), a.sin()))
            .unzip();

        let mut x = vec![0.0f32; n * h];
        for (row, &tok) in x.chunks_mut(h).zip(tokens) {
            row.copy_from_slice(&self.m.embed[tok as usize * h..(tok as usize + 1) * h]);
        }
        let mut hbuf = vec![0.0f32; n * h];
        let mut qkv = vec![0.0f32; n * width];
        let mut att = vec![0.0f32; n * nh * hd];
        let mut gu = vec![0.0f32; n * 2 * f];
        let mut act = vec![0.0f32; n * f];
        let scale = 1.0 / (hd as f32).sqrt();
        let cap = self.cap;
        for (li, l) in self.m.layers.iter().enumerate() {
            rms_norm_rows(&x, &l.attn_norm, c.rms_norm_eps, &mut hbuf);
            for row in qkv.chunks_mut(width) {
                row.copy_from_slice(&l.bqkv);
            }
            matmul(&mut qkv, &hbuf, false, &l.wqkv, false, n, h, width, true);
            // RoPE (half rotation) on the q and k heads, then store k, v in the cache.
            let (kc, vc) = (&mut self.k[li], &mut self.v[li]);
            for (ri, row) in qkv.chunks_mut(width).enumerate() {
                let (r, i) = (ri / t, ri % t);
                let (cs, sn) = (
                    &cos[i * half..(i + 1) * half],
                    &sin[i * half..(i + 1) * half],
                );
                for head in row[..(nh + nkv) * hd].chunks_mut(hd) {
                    let (a, b) = head.split_at_mut(half);
                    for d in 0..half {
                        let (x1, x2) = (a[d], b[d]);
                        a[d] = x1 * cs[d] - x2 * sn[d];
                        b[d] = x2 * cs[d] + x1 * sn[d];
                    }
                }
                for kv in 0..nkv {
                    let dst = ((r * nkv + kv) * cap + pos0 + i) * hd;
                    kc[dst..dst + hd].copy_from_slice(&row[(nh + kv) * hd..(nh + kv + 1) * hd]);
                    vc[dst..dst + hd]
                        .copy_from_slice(&row[(nh + nkv + kv) * hd..(nh + nkv + kv + 1) * hd]);
                }
            }
            // Attention, parallel over rows.
            let (kc, vc) = (&self.k[li], &self.v[li]);
            let pad = &self.pad;
            let qkv_ref = &qkv;
            att.par_chunks_mut(t * nh * hd)
                .enumerate()
                .for_each(|(r, out)| {
                    let mut scores = vec![0.0f32; pos0 + t];
                    for i in 0..t {
                        let qpos = pos0 + i;
                        let q_row = &qkv_ref[(r * t + i) * width..];
                        for head in 0..nh {
                            let kv = head / g;
                            let q = &q_row[head * hd..(head + 1) * hd];
                            let base = (r * nkv + kv) * cap;
                            let mut max = f32::NEG_INFINITY;
                            for j in 0..=qpos {
                                if j < pad[r] && j != qpos {
                                    scores[j] = f32::NEG_INFINITY;
                                    continue;
                                }
                                let k = &kc[(base + j) * hd..(base + j + 1) * hd];
                                let s = dot(q, k) * scale;
                                scores[j] = s;
                                max = max.max(s);
                            }
                            let mut z = 0.0;
                            for s in scores[..=qpos].iter_mut() {
                                *s = (*s - max).exp();
                                z += *s;
                            }
                            let o = &mut out[(i * nh + head) * hd..(i * nh + head + 1) * hd];
                            o.fill(0.0);
                            for (j, &p) in scores[..=qpos].iter().enumerate() {
                                if p != 0.0 {
                                    let v = &vc[(base + j) * hd..(base + j + 1) * hd];
                                    axpy(o, p / z, v);
                                }
                            }
                        }
                    }
                });
            matmul(&mut x, &att, false, &l.wo, false, n, nh * hd, h, true);
            // SwiGLU MLP.
            rms_norm_rows(&x, &l.mlp_norm, c.rms_norm_eps, &mut hbuf);
            matmul(
                &mut gu,
                &hbuf,
                false,
                &l.wgate_up,
                false,
                n,
                h,
                2 * f,
                false,
            );
            act.par_chunks_mut(f)
                .zip(gu.par_chunks(2 * f))
                .for_each(|(a, gu)| {
                    let (gate, up) = gu.split_at(f);
                    for ((a, g), u) in a.iter_mut().zip(gate).zip(up) {
                        *a = g / (1.0 + (-g).exp()) * u;
                    }
                });
            matmul(&mut x, &act, false, &l.wdown, false, n, f, h, true);
        }
        self.len += t;
        // Last position of each row -> final norm -> tied head.
        let last: Vec<f32> = (0..rows)
            .flat_map(|r| x[((r + 1) * t - 1) * h..(r + 1) * t * h].iter().copied())
            .collect();
        let mut normed = vec![0.0f32; rows * h];
        rms_norm_rows(&last, &self.m.final_norm, c.rms_norm_eps, &mut normed);
        let mut logits = vec![0.0f32; rows * vocab];
        matmul(
            &mut logits,
            &normed,
            false,
            &self.m.embed,
            true,
            rows,
            h,
            vocab,
            false,
        );
        logits
    }
}
