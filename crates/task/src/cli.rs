//! The library side of `interplay task gen` and `interplay task score`: argument parsing, file formats and the
//! verdict columns. The runner adds only the command line and the reward-plugin call.

use crate::config::{Mode, QuestionPosition, TaskConfig};
use crate::context::Context;
use crate::dataset::{Stats, generate_per_op, write_jsonl};
use crate::verify::{GoldGraph, Score, Verifier, VerifyOptions};
use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Ops from `2..=20`, `2..21`, `2-20`, `2,3,5` or `7`.
pub fn parse_ops(s: &str) -> anyhow::Result<Vec<u32>> {
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .with_context(|| format!("--ops {s:?}: `{t}` is not a number"))
    };
    let ops: Vec<u32> = if let Some((a, b)) = s.split_once("..=") {
        (num(a)?..=num(b)?).collect()
    } else if let Some((a, b)) = s.split_once("..") {
        (num(a)?..num(b)?).collect()
    } else if let Some((a, b)) = s.split_once('-') {
        (num(a)?..=num(b)?).collect()
    } else {
        s.split(',').map(num).collect::<anyhow::Result<_>>()?
    };
    ensure!(!ops.is_empty(), "--ops {s:?} is empty");
    Ok(ops)
}

/// Contexts from `all` or a comma list of template ids / short names (`zoo,teacher`).
pub fn parse_contexts(s: &str) -> anyhow::Result<Vec<Context>> {
    if s == "all" {
        return Ok(Context::ALL.to_vec());
    }
    s.split(',')
        .map(|t| {
            Context::parse(t.trim()).with_context(|| {
                format!("unknown context `{t}` (zoo, teacher, movie or a template id)")
            })
        })
        .collect()
}

/// Modes from `both` or a comma list (`forward`, `reverse`, `normalforward`, `forwardreverse`).
pub fn parse_modes(s: &str) -> anyhow::Result<Vec<Mode>> {
    if s == "both" {
        return Ok(Mode::ALL.to_vec());
    }
    s.split(',')
        .map(|t| {
            Mode::parse(t.trim()).with_context(|| format!("unknown mode `{t}` (forward, reverse)"))
        })
        .collect()
}

/// `key=value` pairs into a JSON object; values are parsed as JSON when they can be (`3`, `true`, `"s"`,
/// `null`), else taken as strings.
pub fn parse_sets(sets: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s:?}: expected key=value"))?;
        let v =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        m.insert(k.trim().to_string(), v);
    }
    Ok(m)
}

/// `interplay task gen`.
#[derive(Clone, Debug)]
pub struct GenArgs {
    pub ops: Vec<u32>,
    pub per_op: u64,
    pub seed: u64,
    pub out: PathBuf,
    pub preset: String,
    pub contexts: Vec<Context>,
    pub modes: Vec<Mode>,
    /// Task-config field overrides.
    pub set: serde_json::Map<String, serde_json::Value>,
}

/// Writes `args.out` (JSONL, paper field names plus `seed` and `gold`) and `<out>.stats.json`.
pub fn generate_file(args: &GenArgs) -> anyhow::Result<Stats> {
    let cfg = TaskConfig::preset_with(&args.preset, &args.set)?;
    let ds = generate_per_op(
        &cfg,
        &args.ops,
        args.per_op,
        &args.contexts,
        &args.modes,
        args.seed,
    )?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_jsonl(&args.out, &ds.records)?;
    let sp = stats_path(&args.out);
    std::fs::write(&sp, serde_json::to_string_pretty(&ds.stats)? + "\n")
        .with_context(|| format!("writing {}", sp.display()))?;
    Ok(ds.stats)
}

fn stats_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".stats.json");
    PathBuf::from(s)
}

/// One input line of `interplay task score`. Other fields are carried to the output unchanged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompletionRecord {
    pub problem: String,
    pub question: String,
    /// The gold solution.
    pub solution: String,
    /// What the model wrote after the prompt.
    pub completion: String,
    /// Where the question stood in the prompt (`last`, the paper's order, when absent).
    #[serde(default, skip_serializing_if = "QuestionPosition::is_last")]
    pub question_position: QuestionPosition,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// Reads completion records, naming the file, line and missing field on error.
pub fn read_completions(path: &Path) -> anyhow::Result<Vec<CompletionRecord>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: CompletionRecord = serde_json::from_str(&line).with_context(|| {
            format!("{} line {}: expected a JSON object with string fields `problem`, `question`, `solution` (gold) and `completion`, and optionally `question_position` (\"last\" or \"first\")", path.display(), i + 1)
        })?;
        out.push(r);
    }
    Ok(out)
}

/// The verifier's verdicts on every record (parallel), or an error naming the record whose gold does not parse.
pub fn verdicts(records: &[CompletionRecord], opts: VerifyOptions) -> anyhow::Result<Vec<Score>> {
    use rayon::prelude::*;
    records
        .par_iter()
        .enumerate()
        .map_init(
            || Verifier::new(opts),
            |v, (i, r)| {
                let gold = GoldGraph::from_solution(&r.solution).with_context(|| {
                    format!("record {}: field `solution` (the gold solution)", i + 1)
                })?;
                Ok(v.score(&gold, &r.completion))
            },
        )
        .collect()
}

/// Writes the output of `interplay task score`: each input record plus `outcome` (R_out, 0 or 1), `process`
/// (R_pv), `strict`, `verified`, `reward` (the reward plugin's score; null where it does not apply), and the
/// verdict's detail under `verdict`.
pub fn write_scores(
    path: &Path,
    records: &[CompletionRecord],
    scores: &[Score],
    rewards: &[Option<f32>],
) -> anyhow::Result<()> {
    if records.len() != scores.len() || records.len() != rewards.len() {
        bail!(
            "{} records, {} verdicts, {} rewards",
            records.len(),
            scores.len(),
            rewards.len()
        );
    }
    let rows: Vec<serde_json::Value> = records
        .iter()
        .zip(scores)
        .zip(rewards)
        .map(|((r, s), w)| {
            let mut v = serde_json::to_value(r).expect("record serializes");
            let o = v.as_object_mut().expect("object");
            o.insert("outcome".into(), (s.outcome as u8).into());
            o.insert("process".into(), s.process.into());
            o.insert("strict".into(), s.strict.into());
            o.insert("verified".into(), s.verified.into());
            o.insert(
                "reward".into(),
                w.map_or(serde_json::Value::Null, |x| (x as f64).into()),
            );
            o.insert(
                "verdict".into(),
                serde_json::to_value(s).expect("score serializes"),
            );
            v
        })
        .collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_jsonl(path, &rows)
}

/// The reward-plugin reference of a record: what `reward-outcome` / `reward-process` read.
pub fn reward_reference(r: &CompletionRecord) -> serde_json::Value {
    serde_json::json!({ "solution": r.solution })
}
