//! The learnability recipe (issue 4, item 5): generate a task corpus, train a tokenizer and a small Qwen2
//! from scratch for a fixed wall time on CPU, then greedy-decode held-out problems and verify them. The
//! defaults are the recipe (crates/lm/README.md, "Learnability"):
//!
//!     cargo run --release -p lm --bin learn -- --out /tmp/learn-cpu
//!
//! Flags (defaults in brackets):
//! * task: --task-preset cpu|paper [cpu], --task-set k=v,k=v (task-config overrides), --ops 2,3,4 [2,3,4]
//!   (trained and evaluated), --op-weights 2=1,3=1,4=2 (training mixture; default uniform), --records N
//!   [30000], --eval-per-op N [150]
//! * model: --model PRESET [bench-3m], --model-set k=v,k=v (ModelConfig overrides), --tokenizer
//!   word|word+names|bpe:N [word]
//! * training: --loss-on solution|all [solution], --packing whole|stream [whole], --seq-len N [512], --batch N
//!   [2], --lr X [1e-3] (cosine to lr/10 after 3 % warm-up), --minutes X [13.5], --steps N (a fixed schedule
//!   instead of one sized to the wall time from the speed of the first steps: comparable runs on a busy
//!   machine), --seed N [0], --out DIR [learn-out]
//!
//! Prints a per-op table (answer accuracy / verified-correct) and writes `report.json`, every completion to
//! `completions.jsonl`, and the checkpoint.

use anyhow::{Context as _, Result, bail};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use lm::data::{LossOn, PackedData, Packing};
use lm::sample::{SampleConfig, generate};
use lm::tokenizer::{EOS_ID, Tokenizer, TokenizerKind};
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
    let records: u64 = get("records", "30000").parse().context("--records")?;
    let eval_per_op: u64 = get("eval-per-op", "150").parse().context("--eval-per-op")?;
    let tok_kind: TokenizerKind = get("tokenizer", "word").parse()?;
    let loss_on: LossOn = get("loss-on", "solution").parse()?;
    let packing: Packing = get("packing", "whole").parse()?;
    let seq_len: usize = get("seq-len", "512").parse()?;
    let batch: usize = get("batch", "2").parse()?;
    let lr: f64 = get("lr", "1e-3").parse()?;
    let minutes: f64 = get("minutes", "13.5").parse()?;
    // `--steps N` fixes the schedule to N optimizer steps instead of sizing it to the wall time: comparable
    // runs on a machine whose speed varies.
    let fixed_steps: Option<u64> = a
        .get("steps")
        .map(|s| s.parse())
        .transpose()
        .context("--steps")?;
    let seed: u64 = get("seed", "0").parse()?;
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
    let tok = Tokenizer::train(tok_kind, texts.iter())?;
    tok.save(&out.join("tokenizer.json"))?;
    let docs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect::<Result<_>>()?;
    let n_tokens: usize = docs.iter().map(Vec::len).sum();
    let mut cfg = ModelConfig::preset(&get("model", "bench-3m"))?;
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
    let data = PackedData::new(docs, loss_on, packing, seq_len, seed, true);
    let tc = TrainConfig {
        seq_len,
        batch_size: batch,
        grad_accum: 1,
        // Sized below from measured speed unless --steps fixes it.
        token_budget: fixed_steps.map_or(u64::MAX / 2, |n| n * (seq_len * batch) as u64),
        lr,
        min_lr: lr / 10.0,
        warmup_frac: 0.03,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.95,
        loss_on,
        packing,
        data_parallel: 1,
        seed,
        ..Default::default()
    };
    let device = Default::default();
    let mut trainer = Trainer::<Autodiff<Cpu>>::new(
        Qwen2::init(&cfg, seed, &device),
        cfg.clone(),
        tc,
        data,
        device,
    );

    // ---- train for the wall-time budget
    let budget_s = minutes * 60.0;
    let t_train = Instant::now();
    let mut ema = None;
    loop {
        let s = trainer.step();
        ema = Some(ema.map_or(s.loss, |e: f64| 0.98 * e + 0.02 * s.loss));
        let el = t_train.elapsed().as_secs_f64();
        if s.step == 5 && fixed_steps.is_none() {
            // Size the cosine schedule to the time budget from the speed so far.
            let steps = (budget_s / (el / 5.0)) as u64;
            trainer.state.config.token_budget = steps.max(6) * trainer.config().tokens_per_step();
            println!(
                "schedule: {} steps ({:.2}s/step)",
                trainer.config().total_steps(),
                el / 5.0
            );
        }
        if s.step % 50 == 0 {
            println!(
                "step {} loss(ema) {:.4} lr {:.2e} tokens {} {:.0}s ({:.0} tok/s)",
                s.step,
                ema.unwrap(),
                s.lr,
                s.tokens_seen,
                el,
                s.tokens_seen as f64 / el
            );
        }
        let over_time = fixed_steps.is_none() && el > budget_s * 1.05;
        if (s.step > 5 && trainer.done()) || over_time {
            break;
        }
    }
    let train_s = t_train.elapsed().as_secs_f64();
    trainer.save(&out.join("checkpoint"))?;
    tok.save(&out.join("checkpoint").join("tokenizer.json"))?;

    // ---- evaluate: greedy, verified against the gold graph
    let model = trainer.model.valid();
    let opts = VerifyOptions {
        modulus: task_cfg.modulus,
        ..Default::default()
    };
    let mut per_op: BTreeMap<u32, (u32, u32, u32)> = BTreeMap::new(); // n, answer ok, verified
    let t_eval = Instant::now();
    let mut rng = Rng::new(0);
    let mut examples = vec![];
    for chunk in eval.records.chunks(64) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|r| tok.encode(&r.prompt()))
            .collect::<Result<_>>()?;
        let outs = generate(
            &model,
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
            let sc = score(&gold, &completion, &opts);
            let e = per_op.entry(r.op).or_default();
            e.0 += 1;
            e.1 += sc.outcome as u32;
            e.2 += sc.verified as u32;
            examples.push(serde_json::json!({"op": r.op, "prompt": r.prompt(), "gold": r.solution, "completion": completion, "answer_ok": sc.outcome, "verified": sc.verified}));
        }
    }
    println!(
        "\ntrained {train_s:.0}s, {} steps, {} tokens; eval {:.0}s",
        trainer.state.step,
        trainer.state.tokens_seen,
        t_eval.elapsed().as_secs_f64()
    );
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
    let mut jsonl = String::new();
    for e in &examples {
        jsonl += &(e.to_string() + "\n");
    }
    std::fs::write(out.join("completions.jsonl"), jsonl)?;
    examples.truncate(6);
    let report = serde_json::json!({
        "args": a, "train_seconds": train_s, "steps": trainer.state.step, "tokens_seen": trainer.state.tokens_seen,
        "final_loss_ema": ema, "vocab": cfg.vocab_size, "params": cfg.num_params(), "model": cfg,
        "per_op": rows, "examples": examples,
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
