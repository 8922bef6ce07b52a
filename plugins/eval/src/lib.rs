//! `eval`: process-verified pass@k of one or more models on an evaluation set, per op, per difficulty
//! bucket, per context and per mode (paper-spec §7).
//!
//! ```toml
//! [stages.eval]
//! plugin = "eval"
//! inputs = { models = ["pretrain.model", "midtrain.model"], data = "data.data" }
//! config = { dataset = "eval", samples = 8, temperature = 0.7 }   # + greedy pass@1 (greedy = true by default here)
//! ```
//!
//! Every sample is scored by the task verifier against the gold solution. A sample counts as correct
//! when it is VerifiedCorrect (every gold step right, the answer right; extra correct steps allowed), the
//! paper's strict evaluation metric. pass@k is by default the unbiased estimator `1 - C(n-c, k) / C(n, k)`
//! over the `n = samples` completions of each problem; `pass_at_k = "first-k"` computes the reference's
//! aggregation instead ("any of the first k samples", a noisier estimate of the same quantity).
//! Answer-only pass@k is reported beside it, and the reward-hacking rate: the share of samples whose
//! answer is right but which are not VerifiedCorrect (= answer pass@1 - verified pass@1). With
//! `greedy = true` (the default when `samples > 1`) each problem is also decoded once greedily, and every
//! cell carries greedy pass@1 beside the sampled pass@k, as the paper reports both.
//!
//! Models are named by the stage that produced them (`pretrain`, `midtrain`, `rl`), or `stage.output`
//! when two come from one stage.
//!
//! Outputs (`report`): `report.json` (the `report` crate's [`report::EvalReport`], format
//! `interplay/eval-report` version 2: the evaluation set with its SHA-256, the settings, every number),
//! `report.md` (tables), `plots/<stage>/*.svg|png` and `completions.jsonl` (every sample with its
//! verdict; `"decode": "sampled"` or `"greedy"`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use burn::tensor::backend::Backend;
use lm::device::OnBackend;
use lm::sample::{Finish, SampleConfig};
use lm::tokenizer::Tokenizer;
use lm::{DeviceSpec, Rng};
use report::{Bucket, Estimator, EvalReport, EvalSet, ModelReport, ProblemKey, Settings, Verdict};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// OOD-hard 15-20. A problem outside every bucket counts in no bucket (it still counts per op).
    #[serde(default = "report::eval::paper_buckets")]
    pub buckets: Vec<Bucket>,
    /// How pass@k is computed from the `samples` completions of a problem: `unbiased` (the estimator
    /// `1 - C(n-c, k) / C(n, k)`) or `first-k` (the reference's aggregation: any of the first k samples,
    /// in the order drawn, is correct).
    #[serde(default)]
    pub pass_at_k: Estimator,
    /// Also decode each problem once greedily and report greedy pass@1 (verified and answer) beside the
    /// sampled pass@k. Default: true when `samples` > 1. With `temperature = 0` the samples are greedy
    /// already and nothing is decoded twice.
    #[serde(default)]
    pub greedy: Option<bool>,
    /// How completions are verified.
    #[serde(default)]
    pub verify: VerifyOptions,
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
        report::eval::ks(self.samples)
    }

    /// Whether greedy pass@1 is reported: `greedy`, by default `samples > 1`; always with temperature 0
    /// (the samples are the greedy decode).
    pub fn reports_greedy(&self) -> bool {
        self.temperature == 0.0 || self.greedy.unwrap_or(self.samples > 1)
    }

    /// Whether a second, greedy decode runs.
    fn decodes_greedy(&self) -> bool {
        self.temperature > 0.0 && self.reports_greedy()
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

        let sources: Vec<(String, String)> = ctx
            .inputs("models")
            .iter()
            .map(|m| (m.stage.clone(), m.output.clone()))
            .collect();
        let names = report::eval::model_names(&sources);
        let models: Vec<(String, String, std::path::PathBuf)> = ctx
            .inputs("models")
            .iter()
            .zip(names)
            .map(|(m, name)| (name, format!("{}.{}", m.stage, m.output), m.path.clone()))
            .collect();
        ensure!(
            !models.is_empty(),
            "input `models` is not connected: name at least one model, e.g. `models = [\"pretrain.model\"]`"
        );
        let keys: Vec<ProblemKey> = problems
            .iter()
            .map(|r| ProblemKey {
                op: r.op,
                context: name_of(&r.template),
                mode: name_of(&r.mode),
            })
            .collect();
        let eval_set = EvalSet {
            dataset: config.dataset.clone(),
            file: format!("{}.jsonl", config.dataset),
            problems: problems.len(),
            sha256: eval_set_sha256(&problems),
        };

        let out = ctx.output("report")?.to_path_buf();
        let completions_path = out.join("completions.jsonl");
        let mut completions = std::io::BufWriter::new(
            std::fs::File::create(&completions_path)
                .with_context(|| format!("creating {}", completions_path.display()))?,
        );
        let greedy_config = EvalConfig {
            samples: 1,
            temperature: 0.0,
            ..config.clone()
        };
        let passes: Vec<(&str, &EvalConfig)> = if config.decodes_greedy() {
            vec![("sampled", &config), ("greedy", &greedy_config)]
        } else {
            vec![("sampled", &config)]
        };
        let per_model = passes
            .iter()
            .map(|(_, c)| (problems.len() * c.samples) as u64)
            .sum::<u64>();
        let total = models.len() as u64 * per_model;
        let ks = config.ks();
        let mut reports = Vec::new();
        for (mi, (label, source, dir)) in models.iter().enumerate() {
            ctx.log(format!(
                "{label}: {} problems x {} samples{} from {}",
                problems.len(),
                config.samples,
                if config.decodes_greedy() {
                    " + 1 greedy"
                } else {
                    ""
                },
                dir.display()
            ));
            let mut verdicts: Vec<Vec<Vec<Verdict>>> = Vec::new();
            let mut done = mi as u64 * per_model;
            for (pass, pass_config) in &passes {
                let scored = device.run(SampleAndScore {
                    config: pass_config,
                    ctx,
                    dir,
                    problems: &problems,
                    golds: &golds,
                    model_index: mi,
                    progress: (done, total),
                })??;
                done += (problems.len() * pass_config.samples) as u64;
                for (r, samples) in problems.iter().zip(&scored) {
                    for (i, s) in samples.iter().enumerate() {
                        let line = serde_json::json!({
                            "model": label, "decode": pass, "id": r.id, "op": r.op, "template": r.template, "mode": r.mode, "sample": i,
                            "completion": s.completion, "finished": s.finished, "answer": s.score.answer,
                            "outcome": s.score.outcome, "process": s.score.process, "strict": s.score.strict, "verified": s.score.verified,
                        });
                        writeln!(completions, "{line}")?;
                    }
                }
                verdicts.push(
                    scored
                        .iter()
                        .map(|samples| samples.iter().map(Scored::verdict).collect())
                        .collect(),
                );
            }
            let sampled = &verdicts[0];
            let greedy: Option<Vec<Verdict>> = if config.decodes_greedy() {
                Some(verdicts[1].iter().map(|v| v[0]).collect())
            } else if config.reports_greedy() {
                Some(sampled.iter().map(|v| v[0]).collect())
            } else {
                None
            };
            let report = ModelReport::build(
                label,
                source,
                &keys,
                &config.buckets,
                &ks,
                config.pass_at_k,
                sampled,
                greedy.as_deref(),
            );
            ctx.metric(
                0,
                &format!("eval/{label}/verified_pass@1"),
                report.overall.verified_pass[0],
            );
            if let Some(g) = &report.overall.greedy {
                ctx.metric(
                    0,
                    &format!("eval/{label}/greedy_verified_pass@1"),
                    g.verified_pass1,
                );
            }
            for (op, cell) in &report.per_op {
                ctx.metric(
                    0,
                    &format!("eval/{label}/op{op}/verified_pass@1"),
                    cell.verified_pass[0],
                );
            }
            ctx.log(format!(
                "{label}: verified pass@1 {:.3}, answer pass@1 {:.3}, hacking {:.3}{}",
                report.overall.verified_pass[0],
                report.overall.answer_pass[0],
                report.overall.hacking_rate,
                report
                    .overall
                    .greedy
                    .as_ref()
                    .map(|g| format!(", greedy verified pass@1 {:.3}", g.verified_pass1))
                    .unwrap_or_default()
            ));
            reports.push(report);
        }
        completions.flush()?;

        let report = EvalReport {
            format: report::eval::EVAL_FORMAT.into(),
            version: report::eval::EVAL_VERSION,
            eval_set,
            settings: Settings {
                samples: config.samples,
                temperature: config.temperature,
                top_p: config.top_p,
                top_k: config.top_k,
                max_new_tokens: config.max_new_tokens,
                estimator: config.pass_at_k,
                greedy: config.reports_greedy(),
                verify: serde_json::to_value(config.verify)?,
            },
            ks,
            buckets: config.buckets.clone(),
            models: reports,
        };
        let json_path = out.join("report.json");
        std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", json_path.display()))?;
        let stage = ctx.request().stage.clone();
        report::write_report(&out, &report::Summary::of_one(&stage, &report), false)?;
        Ok(())
    }
}

/// SHA-256 over the evaluated problems, in order: each one's id, prompt and gold solution, each followed
/// by a NUL byte (what `report.json`'s `eval_set.sha256` records).
pub fn eval_set_sha256(problems: &[Record]) -> String {
    let mut h = Sha256::new();
    for r in problems {
        for part in [r.id.to_string(), r.prompt(), r.solution.clone()] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// [`sample_and_score`]'s arguments, to run it on the configured device's backend.
struct SampleAndScore<'a, 'c> {
    config: &'a EvalConfig,
    ctx: &'a RunContext<'c>,
    dir: &'a Path,
    problems: &'a [Record],
    golds: &'a [GoldGraph],
    model_index: usize,
    /// Samples decoded before this call, and in the whole stage.
    progress: (u64, u64),
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
            progress,
        } = self;
        sample_and_score::<B>(
            config,
            ctx,
            dir,
            problems,
            golds,
            device,
            model_index,
            progress,
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

impl Scored {
    fn verdict(&self) -> Verdict {
        Verdict {
            verified: self.score.verified,
            answer: self.score.outcome,
            strict: self.score.strict,
            process: self.score.process,
            finished: self.finished,
        }
    }
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
    (done_before, total): (u64, u64),
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
        done += (chunk.len() * config.samples) as u64;
        ctx.progress(done_before + done, total);
    }
    Ok(by_problem
        .into_iter()
        .map(|s| s.expect("every problem was decoded"))
        .collect())
}

/// The serde name of an enum value (`crazy_zootopia`, `normalforward`).
fn name_of<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

stage_api::export_stage!(Eval);

#[cfg(test)]
mod tests {
    use super::*;

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
    fn greedy_is_on_by_default_with_several_samples_and_the_estimator_is_named() {
        let cfg = |json: &str| -> EvalConfig { serde_json::from_str(json).unwrap() };
        // (config, greedy pass@1 reported, a second, greedy decode)
        let cases = [
            (r#"{}"#, true, false),
            (r#"{"samples": 1, "temperature": 1.0}"#, false, false),
            (r#"{"samples": 8, "temperature": 1.0}"#, true, true),
            (
                r#"{"samples": 8, "temperature": 1.0, "greedy": false}"#,
                false,
                false,
            ),
            (
                r#"{"samples": 1, "temperature": 1.0, "greedy": true}"#,
                true,
                true,
            ),
            (r#"{"greedy": false}"#, true, false),
        ];
        for (json, reports, decodes) in cases {
            let c = cfg(json);
            assert_eq!(
                (c.reports_greedy(), c.decodes_greedy()),
                (reports, decodes),
                "{json}"
            );
        }
        assert_eq!(cfg("{}").pass_at_k, Estimator::Unbiased);
        assert_eq!(
            cfg(r#"{"pass_at_k": "first-k"}"#).pass_at_k,
            Estimator::FirstK
        );
        let err = serde_json::from_str::<EvalConfig>(r#"{"pass_at_k": "first"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("first-k") && err.contains("unbiased"), "{err}");
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
