//! The Qwen2 decoder (spec §4.1), written out so that every tensor maps 1:1 onto Hugging Face's
//! `Qwen2ForCausalLM`: grouped-query attention with q/k/v bias, half-rotation RoPE, SwiGLU, RMSNorm,
//! tied input/output embeddings.
//!
//! Layout choices (internal; the checkpoint module converts to HF names and shapes):
//! * weights are stored `[in, out]` (so `x.matmul(w)`), HF stores `[out, in]`;
//! * q, k and v are one fused `[hidden, (heads + 2 kv_heads) * head_dim]` projection and gate/up one fused
//!   `[hidden, 2 * intermediate]` projection: fewer, larger ops are what make small models fast on CPU;
//! * every parameter is a rank-2 tensor (norm weights and biases are `[1, n]`), so optimiser, clipping and
//!   checkpointing handle one uniform list ([`Qwen2::params`]).

use crate::config::ModelConfig;
use crate::rng::Rng;
use burn::module::{Module, Param};
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    pub attn_norm: Param<Tensor<B, 2>>,
    pub wqkv: Param<Tensor<B, 2>>,
    pub bqkv: Param<Tensor<B, 2>>,
    pub wo: Param<Tensor<B, 2>>,
    pub mlp_norm: Param<Tensor<B, 2>>,
    pub wgate_up: Param<Tensor<B, 2>>,
    pub wdown: Param<Tensor<B, 2>>,
}

#[derive(Module, Debug)]
pub struct Qwen2<B: Backend> {
    pub embed: Param<Tensor<B, 2>>,
    pub layers: Vec<Layer<B>>,
    pub final_norm: Param<Tensor<B, 2>>,
    // Shapes, kept as plain numbers so that the derived Module treats them as constants.
    vocab: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    eps: f64,
    theta: f64,
}

/// Keys and values of every layer for the positions processed so far (`[batch, kv_heads, len, head_dim]`).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            len: 0,
        }
    }
    /// Number of positions cached (the RoPE offset of the next token).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Keeps only the given batch rows (in this order), e.g. to drop finished sequences while sampling.
    pub fn retain_rows(&mut self, rows: &[usize]) {
        for (k, v) in self.layers.iter_mut().flatten() {
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(
                    rows.iter().map(|&r| r as i32).collect::<Vec<_>>(),
                    [rows.len()],
                ),
                &k.device(),
            );
            *k = k.clone().select(0, idx.clone());
            *v = v.clone().select(0, idx);
        }
    }
}

/// Host-side parameter tensor: name (our internal name), shape `[rows, cols]`, row-major values.
pub type HostParam = (String, [usize; 2], Vec<f32>);

impl<B: Backend> Qwen2<B> {
    /// A freshly initialised model: matrices and embeddings N(0, 0.02), biases 0, norm weights 1 (as HF Qwen2).
    /// Initialisation runs on the host with our own RNG, so the same seed gives the same weights on every backend.
    pub fn init(cfg: &ModelConfig, seed: u64, device: &B::Device) -> Self {
        cfg.validate().expect("invalid model config");
        let mut rng = Rng::new(seed);
        let host = Self::param_shapes(cfg)
            .into_iter()
            .map(|(name, shape)| {
                let n = shape[0] * shape[1];
                let values = if name.ends_with("norm") {
                    vec![1.0; n]
                } else if name.starts_with('b') || name.contains(".b") {
                    vec![0.0; n]
                } else {
                    (0..n).map(|_| (rng.normal() * 0.02) as f32).collect()
                };
                (name, shape, values)
            })
            .collect();
        Self::from_host(cfg, host, device).expect("shapes come from param_shapes")
    }

    /// Internal parameter names and shapes, in the canonical order used everywhere (optimizer state, files).
    pub fn param_shapes(cfg: &ModelConfig) -> Vec<(String, [usize; 2])> {
        let (h, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd;
        let mut out = vec![("embed".to_string(), [cfg.vocab_size, h])];
        for i in 0..cfg.num_hidden_layers {
            for (n, s) in [
                ("attn_norm", [1, h]),
                ("wqkv", [h, qkv]),
                ("bqkv", [1, qkv]),
                ("wo", [cfg.num_attention_heads * hd, h]),
                ("mlp_norm", [1, h]),
                ("wgate_up", [h, 2 * f]),
                ("wdown", [f, h]),
            ] {
                out.push((format!("layers.{i}.{n}"), s));
            }
        }
        out.push(("final_norm".to_string(), [1, h]));
        out
    }

    /// Builds a model from host tensors named and shaped as [`Self::param_shapes`] says.
    pub fn from_host(
        cfg: &ModelConfig,
        params: Vec<HostParam>,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        let expected = Self::param_shapes(cfg);
        anyhow::ensure!(
            params.len() == expected.len(),
            "expected {} tensors, got {}",
            expected.len(),
            params.len()
        );
        let mut it =
            params
                .into_iter()
                .zip(expected)
                .map(|((name, shape, values), (ename, eshape))| {
                    anyhow::ensure!(
                        name == ename && shape == eshape,
                        "tensor {name} {shape:?}: expected {ename} {eshape:?}"
                    );
                    anyhow::ensure!(
                        values.len() == shape[0] * shape[1],
                        "tensor {name}: {} values for shape {shape:?}",
                        values.len()
                    );
                    Ok(Param::from_tensor(Tensor::<B, 2>::from_data(
                        TensorData::new(values, shape),
                        device,
                    )))
                });
        let mut next = || it.next().expect("length checked above");
        let embed = next()?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            layers.push(Layer {
                attn_norm: next()?,
                wqkv: next()?,
                bqkv: next()?,
                wo: next()?,
                mlp_norm: next()?,
                wgate_up: next()?,
                wdown: next()?,
            });
        }
        let final_norm = next()?;
        Ok(Qwen2 {
            embed,
            layers,
            final_norm,
            vocab: cfg.vocab_size,
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            ffn: cfg.intermediate_size,
            eps: cfg.rms_norm_eps,
            theta: cfg.rope_theta,
        })
    }

    /// All parameters in canonical order (see [`Self::param_shapes`]).
    pub fn params(&self) -> Vec<&Param<Tensor<B, 2>>> {
        let mut out = vec![&self.embed];
        for l in &self.layers {
            out.extend([
                &l.attn_norm,
                &l.wqkv,
                &l.bqkv,
                &l.wo,
                &l.mlp_norm,
                &l.wgate_up,
                &l.wdown,
            ]);
        }
        out.push(&self.final_norm);
        out
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param<Tensor<B, 2>>> {
        let mut out = vec![&mut self.embed];
        for l in &mut self.layers {
            out.extend([
                &mut l.attn_norm,
                &mut l.wqkv,
                &mut l.bqkv,
                &mut l.wo,
                &mut l.mlp_norm,
                &mut l.wgate_up,
                &mut l.wdown,
            ]);
        }
        out.push(&mut self.final_norm);
        out
    }

    /// The same weights as new autodiff leaves (no data copied), so that another thread can build its own
    /// graph from them (a data-parallel replica).
    pub fn fresh_leaves(&self) -> Self
    where
        B: burn::tensor::backend::AutodiffBackend,
    {
        let mut m = self.clone();
        for p in m.params_mut() {
            *p = Param::initialized(p.id, Tensor::from_inner(p.val().inner()).require_grad());
        }
        m
    }

    /// Copies every parameter to the host (canonical order and names).
    pub fn to_host(&self, cfg: &ModelConfig) -> Vec<HostParam> {
        Self::param_shapes(cfg)
            .into_iter()
            .zip(self.params())
            .map(|((name, shape), p)| {
                let values = p
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32 data");
                (name, shape, values)
            })
            .collect()
    }

    pub fn config(&self) -> ModelConfig {
        ModelConfig {
            vocab_size: self.vocab,
            hidden_size: self.hidden,
            num_hidden_layers: self.layers.len(),
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            intermediate_size: self.ffn,
            rms_norm_eps: self.eps,
            rope_theta: self.theta,
            max_position_embeddings: 0,
        }
    }

    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }

    /// Logits `[batch, seq, vocab]` for `tokens` `[batch, seq]`, with positions starting at `cache.len()`
    /// (0 without a cache). With a cache, this call's keys/values are appended to it.
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        self.forward_padded(tokens, cache, &[])
    }

    /// As [`Self::forward`], for left-padded rows: row `b`'s first `left_pad[b]` positions (counted from the
    /// start of the cache) are padding that no real token attends to. Empty `left_pad` means no padding.
    /// RoPE depends only on position differences, so a left-padded row computes what the unpadded row would.
    pub fn forward_padded(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        left_pad: &[usize],
    ) -> Tensor<B, 3> {
        let h = self.hidden_states(tokens, cache, left_pad);
        // Tied output head: logits = h · Eᵀ.
        let [b, t, d] = h.dims();
        h.reshape([b * t, d])
            .matmul(self.embed.val().transpose())
            .reshape([b, t, self.vocab])
    }

    /// Logits `[batch, vocab]` of the last position only (what sampling needs; skips the other positions' head).
    pub fn forward_last(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        left_pad: &[usize],
    ) -> Tensor<B, 2> {
        let h = self.hidden_states(tokens, cache, left_pad);
        let [b, t, d] = h.dims();
        h.narrow(1, t - 1, 1)
            .reshape([b, d])
            .matmul(self.embed.val().transpose())
    }

    /// Logits `[batch, seq, vocab]` of packed blocks in which query `i` of row `r` attends only to keys
    /// `starts[r · seq + i]..=i`: its own document ([`crate::data::document_starts`]). No cache.
    pub fn forward_documents(&self, tokens: Tensor<B, 2, Int>, starts: &[usize]) -> Tensor<B, 3> {
        let h = self.hidden_states_within(tokens, None, &[], starts);
        let [b, t, d] = h.dims();
        h.reshape([b * t, d])
            .matmul(self.embed.val().transpose())
            .reshape([b, t, self.vocab])
    }

    /// Final normalised hidden states `[batch, seq, hidden]` (before the output head).
    pub fn hidden_states(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        left_pad: &[usize],
    ) -> Tensor<B, 3> {
        self.hidden_states_within(tokens, cache, left_pad, &[])
    }

    /// [`Self::hidden_states`] with per-query first visible keys (`starts`, `[batch · seq]`; empty: none).
    fn hidden_states_within(
        &self,
        tokens: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
        left_pad: &[usize],
        starts: &[usize],
    ) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let offset = cache.as_ref().map_or(0, |c| c.len);
        if !left_pad.is_empty() {
            assert_eq!(left_pad.len(), b, "left_pad must have one entry per row");
        }
        let hd = self.hidden / self.heads;
        let (cos, sin) = rope_tables::<B>(self.theta, hd, offset, t, &device);
        assert!(starts.is_empty() || (starts.len() == b * t && offset == 0));
        let g = self.heads / self.kv_heads;
        let mask = attention_mask::<B>(b, g, t, offset, left_pad, starts, &device);

        let mut x = burn::tensor::module::embedding(self.embed.val(), tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = self.block(layer, x, &cos, &sin, &mask, slot);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        rms_norm(x, &self.final_norm.val(), self.eps)
    }

    fn block(
        &self,
        l: &Layer<B>,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: &Tensor<B, 4>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let (nh, nkv) = (self.heads, self.kv_heads);
        let hd = d / nh;
        let g = nh / nkv;

        // Attention.
        let h = rms_norm(x.clone(), &l.attn_norm.val(), self.eps);
        let qkv = h.matmul(l.wqkv.val().unsqueeze()) + l.bqkv.val().unsqueeze();
        let q = qkv
            .clone()
            .narrow(2, 0, nh * hd)
            .reshape([b, t, nh, hd])
            .swap_dims(1, 2);
        let k = qkv
            .clone()
            .narrow(2, nh * hd, nkv * hd)
            .reshape([b, t, nkv, hd])
            .swap_dims(1, 2);
        let v = qkv
            .narrow(2, (nh + nkv) * hd, nkv * hd)
            .reshape([b, t, nkv, hd])
            .swap_dims(1, 2);
        let q = rope(q, cos, sin);
        let k = rope(k, cos, sin);
        let (k, v) = match cache {
            None => (k, v),
            Some(slot) => {
                let kv = match slot.take() {
                    None => (k, v),
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                };
                *slot = Some(kv.clone());
                kv
            }
        };
        // GQA without copying keys: query heads h = kv*g + j share kv head `kv`, so fold the g query heads of
        // a group into the row axis: [b, nkv, g*t, hd] · [b, nkv, hd, s].
        let q = q.reshape([b, nkv, g * t, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()) + mask.clone();
        let att = softmax(scores, 3).matmul(v); // [b, nkv, g*t, hd]
        let att = att
            .reshape([b, nh, t, hd])
            .swap_dims(1, 2)
            .reshape([b, t, nh * hd]);
        let x = x + att.matmul(l.wo.val().unsqueeze());

        // SwiGLU MLP.
        let h = rms_norm(x.clone(), &l.mlp_norm.val(), self.eps);
        let gu = h.matmul(l.wgate_up.val().unsqueeze());
        let gate = gu.clone().narrow(2, 0, self.ffn);
        let up = gu.narrow(2, self.ffn, self.ffn);
        x + (silu(gate) * up).matmul(l.wdown.val().unsqueeze())
    }
}

/// RMSNorm as HF computes it: x · rsqrt(mean(x²) + eps) · w.
fn rms_norm<B: Backend>(x: Tensor<B, 3>, w: &Tensor<B, 2>, eps: f64) -> Tensor<B, 3> {
    let inv = (x.clone().square().mean_dim(2) + eps).sqrt().recip();
    x * inv * w.clone().unsqueeze()
}

/// Half rotation (HF `rotate_half`): [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin] over the two halves.
/// `sin` arrives with its first half negated, so the rotation is `x * cos + swap_halves(x) * sin`.
fn rope<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let hd = x.dims()[3];
    let half = hd / 2;
    let swapped = Tensor::cat(
        vec![
            x.clone().narrow(3, half, half),
            x.clone().narrow(3, 0, half),
        ],
        3,
    );
    x * cos.clone() + swapped * sin.clone()
}

/// cos and signed sin tables `[1, 1, t, head_dim]` for positions `offset..offset + t`, computed in f32 the
/// way transformers does (inv_freq = 1 / theta^(2i/d), angle = pos · inv_freq).
fn rope_tables<B: Backend>(
    theta: f64,
    hd: usize,
    offset: usize,
    t: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let half = hd / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / hd as f32))
        .collect();
    let mut cos = Vec::with_capacity(t * hd);
    let mut sin = Vec::with_capacity(t * hd);
    for p in offset..offset + t {
        for sign in [-1.0f32, 1.0] {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(sign * a.sin());
            }
        }
    }
    let mk = |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, [1, 1, t, hd]), device);
    (mk(cos), mk(sin))
}

/// Additive mask `[b or 1, 1, g*t, s]` for the grouped score layout (row r is query r % t): causal, plus
/// left padding, plus document starts (`starts[r · t + i]`: query `i`'s first visible key; empty: 0). A
/// padding query may see itself only, so that no row is all -inf (which would give NaN).
fn attention_mask<B: Backend>(
    b: usize,
    g: usize,
    t: usize,
    offset: usize,
    left_pad: &[usize],
    starts: &[usize],
    device: &B::Device,
) -> Tensor<B, 4> {
    let s = offset + t;
    let rows = if left_pad.is_empty() && starts.is_empty() {
        1
    } else {
        b
    };
    let mut m = vec![0f32; rows * g * t * s];
    for r in 0..rows {
        let pad = left_pad.get(r).copied().unwrap_or(0);
        for gi in 0..g {
            for i in 0..t {
                let qpos = offset + i;
                let first = starts.get(r * t + i).copied().unwrap_or(0);
                let row = &mut m[((r * g + gi) * t + i) * s..][..s];
                for (j, x) in row.iter_mut().enumerate() {
                    let visible = j <= qpos && j >= first && (j >= pad || j == qpos);
                    if !visible {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [rows, 1, g * t, s]), device)
}

/// Sum over positions of `-log p(target) * weight` (scalar `[1]`); see [`cross_entropy`].
pub fn cross_entropy_sum<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    weights: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1);
    let picked = logp.gather(1, targets.reshape([b * t, 1])).reshape([b * t]);
    -(picked * weights.reshape([b * t])).sum()
}

/// Mean next-token cross-entropy over positions with weight > 0 (`logits [b, t, v]`, `targets [b, t]`,
/// `weights [b, t]` of 0/1). Returns a scalar tensor `[1]`.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    weights: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1);
    let picked = logp.gather(1, targets.reshape([b * t, 1])).reshape([b * t]);
    let w = weights.reshape([b * t]);
    let denom = w.clone().sum().clamp_min(1.0);
    -(picked * w).sum() / denom
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    type B = Cpu;

    fn tiny() -> (ModelConfig, Qwen2<B>) {
        let cfg = ModelConfig::preset("tiny-test").unwrap();
        let m = Qwen2::<B>::init(&cfg, 7, &Default::default());
        (cfg, m)
    }

    fn toks(rows: &[&[i32]]) -> Tensor<B, 2, Int> {
        let t = rows[0].len();
        let flat: Vec<i32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), t]), &Default::default())
    }

    fn host(x: Tensor<B, 3>) -> Vec<f32> {
        x.into_data().to_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn logits_have_batch_seq_vocab_shape_and_param_count_matches_config() {
        let (cfg, m) = tiny();
        let out = m.forward(toks(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]]), None);
        assert_eq!(out.dims(), [2, 5, cfg.vocab_size]);
        let n: usize = m
            .params()
            .iter()
            .map(|p| p.val().dims().iter().product::<usize>())
            .sum();
        assert_eq!(n, cfg.num_params());
        assert!(host(out).iter().all(|x| x.is_finite()));
    }

    #[test]
    fn paper_preset_is_about_100m_parameters() {
        let cfg = ModelConfig::preset("paper-100m").unwrap();
        let n = cfg.num_params();
        assert!((100_000_000..106_000_000).contains(&n), "{n}");
        assert_eq!(cfg.head_dim(), 64);
        let bench = ModelConfig::preset("bench-3m").unwrap();
        assert!(
            (3_000_000..3_600_000).contains(&bench.num_params()),
            "{}",
            bench.num_params()
        );
    }

    #[test]
    fn changing_a_later_token_never_changes_earlier_logits() {
        let (cfg, m) = tiny();
        let a = host(m.forward(toks(&[&[1, 2, 3, 4, 5, 6]]), None));
        let b = host(m.forward(toks(&[&[1, 2, 3, 40, 50, 60]]), None));
        let v = cfg.vocab_size;
        assert_eq!(
            &a[..3 * v],
            &b[..3 * v],
            "positions 0..3 must not see positions >= 3"
        );
        assert!(
            max_diff(&a[3 * v..], &b[3 * v..]) > 1e-4,
            "later positions must change"
        );
    }

    #[test]
    fn grouped_kv_heads_equal_full_attention_with_each_kv_head_repeated_for_its_group() {
        // 4 query heads on 2 kv heads must equal 4 query heads on 4 kv heads where kv head h holds
        // kv head h / 2 of the grouped model (HF's repeat_kv convention).
        let (cfg, m) = tiny();
        let hd = cfg.head_dim();
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let mut full_cfg = cfg.clone();
        full_cfg.num_key_value_heads = nh;
        let g = nh / nkv;
        let expand = |cols: &[f32], rows: usize, src_w: usize| -> Vec<f32> {
            // columns: [q (nh*hd) | k (nkv*hd) | v (nkv*hd)] -> [q | k repeated | v repeated]
            let dst_w = (3 * nh) * hd;
            let mut out = vec![0.0; rows * dst_w];
            for r in 0..rows {
                let src = &cols[r * src_w..(r + 1) * src_w];
                let dst = &mut out[r * dst_w..(r + 1) * dst_w];
                dst[..nh * hd].copy_from_slice(&src[..nh * hd]);
                for part in 0..2 {
                    for h in 0..nh {
                        let s0 = nh * hd + part * nkv * hd + (h / g) * hd;
                        let d0 = nh * hd + part * nh * hd + h * hd;
                        dst[d0..d0 + hd].copy_from_slice(&src[s0..s0 + hd]);
                    }
                }
            }
            out
        };
        let mut host_params = m.to_host(&cfg);
        for (name, shape, vals) in host_params.iter_mut() {
            if name.ends_with("qkv") {
                let rows = shape[0];
                *vals = expand(vals, rows, shape[1]);
                shape[1] = 3 * nh * hd;
            }
        }
        // Give the biases non-zero values so that they are checked too.
        let mut rng = Rng::new(3);
        let mut host_grouped = m.to_host(&cfg);
        for ((name, shape, vals), (_, fshape, fvals)) in
            host_grouped.iter_mut().zip(host_params.iter_mut())
        {
            if name.ends_with("bqkv") {
                for x in vals.iter_mut() {
                    *x = rng.normal() as f32 * 0.1;
                }
                *fvals = expand(vals, 1, shape[1]);
                *fshape = [1, 3 * nh * hd];
            }
        }
        let grouped = Qwen2::<B>::from_host(&cfg, host_grouped, &Default::default()).unwrap();
        let full = Qwen2::<B>::from_host(&full_cfg, host_params, &Default::default()).unwrap();
        let x = toks(&[&[3, 1, 4, 1, 5, 9, 2, 6]]);
        let d = max_diff(
            &host(grouped.forward(x.clone(), None)),
            &host(full.forward(x, None)),
        );
        assert!(d < 1e-5, "max diff {d}");
    }

    #[test]
    fn prefill_then_cached_steps_equal_one_uncached_forward() {
        // RoPE positions must continue from the cache length.
        let (cfg, m) = tiny();
        let seq: &[i32] = &[5, 9, 2, 7, 1, 8, 3, 3, 6];
        let full = host(m.forward(toks(&[seq, seq]), None));
        let mut cache = m.new_cache();
        let mut pieces = host(m.forward(toks(&[&seq[..4], &seq[..4]]), Some(&mut cache)));
        assert_eq!(cache.len(), 4);
        let two = host(m.forward(toks(&[&seq[4..6], &seq[4..6]]), Some(&mut cache)));
        let mut rest = vec![];
        for i in 6..seq.len() {
            rest.push(host(m.forward(
                toks(&[&seq[i..i + 1], &seq[i..i + 1]]),
                Some(&mut cache),
            )));
        }
        assert_eq!(cache.len(), seq.len());
        // Re-assemble [batch, seq, vocab] from the pieces, row by row.
        let v = cfg.vocab_size;
        let n = seq.len();
        let mut got = vec![0.0; 2 * n * v];
        for b in 0..2 {
            got[b * n * v..][..4 * v].copy_from_slice(&pieces[b * 4 * v..][..4 * v]);
            got[(b * n + 4) * v..][..2 * v].copy_from_slice(&two[b * 2 * v..][..2 * v]);
            for (k, r) in rest.iter().enumerate() {
                got[(b * n + 6 + k) * v..][..v].copy_from_slice(&r[b * v..][..v]);
            }
        }
        pieces.clear();
        let d = max_diff(&full, &got);
        assert!(d < 1e-4, "max diff {d}");
    }

    #[test]
    fn left_padded_row_matches_the_unpadded_row() {
        let (cfg, m) = tiny();
        let v = cfg.vocab_size;
        let alone = host(m.forward(toks(&[&[4, 8, 15]]), None));
        let mut cache = m.new_cache();
        let both = host(m.forward_padded(
            toks(&[&[0, 0, 4, 8, 15], &[16, 23, 42, 4, 8]]),
            Some(&mut cache),
            &[2, 0],
        ));
        let d = max_diff(&alone, &both[2 * v..5 * v]);
        assert!(d < 1e-4, "max diff {d}");
        // A decode step after the padded prefill still matches.
        let alone2 = host(m.forward(toks(&[&[4, 8, 15, 16]]), None));
        let step = host(m.forward_padded(toks(&[&[16], &[15]]), Some(&mut cache), &[2, 0]));
        let d = max_diff(&alone2[3 * v..], &step[..v]);
        assert!(d < 1e-4, "max diff {d}");
    }
}
