//! The learnability recipe (issue 4, item 5): generate a task corpus, train a tokenizer and a small Qwen2
//! from scratch for a fixed wall time on CPU, then greedy-decode held-out problems and verify them; optionally
//! continue with GRPO. The defaults are the recipe (crates/lm/README.md, "Learnability"):
//!
//!     cargo run --release -p lm --bin learn -- --out /tmp/learn-cpu
//!
//! Flags (defaults in brackets):
//! * task: --task-preset cpu|paper [cpu], --task-set k=v,k=v (task-config overrides, e.g.
//!   question_position=last for the paper's prompt order), --ops 2,3,4 [2,3,4]
//!   (trained and evaluated), --op-weights 2=1,3=1,4=2 (training mixture; default uniform), --records N
//!   [200000], --eval-per-op N [150]
//! * model: --model PRESET [tiny-0.4m], --model-set k=v,k=v (ModelConfig overrides), --tokenizer
//!   word|word+names|bpe:N [word+names]
//! * training: --loss-on solution|all [solution], --prompt-loss-weight X [0] (loss weight of the tokens
//!   --loss-on leaves out: an auxiliary signal from predicting the problem text), --packing whole|stream [whole], --document-mask
//!   true|false [true] (attention inside each packed document), --seq-len N [512], --batch N [2],
//!   --data-parallel N [2 for an even batch, else 1] (replicas that each take batch/N rows on their share of
//!   the threads), --lr X [1.4e-3] (cosine to --min-lr [lr/10] after 3 % warm-up), --weight-decay X [0.1] (AdamW, matrices and
//!   embeddings), --minutes X [13.5] (wall time from the start to the end of training: data, tokenizer and
//!   training; evaluation follows), --steps N (a fixed schedule instead of
//!   one sized to the wall time from the speed of the first steps: comparable runs on a busy machine),
//!   --ema-decay X [0] (also evaluate an exponential moving average of the weights, updated every 4 steps),
//!   --seed N [0], --out DIR [learn-out], --init DIR (skip training: start from this checkpoint),
//!   --checkpoint-every N [2000] (steps between saves of DIR/checkpoint; also saved at the end),
//!   --resume true|false [false] (continue a killed run from DIR/checkpoint: same flags, so the same data;
//!   the EMA of the weights restarts there), --stop-at-step N (save and exit after step N of the schedule,
//!   without evaluating: a long run in pieces)
//! * GRPO after training (off by default; it did not help, see the README): --rl-steps N [0], --rl-prompts N
//!   [16] problems per step, --rl-group N [8] samples per problem, --rl-lr X [1e-4] (constant),
//!   --rl-temperature X [1.0]; reward = process-verified correctness, advantage = reward − group mean.
//!
//! Prints per-op tables (answer accuracy / verified-correct) and writes `report.json`, every completion of
//! the last evaluation to `completions.jsonl`, and the checkpoint(s).

use anyhow::{Context as _, Result, bail, ensure};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use lm::checkpoint::load_model;
use lm::data::{Batch, LossOn, PackedData, Packing};
use lm::sample::{SampleConfig, generate};
use lm::tokenizer::{EOS_ID, PAD_ID, Tokenizer, TokenizerKind};
use lm::train::{TrainConfig, Trainer};
use lm::{Cpu, ModelConfig, Qwen2, Rng};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use task::dataset::{
    Budget, CorpusSpec, EvalSpec, Exclusion, build_corpus, build_eval_set, uniform_ops,
};
use task::verify::{GoldGraph, VerifyOptions, score};
use task::{Context, Mode, TaskConfig};

const FLAGS: &[&str] = &[
    "task-preset",
    "task-set",
    "ops",
    "op-weights",
    "records",
    "eval-per-op",
    "model",
    "model-set",
    "tokenizer",
    "loss-on",
    "prompt-loss-weight",
    "ema-decay",
    "packing",
    "document-mask",
    "seq-len",
    "batch",
    "data-parallel",
    "lr",
    "min-lr",
    "weight-decay",
    "minutes",
    "steps",
    "seed",
    "out",
    "init",
    "checkpoint-every",
    "resume",
    "stop-at-step",
    "rl-steps",
    "rl-prompts",
    "rl-group",
    "rl-lr",
    "rl-temperature",
];

/// The value of `--k` (or `default`) parsed as `T`; a parse error names the flag.
fn flag<T: std::str::FromStr>(a: &BTreeMap<String, String>, k: &str, default: &str) -> Result<T>
where
    T::Err: Into<anyhow::Error>,
{
    let v = a.get(k).map_or(default, String::as_str);
    v.parse()
        .map_err(Into::into)
        .with_context(|| format!("--{k}"))
}

/// The value of `--k` parsed as `T`, if given; a parse error names the flag.
fn optional_flag<T: std::str::FromStr>(a: &BTreeMap<String, String>, k: &str) -> Result<Option<T>>
where
    T::Err: Into<anyhow::Error>,
{
    a.get(k)
        .map(|v| v.parse().map_err(Into::into))
        .transpose()
        .with_context(|| format!("--{k}"))
}

fn main() -> Result<()> {
    let mut a: BTreeMap<String, String> = BTreeMap::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [k, v] = pair else {
            bail!("flags come in pairs: --name value")
        };
        let k = k
            .strip_prefix("--")
            .with_context(|| format!("expected a --flag, got `{k}`"))?;
        ensure!(
            FLAGS.contains(&k),
            "unknown flag `--{k}`; the flags are --{}",
            FLAGS.join(", --")
        );
        a.insert(k.to_string(), v.clone());
    }
    let get = |k: &str, d: &str| a.get(k).cloned().unwrap_or_else(|| d.to_string());
    // `--task-set max_distractors=1,max_width=2`: task-config field overrides on top of the preset.
    let task_sets: Vec<String> = a
        .get("task-set")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let task_cfg = TaskConfig::preset_with(
        &get("task-preset", "cpu"),
        &task::cli::parse_sets(&task_sets)?,
    )?;
    let ops: Vec<u32> = get("ops", "2,3,4")
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .context("--ops")?;
    let records: u64 = flag(&a, "records", "200000")?;
    let eval_per_op: u64 = flag(&a, "eval-per-op", "150")?;
    let tok_kind: TokenizerKind = flag(&a, "tokenizer", "word+names")?;
    let loss_on: LossOn = flag(&a, "loss-on", "solution")?;
    let prompt_loss_weight: f32 = flag(&a, "prompt-loss-weight", "0")?;
    let ema_decay: f64 = flag(&a, "ema-decay", "0")?;
    let packing: Packing = flag(&a, "packing", "whole")?;
    let document_mask: bool = flag(&a, "document-mask", "true")?;
    let seq_len: usize = flag(&a, "seq-len", "512")?;
    let batch: usize = flag(&a, "batch", "2")?;
    // One replica per core: each takes its share of the batch's rows on its own threads.
    let data_parallel: usize = flag(
        &a,
        "data-parallel",
        if batch.is_multiple_of(2) { "2" } else { "1" },
    )?;
    ensure!(
        data_parallel >= 1 && batch.is_multiple_of(data_parallel),
        "--data-parallel {data_parallel}: expected a divisor of --batch {batch}"
    );
    let lr: f64 = flag(&a, "lr", "1.4e-3")?;
    let min_lr: f64 = flag(&a, "min-lr", &(lr / 10.0).to_string())?;
    let weight_decay: f64 = flag(&a, "weight-decay", "0.1")?;
    let minutes: f64 = flag(&a, "minutes", "13.5")?;
    // `--steps N` fixes the schedule to N optimizer steps instead of sizing it to the wall time: comparable
    // runs on a machine whose speed varies.
    let fixed_steps: Option<u64> = optional_flag(&a, "steps")?;
    let seed: u64 = flag(&a, "seed", "0")?;
    let checkpoint_every: usize = flag(&a, "checkpoint-every", "2000")?;
    let resume: bool = flag(&a, "resume", "false")?;
    let stop_at_step: Option<usize> = optional_flag(&a, "stop-at-step")?;
    ensure!(
        !(resume && a.contains_key("init")),
        "--resume and --init exclude each other: --resume continues this run's own training"
    );
    // GRPO flags are read here, before anything runs, so that a bad value fails at once.
    let rl_steps: usize = flag(&a, "rl-steps", "0")?;
    let prompts_per_step: usize = flag(&a, "rl-prompts", "16")?;
    let group: usize = flag(&a, "rl-group", "8")?;
    let rl_lr: f64 = flag(&a, "rl-lr", "1e-4")?;
    let temperature: f64 = flag(&a, "rl-temperature", "1.0")?;
    ensure!(
        group >= 2,
        "--rl-group: GRPO needs at least 2 samples per problem"
    );
    let out = PathBuf::from(get("out", "learn-out"));
    std::fs::create_dir_all(&out)?;
    let t_start = Instant::now();

    // ---- data: held-out evaluation problems first, so that no training problem repeats one of them.
    let contexts = Context::ALL.to_vec();
    let eval = build_eval_set(
        &task_cfg,
        &EvalSpec {
            name: "eval".into(),
            seed: 91_000 + seed,
            ops: ops.clone(),
            contexts: contexts.clone(),
            modes: vec![Mode::Forward],
            per_cell: eval_per_op.div_ceil(contexts.len() as u64),
        },
    )?;
    let mut exclude = Exclusion::new();
    exclude.add(&eval);
    let spec = CorpusSpec {
        name: "train".into(),
        seed: 50_000 + seed,
        ops: match a.get("op-weights") {
            // `--op-weights 2=1,3=1,4=2`: the training mixture over ops (default: uniform over --ops).
            Some(w) => w
                .split(',')
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .context("--op-weights: expected op=weight")?;
                    Ok((k.trim().parse()?, v.trim().parse()?))
                })
                .collect::<Result<_>>()
                .context("--op-weights")?,
            None => uniform_ops(ops.iter().copied()),
        },
        contexts: contexts.iter().map(|c| (*c, 1.0)).collect(),
        modes: [(Mode::Forward, 1.0)].into_iter().collect(),
        budget: Budget::Records(records),
        gold: false,
    };
    let train = build_corpus(&task_cfg, &spec, &exclude)?;
    let texts: Vec<String> = train
        .records
        .iter()
        .map(|r| r.training_text() + "[EOS]")
        .collect();
    println!(
        "data: {} train records, {} eval ({:.0}s)",
        texts.len(),
        eval.records.len(),
        t_start.elapsed().as_secs_f64()
    );

    // ---- tokenizer + model
    // With --init the checkpoint's own tokenizer: one retrained on another mixture could number words differently.
    let tok = match a.get("init") {
        Some(dir) => {
            let path = PathBuf::from(dir).join("tokenizer.json");
            Tokenizer::from_file(&path).with_context(|| format!("--init: {}", path.display()))?
        }
        None => Tokenizer::train(tok_kind, texts.iter())?,
    };
    println!(
        "tokenizer trained ({:.0}s)",
        t_start.elapsed().as_secs_f64()
    );
    tok.save(&out.join("tokenizer.json"))?;
    // In parallel: encoding 200,000 texts is ~1 minute of the 15 on one core.
    let docs: Vec<Vec<u32>> = {
        use rayon::prelude::*;
        texts
            .par_iter()
            .map(|t| tok.encode(t))
            .collect::<Result<_>>()?
    };
    println!("encoded ({:.0}s)", t_start.elapsed().as_secs_f64());
    let n_tokens: usize = docs.iter().map(Vec::len).sum();
    let mut cfg = ModelConfig::preset(&get("model", "tiny-0.4m"))?;
    cfg.vocab_size = tok.vocab_size();
    if let Some(sets) = a.get("model-set") {
        // `--model-set num_hidden_layers=8,hidden_size=192`: ModelConfig fields on top of the preset.
        let sets: Vec<String> = sets.split(',').map(str::to_string).collect();
        let mut v = serde_json::to_value(&cfg)?;
        for (k, x) in task::cli::parse_sets(&sets)? {
            let slot = v
                .get_mut(&k)
                .with_context(|| format!("--model-set: no model field `{k}`"))?;
            *slot = x;
        }
        cfg = serde_json::from_value(v).context("--model-set")?;
        cfg.validate()?;
    }
    println!(
        "tokenizer {tok_kind:?}: vocab {}, {} tokens ({:.1}/doc); model {} params",
        cfg.vocab_size,
        n_tokens,
        n_tokens as f64 / docs.len() as f64,
        cfg.num_params()
    );
    let data = PackedData::new(docs, loss_on, packing, seq_len, seed, true)
        .with_off_weight(prompt_loss_weight);
    let tc = TrainConfig {
        seq_len,
        batch_size: batch,
        grad_accum: 1,
        // Sized below from measured speed unless --steps fixes it.
        token_budget: fixed_steps.map_or(u64::MAX / 2, |n| n * (seq_len * batch) as u64),
        lr,
        min_lr,
        warmup_frac: 0.03,
        weight_decay,
        beta1: 0.9,
        beta2: 0.95,
        loss_on,
        packing,
        document_mask,
        data_parallel,
        seed,
        ..Default::default()
    };
    let device = Default::default();
    let ckpt = out.join("checkpoint");
    let mut trainer = if resume && lm::train::recover_checkpoint(&ckpt)? {
        let t = Trainer::<Autodiff<Cpu>>::resume(&ckpt, data, device)
            .with_context(|| format!("--resume: {}", ckpt.display()))?;
        let saved = t.config();
        ensure!(
            t.model_config == cfg
                && TrainConfig {
                    token_budget: saved.token_budget,
                    ..tc
                } == *saved,
            "--resume: {} was trained with other flags (model or training settings differ); resume with \
             the flags that started it",
            ckpt.display()
        );
        println!(
            "resuming at step {} of {} from {}",
            t.state.step,
            t.config().total_steps(),
            ckpt.display()
        );
        t
    } else {
        ensure!(
            !resume,
            "--resume: no checkpoint in {} to resume from",
            ckpt.display()
        );
        Trainer::<Autodiff<Cpu>>::new(
            Qwen2::init(&cfg, seed, &device),
            cfg.clone(),
            tc,
            data,
            device,
        )
    };
    let opts = VerifyOptions {
        modulus: task_cfg.modulus,
        ..Default::default()
    };

    // ---- supervised training for the wall-time budget (or from a checkpoint with --init)
    let t_train = Instant::now();
    let mut ema = None;
    // Exponential moving average of the weights, updated every EMA_EVERY steps, evaluated beside the weights.
    const EMA_EVERY: usize = 4;
    let mut ema_params: Option<Vec<lm::model::HostParam>> = None;
    if let Some(dir) = a.get("init") {
        let (init_cfg, model) = load_model::<Autodiff<Cpu>>(&PathBuf::from(dir), &device)?;
        ensure!(
            init_cfg == cfg,
            "--init {dir}: its model config differs from this run's (same --model, --model-set, data?)"
        );
        trainer.model = model;
        println!("supervised stage skipped: model from {dir}");
    } else {
        // The tokenizer first, so that every periodic save carries it (Trainer::save keeps other files).
        std::fs::create_dir_all(&ckpt)?;
        tok.save(&ckpt.join("tokenizer.json"))?;
        // The budget counts what ran before training too (data and tokenizer: ~1.5 minutes with
        // `word+names`), so that the whole run, evaluation included, stays inside 15 minutes.
        let budget_s = minutes * 60.0 - t_start.elapsed().as_secs_f64();
        // The wall-time schedule is sized twice: from the speed of steps 6-25 (so the warm-up starts at once),
        // then again from steps 101-300, when the first steps' slowness (allocation, thread start) no longer
        // skews it: sized from steps 6-25 alone, a 13-minute schedule had ~20 % too few steps.
        let sizing = [(5usize, 25usize), (100, 300)];
        let mut t_from = 0.0;
        // Speeds count this process's tokens only (a resumed run starts with the killed one's).
        let tokens_before = trainer.state.tokens_seen;
        loop {
            let s = trainer.step();
            ema = Some(ema.map_or(s.loss, |e: f64| 0.98 * e + 0.02 * s.loss));
            if ema_decay > 0.0 && s.step.is_multiple_of(EMA_EVERY) {
                let now = trainer.model.to_host(&cfg);
                let d = ema_decay.powi(EMA_EVERY as i32) as f32;
                match &mut ema_params {
                    None => ema_params = Some(now),
                    Some(e) => {
                        for (e, p) in e.iter_mut().zip(&now) {
                            for (x, y) in e.2.iter_mut().zip(&p.2) {
                                *x = d * *x + (1.0 - d) * y;
                            }
                        }
                    }
                }
            }
            let el = t_train.elapsed().as_secs_f64();
            for &(from, to) in sizing.iter().filter(|_| fixed_steps.is_none()) {
                if s.step == from {
                    t_from = el;
                }
                if s.step == to {
                    let per_step = (el - t_from) / (to - from) as f64;
                    let steps = (to + ((budget_s - el) / per_step).max(0.0) as usize) as u64;
                    trainer.state.config.token_budget = steps * trainer.config().tokens_per_step();
                    println!(
                        "schedule: {} steps ({per_step:.4}s/step over steps {}-{to})",
                        trainer.config().total_steps(),
                        from + 1
                    );
                }
            }
            if s.step.is_multiple_of(50) {
                println!(
                    "step {} loss(ema) {:.4} lr {:.2e} tokens {} {:.0}s ({:.0} tok/s)",
                    s.step,
                    ema.unwrap(),
                    s.lr,
                    s.tokens_seen,
                    el,
                    (s.tokens_seen - tokens_before) as f64 / el
                );
            }
            if checkpoint_every > 0 && s.step.is_multiple_of(checkpoint_every) {
                trainer.save(&ckpt)?;
            }
            if stop_at_step == Some(s.step) {
                trainer.save(&ckpt)?;
                println!(
                    "stopped after step {} of {}; continue with the same flags and --resume true",
                    s.step,
                    trainer.config().total_steps()
                );
                return Ok(());
            }
            let over_time = fixed_steps.is_none() && el > budget_s * 1.05;
            // A wall-time schedule has no length before its first sizing; a fixed one may be shorter.
            let sized = fixed_steps.is_some() || s.step > sizing[0].1;
            if (sized && trainer.done()) || over_time {
                break;
            }
        }
        trainer.save(&ckpt)?;
    }
    let train_s = t_train.elapsed().as_secs_f64();
    let (sft_steps, sft_tokens) = (trainer.state.step, trainer.state.tokens_seen);
    println!("\nsupervised: {train_s:.0}s, {sft_steps} steps, {sft_tokens} tokens");
    let (sft_rows, mut examples) = evaluate(&trainer.model.valid(), &eval.records, &tok, &opts)?;
    let ema_rows = match ema_params {
        Some(p) => {
            println!("EMA of the weights (decay {ema_decay}):");
            let m = Qwen2::<Cpu>::from_host(&cfg, p, &device)?;
            serde_json::to_value(evaluate(&m, &eval.records, &tok, &opts)?.0)?
        }
        None => serde_json::Value::Null,
    };

    // ---- optional GRPO on fresh problems (--rl-steps N): rewards are process-verified correctness
    let mut rl_report = serde_json::Value::Null;
    if rl_steps > 0 {
        let rl_problems = build_corpus(
            &task_cfg,
            &CorpusSpec {
                name: "rl".into(),
                seed: 70_000 + seed,
                budget: Budget::Records((rl_steps * prompts_per_step) as u64),
                ..spec.clone()
            },
            &exclude,
        )?;
        let t_rl = Instant::now();
        let rl_tc = TrainConfig {
            seq_len: 1,
            batch_size: 1,
            token_budget: u64::MAX / 2,
            lr: rl_lr,
            min_lr: rl_lr,
            warmup_frac: 0.0,
            weight_decay: 0.0,
            seed,
            ..TrainConfig::default()
        };
        let mut rl = Trainer::<Autodiff<Cpu>>::new(
            trainer.model.clone(),
            cfg.clone(),
            rl_tc,
            PackedData::new(vec![vec![EOS_ID]], LossOn::All, Packing::Whole, 1, 0, false),
            device,
        );
        let mut rng = Rng::new(seed ^ 0x5EED_6E90);
        let sample_cfg = SampleConfig {
            temperature,
            stop_tokens: vec![lm::tokenizer::ANSWER_END_ID, EOS_ID],
            ..SampleConfig::greedy(320)
        };
        let mut curve = vec![];
        for (i, problems) in rl_problems.records.chunks(prompts_per_step).enumerate() {
            let prompts: Vec<Vec<u32>> = problems
                .iter()
                .map(|r| tok.encode(&r.prompt()))
                .collect::<Result<_>>()?;
            let repeated: Vec<Vec<u32>> = prompts
                .iter()
                .flat_map(|p| std::iter::repeat_n(p.clone(), group))
                .collect();
            let samples = generate(&rl.model.valid(), &repeated, &sample_cfg, &mut rng);
            let mut rewards = Vec::with_capacity(samples.len());
            for (k, smp) in samples.iter().enumerate() {
                let r = &problems[k / group];
                let gold = GoldGraph::from_solution(&r.solution)?;
                rewards.push(score(&gold, &tok.decode(&smp.tokens)?, &opts).verified as u32 as f32);
            }
            // Group-relative advantage (reward minus its group's mean; no std division, as Dr. GRPO), the
            // same for every token of a completion; the loss is a token-level mean over all completions.
            let mut rows = vec![];
            for (k, smp) in samples.iter().enumerate() {
                let g = &rewards[k / group * group..][..group];
                let adv = rewards[k] - g.iter().sum::<f32>() / group as f32;
                if adv != 0.0 {
                    rows.push((&repeated[k], &smp.tokens, adv));
                }
            }
            let completion_tokens: usize = samples.iter().map(|s| s.tokens.len()).sum();
            let mean_reward = rewards.iter().sum::<f32>() / rewards.len() as f32;
            curve.push(mean_reward);
            if !rows.is_empty() {
                let batch = advantage_batch(&rows);
                rl.step_on(&batch, completion_tokens as f64);
            }
            if (i + 1) % 10 == 0 {
                let recent = &curve[curve.len().saturating_sub(10)..];
                println!(
                    "rl step {} reward(last 10) {:.3} {:.0}s",
                    i + 1,
                    recent.iter().sum::<f32>() / recent.len() as f32,
                    t_rl.elapsed().as_secs_f64()
                );
            }
        }
        let rl_s = t_rl.elapsed().as_secs_f64();
        rl.save(&out.join("checkpoint-rl"))?;
        tok.save(&out.join("checkpoint-rl").join("tokenizer.json"))?;
        println!("\nrl: {rl_s:.0}s, {} steps", curve.len());
        let (rl_rows, rl_examples) = evaluate(&rl.model.valid(), &eval.records, &tok, &opts)?;
        examples = rl_examples;
        rl_report = serde_json::json!({
            "seconds": rl_s, "steps": curve.len(), "prompts_per_step": prompts_per_step, "group": group,
            "lr": rl_lr, "temperature": temperature, "mean_reward_per_step": curve, "per_op": rl_rows,
        });
    }

    let mut jsonl = String::new();
    for e in &examples {
        jsonl += &(e.to_string() + "\n");
    }
    std::fs::write(out.join("completions.jsonl"), jsonl)?;
    examples.truncate(6);
    let report = serde_json::json!({
        "args": a, "task": task_cfg, "train": trainer.config(), "train_seconds": train_s, "steps": sft_steps, "tokens_seen": sft_tokens,
        "final_loss_ema": ema, "vocab": cfg.vocab_size, "params": cfg.num_params(), "model": cfg,
        "per_op": sft_rows, "ema_per_op": ema_rows, "rl": rl_report, "total_seconds": t_start.elapsed().as_secs_f64(),
        "examples": examples,
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("total {:.0}s", t_start.elapsed().as_secs_f64());
    Ok(())
}

/// Greedy-decodes every held-out problem and verifies it: prints and returns the per-op rows
/// (answer accuracy / verified) and every completion.
fn evaluate(
    model: &Qwen2<Cpu>,
    records: &[task::dataset::Record],
    tok: &Tokenizer,
    opts: &VerifyOptions,
) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>)> {
    let mut per_op: BTreeMap<u32, (u32, u32, u32)> = BTreeMap::new(); // n, answer ok, verified
    let mut rng = Rng::new(0);
    let mut examples = vec![];
    for chunk in records.chunks(64) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|r| tok.encode(&r.prompt()))
            .collect::<Result<_>>()?;
        let outs = generate(
            model,
            &prompts,
            &SampleConfig {
                stop_tokens: vec![lm::tokenizer::ANSWER_END_ID, EOS_ID],
                ..SampleConfig::greedy(320)
            },
            &mut rng,
        );
        for (r, o) in chunk.iter().zip(outs) {
            let completion = tok.decode(&o.tokens)?;
            let gold = GoldGraph::from_solution(&r.solution)?;
            let sc = score(&gold, &completion, opts);
            let e = per_op.entry(r.op).or_default();
            e.0 += 1;
            e.1 += sc.outcome as u32;
            e.2 += sc.verified as u32;
            examples.push(serde_json::json!({"op": r.op, "prompt": r.prompt(), "gold": r.solution, "completion": completion, "answer_ok": sc.outcome, "verified": sc.verified}));
        }
    }
    println!("| op | n | answer acc | verified |\n|---|---|---|---|");
    let mut rows = vec![];
    for (op, (n, ok, ver)) in &per_op {
        println!(
            "| {op} | {n} | {:.3} | {:.3} |",
            *ok as f64 / *n as f64,
            *ver as f64 / *n as f64
        );
        rows.push(serde_json::json!({"op": op, "n": n, "answer_acc": *ok as f64 / *n as f64, "verified": *ver as f64 / *n as f64}));
    }
    Ok((rows, examples))
}

/// One right-padded row per (prompt, completion, advantage): the loss weight of every completion token is
/// the advantage, prompt and padding weigh 0.
fn advantage_batch(rows: &[(&Vec<u32>, &Vec<u32>, f32)]) -> Batch {
    let t = rows
        .iter()
        .map(|(p, c, _)| p.len() + c.len() - 1)
        .max()
        .unwrap_or(1);
    let mut b = Batch {
        rows: rows.len(),
        seq_len: t,
        inputs: vec![],
        targets: vec![],
        weights: vec![],
    };
    for (prompt, completion, adv) in rows {
        let ids: Vec<i32> = prompt
            .iter()
            .chain(completion.iter())
            .map(|&x| x as i32)
            .collect();
        let n = ids.len() - 1;
        b.inputs.extend(&ids[..n]);
        b.targets.extend(&ids[1..]);
        b.weights
            .extend((0..n).map(|i| if i + 1 >= prompt.len() { *adv } else { 0.0 }));
        b.inputs.extend(std::iter::repeat_n(PAD_ID as i32, t - n));
        b.targets.extend(std::iter::repeat_n(PAD_ID as i32, t - n));
        b.weights.extend(std::iter::repeat_n(0.0, t - n));
    }
    b
}
