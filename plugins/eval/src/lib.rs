//! `eval`: process-verified pass@k of one or more models on an evaluation set, per op, per difficulty
//! bucket, per context and per mode (paper-spec §7).
//!
//! ```toml
//! [stages.eval]
//! plugin = "eval"
//! inputs = { models = ["pretrain.model", "midtrain.model"], data = "data.data" }
//! config = { dataset = "eval", samples = 8, temperature = 0.7 }
//! ```
//!
//! Every sample is scored by the task verifier against the gold solution. A sample counts as correct
//! when it is VerifiedCorrect (every gold step right, the answer right; extra correct steps allowed), the
//! paper's strict evaluation metric. pass@k is the unbiased estimator `1 - C(n-c, k) / C(n, k)` over the
//! `n = samples` completions of each problem (the reference aggregates "any of the first k" instead, a
//! biased, noisier estimate of the same quantity). Answer-only pass@k is reported beside it because the
//! gap between the two is the reward-hacking signal.
//!
//! Outputs (`report`): `report.json` (everything below, machine-readable), `report.md` (tables for
//! people) and `completions.jsonl` (every sample with its verdict).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use burn::tensor::backend::Backend;
use lm::device::OnBackend;
use lm::sample::{Finish, SampleConfig};
use lm::tokenizer::Tokenizer;
use lm::{DeviceSpec, Rng};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stage_api::{ArtifactKind, RunContext, Stage, StageInfo, StageKind};
use task::dataset::{Record, read_paper_jsonl};
use task::verify::{GoldGraph, Score, Verifier, VerifyOptions};

/// The evaluation settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Which file of the `data` input to evaluate on: `<dataset>.jsonl` (datagen's sets, or any JSONL with
    /// the paper's field names `problem`, `question`, `solution`).
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Completions per problem (the n of pass@k). With `temperature = 0` this must be 1 (greedy).
    #[serde(default = "one")]
    pub samples: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[serde(default)]
    pub temperature: f64,
    /// Nucleus sampling mass; 1 keeps the whole distribution.
    #[serde(default = "one_f64")]
    pub top_p: f64,
    /// Keep only the k most likely tokens; 0 keeps all.
    #[serde(default)]
    pub top_k: usize,
    /// Generation stops after this many new tokens if `</answer>` or `[EOS]` did not come first.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Completions decoded together (memory grows with it, and with the longest prompt).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Evaluate at most this many problems of each (op, context, mode) cell, in file order; 0 = all.
    #[serde(default)]
    pub max_per_cell: usize,
    /// Difficulty buckets as inclusive op ranges. The paper's: in-distribution 2-10, OOD-edge 11-14,
    /// OOD-hard 15-20.
    #[serde(default = "paper_buckets")]
    pub buckets: Vec<Bucket>,
    /// How completions are verified.
    #[serde(default)]
    pub verify: VerifyOptions,
}

/// A named, inclusive range of ops.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Its name in the report, e.g. `ood-edge`.
    pub name: String,
    /// `[first, last]` op, both included.
    pub ops: [u32; 2],
}

fn default_dataset() -> String {
    "eval".into()
}
fn one() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn default_max_new_tokens() -> usize {
    512
}
fn default_batch_size() -> usize {
    32
}
fn paper_buckets() -> Vec<Bucket> {
    let b = |name: &str, lo, hi| Bucket {
        name: name.into(),
        ops: [lo, hi],
    };
    vec![
        b("in-distribution", 2, 10),
        b("ood-edge", 11, 14),
        b("ood-hard", 15, 20),
    ]
}

impl EvalConfig {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.samples >= 1,
            "config `samples`: expected at least 1, got 0"
        );
        ensure!(
            self.temperature > 0.0 || self.samples == 1,
            "config `samples` = {}: several samples per problem need `temperature` > 0 (greedy decoding repeats itself)",
            self.samples
        );
        ensure!(
            self.temperature >= 0.0,
            "config `temperature`: expected >= 0, got {}",
            self.temperature
        );
        ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "config `top_p`: expected in (0, 1], got {}",
            self.top_p
        );
        ensure!(
            self.max_new_tokens >= 1,
            "config `max_new_tokens`: expected at least 1"
        );
        ensure!(
            self.batch_size >= 1,
            "config `batch_size`: expected at least 1"
        );
        for (i, b) in self.buckets.iter().enumerate() {
            ensure!(
                b.ops[0] <= b.ops[1],
                "config `buckets[{i}].ops` = {:?}: expected [first, last] with first <= last",
                b.ops
            );
        }
        Ok(())
    }

    /// The ks reported: powers of two up to `samples`, and `samples` itself.
    pub fn ks(&self) -> Vec<usize> {
        let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| Some(k * 2))
            .take_while(|&k| k <= self.samples)
            .collect();
        if ks.last() != Some(&self.samples) {
            ks.push(self.samples);
        }
        ks
    }
}

/// The stage.
pub struct Eval;

impl Stage for Eval {
    type Config = EvalConfig;

    fn info() -> StageInfo {
        StageInfo::new(
            StageKind::Evaluator,
            "Process-verified pass@k (VerifiedCorrect) and answer pass@k of each model, per op, difficulty bucket, \
             context and mode.",
        )
        .input_many("models", ArtifactKind::Model, "model directories (model.safetensors, config.json, tokenizer.json)")
        .input("data", ArtifactKind::Dataset, "a directory holding `<dataset>.jsonl`")
        .output("report", ArtifactKind::Report, "report.json, report.md and completions.jsonl")
        .devices(&["cpu", "cuda"])
    }

    fn run(config: EvalConfig, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        config.validate()?;
        let device: DeviceSpec = ctx.device().parse()?;
        device.check_available()?;
        let data_path = ctx.input("data")?.join(format!("{}.jsonl", config.dataset));
        ensure!(
            data_path.exists(),
            "config `dataset` = {:?}: {} does not exist",
            config.dataset,
            data_path.display()
        );
        let problems = select(read_paper_jsonl(&data_path)?, config.max_per_cell);
        ensure!(
            !problems.is_empty(),
            "{}: no problems to evaluate",
            data_path.display()
        );
        let golds = problems
            .iter()
            .map(|r| {
                GoldGraph::from_solution(&r.solution).with_context(|| {
                    format!(
                        "{}: problem id {}: gold solution",
                        data_path.display(),
                        r.id
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        let models: Vec<(String, std::path::PathBuf)> = ctx
            .inputs("models")
            .iter()
            .map(|m| (format!("{}.{}", m.stage, m.output), m.path.clone()))
            .collect();
        ensure!(
            !models.is_empty(),
            "input `models` is not connected: name at least one model, e.g. `models = [\"pretrain.model\"]`"
        );

        let out = ctx.output("report")?.to_path_buf();
        let completions_path = out.join("completions.jsonl");
        let mut completions = std::io::BufWriter::new(
            std::fs::File::create(&completions_path)
                .with_context(|| format!("creating {}", completions_path.display()))?,
        );
        let total = (models.len() * problems.len()) as u64;
        let mut reports = Vec::new();
        for (mi, (label, dir)) in models.iter().enumerate() {
            ctx.log(format!(
                "{label}: {} problems x {} samples from {}",
                problems.len(),
                config.samples,
                dir.display()
            ));
            let scored = device.run(SampleAndScore {
                config: &config,
                ctx,
                dir,
                problems: &problems,
                golds: &golds,
                model_index: mi,
                total,
            })??;
            for (r, samples) in problems.iter().zip(&scored) {
                for (i, s) in samples.iter().enumerate() {
                    let line = serde_json::json!({
                        "model": label, "id": r.id, "op": r.op, "template": r.template, "mode": r.mode, "sample": i,
                        "completion": s.completion, "finished": s.finished, "answer": s.score.answer,
                        "outcome": s.score.outcome, "process": s.score.process, "strict": s.score.strict, "verified": s.score.verified,
                    });
                    writeln!(completions, "{line}")?;
                }
            }
            let report = ModelReport::new(label, &config, &problems, &scored);
            ctx.metric(
                0,
                &format!("eval/{label}/verified_pass@1"),
                report.overall.verified_pass[0],
            );
            for (op, cell) in &report.per_op {
                ctx.metric(
                    0,
                    &format!("eval/{label}/op{op}/verified_pass@1"),
                    cell.verified_pass[0],
                );
            }
            ctx.log(format!(
                "{label}: verified pass@1 {:.3}, answer pass@1 {:.3}",
                report.overall.verified_pass[0], report.overall.answer_pass[0]
            ));
            reports.push(report);
        }
        completions.flush()?;

        let report = Report {
            dataset: config.dataset.clone(),
            samples: config.samples,
            temperature: config.temperature,
            ks: config.ks(),
            models: reports,
        };
        let json_path = out.join("report.json");
        std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", json_path.display()))?;
        let md_path = out.join("report.md");
        std::fs::write(&md_path, report.markdown())
            .with_context(|| format!("writing {}", md_path.display()))?;
        Ok(())
    }
}

/// [`sample_and_score`]'s arguments, to run it on the configured device's backend.
struct SampleAndScore<'a, 'c> {
    config: &'a EvalConfig,
    ctx: &'a RunContext<'c>,
    dir: &'a Path,
    problems: &'a [Record],
    golds: &'a [GoldGraph],
    model_index: usize,
    total: u64,
}

impl OnBackend for SampleAndScore<'_, '_> {
    type Output = anyhow::Result<Vec<Vec<Scored>>>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let SampleAndScore {
            config,
            ctx,
            dir,
            problems,
            golds,
            model_index,
            total,
        } = self;
        sample_and_score::<B>(
            config,
            ctx,
            dir,
            problems,
            golds,
            device,
            model_index,
            total,
        )
    }
}

/// Keeps at most `max_per_cell` problems of each (op, context, mode) cell, in file order (0 keeps all).
fn select(records: Vec<Record>, max_per_cell: usize) -> Vec<Record> {
    if max_per_cell == 0 {
        return records;
    }
    let mut seen: BTreeMap<(u32, String, String), usize> = BTreeMap::new();
    records
        .into_iter()
        .filter(|r| {
            let n = seen
                .entry((r.op, format!("{:?}", r.template), format!("{:?}", r.mode)))
                .or_default();
            *n += 1;
            *n <= max_per_cell
        })
        .collect()
}

/// One completion and its verdict.
struct Scored {
    completion: String,
    finished: bool,
    score: Score,
}

/// Samples `config.samples` completions per problem from the model in `dir` and verifies each.
#[allow(clippy::too_many_arguments)]
fn sample_and_score<B: Backend>(
    config: &EvalConfig,
    ctx: &RunContext<'_>,
    dir: &Path,
    problems: &[Record],
    golds: &[GoldGraph],
    device: B::Device,
    model_index: usize,
    total: u64,
) -> anyhow::Result<Vec<Vec<Scored>>> {
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let (model_cfg, model) = lm::checkpoint::load_model::<B>(dir, &device)
        .with_context(|| format!("loading the model in {}", dir.display()))?;
    if tokenizer.vocab_size() > model_cfg.vocab_size {
        bail!(
            "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
            tok_path.display(),
            tokenizer.vocab_size(),
            model_cfg.vocab_size
        );
    }
    let sample_cfg = SampleConfig {
        max_new_tokens: config.max_new_tokens,
        temperature: config.temperature,
        top_k: config.top_k,
        top_p: config.top_p,
        ..SampleConfig::default()
    };
    // One RNG stream per model, seeded by the stage seed: the same pipeline gives the same samples.
    let mut rng = Rng::new(ctx.seed() ^ (model_index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut verifier = Verifier::new(config.verify);
    // Prompts of similar length decode together; results go back to file order.
    let prompts = problems
        .iter()
        .map(|r| tokenizer.encode(&r.prompt()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..problems.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut by_problem: Vec<Option<Vec<Scored>>> = (0..problems.len()).map(|_| None).collect();
    let per_batch = (config.batch_size / config.samples).max(1);
    let mut done = 0u64;
    for chunk in order.chunks(per_batch) {
        ctx.check_stop()?;
        let batch: Vec<Vec<u32>> = chunk
            .iter()
            .flat_map(|&i| std::iter::repeat_n(prompts[i].clone(), config.samples))
            .collect();
        let samples = lm::sample::generate(&model, &batch, &sample_cfg, &mut rng);
        for (j, &i) in chunk.iter().enumerate() {
            let mut scored = Vec::with_capacity(config.samples);
            for s in &samples[j * config.samples..(j + 1) * config.samples] {
                let completion = tokenizer.decode(&s.tokens)?;
                let score = verifier.score(&golds[i], &completion);
                scored.push(Scored {
                    completion,
                    finished: s.finish == Finish::Stop,
                    score,
                });
            }
            by_problem[i] = Some(scored);
        }
        done += chunk.len() as u64;
        ctx.progress(model_index as u64 * problems.len() as u64 + done, total);
    }
    Ok(by_problem
        .into_iter()
        .map(|s| s.expect("every problem was decoded"))
        .collect())
}

/// pass@k by the unbiased estimator: the chance that k of the n samples, drawn without replacement,
/// contain at least one of the c correct ones.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(
        k >= 1 && k <= n && c <= n,
        "pass@k needs 1 <= k <= n and c <= n (n={n}, c={c}, k={k})"
    );
    if n - c < k {
        return 1.0;
    }
    // 1 - prod_{i = n-c+1}^{n} (1 - k / i), stable for large n.
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// The whole report.
#[derive(Serialize)]
struct Report {
    dataset: String,
    samples: usize,
    temperature: f64,
    /// The k of every `*_pass` list below, in order.
    ks: Vec<usize>,
    models: Vec<ModelReport>,
}

/// One model's results, overall and broken down.
#[derive(Serialize)]
struct ModelReport {
    model: String,
    overall: Cell,
    per_op: BTreeMap<u32, Cell>,
    per_bucket: BTreeMap<String, Cell>,
    per_context: BTreeMap<String, Cell>,
    per_mode: BTreeMap<String, Cell>,
}

/// Aggregates over a set of problems.
#[derive(Serialize, Default)]
struct Cell {
    problems: usize,
    /// Verified pass@k for each k of `Report::ks` (VerifiedCorrect).
    verified_pass: Vec<f64>,
    /// Answer-only pass@k for each k.
    answer_pass: Vec<f64>,
    /// Strict (no extra step either) pass@1.
    strict_pass1: f64,
    /// Mean process accuracy R_pv over all samples.
    process_mean: f64,
    /// Share of samples that ended at `</answer>` or `[EOS]` rather than the length limit.
    finished: f64,
}

impl ModelReport {
    fn new(
        label: &str,
        config: &EvalConfig,
        problems: &[Record],
        scored: &[Vec<Scored>],
    ) -> ModelReport {
        let ks = config.ks();
        let all: Vec<usize> = (0..problems.len()).collect();
        let cell = |idx: &[usize]| Cell::new(&ks, idx.iter().map(|&i| scored[i].as_slice()));
        let group = |key: &dyn Fn(&Record) -> Option<String>| {
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, r) in problems.iter().enumerate() {
                if let Some(k) = key(r) {
                    groups.entry(k).or_default().push(i);
                }
            }
            groups
                .into_iter()
                .map(|(k, idx)| (k, cell(&idx)))
                .collect::<BTreeMap<_, _>>()
        };
        let per_op = group(&|r| Some(format!("{:04}", r.op)))
            .into_iter()
            .map(|(k, c)| (k.parse().expect("op key"), c))
            .collect();
        let per_bucket = group(&|r| {
            config
                .buckets
                .iter()
                .find(|b| (b.ops[0]..=b.ops[1]).contains(&r.op))
                .map(|b| b.name.clone())
        });
        let per_context = group(&|r| Some(name_of(&r.template)));
        let per_mode = group(&|r| Some(name_of(&r.mode)));
        ModelReport {
            model: label.into(),
            overall: cell(&all),
            per_op,
            per_bucket,
            per_context,
            per_mode,
        }
    }
}

/// The serde name of an enum value (`crazy_zootopia`, `normalforward`).
fn name_of<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Cell {
    fn new<'a>(ks: &[usize], problems: impl Iterator<Item = &'a [Scored]>) -> Cell {
        let mut c = Cell {
            verified_pass: vec![0.0; ks.len()],
            answer_pass: vec![0.0; ks.len()],
            ..Cell::default()
        };
        let mut samples = 0usize;
        for s in problems {
            c.problems += 1;
            let n = s.len();
            let verified = s.iter().filter(|x| x.score.verified).count();
            let answered = s.iter().filter(|x| x.score.outcome).count();
            for (j, &k) in ks.iter().enumerate() {
                c.verified_pass[j] += pass_at_k(n, verified, k);
                c.answer_pass[j] += pass_at_k(n, answered, k);
            }
            c.strict_pass1 += s.iter().filter(|x| x.score.strict).count() as f64 / n as f64;
            c.process_mean += s.iter().map(|x| x.score.process).sum::<f64>();
            c.finished += s.iter().filter(|x| x.finished).count() as f64;
            samples += n;
        }
        if c.problems > 0 {
            let p = c.problems as f64;
            c.verified_pass
                .iter_mut()
                .chain(c.answer_pass.iter_mut())
                .for_each(|v| *v /= p);
            c.strict_pass1 /= p;
            c.process_mean /= samples as f64;
            c.finished /= samples as f64;
        }
        c
    }
}

impl Report {
    fn markdown(&self) -> String {
        let mut s = format!(
            "# Evaluation on `{}` ({} sample(s) per problem, temperature {})\n\n\
             verified = VerifiedCorrect (every gold step and the answer right); answer = the answer alone.\n",
            self.dataset, self.samples, self.temperature
        );
        let head: Vec<String> = self
            .ks
            .iter()
            .map(|k| format!("verified pass@{k}"))
            .chain(self.ks.iter().map(|k| format!("answer pass@{k}")))
            .chain(["strict pass@1".into(), "process".into(), "finished".into()])
            .collect();
        let row = |name: &str, c: &Cell| {
            let cells: Vec<String> = c
                .verified_pass
                .iter()
                .chain(&c.answer_pass)
                .chain([&c.strict_pass1, &c.process_mean, &c.finished])
                .map(|v| format!("{v:.3}"))
                .collect();
            format!("| {name} | {} | {} |\n", c.problems, cells.join(" | "))
        };
        for m in &self.models {
            s += &format!(
                "\n## {}\n\n| | problems | {} |\n|---|---|{}\n",
                m.model,
                head.join(" | "),
                "---|".repeat(head.len())
            );
            s += &row("**all**", &m.overall);
            for (op, c) in &m.per_op {
                s += &row(&format!("op {op}"), c);
            }
            for (name, c) in m.per_bucket.iter().chain(&m.per_context).chain(&m.per_mode) {
                s += &row(name, c);
            }
        }
        s
    }
}

stage_api::export_stage!(Eval);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_the_combinatorial_definition() {
        // 1 - C(n-c, k) / C(n, k), by brute force.
        fn choose(n: usize, k: usize) -> f64 {
            if k > n {
                0.0
            } else {
                (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product()
            }
        }
        for n in 1..=10 {
            for c in 0..=n {
                for k in 1..=n {
                    let want = 1.0 - choose(n - c, k) / choose(n, k);
                    assert!(
                        (pass_at_k(n, c, k) - want).abs() < 1e-12,
                        "n={n} c={c} k={k}"
                    );
                }
            }
        }
        assert_eq!(pass_at_k(8, 0, 8), 0.0);
        assert_eq!(pass_at_k(8, 1, 8), 1.0);
        assert_eq!(pass_at_k(1, 1, 1), 1.0);
    }

    #[test]
    fn ks_are_powers_of_two_then_n() {
        let cfg = |samples| EvalConfig {
            samples,
            temperature: 1.0,
            ..serde_json::from_str("{}").unwrap()
        };
        assert_eq!(cfg(1).ks(), [1]);
        assert_eq!(cfg(8).ks(), [1, 2, 4, 8]);
        assert_eq!(cfg(6).ks(), [1, 2, 4, 6]);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |json: &str| {
            let cfg: EvalConfig = serde_json::from_str(json).unwrap();
            cfg.validate().unwrap_err().to_string()
        };
        assert!(bad(r#"{"samples": 4}"#).contains("`samples` = 4"));
        assert!(bad(r#"{"samples": 0}"#).contains("`samples`"));
        assert!(bad(r#"{"top_p": 0}"#).contains("`top_p`"));
        assert!(bad(r#"{"buckets": [{"name": "x", "ops": [5, 2]}]}"#).contains("`buckets[0].ops`"));
    }
}
