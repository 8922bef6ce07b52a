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

/// `lm-cli startup [--device D] [--preset P] [--batch N] [--seq N] [--json FILE]`: start-up costs, apart
/// from steady-state speed. In one process, from its start: the device's first operation, the first generated
/// token (prefill of 64 prompts of 16 tokens and one sampled token, the bench's sampling shape), then the first
/// training steps of the bench's training shape (16 x 256 by default, dp 1). On CUDA most of this is kernel
/// compilation (and autotuning), which cubecl's caches (`cubecl.toml`) and the driver's (`CUDA_CACHE_PATH`)
/// keep for the next process: run it twice, with empty then warm caches (`scripts/gpu_check.sh`).
pub fn startup(args: &[String]) -> Result<()> {
    let t0 = Instant::now();
    let mut device = DeviceSpec::Cpu;
    let mut json = None;
    let mut preset = "bench-3m".to_string();
    let (mut batch, mut seq) = (TRAIN_BATCH, TRAIN_SEQ);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = it.next().context("--device needs a value")?.parse()?,
            "--json" => json = Some(it.next().context("--json needs a file")?.clone()),
            "--preset" => preset = it.next().context("--preset needs a name")?.clone(),
            "--batch" => batch = number(it.next(), "--batch")?,
            "--seq" => seq = number(it.next(), "--seq")?,
            other => bail!(
                "unknown argument `{other}`; expected --device D, --json FILE, --preset NAME, --batch N, --seq N"
            ),
        }
    }
    device.check_available()?;
    let cfg = ModelConfig::preset(&preset)?;
    struct Work<'a> {
        cfg: &'a ModelConfig,
        shape: (usize, usize),
        t0: Instant,
    }
    impl OnBackend for Work<'_> {
        type Output = Startup;
        fn run<B: Backend>(self, device: B::Device) -> Startup {
            startup_run::<Autodiff<B>>(self.cfg, device, self.shape, self.t0)
        }
    }
    let r = device.run(Work {
        cfg: &cfg,
        shape: (batch, seq),
        t0,
    })?;
    println!("RESULT to_first_token_s={:.3}", r.to_first_token_s);
    println!("RESULT to_first_step_s={:.3}", r.to_first_step_s);
    if let Some(path) = json {
        let v = serde_json::json!({
            "config": preset,
            "device": format!("{device:?}"),
            "train_batch": batch,
            "train_seq": seq,
            "device_ready_s": r.device_ready_s,
            "first_token_s": r.first_token_s,
            "to_first_token_s": r.to_first_token_s,
            "second_token_s": r.second_token_s,
            "first_step_s": r.first_step_s,
            "to_first_step_s": r.to_first_step_s,
            "later_steps_s": r.later_steps_s,
            "total_s": t0.elapsed().as_secs_f64(),
            "peak_rss_bytes": peak_rss(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// Seconds, each measured around one call that ends by reading a result back to the host.
pub struct Startup {
    /// Process start to the first device operation's result.
    pub device_ready_s: f64,
    /// The first generation call (1 new token): prefill + one decode step, compilation included.
    pub first_token_s: f64,
    pub to_first_token_s: f64,
    /// The same call again (kernels compiled).
    pub second_token_s: f64,
    /// The first optimizer step (forward, backward, clipping, AdamW).
    pub first_step_s: f64,
    pub to_first_step_s: f64,
    /// Steps 2 and 3.
    pub later_steps_s: Vec<f64>,
}

fn startup_run<B: AutodiffBackend>(
    cfg: &ModelConfig,
    device: B::Device,
    (train_batch, train_seq): (usize, usize),
    t0: Instant,
) -> Startup {
    use burn::tensor::{Tensor, TensorData};
    // Progress goes to stdout as it happens, so that a run stopped by a timeout still says how far it got.
    let mark = |what: &str| println!("  {:>8.3}s {what}", t0.elapsed().as_secs_f64());
    let one: Tensor<B::InnerBackend, 1> =
        Tensor::from_data(TensorData::new(vec![1.0f32; 4], [4]), &device);
    let _ = one.sum().into_data();
    let device_ready_s = t0.elapsed().as_secs_f64();
    mark("device ready");
    let mut rng = Rng::new(0);
    let model = Qwen2::<B>::init(cfg, 0, &device);
    let prompts: Vec<Vec<u32>> = (0..GEN_BATCH)
        .map(|_| {
            (0..GEN_PROMPT)
                .map(|_| rng.below(cfg.vocab_size) as u32)
                .collect()
        })
        .collect();
    let sc = SampleConfig {
        max_new_tokens: 1,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        stop_tokens: vec![],
    };
    let t = Instant::now();
    generate(&model.valid(), &prompts, &sc, &mut rng);
    let first_token_s = t.elapsed().as_secs_f64();
    let to_first_token_s = t0.elapsed().as_secs_f64();
    mark("first generated token");
    let t = Instant::now();
    generate(&model.valid(), &prompts, &sc, &mut rng);
    let second_token_s = t.elapsed().as_secs_f64();
    mark("second generation call");
    let docs = random_docs(&mut rng, cfg.vocab_size, 4 * train_batch + 1, train_seq);
    let data = PackedData::new(docs, LossOn::All, Packing::Stream, train_seq, 0, false);
    let tc = TrainConfig {
        seq_len: train_seq,
        batch_size: train_batch,
        token_budget: (3 * train_batch * train_seq) as u64,
        lr: 3e-4,
        min_lr: 3e-4,
        warmup_frac: 0.0,
        beta2: 0.999,
        data_parallel: 1,
        ..Default::default()
    };
    let mut trainer = Trainer::<B>::new(model, cfg.clone(), tc, data, device);
    let t = Instant::now();
    trainer.step();
    let first_step_s = t.elapsed().as_secs_f64();
    let to_first_step_s = t0.elapsed().as_secs_f64();
    mark("first training step");
    let later_steps_s = (0..2)
        .map(|_| {
            let t = Instant::now();
            trainer.step();
            mark("training step");
            t.elapsed().as_secs_f64()
        })
        .collect();
    Startup {
        device_ready_s,
        first_token_s,
        to_first_token_s,
        second_token_s,
        first_step_s,
        to_first_step_s,
        later_steps_s,
    }
}

/// `n` documents of `len` random tokens above the 10 special ids, as the peer benchmark feeds.
fn random_docs(rng: &mut Rng, vocab_size: usize, n: usize, len: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| 10 + rng.below(vocab_size - 10) as u32)
                .collect()
        })
        .collect()
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
    let docs = random_docs(
        &mut rng,
        cfg.vocab_size,
        TRAIN_STEPS * train_batch + 1,
        train_seq,
    );
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
    let mut json = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => device = it.next().context("--device needs a value")?.parse()?,
            "--json" => json = Some(it.next().context("--json needs a file")?.clone()),
            other => bail!("unknown argument `{other}`; expected --device D, --json FILE"),
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
    // Gradients of the first step's loss, parameter by parameter: the largest difference relative to that
    // parameter's largest gradient entry.
    let (mut grad_rel, mut grad_worst) = (0.0f64, String::new());
    for ((name, a), (_, b)) in cpu.grads.iter().zip(&dev.grads) {
        let scale = a.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        let diff = max_abs_diff(&widen(a), &widen(b));
        let rel = diff / scale.max(1e-12);
        if rel >= grad_rel {
            (grad_rel, grad_worst) = (rel, name.clone());
        }
    }
    println!(
        "  first-step gradients: max |difference| / max |gradient| = {grad_rel:.3e} (worst: {grad_worst})"
    );
    // Bounds (crates/lm/README.md, "device-check"): a random-init model's logits are O(0.1) and f32
    // reductions in another order differ by ~1e-6, so 1e-3 absolute on logits and losses and 1e-3 relative
    // on each gradient leave room for another summation order (and TF32-like matmul paths) but not for a
    // wrong kernel.
    let ok = logit_diff <= LOGIT_TOL && loss_diff <= LOSS_TOL && grad_rel <= GRAD_REL_TOL;
    if let Some(path) = json {
        let v = serde_json::json!({
            "device": format!("{device:?}"),
            "preset": "tiny-1m",
            "max_logit_diff": logit_diff,
            "losses_cpu": cpu.losses,
            "losses_device": dev.losses,
            "max_loss_diff": loss_diff,
            "max_grad_rel_diff": grad_rel,
            "worst_grad_param": grad_worst,
            "greedy_identical": same_tokens,
            "greedy_total": cpu.greedy.len(),
            "tolerances": { "logit_abs": LOGIT_TOL, "loss_abs": LOSS_TOL, "grad_rel": GRAD_REL_TOL },
            "pass": ok,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {path}"))?;
    }
    if !ok {
        bail!("device {device:?} disagrees with the CPU beyond f32 rounding");
    }
    Ok(())
}

/// `device-check` bounds: logits and training losses (absolute), first-step gradients (relative to each
/// parameter's largest entry).
pub const LOGIT_TOL: f64 = 1e-3;
pub const LOSS_TOL: f64 = 1e-3;
pub const GRAD_REL_TOL: f64 = 1e-3;

struct ProbeResult {
    logits: Vec<f32>,
    losses: Vec<f64>,
    greedy: Vec<Vec<u32>>,
    /// Burn autodiff gradients of the first training batch's loss, by parameter name.
    grads: Vec<(String, Vec<f32>)>,
}

fn probe<B: AutodiffBackend>(cfg: &ModelConfig, device: B::Device) -> ProbeResult {
    let mut rng = Rng::new(7);
    let (rows, t) = (4, 96);
    let docs = random_docs(&mut rng, cfg.vocab_size, 3 * rows + 1, t);
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
    let data = PackedData::new(docs.clone(), LossOn::All, Packing::Stream, t, 0, false);
    // The first step's batch, through burn autodiff on both sides (the CPU trainer below uses host
    // gradients, which `host_train`'s tests hold to burn's).
    let first = PackedData::new(docs, LossOn::All, Packing::Stream, t, 0, false).next_batch(rows);
    let denom = first.weights.iter().sum::<f32>().max(1.0) as f64;
    let (_, gs) = crate::train::shard_grads(&model, &first, denom, false, &device);
    let grads = Qwen2::<B>::param_shapes(cfg)
        .into_iter()
        .zip(gs)
        .map(|((name, _), g)| {
            let v = g.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
            (name, v)
        })
        .collect();
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
        grads,
    }
}
