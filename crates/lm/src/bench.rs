//! `cargo xtask bench model [--device D] [--json FILE]`: the bench-3m configuration of
//! `/work/shared/bench/qwen2_peer.py`, same shapes and settings, so that the two can be divided into a ratio:
//! training batch 16 x 256, AdamW (lr 3e-4, wd 0.1), global-norm clip 1.0, mean of steps 3..8; sampling
//! batch 64, prompt 16, 240 new tokens, temperature 1.0, KV cache. Prints tokens/s and peak RSS.

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
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = it.next().context("--device needs a value")?.parse()?,
            "--json" => json = Some(it.next().context("--json needs a file")?.clone()),
            "--preset" => preset = it.next().context("--preset needs a name")?.clone(),
            "--dp" => {
                dp = it
                    .next()
                    .context("--dp needs a number")?
                    .parse()
                    .context("--dp")?
            }
            "--only" => {
                only = Some(
                    it.next()
                        .context("--only needs `train` or `sample`")?
                        .clone(),
                )
            }
            other => bail!(
                "unknown argument `{other}`; expected --device D, --json FILE, --preset NAME, --only train|sample"
            ),
        }
    }
    device.check_available()?;
    let cfg = ModelConfig::preset(&preset)?;
    println!(
        "bench {preset}: {} params, device {device:?}, rayon threads {}",
        cfg.num_params(),
        rayon::current_num_threads()
    );
    struct Bench<'a> {
        cfg: &'a ModelConfig,
        only: Option<&'a str>,
        dp: usize,
    }
    impl OnBackend for Bench<'_> {
        type Output = BenchResult;
        fn run<B: Backend>(self, device: B::Device) -> BenchResult {
            run::<Autodiff<B>>(self.cfg, device, self.only, self.dp)
        }
    }
    let r = device.run(Bench {
        cfg: &cfg,
        only: only.as_deref(),
        dp,
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
            "train_tokens_per_s": r.train_tokens_per_s,
            "sample_tokens_per_s": r.sample_tokens_per_s,
            "peak_rss_bytes": r.peak_rss_bytes,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// `only`: `Some("train")` or `Some("sample")` skips the other half (its figure is reported as 0).
pub fn run<B: AutodiffBackend>(
    cfg: &ModelConfig,
    device: B::Device,
    only: Option<&str>,
    dp: usize,
) -> BenchResult {
    let mut rng = Rng::new(0);
    // Random tokens, as the peer uses: enough whole blocks for every step.
    let docs: Vec<Vec<u32>> = (0..TRAIN_STEPS * TRAIN_BATCH + 1)
        .map(|_| {
            (0..TRAIN_SEQ)
                .map(|_| 10 + rng.below(cfg.vocab_size - 10) as u32)
                .collect()
        })
        .collect();
    let data = PackedData::new(docs, LossOn::All, Packing::Stream, TRAIN_SEQ, 0, false);
    let tc = TrainConfig {
        seq_len: TRAIN_SEQ,
        batch_size: TRAIN_BATCH,
        grad_accum: 1,
        token_budget: (TRAIN_STEPS * TRAIN_BATCH * TRAIN_SEQ) as u64,
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
        (TRAIN_BATCH * TRAIN_SEQ) as f64 / step
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
