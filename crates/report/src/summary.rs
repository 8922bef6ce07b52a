//! One or more runs of a pipeline (seeds) summarised: every number of every eval stage as its mean over
//! the runs, the sample standard deviation and the per-run values.

use std::collections::BTreeMap;

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

use crate::eval::{Bucket, Cell, EvalReport, EvalSet, Greedy, Settings};

/// The value of `format` in a summary's `report.json` (what `interplay report` writes).
pub const SUMMARY_FORMAT: &str = "interplay/eval-summary";
/// Its version.
pub const SUMMARY_VERSION: u32 = 1;

/// The summary of one or more runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_FORMAT`].
    pub format: String,
    /// [`SUMMARY_VERSION`].
    pub version: u32,
    /// The runs, in the order given; `values` lists follow this order.
    pub runs: Vec<RunInfo>,
    /// One entry per eval stage.
    pub stages: Vec<StageSummary>,
}

/// One run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run directory, as given.
    pub dir: String,
    /// The pipeline's name, from `run.json` when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The pipeline's seed, from `run.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// One eval stage over every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// The stage's name in the pipeline.
    pub stage: String,
    /// n: how many runs each mean is over.
    pub runs: usize,
    /// The evaluation set (the same in every run).
    pub eval_set: EvalSet,
    /// The settings (the same in every run).
    pub settings: Settings,
    /// The k of every `*_pass` list.
    pub ks: Vec<usize>,
    /// The buckets, in the configured order.
    pub buckets: Vec<Bucket>,
    /// One entry per model.
    pub models: Vec<ModelSummary>,
}

/// One model of one stage over every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Its name.
    pub model: String,
    /// Its input, `stage.output`.
    pub source: String,
    /// Every problem.
    pub overall: StatCell,
    /// Per op.
    pub per_op: BTreeMap<u32, StatCell>,
    /// Per bucket.
    pub per_bucket: BTreeMap<String, StatCell>,
    /// Per context.
    pub per_context: BTreeMap<String, StatCell>,
    /// Per mode.
    pub per_mode: BTreeMap<String, StatCell>,
}

/// A [`Cell`] over runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatCell {
    /// Problems in the cell (the same in every run).
    pub problems: usize,
    /// Verified pass@k for each k.
    pub verified_pass: Vec<Stat>,
    /// Answer pass@k for each k.
    pub answer_pass: Vec<Stat>,
    /// Strict pass@1.
    pub strict_pass1: Stat,
    /// Mean process accuracy.
    pub process_mean: Stat,
    /// Answer right, not VerifiedCorrect.
    pub hacking_rate: Stat,
    /// Share of completions that ended by themselves.
    pub finished: Stat,
    /// Greedy pass@1 and friends, when the stage decoded greedily.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<StatGreedy>,
}

/// A [`Greedy`] over runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatGreedy {
    /// Greedy verified pass@1.
    pub verified_pass1: Stat,
    /// Greedy answer pass@1.
    pub answer_pass1: Stat,
    /// Greedy strict pass@1.
    pub strict_pass1: Stat,
    /// Greedy mean process accuracy.
    pub process_mean: Stat,
    /// Greedy hacking rate.
    pub hacking_rate: Stat,
    /// Greedy share finished.
    pub finished: Stat,
}

/// A number over runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// The mean over runs.
    pub mean: f64,
    /// The sample standard deviation (n - 1 in the denominator); `null` for a single run.
    pub std: Option<f64>,
    /// Each run's value, in the order of `Summary::runs`.
    pub values: Vec<f64>,
}

impl Stat {
    /// The mean and sample standard deviation of `values` (at least one).
    pub fn of(values: Vec<f64>) -> Stat {
        assert!(!values.is_empty(), "a statistic over no runs");
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.len() > 1).then(|| {
            (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt()
        });
        Stat { mean, std, values }
    }
}

/// One run's report of a stage, with the file it came from (for messages).
pub struct RunReport<'a> {
    /// The `report.json` it was read from, or another name for it.
    pub origin: String,
    /// The report.
    pub report: &'a EvalReport,
}

impl StageSummary {
    /// Aggregates one stage's reports, one per run (at least one). Reports that did not measure the
    /// same thing (evaluation set, settings, ks, buckets, models, breakdowns) are refused, naming both
    /// files and what differs.
    pub fn aggregate(stage: &str, reports: &[RunReport<'_>]) -> anyhow::Result<StageSummary> {
        let Some(first) = reports.first() else {
            bail!("stage `{stage}`: no report to summarise");
        };
        let a = first.report;
        for other in &reports[1..] {
            let b = other.report;
            let differ = |what: &str, x: String, y: String| {
                anyhow::anyhow!(
                    "cannot aggregate stage `{stage}` over these runs: {what}\n  {}: {x}\n  {}: {y}",
                    first.origin,
                    other.origin
                )
            };
            if a.eval_set != b.eval_set {
                return Err(differ(
                    "they evaluated different evaluation sets",
                    describe_set(&a.eval_set),
                    describe_set(&b.eval_set),
                ));
            }
            let diffs = settings_diff(&a.settings, &b.settings);
            if !diffs.is_empty() {
                let (x, y): (Vec<String>, Vec<String>) = diffs.into_iter().unzip();
                return Err(differ(
                    "they were evaluated with different settings",
                    x.join(", "),
                    y.join(", "),
                ));
            }
            if a.ks != b.ks {
                return Err(differ(
                    "different ks",
                    format!("{:?}", a.ks),
                    format!("{:?}", b.ks),
                ));
            }
            if a.buckets != b.buckets {
                return Err(differ(
                    "different buckets",
                    describe_buckets(&a.buckets),
                    describe_buckets(&b.buckets),
                ));
            }
            let names = |r: &EvalReport| {
                r.models
                    .iter()
                    .map(|m| m.model.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if names(a) != names(b) {
                return Err(differ("different models", names(a), names(b)));
            }
        }
        let models = a
            .models
            .iter()
            .enumerate()
            .map(|(mi, m)| {
                let cells = |get: &dyn Fn(&EvalReport) -> Option<&Cell>, what: &str| {
                    let cells: Vec<&Cell> = reports
                        .iter()
                        .map(|r| {
                            get(r.report).ok_or_else(|| {
                                anyhow::anyhow!(
                                    "cannot aggregate stage `{stage}`: model `{}` has no {what} in {} but has one in {}",
                                    m.model,
                                    r.origin,
                                    first.origin
                                )
                            })
                        })
                        .collect::<anyhow::Result<_>>()?;
                    stat_cell(&cells).map_err(|e| {
                        anyhow::anyhow!("cannot aggregate stage `{stage}`, model `{}`, {what}: {e}", m.model)
                    })
                };
                let keyed = |what: &'static str, keys: Vec<String>| -> anyhow::Result<BTreeMap<String, StatCell>> {
                    keys.into_iter()
                        .map(|k| {
                            let c = cells(&|r: &EvalReport| lookup(r, mi, what, &k), &format!("{what} `{k}`"))?;
                            Ok((k, c))
                        })
                        .collect()
                };
                for r in &reports[1..] {
                    let o = &r.report.models[mi];
                    let same = |x: Vec<String>, y: Vec<String>, what: &str| {
                        ensure!(
                            x == y,
                            "cannot aggregate stage `{stage}`, model `{}`: different {what}\n  {}: {}\n  {}: {}",
                            m.model,
                            first.origin,
                            x.join(", "),
                            r.origin,
                            y.join(", ")
                        );
                        Ok(())
                    };
                    same(op_keys(m), op_keys(o), "ops")?;
                    same(m.per_bucket.keys().cloned().collect(), o.per_bucket.keys().cloned().collect(), "buckets")?;
                    same(m.per_context.keys().cloned().collect(), o.per_context.keys().cloned().collect(), "contexts")?;
                    same(m.per_mode.keys().cloned().collect(), o.per_mode.keys().cloned().collect(), "modes")?;
                }
                Ok(ModelSummary {
                    model: m.model.clone(),
                    source: m.source.clone(),
                    overall: cells(&|r: &EvalReport| Some(&r.models[mi].overall), "overall")?,
                    per_op: m
                        .per_op
                        .keys()
                        .map(|&op| {
                            let c = cells(&|r: &EvalReport| r.models[mi].per_op.get(&op), &format!("op {op}"))?;
                            Ok((op, c))
                        })
                        .collect::<anyhow::Result<_>>()?,
                    per_bucket: keyed("bucket", m.per_bucket.keys().cloned().collect())?,
                    per_context: keyed("context", m.per_context.keys().cloned().collect())?,
                    per_mode: keyed("mode", m.per_mode.keys().cloned().collect())?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(StageSummary {
            stage: stage.into(),
            runs: reports.len(),
            eval_set: a.eval_set.clone(),
            settings: a.settings.clone(),
            ks: a.ks.clone(),
            buckets: a.buckets.clone(),
            models,
        })
    }

    /// The greatest k.
    pub fn max_k(&self) -> usize {
        self.ks.last().copied().unwrap_or(1)
    }
}

fn op_keys(m: &crate::eval::ModelReport) -> Vec<String> {
    m.per_op.keys().map(|k| k.to_string()).collect()
}

fn lookup<'r>(r: &'r EvalReport, mi: usize, what: &str, key: &str) -> Option<&'r Cell> {
    let m = &r.models[mi];
    match what {
        "bucket" => m.per_bucket.get(key),
        "context" => m.per_context.get(key),
        "mode" => m.per_mode.get(key),
        _ => None,
    }
}

fn stat_cell(cells: &[&Cell]) -> anyhow::Result<StatCell> {
    let c0 = cells[0];
    for c in cells {
        ensure!(
            c.problems == c0.problems,
            "{} problems in one run, {} in another",
            c0.problems,
            c.problems
        );
    }
    let stat = |f: &dyn Fn(&Cell) -> f64| Stat::of(cells.iter().map(|c| f(c)).collect());
    let list = |f: &dyn Fn(&Cell) -> &Vec<f64>| {
        (0..f(c0).len())
            .map(|j| Stat::of(cells.iter().map(|c| f(c)[j]).collect()))
            .collect()
    };
    let greedy = if cells.iter().all(|c| c.greedy.is_some()) {
        let g = |f: &dyn Fn(&Greedy) -> f64| {
            Stat::of(
                cells
                    .iter()
                    .map(|c| f(c.greedy.as_ref().expect("checked")))
                    .collect(),
            )
        };
        Some(StatGreedy {
            verified_pass1: g(&|g| g.verified_pass1),
            answer_pass1: g(&|g| g.answer_pass1),
            strict_pass1: g(&|g| g.strict_pass1),
            process_mean: g(&|g| g.process_mean),
            hacking_rate: g(&|g| g.hacking_rate),
            finished: g(&|g| g.finished),
        })
    } else {
        None
    };
    Ok(StatCell {
        problems: c0.problems,
        verified_pass: list(&|c| &c.verified_pass),
        answer_pass: list(&|c| &c.answer_pass),
        strict_pass1: stat(&|c| c.strict_pass1),
        process_mean: stat(&|c| c.process_mean),
        hacking_rate: stat(&|c| c.hacking_rate),
        finished: stat(&|c| c.finished),
        greedy,
    })
}

/// `eval.jsonl, 540 problems, sha256 0123abcd…`.
pub fn describe_set(s: &EvalSet) -> String {
    format!(
        "dataset `{}` ({}), {} problems, sha256 {}",
        s.dataset, s.file, s.problems, s.sha256
    )
}

fn describe_buckets(b: &[Bucket]) -> String {
    b.iter()
        .map(|b| format!("{} {}-{}", b.name, b.ops[0], b.ops[1]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The settings that differ, as `key = value` pairs for each side.
fn settings_diff(a: &Settings, b: &Settings) -> Vec<(String, String)> {
    let (Ok(serde_json::Value::Object(x)), Ok(serde_json::Value::Object(y))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return vec![];
    };
    x.iter()
        .filter(|(k, v)| y.get(*k) != Some(*v))
        .map(|(k, v)| {
            (
                format!("{k} = {v}"),
                format!("{k} = {}", y.get(k).cloned().unwrap_or_default()),
            )
        })
        .collect()
}

impl Summary {
    /// A summary of the given stages, each already aggregated.
    pub fn new(runs: Vec<RunInfo>, stages: Vec<StageSummary>) -> Summary {
        Summary {
            format: SUMMARY_FORMAT.into(),
            version: SUMMARY_VERSION,
            runs,
            stages,
        }
    }

    /// The summary of a single eval report (what the eval stage draws its own tables and plots from).
    pub fn of_one(stage: &str, report: &EvalReport) -> Summary {
        let s = StageSummary::aggregate(
            stage,
            &[RunReport {
                origin: stage.into(),
                report,
            }],
        )
        .expect("one report always aggregates");
        Summary::new(vec![], vec![s])
    }
}
