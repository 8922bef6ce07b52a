//! The sampling engine shared by RL rollouts and evaluation: batched prompts (left-padded), KV cache,
//! temperature / top-k / top-p, stop at `</answer>`, `[EOS]` or a length limit, a seeded host-side RNG (so
//! CPU runs are reproducible), and per-token log-probabilities.
//!
//! Log-probabilities are those of the temperature-scaled distribution *before* top-k/top-p truncation
//! (what a policy-gradient loss recomputes from the same logits). With `temperature == 0` decoding is greedy
//! and log-probs are those of the unscaled distribution.

use crate::model::Qwen2;
use crate::rng::Rng;
use crate::tokenizer::{ANSWER_END_ID, EOS_ID, PAD_ID};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleConfig {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// 0 = no top-k truncation.
    pub top_k: usize,
    /// 1.0 = no nucleus truncation.
    pub top_p: f64,
    /// Generation of a row ends after it emits one of these (the stop token is included in the output).
    pub stop_tokens: Vec<u32>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            max_new_tokens: 256,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            stop_tokens: vec![ANSWER_END_ID, EOS_ID],
        }
    }
}

impl SampleConfig {
    pub fn greedy(max_new_tokens: usize) -> Self {
        SampleConfig {
            max_new_tokens,
            temperature: 0.0,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Generated tokens (prompt excluded, stop token included).
    pub tokens: Vec<u32>,
    /// Log-probability of each generated token, under the temperature-scaled distribution before any top-k /
    /// top-p cut: the log-prob the GRPO loss computes for the sampling policy (π_old).
    pub logprobs: Vec<f32>,
    /// Entropy (nats) of that same distribution at each generated token.
    pub entropy: Vec<f32>,
    pub finish: Finish,
}

/// One batch of rows being decoded: prefill with left-padded prompts, then one token per live row per step.
pub trait Decoder {
    /// Feeds `t` tokens per row (`[rows, t]` row-major); returns the last position's logits `[rows, vocab]`.
    fn feed(&mut self, tokens: &[u32], t: usize) -> Vec<f32>;
    /// Keeps only these rows (ascending indices into the current rows).
    fn retain_rows(&mut self, rows: &[usize]);
}

/// The generic burn decoder (any backend, e.g. CUDA).
pub struct BurnDecoder<'m, B: Backend> {
    model: &'m Qwen2<B>,
    cache: crate::model::KvCache<B>,
    pad: Vec<usize>,
}

impl<'m, B: Backend> BurnDecoder<'m, B> {
    pub fn new(model: &'m Qwen2<B>, left_pad: &[usize]) -> Self {
        let pad = if left_pad.iter().all(|&p| p == 0) {
            vec![]
        } else {
            left_pad.to_vec()
        };
        BurnDecoder {
            model,
            cache: model.new_cache(),
            pad,
        }
    }
}

impl<B: Backend> Decoder for BurnDecoder<'_, B> {
    fn feed(&mut self, tokens: &[u32], t: usize) -> Vec<f32> {
        let rows = tokens.len() / t;
        let device = self.model.embed.val().device();
        let x = Tensor::<B, 2, Int>::from_data(
            TensorData::new(tokens.iter().map(|&x| x as i32).collect(), [rows, t]),
            &device,
        );
        let logits = self.model.forward_last(x, Some(&mut self.cache), &self.pad);
        logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 logits")
    }
    fn retain_rows(&mut self, rows: &[usize]) {
        self.cache.retain_rows(rows);
        if !self.pad.is_empty() {
            self.pad = rows.iter().map(|&r| self.pad[r]).collect();
        }
    }
}

impl Decoder for crate::host::HostDecoder<'_> {
    fn feed(&mut self, tokens: &[u32], t: usize) -> Vec<f32> {
        self.forward(tokens, t)
    }
    fn retain_rows(&mut self, rows: &[usize]) {
        crate::host::HostDecoder::retain_rows(self, rows)
    }
}

/// Left-pads prompts to a common width: (flat `[n, width]` tokens, width, per-row padding).
fn left_pad(prompts: &[Vec<u32>]) -> (Vec<u32>, usize, Vec<usize>) {
    assert!(prompts.iter().all(|p| !p.is_empty()), "empty prompt");
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pad: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let flat = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(PAD_ID, width - p.len()).chain(p.iter().copied()))
        .collect();
    (flat, width, pad)
}

/// Generates a continuation for every prompt with the burn model on its own backend; on a CPU backend
/// (burn-flex or burn-ndarray) the inference-only host decoder does the work (same math, much faster).
pub fn generate<B: Backend>(
    model: &Qwen2<B>,
    prompts: &[Vec<u32>],
    cfg: &SampleConfig,
    rng: &mut Rng,
) -> Vec<Sample> {
    use std::any::TypeId;
    let cpu = TypeId::of::<B>() == TypeId::of::<crate::CpuFlex>()
        || TypeId::of::<B>() == TypeId::of::<crate::CpuNdArray>();
    if cpu {
        let host = crate::host::HostModel::new(&model.config(), model.to_host(&model.config()));
        return generate_host(&host, prompts, cfg, rng);
    }
    generate_burn(model, prompts, cfg, rng)
}

/// [`generate`] through burn tensor ops (the path every backend supports).
pub fn generate_burn<B: Backend>(
    model: &Qwen2<B>,
    prompts: &[Vec<u32>],
    cfg: &SampleConfig,
    rng: &mut Rng,
) -> Vec<Sample> {
    if prompts.is_empty() {
        return vec![];
    }
    let (flat, width, pad) = left_pad(prompts);
    let mut dec = BurnDecoder::new(model, &pad);
    generate_with(&mut dec, flat, width, cfg, rng)
}

/// [`generate`] on the host decoder (CPU).
pub fn generate_host(
    model: &crate::host::HostModel,
    prompts: &[Vec<u32>],
    cfg: &SampleConfig,
    rng: &mut Rng,
) -> Vec<Sample> {
    if prompts.is_empty() {
        return vec![];
    }
    let (flat, width, pad) = left_pad(prompts);
    let mut dec =
        crate::host::HostDecoder::new(model, prompts.len(), width + cfg.max_new_tokens, &pad);
    generate_with(&mut dec, flat, width, cfg, rng)
}

/// The sampling loop over any [`Decoder`]: rows that stop leave the batch.
pub fn generate_with<D: Decoder>(
    dec: &mut D,
    flat: Vec<u32>,
    width: usize,
    cfg: &SampleConfig,
    rng: &mut Rng,
) -> Vec<Sample> {
    let n = flat.len() / width.max(1);
    let mut out: Vec<Sample> = (0..n)
        .map(|_| Sample {
            tokens: vec![],
            logprobs: vec![],
            entropy: vec![],
            finish: Finish::Length,
        })
        .collect();
    if n == 0 || cfg.max_new_tokens == 0 {
        return out;
    }
    let mut host = dec.feed(&flat, width);
    // `live[i]` = original index of the i-th row still in the batch.
    let mut live: Vec<usize> = (0..n).collect();
    let mut scratch = Vec::new();
    for step in 0..cfg.max_new_tokens {
        let v = host.len() / live.len();
        let mut next = Vec::with_capacity(live.len());
        let mut keep = Vec::with_capacity(live.len());
        for (i, &row) in live.iter().enumerate() {
            let (tok, lp, h) = pick(&host[i * v..(i + 1) * v], cfg, rng, &mut scratch);
            out[row].tokens.push(tok);
            out[row].logprobs.push(lp);
            out[row].entropy.push(h);
            if cfg.stop_tokens.contains(&tok) {
                out[row].finish = Finish::Stop;
            } else {
                keep.push(i);
                next.push(tok);
            }
        }
        if keep.is_empty() || step + 1 == cfg.max_new_tokens {
            break;
        }
        if keep.len() != live.len() {
            dec.retain_rows(&keep);
            live = keep.iter().map(|&i| live[i]).collect();
        }
        host = dec.feed(&next, 1);
    }
    out
}

/// Chooses one token from a row of logits; returns it with its log-probability and the distribution's
/// entropy.
fn pick(
    logits: &[f32],
    cfg: &SampleConfig,
    rng: &mut Rng,
    scratch: &mut Vec<(f64, u32)>,
) -> (u32, f32, f32) {
    let greedy = cfg.temperature <= 0.0;
    let temp = if greedy { 1.0 } else { cfg.temperature };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    // z = Σ e^{x_i}, and Σ x_i e^{x_i} for the entropy ln z - Σ p_i x_i, with x_i = (l_i - max) / T.
    let (z, xz) = logits.iter().fold((0.0f64, 0.0f64), |(z, xz), &l| {
        let x = (l as f64 - max) / temp;
        let e = x.exp();
        (z + e, xz + x * e)
    });
    let entropy = (z.ln() - xz / z) as f32;
    let logp = |t: usize| ((logits[t] as f64 - max) / temp - z.ln()) as f32;
    if greedy {
        // First maximum: ties resolve to the lowest id, deterministically.
        let best = logits
            .iter()
            .enumerate()
            .fold(0, |b, (i, &l)| if l > logits[b] { i } else { b });
        return (best as u32, logp(best), entropy);
    }
    scratch.clear();
    scratch.extend(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (((l as f64 - max) / temp).exp() / z, i as u32)),
    );
    let truncate = cfg.top_k > 0 && cfg.top_k < scratch.len() || cfg.top_p < 1.0;
    if truncate {
        scratch.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if cfg.top_k > 0 && cfg.top_k < scratch.len() {
            scratch.truncate(cfg.top_k);
        }
        if cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = scratch.len();
            for (i, (p, _)) in scratch.iter().enumerate() {
                acc += p;
                if acc >= cfg.top_p {
                    keep = i + 1;
                    break;
                }
            }
            scratch.truncate(keep);
        }
    }
    let total: f64 = scratch.iter().map(|x| x.0).sum();
    let mut u = rng.uniform() * total;
    let mut choice = scratch.last().expect("non-empty vocabulary").1;
    for &(p, t) in scratch.iter() {
        if u < p {
            choice = t;
            break;
        }
        u -= p;
    }
    (choice, logp(choice as usize), entropy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, ModelConfig};

    fn model() -> Qwen2<Cpu> {
        Qwen2::init(
            &ModelConfig::preset("tiny-test").unwrap(),
            5,
            &Default::default(),
        )
    }

    /// Greedy decoding without a cache: re-run the whole sequence every step.
    fn greedy_uncached(m: &Qwen2<Cpu>, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut seq: Vec<u32> = prompt.to_vec();
        for _ in 0..n {
            let x = Tensor::<Cpu, 2, Int>::from_data(
                TensorData::new(seq.iter().map(|&t| t as i32).collect(), [1, seq.len()]),
                &Default::default(),
            );
            let l = m.forward(x, None).into_data().to_vec::<f32>().unwrap();
            let v = l.len() / seq.len();
            let last = &l[l.len() - v..];
            let best = last
                .iter()
                .enumerate()
                .fold(0, |b, (i, &x)| if x > last[b] { i } else { b });
            seq.push(best as u32);
        }
        seq[prompt.len()..].to_vec()
    }

    #[test]
    fn cached_batched_greedy_equals_uncached_greedy_on_both_decoders() {
        let m = model();
        let cfg = SampleConfig {
            stop_tokens: vec![],
            ..SampleConfig::greedy(12)
        };
        let prompts = vec![vec![11, 12, 13, 14, 15], vec![20, 21], vec![30, 31, 32]];
        let burn = generate_burn(&m, &prompts, &cfg, &mut Rng::new(0));
        let host = generate(&m, &prompts, &cfg, &mut Rng::new(0)); // CPU backend: the host decoder
        for ((p, s), h) in prompts.iter().zip(&burn).zip(&host) {
            assert_eq!(s.tokens, greedy_uncached(&m, p, 12), "prompt {p:?}");
            assert_eq!(h.tokens, s.tokens, "host decoder, prompt {p:?}");
            assert_eq!(s.finish, Finish::Length);
            assert!(s.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
            let d = s
                .logprobs
                .iter()
                .zip(&h.logprobs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 1e-4, "log-prob difference {d}");
        }
    }

    #[test]
    fn host_decoder_logits_match_the_burn_model_including_padding_and_row_removal() {
        let m = model();
        let cfg = m.config();
        let host = crate::host::HostModel::new(&cfg, m.to_host(&cfg));
        let (flat, width, pad) = left_pad(&[vec![3, 4, 5, 6], vec![7, 8], vec![9, 10, 11]]);
        let mut a = BurnDecoder::new(&m, &pad);
        let mut b = crate::host::HostDecoder::new(&host, 3, 16, &pad);
        let max_diff = |x: Vec<f32>, y: Vec<f32>| {
            x.iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        };
        assert!(max_diff(a.feed(&flat, width), b.forward(&flat, width)) < 1e-4);
        assert!(max_diff(a.feed(&[1, 2, 3], 1), b.forward(&[1, 2, 3], 1)) < 1e-4);
        a.retain_rows(&[0, 2]);
        Decoder::retain_rows(&mut b, &[0, 2]);
        assert!(max_diff(a.feed(&[4, 5], 1), b.forward(&[4, 5], 1)) < 1e-4);
    }

    #[test]
    fn sampling_is_reproducible_per_seed_and_respects_top_k_and_stops() {
        let m = model();
        let prompts = vec![vec![1, 2, 3]; 4];
        let cfg = SampleConfig {
            max_new_tokens: 20,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            stop_tokens: vec![],
        };
        let a = generate(&m, &prompts, &cfg, &mut Rng::new(9));
        let b = generate(&m, &prompts, &cfg, &mut Rng::new(9));
        let c = generate(&m, &prompts, &cfg, &mut Rng::new(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // top_k = 1 is greedy.
        let k1 = generate(
            &m,
            &prompts[..1],
            &SampleConfig {
                top_k: 1,
                ..cfg.clone()
            },
            &mut Rng::new(1),
        );
        let g = generate(
            &m,
            &prompts[..1],
            &SampleConfig {
                temperature: 0.0,
                ..cfg.clone()
            },
            &mut Rng::new(1),
        );
        assert_eq!(k1[0].tokens, g[0].tokens);
        // Stop tokens end a row and are kept.
        let base = generate(&m, &prompts[..1], &cfg, &mut Rng::new(9));
        let stop = base[0].tokens[3];
        let s = generate(
            &m,
            &prompts[..1],
            &SampleConfig {
                stop_tokens: vec![stop],
                ..cfg.clone()
            },
            &mut Rng::new(9),
        );
        let first = base[0].tokens.iter().position(|&t| t == stop).unwrap();
        assert_eq!(s[0].tokens, base[0].tokens[..=first]);
        assert_eq!(s[0].finish, Finish::Stop);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        let logits = [0.0f32, (3.0f64).ln() as f32, (6.0f64).ln() as f32]; // p = 0.1, 0.3, 0.6
        let cfg = SampleConfig {
            top_p: 0.5,
            ..Default::default()
        };
        let mut rng = Rng::new(0);
        for _ in 0..50 {
            assert_eq!(pick(&logits, &cfg, &mut rng, &mut vec![]).0, 2);
        }
        let cfg = SampleConfig {
            top_p: 0.8,
            ..Default::default()
        };
        let seen: std::collections::HashSet<u32> = (0..200)
            .map(|_| pick(&logits, &cfg, &mut rng, &mut vec![]).0)
            .collect();
        assert_eq!(seen, [1, 2].into_iter().collect());
    }
    #[test]
    fn pick_reports_the_temperature_distributions_log_prob_and_entropy() {
        let logits = [0.0f32, (3.0f64).ln() as f32, (6.0f64).ln() as f32]; // p = 0.1, 0.3, 0.6
        let p = [0.1f64, 0.3, 0.6];
        let h: f64 = -p.iter().map(|q| q * q.ln()).sum::<f64>();
        let (tok, lp, ent) = pick(
            &logits,
            &SampleConfig::greedy(1),
            &mut Rng::new(0),
            &mut vec![],
        );
        assert_eq!(tok, 2);
        assert!((lp as f64 - 0.6f64.ln()).abs() < 1e-6, "log-prob {lp}");
        assert!((ent as f64 - h).abs() < 1e-6, "entropy {ent} against {h}");
        // At temperature 2 the distribution is p^(1/2), renormalised; top-k does not change what is reported.
        let q: Vec<f64> = p.iter().map(|x| x.sqrt()).collect();
        let zq: f64 = q.iter().sum();
        let hq: f64 = -q.iter().map(|x| x / zq * (x / zq).ln()).sum::<f64>();
        let cfg = SampleConfig {
            temperature: 2.0,
            top_k: 2,
            ..Default::default()
        };
        let (tok, lp, ent) = pick(&logits, &cfg, &mut Rng::new(3), &mut vec![]);
        assert!((lp as f64 - (q[tok as usize] / zq).ln()).abs() < 1e-6);
        assert!((ent as f64 - hq).abs() < 1e-6);
    }

    #[test]
    fn sampled_log_probs_and_entropies_equal_a_forward_pass_over_the_rollouts() {
        // The GRPO stage takes π_old from the sampler instead of a second forward pass: they must agree.
        let m = model();
        let prompts = vec![vec![1, 2, 3, 4], vec![5, 6], vec![7, 8, 9]];
        let cfg = SampleConfig {
            max_new_tokens: 10,
            temperature: 0.7,
            stop_tokens: vec![],
            ..Default::default()
        };
        let samples = generate(&m, &prompts, &cfg, &mut Rng::new(4));
        for (p, s) in prompts.iter().zip(&samples) {
            let seq: Vec<u32> = p.iter().chain(&s.tokens).copied().collect();
            let t = seq.len() - 1;
            let batch = crate::data::Batch {
                rows: 1,
                seq_len: t,
                inputs: seq[..t].iter().map(|&x| x as i32).collect(),
                targets: seq[1..].iter().map(|&x| x as i32).collect(),
                weights: vec![1.0; t],
            };
            let full = crate::grpo::token_logprobs(&m, &batch, cfg.temperature);
            let first = p.len() - 1;
            for (j, (lp, h)) in s.logprobs.iter().zip(&s.entropy).enumerate() {
                assert!(
                    (lp - full.logp[first + j]).abs() < 1e-4,
                    "token {j}: {lp} against {}",
                    full.logp[first + j]
                );
                assert!(
                    (h - full.entropy[first + j]).abs() < 1e-4,
                    "token {j}: entropy {h} against {}",
                    full.entropy[first + j]
                );
            }
        }
    }
}
