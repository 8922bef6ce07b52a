//! `cargo xtask bench model [--device D] [--json FILE]`: the bench-3m configuration of
//! `/work/shared/bench/qwen2_peer.py`, same shapes and settings, so that the two can be divided into a ratio:
//! training batch 16 x 256, AdamW (lr 3e-4, wd 0.1), global-norm clip 1.0, mean of steps 3..8; sampling
//! batch 64, prompt 16, 240 new tokens, temperature 1.0, KV cache, timed after a short warm-up generation
//! (GPU kernels compile on first use). Prints tokens/s and peak RSS. `--preset`, `--batch` and `--seq` change
//! the model and the training shape (`scripts/peer_bench.py` takes the same flags for a GPU peer).

use crate::data::{LossOn, PackedData, Packing};
use crate::device::{DeviceSpec, OnBackend};
use crate::sample::{SampleConfig, generate};
use crate::train::{TrainConfig, Trainer};
use crate::{ModelConfig, Qwen2, Rng};
use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use std::time::Instant;

const TRAIN_BATCH: usize = 16;
const TRAIN_SEQ: usize = 256;
const GEN_WARMUP: usize = 8;
const TRAIN_STEPS: usize = 8;
const WARMUP: usize = 2;
const GEN_BATCH: usize = 64;
const GEN_PROMPT: usize = 16;
const GEN_NEW: usize = 240;

pub struct BenchResult {
    pub train_tokens_per_s: f64,
    pub sample_tokens_per_s: f64,
    pub peak_rss_bytes: u64,
}

pub fn main(args: &[String]) -> Result<()> {
    let mut device = DeviceSpec::Cpu;
    let mut json = None;
    let mut preset = "bench-3m".to_string();
    let mut only = None;
    let mut dp = 2;
    let (mut batch, mut seq) = (TRAIN_BATCH, TRAIN_SEQ);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = it.next().context("--device needs a value")?.parse()?,
            "--json" => json = Some(it.next().context("--json needs a file")?.clone()),
            "--preset" => preset = it.next().context("--preset needs a name")?.clone(),
            "--dp" => dp = number(it.next(), "--dp")?,
            "--batch" => batch = number(it.next(), "--batch")?,
            "--seq" => seq = number(it.next(), "--seq")?,
            "--only" => {
                only = Some(
                    it.next()
                        .context("--only needs `train` or `sample`")?
                        .clone(),
                )
            }
            other => bail!(
                "unknown argument `{other}`; expected --device D, --json FILE, --preset NAME, --batch N, --seq N, --dp N, --only train|sample"
            ),
        }
    }
    device.check_available()?;
    let cfg = ModelConfig::preset(&preset)?;
    if seq > cfg.max_position_embeddings {
        bail!(
            "--seq {seq} is longer than {preset}'s max_position_embeddings ({})",
            cfg.max_position_embeddings
        );
    }
    println!(
        "bench {preset}: {} params, device {device:?}, train {batch} x {seq}, rayon threads {}",
        cfg.num_params(),
        rayon::current_num_threads()
    );
    struct Bench<'a> {
        cfg: &'a ModelConfig,
        only: Option<&'a str>,
        dp: usize,
        shape: (usize, usize),
    }
    impl OnBackend for Bench<'_> {
        type Output = BenchResult;
        fn run<B: Backend>(self, device: B::Device) -> BenchResult {
            run::<Autodiff<B>>(self.cfg, device, self.only, self.dp, self.shape)
        }
    }
    let r = device.run(Bench {
        cfg: &cfg,
        only: only.as_deref(),
        dp,
        shape: (batch, seq),
    })?;
    println!("RESULT train tok/s={:.0}", r.train_tokens_per_s);
    println!("RESULT sample tok/s={:.0}", r.sample_tokens_per_s);
    println!(
        "RESULT peak_rss_bytes={} ({:.0} MiB)",
        r.peak_rss_bytes,
        r.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    if let Some(path) = json {
        let v = serde_json::json!({
            "config": preset,
            "device": format!("{device:?}"),
            "params": cfg.num_params(),
            "train_batch": batch,
            "train_seq": seq,
            "train_tokens_per_s": r.train_tokens_per_s,
            "sample_tokens_per_s": r.sample_tokens_per_s,
            "peak_rss_bytes": r.peak_rss_bytes,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn number(v: Option<&String>, flag: &str) -> Result<usize> {
    let n: usize = v
        .with_context(|| format!("{flag} needs a number"))?
        .parse()
        .with_context(|| format!("{flag} expects a positive integer"))?;
    if n == 0 {
        bail!("{flag} expects a positive integer, got 0");
    }
    Ok(n)
}

/// `only`: `Some("train")` or `Some("sample")` skips the other half (its figure is reported as 0).
/// `shape`: training (batch rows, tokens per row).
pub fn run<B: AutodiffBackend>(
    cfg: &ModelConfig,
    device: B::Device,
    only: Option<&str>,
    dp: usize,
    (train_batch, train_seq): (usize, usize),
) -> BenchResult {
    let mut rng = Rng::new(0);
    // Random tokens, as the peer uses: enough whole blocks for every step.
    let docs: Vec<Vec<u32>> = (0..TRAIN_STEPS * train_batch + 1)
        .map(|_| {
            (0..train_seq)
                .map(|_| 10 + rng.below(cfg.vocab_size - 10) as u32)
                .collect()
        })
        .collect();
    let data = PackedData::new(docs, LossOn::All, Packing::Stream, train_seq, 0, false);
    let tc = TrainConfig {
        seq_len: train_seq,
        batch_size: train_batch,
        grad_accum: 1,
        token_budget: (TRAIN_STEPS * train_batch * train_seq) as u64,
        lr: 3e-4,
        min_lr: 3e-4,
        warmup_frac: 0.0,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        grad_clip: 1.0,
        data_parallel: dp,
        ..Default::default()
    };
    let mut trainer =
        Trainer::<B>::new(Qwen2::init(cfg, 0, &device), cfg.clone(), tc, data, device);
    let mut times = vec![];
    let steps = if only == Some("sample") {
        0
    } else {
        TRAIN_STEPS
    };
    for _ in 0..steps {
        let t0 = Instant::now();
        let s = trainer.step();
        times.push(t0.elapsed().as_secs_f64());
        println!(
            "  train step {} loss {:.4} {:.3}s",
            s.step,
            s.loss,
            times.last().unwrap()
        );
    }
    let train_tokens_per_s = if steps == 0 {
        0.0
    } else {
        let step = times[WARMUP..].iter().sum::<f64>() / (TRAIN_STEPS - WARMUP) as f64;
        (train_batch * train_seq) as f64 / step
    };
    if only == Some("train") {
        return BenchResult {
            train_tokens_per_s,
            sample_tokens_per_s: 0.0,
            peak_rss_bytes: peak_rss(),
        };
    }

    let model = trainer.model.valid();
    let prompts: Vec<Vec<u32>> = (0..GEN_BATCH)
        .map(|_| {
            (0..GEN_PROMPT)
                .map(|_| rng.below(cfg.vocab_size) as u32)
                .collect()
        })
        .collect();
    let sc = SampleConfig {
        max_new_tokens: GEN_NEW,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        stop_tokens: vec![],
    };
    let warm = SampleConfig {
        max_new_tokens: GEN_WARMUP,
        ..sc.clone()
    };
    generate(&model, &prompts, &warm, &mut rng);
    let t0 = Instant::now();
    let out = generate(&model, &prompts, &sc, &mut rng);
    let dt = t0.elapsed().as_secs_f64();
    let new: usize = out.iter().map(|s| s.tokens.len()).sum();
    println!("  sampled {new} tokens in {dt:.2}s");
    BenchResult {
        train_tokens_per_s,
        sample_tokens_per_s: new as f64 / dt,
        peak_rss_bytes: peak_rss(),
    }
}

/// Peak resident set size of this process (VmHWM), 0 where /proc is unavailable.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `lm-cli device-check [--device D]`: the same tiny-1m model (same seed) on the CPU and on device D:
/// logits of a fixed batch, the losses of three training steps (CPU: host gradients; other devices: burn
/// autodiff), and greedy completions. Prints the differences and fails above f32-rounding bounds, so that one
/// short run on a GPU machine tells whether that backend computes what the CPU does.
pub fn device_check(args: &[String]) -> Result<()> {
    let mut device = DeviceSpec::Cuda(0);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = it.next().context("--device needs a value")?.parse()?,
            other => bail!("unknown argument `{other}`; expected --device D"),
        }
    }
    device.check_available()?;
    let cfg = ModelConfig::preset("tiny-1m")?;
    struct Probe<'a>(&'a ModelConfig);
    impl OnBackend for Probe<'_> {
        type Output = ProbeResult;
        fn run<B: Backend>(self, device: B::Device) -> ProbeResult {
            probe::<Autodiff<B>>(self.0, device)
        }
    }
    let cpu = DeviceSpec::Cpu.run(Probe(&cfg))?;
    let dev = device.run(Probe(&cfg))?;
    let max_abs_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    let widen = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let logit_diff = max_abs_diff(&widen(&cpu.logits), &widen(&dev.logits));
    let loss_diff = max_abs_diff(&cpu.losses, &dev.losses);
    let same_tokens = cpu
        .greedy
        .iter()
        .zip(&dev.greedy)
        .filter(|(a, b)| a == b)
        .count();
    println!("device-check cpu vs {device:?} (tiny-1m, seed 0)");
    println!("  max |logit difference| = {logit_diff:.3e}");
    println!(
        "  training losses cpu {:?} / device {:?}, max difference {loss_diff:.3e}",
        cpu.losses, dev.losses
    );
    println!(
        "  greedy completions identical: {same_tokens} of {}",
        cpu.greedy.len()
    );
    // A random-init model's logits are O(0.1); f32 reductions in another order differ by ~1e-6.
    if logit_diff > 1e-3 || loss_diff > 1e-3 {
        bail!("device {device:?} disagrees with the CPU beyond f32 rounding");
    }
    Ok(())
}

struct ProbeResult {
    logits: Vec<f32>,
    losses: Vec<f64>,
    greedy: Vec<Vec<u32>>,
}

fn probe<B: AutodiffBackend>(cfg: &ModelConfig, device: B::Device) -> ProbeResult {
    let mut rng = Rng::new(7);
    let (rows, t) = (4, 96);
    let docs: Vec<Vec<u32>> = (0..3 * rows + 1)
        .map(|_| {
            (0..t)
                .map(|_| 10 + rng.below(cfg.vocab_size - 10) as u32)
                .collect()
        })
        .collect();
    let model = Qwen2::<B>::init(cfg, 0, &device);
    let x: Vec<i32> = docs[..rows].iter().flatten().map(|&x| x as i32).collect();
    let logits = model
        .valid()
        .forward(
            burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(x, [rows, t]), &device),
            None,
        )
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 logits");
    let prompts: Vec<Vec<u32>> = docs[..rows].iter().map(|d| d[..12].to_vec()).collect();
    let greedy = generate(
        &model.valid(),
        &prompts,
        &SampleConfig {
            stop_tokens: vec![],
            ..SampleConfig::greedy(24)
        },
        &mut Rng::new(1),
    )
    .into_iter()
    .map(|s| s.tokens)
    .collect();
    let data = PackedData::new(docs, LossOn::All, Packing::Stream, t, 0, false);
    let tc = TrainConfig {
        seq_len: t,
        batch_size: rows,
        token_budget: (3 * rows * t) as u64,
        lr: 1e-3,
        min_lr: 1e-3,
        warmup_frac: 0.0,
        ..Default::default()
    };
    let mut trainer = Trainer::<B>::new(model, cfg.clone(), tc, data, device);
    let losses = (0..3).map(|_| trainer.step().loss).collect();
    ProbeResult {
        logits,
        losses,
        greedy,
    }
}
