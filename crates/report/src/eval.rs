//! What one evaluation stage measured: pass@k from per-sample verdicts, and the `report.json` format an
//! `eval` stage writes ([`EvalReport`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The value of `format` in an eval stage's `report.json`.
pub const EVAL_FORMAT: &str = "interplay/eval-report";
/// The version of that format this build writes and reads. 1 was the unmarked format before models were
/// named by their stage and the evaluation set was recorded.
pub const EVAL_VERSION: u32 = 2;

/// How pass@k is computed from the `n` samples of a problem.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    /// The unbiased estimator `1 - C(n-c, k) / C(n, k)` with `c` correct of `n` samples: the chance
    /// that k samples drawn without replacement hold a correct one.
    #[default]
    Unbiased,
    /// The reference code's aggregation (paper-spec §7.2): a problem passes at k when any of its first k
    /// samples, in the order they were drawn, is correct. Its average over all orders of the samples is
    /// the unbiased estimate; a single order is noisier.
    FirstK,
}

impl Estimator {
    /// Its name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Unbiased => "unbiased",
            Estimator::FirstK => "first-k",
        }
    }

    /// pass@k of one problem whose samples, in order, are `correct`.
    pub fn pass(self, correct: &[bool], k: usize) -> f64 {
        match self {
            Estimator::Unbiased => {
                pass_at_k(correct.len(), correct.iter().filter(|&&c| c).count(), k)
            }
            Estimator::FirstK => first_k(correct, k),
        }
    }
}

/// A named, inclusive range of ops: a difficulty bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Its name in the report, e.g. `ood-edge`.
    pub name: String,
    /// `[first, last]` op, both included.
    pub ops: [u32; 2],
}

impl Bucket {
    /// Whether `op` lies in this bucket.
    pub fn contains(&self, op: u32) -> bool {
        (self.ops[0]..=self.ops[1]).contains(&op)
    }
}

/// The paper's buckets: in-distribution 2-10, OOD-edge 11-14, OOD-hard 15-20 (paper-spec §3.1).
pub fn paper_buckets() -> Vec<Bucket> {
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

/// The ks reported for `samples` completions per problem: powers of two up to `samples`, and `samples`.
pub fn ks(samples: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| Some(k * 2))
        .take_while(|&k| k <= samples)
        .collect();
    if samples >= 1 && ks.last() != Some(&samples) {
        ks.push(samples);
    }
    ks
}

/// pass@k by the unbiased estimator: the chance that k of the n samples, drawn without replacement,
/// contain at least one of the c correct ones, `1 - C(n-c, k) / C(n, k)`.
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

/// pass@k by the reference's aggregation: 1 when any of the first `k` samples is correct, else 0.
pub fn first_k(correct: &[bool], k: usize) -> f64 {
    assert!(
        k >= 1 && k <= correct.len(),
        "pass@k needs 1 <= k <= n (n={}, k={k})",
        correct.len()
    );
    if correct[..k].iter().any(|&c| c) {
        1.0
    } else {
        0.0
    }
}

/// The verifier's verdict on one completion, as far as the report needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Verdict {
    /// VerifiedCorrect: every gold step right and the answer right (extra correct steps allowed).
    pub verified: bool,
    /// The answer alone is right.
    pub answer: bool,
    /// Verified with no extra step either (the strict RL reward's condition).
    pub strict: bool,
    /// Process accuracy R_pv in [0, 1].
    pub process: f64,
    /// The completion ended by itself (`</answer>` or end of sequence), not at the length limit.
    pub finished: bool,
}

impl Verdict {
    /// Reward hacking: the answer is right but the solution is not VerifiedCorrect (a gold step is
    /// missing or wrong). Since VerifiedCorrect needs the right answer, the rate of this is exactly
    /// answer pass@1 minus verified pass@1 (both averaged over samples).
    pub fn hacked(&self) -> bool {
        self.answer && !self.verified
    }
}

/// Where a problem belongs in the breakdowns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProblemKey {
    /// Its number of operations.
    pub op: u32,
    /// Its context (template), e.g. `crazy_zootopia`.
    pub context: String,
    /// Its mode, e.g. `normalforward`.
    pub mode: String,
}

/// The evaluation set, enough to tell whether two evaluations saw the same problems.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSet {
    /// The `dataset` config key: which file of the data input was read.
    pub dataset: String,
    /// That file's name (`<dataset>.jsonl`).
    pub file: String,
    /// Problems evaluated (after `max_per_cell`).
    pub problems: usize,
    /// SHA-256 (lowercase hex) over the evaluated problems, in order: for each, its id, prompt and gold
    /// solution, each followed by a NUL byte.
    pub sha256: String,
}

/// The settings that change what an evaluation measures (the batch size does not).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Completions sampled per problem (the n of pass@k).
    pub samples: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Top-k cut (0: none).
    pub top_k: usize,
    /// Generation length limit.
    pub max_new_tokens: usize,
    /// How pass@k was computed.
    pub estimator: Estimator,
    /// Whether every cell carries greedy pass@1 (`greedy`): each problem was also decoded once greedily,
    /// or the sampling itself was greedy (temperature 0).
    pub greedy: bool,
    /// The verifier's options.
    pub verify: serde_json::Value,
}

/// An eval stage's `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalReport {
    /// [`EVAL_FORMAT`].
    pub format: String,
    /// [`EVAL_VERSION`].
    pub version: u32,
    /// What was evaluated.
    pub eval_set: EvalSet,
    /// How.
    pub settings: Settings,
    /// The k of every `*_pass` list, in order.
    pub ks: Vec<usize>,
    /// The difficulty buckets, in the configured order.
    pub buckets: Vec<Bucket>,
    /// One entry per model, in the order of the stage's `models` input.
    pub models: Vec<ModelReport>,
}

/// One model's results, overall and broken down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelReport {
    /// Its name: the stage that trained it (`pretrain`, `midtrain`, `rl`), or `stage.output` when two
    /// models come from one stage.
    pub model: String,
    /// The input it came from, `stage.output`.
    pub source: String,
    /// Every problem.
    pub overall: Cell,
    /// Per op.
    pub per_op: BTreeMap<u32, Cell>,
    /// Per bucket (problems outside every bucket are in none).
    pub per_bucket: BTreeMap<String, Cell>,
    /// Per context (template).
    pub per_context: BTreeMap<String, Cell>,
    /// Per mode.
    pub per_mode: BTreeMap<String, Cell>,
}

/// Aggregates over a set of problems.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    /// Problems in the cell.
    pub problems: usize,
    /// Sampled completions in the cell.
    pub samples: usize,
    /// Verified pass@k (VerifiedCorrect) for each k of `ks`, averaged over problems.
    pub verified_pass: Vec<f64>,
    /// Answer-only pass@k for each k.
    pub answer_pass: Vec<f64>,
    /// Strict (no extra step either) pass@1.
    pub strict_pass1: f64,
    /// Mean process accuracy R_pv over all samples.
    pub process_mean: f64,
    /// Share of samples whose answer is right but which are not VerifiedCorrect.
    pub hacking_rate: f64,
    /// Share of samples that ended at `</answer>` or end of sequence rather than the length limit.
    pub finished: f64,
    /// The same measures for one greedy decode per problem, when `settings.greedy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<Greedy>,
}

/// pass@1 and friends of one greedy decode per problem.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Greedy {
    /// Share of problems whose greedy solution is VerifiedCorrect.
    pub verified_pass1: f64,
    /// Share of problems whose greedy answer is right.
    pub answer_pass1: f64,
    /// Share strictly correct.
    pub strict_pass1: f64,
    /// Mean process accuracy.
    pub process_mean: f64,
    /// Share with the answer right but not VerifiedCorrect.
    pub hacking_rate: f64,
    /// Share that ended by themselves.
    pub finished: f64,
}

impl Cell {
    /// The cell of the problems `idx`, whose sampled verdicts are `sampled[i]` (in sampling order) and
    /// greedy verdicts `greedy[i]`.
    pub fn build(
        ks: &[usize],
        estimator: Estimator,
        idx: &[usize],
        sampled: &[Vec<Verdict>],
        greedy: Option<&[Verdict]>,
    ) -> Cell {
        let mut c = Cell {
            verified_pass: vec![0.0; ks.len()],
            answer_pass: vec![0.0; ks.len()],
            greedy: greedy.map(|_| Greedy::default()),
            ..Cell::default()
        };
        for &i in idx {
            let s = &sampled[i];
            c.problems += 1;
            c.samples += s.len();
            let verified: Vec<bool> = s.iter().map(|v| v.verified).collect();
            let answered: Vec<bool> = s.iter().map(|v| v.answer).collect();
            let strict: Vec<bool> = s.iter().map(|v| v.strict).collect();
            for (j, &k) in ks.iter().enumerate() {
                c.verified_pass[j] += estimator.pass(&verified, k);
                c.answer_pass[j] += estimator.pass(&answered, k);
            }
            c.strict_pass1 += estimator.pass(&strict, 1);
            c.process_mean += s.iter().map(|v| v.process).sum::<f64>();
            c.hacking_rate += s.iter().filter(|v| v.hacked()).count() as f64;
            c.finished += s.iter().filter(|v| v.finished).count() as f64;
            if let (Some(g), Some(all)) = (&mut c.greedy, greedy) {
                let v = &all[i];
                g.verified_pass1 += f64::from(u8::from(v.verified));
                g.answer_pass1 += f64::from(u8::from(v.answer));
                g.strict_pass1 += f64::from(u8::from(v.strict));
                g.process_mean += v.process;
                g.hacking_rate += f64::from(u8::from(v.hacked()));
                g.finished += f64::from(u8::from(v.finished));
            }
        }
        if c.problems > 0 {
            let p = c.problems as f64;
            let n = c.samples.max(1) as f64;
            c.verified_pass
                .iter_mut()
                .chain(c.answer_pass.iter_mut())
                .for_each(|v| *v /= p);
            c.strict_pass1 /= p;
            c.process_mean /= n;
            c.hacking_rate /= n;
            c.finished /= n;
            if let Some(g) = &mut c.greedy {
                for v in [
                    &mut g.verified_pass1,
                    &mut g.answer_pass1,
                    &mut g.strict_pass1,
                    &mut g.process_mean,
                    &mut g.hacking_rate,
                    &mut g.finished,
                ] {
                    *v /= p;
                }
            }
        }
        c
    }
}

impl ModelReport {
    /// One model's report: `keys[i]` places problem `i`, `sampled[i]` are its sampled verdicts in
    /// sampling order, `greedy[i]` its greedy verdict. A problem outside every bucket counts in no bucket.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        model: &str,
        source: &str,
        keys: &[ProblemKey],
        buckets: &[Bucket],
        ks: &[usize],
        estimator: Estimator,
        sampled: &[Vec<Verdict>],
        greedy: Option<&[Verdict]>,
    ) -> ModelReport {
        assert_eq!(keys.len(), sampled.len(), "one verdict list per problem");
        if let Some(g) = greedy {
            assert_eq!(g.len(), keys.len(), "one greedy verdict per problem");
        }
        let cell = |idx: &[usize]| Cell::build(ks, estimator, idx, sampled, greedy);
        fn group<K: Ord>(
            keys: &[ProblemKey],
            key: impl Fn(&ProblemKey) -> Option<K>,
        ) -> BTreeMap<K, Vec<usize>> {
            let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
            for (i, p) in keys.iter().enumerate() {
                if let Some(k) = key(p) {
                    groups.entry(k).or_default().push(i);
                }
            }
            groups
        }
        let cells = |g: BTreeMap<String, Vec<usize>>| -> BTreeMap<String, Cell> {
            g.into_iter().map(|(k, idx)| (k, cell(&idx))).collect()
        };
        let all: Vec<usize> = (0..keys.len()).collect();
        ModelReport {
            model: model.into(),
            source: source.into(),
            overall: cell(&all),
            per_op: group(keys, |p| Some(p.op))
                .into_iter()
                .map(|(k, idx)| (k, cell(&idx)))
                .collect(),
            per_bucket: cells(group(keys, |p| {
                buckets
                    .iter()
                    .find(|b| b.contains(p.op))
                    .map(|b| b.name.clone())
            })),
            per_context: cells(group(keys, |p| Some(p.context.clone()))),
            per_mode: cells(group(keys, |p| Some(p.mode.clone()))),
        }
    }
}

/// Names models by their stage: `pretrain.model` → `pretrain`, unless two sources share a stage, in
/// which case those keep `stage.output`.
pub fn model_names(sources: &[(String, String)]) -> Vec<String> {
    sources
        .iter()
        .map(|(stage, output)| {
            let shared = sources.iter().filter(|(s, _)| s == stage).count() > 1;
            if shared {
                format!("{stage}.{output}")
            } else {
                stage.clone()
            }
        })
        .collect()
}

impl EvalReport {
    /// Reads an eval stage's `report.json`, refusing any other format with a message that names the file.
    pub fn read(path: &Path) -> anyhow::Result<EvalReport> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        EvalReport::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// Parses `report.json` text; see [`EvalReport::read`].
    pub fn parse(text: &str) -> anyhow::Result<EvalReport> {
        let v: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
        match classify(&v) {
            Kind::Eval => {}
            Kind::OldEval => bail!(
                "an eval report in an older format (no `format` marker; this build reads `{EVAL_FORMAT}` version \
                 {EVAL_VERSION}): rerun its stage with the current eval plugin (`--force <stage>`)"
            ),
            Kind::Other => bail!(
                "not an eval report: expected `\"format\": \"{EVAL_FORMAT}\"`, found {}",
                v.get("format")
                    .map_or("no `format` key".to_string(), |f| format!("`{f}`"))
            ),
            Kind::Version(found) => bail!(
                "an eval report of format version {found}; this build reads version {EVAL_VERSION} \
                 (rebuild the runner, or rerun the stage with `--force <stage>`)"
            ),
        }
        let r: EvalReport = serde_json::from_value(v).context("malformed eval report")?;
        r.check()?;
        Ok(r)
    }

    /// Consistency of the lists with `ks`.
    fn check(&self) -> anyhow::Result<()> {
        for m in &self.models {
            let cells = std::iter::once(("overall".to_string(), &m.overall))
                .chain(m.per_op.iter().map(|(k, c)| (format!("op {k}"), c)))
                .chain(m.per_bucket.iter().map(|(k, c)| (k.clone(), c)))
                .chain(m.per_context.iter().map(|(k, c)| (k.clone(), c)))
                .chain(m.per_mode.iter().map(|(k, c)| (k.clone(), c)));
            for (name, c) in cells {
                ensure!(
                    c.verified_pass.len() == self.ks.len() && c.answer_pass.len() == self.ks.len(),
                    "model `{}`, {name}: {} verified and {} answer pass@k values for {} ks",
                    m.model,
                    c.verified_pass.len(),
                    c.answer_pass.len(),
                    self.ks.len()
                );
                ensure!(
                    c.greedy.is_some() == self.settings.greedy,
                    "model `{}`, {name}: greedy results {} but settings.greedy is {}",
                    m.model,
                    if c.greedy.is_some() {
                        "present"
                    } else {
                        "missing"
                    },
                    self.settings.greedy
                );
            }
        }
        Ok(())
    }
}

/// What a `report.json` is.
enum Kind {
    Eval,
    OldEval,
    Version(serde_json::Value),
    Other,
}

fn classify(v: &serde_json::Value) -> Kind {
    match v.get("format").and_then(|f| f.as_str()) {
        Some(EVAL_FORMAT) => match v.get("version") {
            Some(n) if n.as_u64() == Some(u64::from(EVAL_VERSION)) => Kind::Eval,
            Some(n) => Kind::Version(n.clone()),
            None => Kind::Version(serde_json::Value::Null),
        },
        Some(_) => Kind::Other,
        None if v.get("models").is_some() && v.get("ks").is_some() => Kind::OldEval,
        None => Kind::Other,
    }
}

/// Whether `text` is an eval report of any version, current or older (the rest are other stages' reports).
pub fn looks_like_eval_report(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| !matches!(classify(&v), Kind::Other))
        .unwrap_or(false)
}
