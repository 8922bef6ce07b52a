//! Datasets: pre-/mid-training corpora, RL prompt sets and evaluation sets as JSONL records with the paper's
//! field names, `stats.json` per dataset, and no evaluation problem in any training set.
//!
//! Determinism: record `i` of a dataset is a pure function of `(config, spec, seed, i)`. Generation runs in
//! parallel chunks (rayon); the filtering (dedup, budget) runs sequentially in index order, so the bytes do not
//! depend on the thread count.

use crate::config::{Mode, QuestionPosition, TaskConfig};
use crate::context::Context;
use crate::generate::{Gold, ProblemSpec, generate};
use crate::rng::Rng;
use crate::text;
use anyhow::{Context as _, bail, ensure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// One JSONL record. The first nine fields are the paper's (`length` = approximate tokens of the training text);
/// `seed`, `gold` and `question_position` are ours (`gold` is absent for records read from the paper's files;
/// `question_position` is written only when the question comes first, so paper-order records keep the paper's
/// fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub problem: String,
    pub question: String,
    pub solution: String,
    pub op: u32,
    pub id: u64,
    pub template: Context,
    pub mode: Mode,
    pub length: u64,
    pub d: u8,
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<Gold>,
    /// Where the question stands in this record's prompt and training text (its task config's).
    #[serde(default, skip_serializing_if = "QuestionPosition::is_last")]
    pub question_position: QuestionPosition,
}

impl Record {
    /// The pre-/mid-training text, in this record's question position.
    pub fn training_text(&self) -> String {
        text::training_text_at(
            &self.problem,
            &self.question,
            &self.solution,
            self.question_position,
        )
    }
    /// The RL / evaluation prompt, in this record's question position.
    pub fn prompt(&self) -> String {
        text::prompt_at(&self.problem, &self.question, self.question_position)
    }
    /// Hash of the lower-cased, whitespace-squeezed problem + question: the dedup key.
    pub fn text_hash(&self) -> u64 {
        normalized_hash(&self.problem, &self.question)
    }
}

/// FNV-1a of the lower-cased, whitespace-squeezed `problem question`.
pub fn normalized_hash(problem: &str, question: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut space = false;
    let mut started = false;
    for s in [problem, " ", question] {
        for b in s.bytes() {
            if b.is_ascii_whitespace() {
                space = started;
                continue;
            }
            if space {
                h = (h ^ b' ' as u64).wrapping_mul(0x100_0000_01b3);
                space = false;
            }
            started = true;
            h = (h ^ b.to_ascii_lowercase() as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// Weighted choices, as `{"value": weight}` maps in config files. Weights need not sum to 1.
pub type Weights<K> = BTreeMap<K, f64>;

/// How large a training set is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// This many records.
    Records(u64),
    /// Records until the training texts hold about this many tokens ([`text::approx_tokens`]).
    Tokens(u64),
}

/// A sampled training set: pre-training corpus, mid-training corpus or RL prompt set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// Dataset name: the file stem of `<name>.jsonl` and `<name>.stats.json`.
    pub name: String,
    /// Seed of this dataset (the datagen stage adds the run seed).
    pub seed: u64,
    /// op -> probability.
    pub ops: Weights<u32>,
    /// context -> probability (keys are template ids).
    pub contexts: Weights<Context>,
    /// mode -> probability (`normalforward`, `forwardreverse`).
    pub modes: Weights<Mode>,
    /// Size: `{ records = N }` or `{ tokens = N }` (approximate word-level tokens of the training texts).
    pub budget: Budget,
    /// Keep each record's gold graph (`gold`); large pre-training corpora can drop it (the verifier re-reads
    /// graphs from `solution`).
    #[serde(default = "yes")]
    pub gold: bool,
}

fn yes() -> bool {
    true
}

/// Op weights helpers.
pub fn uniform_ops(ops: impl IntoIterator<Item = u32>) -> Weights<u32> {
    ops.into_iter().map(|o| (o, 1.0)).collect()
}

impl CorpusSpec {
    /// The paper's main pre-training mixture `id2-10_0.2easy_0.3medium_0.5hard` (op 3 taken as 0.06: the 0.86 in
    /// PRESET.json is a typo), all three contexts, both modes.
    pub fn paper_pretrain(seed: u64, budget: Budget) -> CorpusSpec {
        let p = [0.06, 0.06, 0.08, 0.1, 0.1, 0.1, 0.16, 0.16, 0.18];
        CorpusSpec {
            name: "pretrain".into(),
            seed,
            ops: (2..=10).zip(p).collect(),
            contexts: Context::ALL.iter().map(|c| (*c, 1.0)).collect(),
            modes: Mode::ALL.iter().map(|m| (*m, 1.0)).collect(),
            budget,
            gold: true,
        }
    }

    /// The paper's mid-training mixture `cpt0.2-uniform_0.8-11-14`: 20% op 2-10 uniform, 80% op 11-14.
    pub fn paper_midtrain(seed: u64, budget: Budget) -> CorpusSpec {
        let mut ops: Weights<u32> = (2..=10).map(|o| (o, 0.2 / 9.0)).collect();
        ops.extend((11..=14).map(|o| (o, 0.2)));
        CorpusSpec {
            name: "midtrain".into(),
            ops,
            ..CorpusSpec::paper_pretrain(seed, budget)
        }
    }

    /// RL prompts uniform over `ops`.
    pub fn rl_prompts(
        name: &str,
        seed: u64,
        ops: impl IntoIterator<Item = u32>,
        records: u64,
    ) -> CorpusSpec {
        CorpusSpec {
            name: name.into(),
            ops: uniform_ops(ops),
            ..CorpusSpec::paper_pretrain(seed, Budget::Records(records))
        }
    }

    pub fn validate(&self, cfg: &TaskConfig) -> anyhow::Result<()> {
        check_weights(&self.name, "ops", &self.ops)?;
        check_weights(&self.name, "contexts", &self.contexts)?;
        check_weights(&self.name, "modes", &self.modes)?;
        for op in self.ops.keys() {
            ensure!(
                cfg.supports_op(*op),
                "dataset `{}`: op {op} is outside the task config's op schedule",
                self.name
            );
        }
        if cfg.modulus.is_some() && self.modes.get(&Mode::Reverse).is_some_and(|w| *w > 0.0) {
            bail!(
                "dataset `{}`: reverse mode needs plain integers but the task config sets `modulus`",
                self.name
            );
        }
        Ok(())
    }
}

fn check_weights<K: std::fmt::Debug>(
    name: &str,
    field: &str,
    w: &Weights<K>,
) -> anyhow::Result<()> {
    ensure!(!w.is_empty(), "dataset `{name}`: `{field}` is empty");
    for (k, v) in w {
        ensure!(
            v.is_finite() && *v >= 0.0,
            "dataset `{name}`: `{field}` weight for {k:?} must be >= 0, got {v}"
        );
    }
    ensure!(
        w.values().sum::<f64>() > 0.0,
        "dataset `{name}`: `{field}` weights sum to 0"
    );
    Ok(())
}

fn sample<K: Copy>(rng: &mut Rng, w: &Weights<K>) -> K {
    let keys: Vec<K> = w.keys().copied().collect();
    let ws: Vec<f64> = w.values().copied().collect();
    keys[rng.weighted(&ws)]
}

/// An evaluation set: `per_cell` problems for every (op, context, mode).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Dataset name: the file stem of `<name>.jsonl` and `<name>.stats.json`.
    pub name: String,
    /// Seed of this dataset (the datagen stage adds the run seed).
    pub seed: u64,
    /// Ops, each a cell row.
    pub ops: Vec<u32>,
    /// Contexts (template ids).
    pub contexts: Vec<Context>,
    /// Modes (`normalforward`, `forwardreverse`).
    pub modes: Vec<Mode>,
    /// Problems per (op, context, mode) cell.
    pub per_cell: u64,
}

/// Counts and length distribution of a dataset (`stats.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub name: String,
    pub records: u64,
    pub per_op: BTreeMap<u32, u64>,
    pub per_context: BTreeMap<String, u64>,
    pub per_mode: BTreeMap<String, u64>,
    pub per_d: BTreeMap<u8, u64>,
    /// Generated problems dropped because their text is in an evaluation set.
    pub removed_eval_overlap: u64,
    /// Generated problems dropped because an earlier record has the same text.
    pub removed_duplicates: u64,
    /// Approximate tokens of the training texts.
    pub tokens: u64,
    pub length: LengthStats,
    /// Mean generator attempts per accepted problem (rejection sampling).
    pub mean_attempts: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// Records and their stats.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub records: Vec<Record>,
    pub stats: Stats,
}

/// Text hashes that no training set may contain (build it from the evaluation sets).
#[derive(Clone, Debug, Default)]
pub struct Exclusion {
    hashes: HashSet<u64>,
}

impl Exclusion {
    pub fn new() -> Exclusion {
        Exclusion::default()
    }
    pub fn add(&mut self, ds: &Dataset) {
        self.hashes.extend(ds.records.iter().map(Record::text_hash));
    }
    pub fn add_records(&mut self, records: &[Record]) {
        self.hashes.extend(records.iter().map(Record::text_hash));
    }
    pub fn contains(&self, h: u64) -> bool {
        self.hashes.contains(&h)
    }
    pub fn len(&self) -> usize {
        self.hashes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

const STREAM_PICK: u64 = 0x70_1c_4a;
const CHUNK: u64 = 2048;

fn make_record(
    cfg: &TaskConfig,
    spec: &ProblemSpec,
    seed: u64,
    index: u64,
) -> anyhow::Result<(Record, u32)> {
    let p = generate(cfg, spec, seed, index)?;
    let length =
        text::approx_tokens(&text::training_text(&p.problem, &p.question, &p.solution)) as u64;
    Ok((
        Record {
            problem: p.problem,
            question: p.question,
            solution: p.solution,
            op: p.op,
            id: index,
            template: p.context,
            mode: p.mode,
            length,
            d: p.d,
            seed,
            gold: Some(p.gold),
            question_position: cfg.question_position,
        },
        p.attempts,
    ))
}

/// Builds a training set: record `i` draws its (op, context, mode, d) from its own stream, then generates; records
/// whose text is excluded or already taken are dropped (and counted) until the budget is met.
pub fn build_corpus(
    cfg: &TaskConfig,
    spec: &CorpusSpec,
    exclude: &Exclusion,
) -> anyhow::Result<Dataset> {
    cfg.validate()?;
    spec.validate(cfg)?;
    let mut acc = Accumulator::new(&spec.name);
    let mut start = 0u64;
    let mut dropped_in_a_row = 0u64;
    loop {
        let chunk: Vec<anyhow::Result<(Record, u32)>> = (start..start + CHUNK)
            .into_par_iter()
            .map(|i| {
                let mut rng = Rng::new(spec.seed, STREAM_PICK, i);
                let ps = ProblemSpec {
                    op: sample(&mut rng, &spec.ops),
                    context: sample(&mut rng, &spec.contexts),
                    mode: sample(&mut rng, &spec.modes),
                    d: if rng.chance(cfg.d3_probability) { 3 } else { 2 },
                };
                make_record(cfg, &ps, spec.seed, i)
                    .with_context(|| format!("dataset `{}`, record {i}", spec.name))
            })
            .collect();
        start += CHUNK;
        for r in chunk {
            let (mut rec, attempts) = r?;
            if !spec.gold {
                rec.gold = None;
            }
            if acc.offer(rec, attempts, exclude) {
                dropped_in_a_row = 0;
            } else {
                dropped_in_a_row += 1;
                ensure!(
                    dropped_in_a_row < 100_000,
                    "dataset `{}`: 100000 generated problems in a row were duplicates or eval problems; the mixture \
                     cannot supply the budget",
                    spec.name
                );
            }
            let done = match spec.budget {
                Budget::Records(n) => acc.records.len() as u64 >= n,
                Budget::Tokens(t) => acc.tokens >= t,
            };
            if done {
                return Ok(acc.finish());
            }
        }
    }
}

/// Builds an evaluation set: `per_cell` distinct problems for every (op, context, mode), in that order.
pub fn build_eval_set(cfg: &TaskConfig, spec: &EvalSpec) -> anyhow::Result<Dataset> {
    build_eval_set_excluding(cfg, spec, &Exclusion::new())
}

/// [`build_eval_set`] without any problem of `exclude` (which changes no kept problem: an excluded one is
/// replaced by the cell's next).
pub fn build_eval_set_excluding(
    cfg: &TaskConfig,
    spec: &EvalSpec,
    exclude: &Exclusion,
) -> anyhow::Result<Dataset> {
    cfg.validate()?;
    ensure!(
        !spec.ops.is_empty() && !spec.contexts.is_empty() && !spec.modes.is_empty(),
        "eval set `{}`: ops, contexts and modes must be non-empty",
        spec.name
    );
    for op in &spec.ops {
        ensure!(
            cfg.supports_op(*op),
            "eval set `{}`: op {op} is outside the task config's op schedule",
            spec.name
        );
    }
    let mut acc = Accumulator::new(&spec.name);
    for &op in &spec.ops {
        for &context in &spec.contexts {
            for &mode in &spec.modes {
                // Each cell has its own seed so adding a cell never changes the others.
                let mut sm =
                    spec.seed ^ ((op as u64) << 32) ^ ((context as u64) << 16) ^ (mode as u64) << 8;
                let cell_seed = crate::rng::splitmix64(&mut sm);
                let d = 2;
                let ps = ProblemSpec {
                    op,
                    context,
                    mode,
                    d,
                };
                let mut kept = 0u64;
                let mut next = 0u64;
                while kept < spec.per_cell {
                    let want = (spec.per_cell - kept).max(16);
                    let batch: Vec<anyhow::Result<(Record, u32)>> = (next..next + want)
                        .into_par_iter()
                        .map(|i| make_record(cfg, &ps, cell_seed, i))
                        .collect();
                    next += want;
                    for r in batch {
                        let (rec, attempts) =
                            r.with_context(|| format!("eval set `{}`, op {op}", spec.name))?;
                        if kept < spec.per_cell && acc.offer(rec, attempts, exclude) {
                            kept += 1;
                        }
                    }
                    ensure!(
                        next < spec.per_cell * 50 + 1000,
                        "eval set `{}`: cannot find {} distinct problems for op {op} {context:?} {mode:?}",
                        spec.name,
                        spec.per_cell
                    );
                }
            }
        }
    }
    Ok(acc.finish())
}

struct Accumulator {
    name: String,
    records: Vec<Record>,
    seen: HashSet<u64>,
    stats: Stats,
    tokens: u64,
    attempts: u64,
}

impl Accumulator {
    fn new(name: &str) -> Accumulator {
        Accumulator {
            name: name.into(),
            records: Vec::new(),
            seen: HashSet::new(),
            stats: Stats::default(),
            tokens: 0,
            attempts: 0,
        }
    }

    fn offer(&mut self, mut rec: Record, attempts: u32, exclude: &Exclusion) -> bool {
        let h = rec.text_hash();
        if exclude.contains(h) {
            self.stats.removed_eval_overlap += 1;
            return false;
        }
        if !self.seen.insert(h) {
            self.stats.removed_duplicates += 1;
            return false;
        }
        rec.id = self.records.len() as u64;
        self.tokens += rec.length;
        self.attempts += attempts as u64;
        self.records.push(rec);
        true
    }

    fn finish(mut self) -> Dataset {
        let stats = stats_of(
            &self.name,
            &self.records,
            self.stats.removed_eval_overlap,
            self.stats.removed_duplicates,
        );
        self.stats = Stats {
            mean_attempts: if self.records.is_empty() {
                0.0
            } else {
                self.attempts as f64 / self.records.len() as f64
            },
            ..stats
        };
        Dataset {
            records: self.records,
            stats: self.stats,
        }
    }
}

/// Stats of any record list (also used for datasets read from files).
pub fn stats_of(
    name: &str,
    records: &[Record],
    removed_eval_overlap: u64,
    removed_duplicates: u64,
) -> Stats {
    let mut s = Stats {
        name: name.into(),
        records: records.len() as u64,
        removed_eval_overlap,
        removed_duplicates,
        ..Default::default()
    };
    let mut lens: Vec<u64> = Vec::with_capacity(records.len());
    for r in records {
        *s.per_op.entry(r.op).or_default() += 1;
        *s.per_context
            .entry(r.template.id().to_string())
            .or_default() += 1;
        *s.per_mode.entry(r.mode.id().to_string()).or_default() += 1;
        *s.per_d.entry(r.d).or_default() += 1;
        s.tokens += r.length;
        lens.push(r.length);
    }
    lens.sort_unstable();
    if !lens.is_empty() {
        let q = |f: f64| lens[((lens.len() - 1) as f64 * f).round() as usize];
        s.length = LengthStats {
            min: lens[0],
            mean: s.tokens as f64 / lens.len() as f64,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: *lens.last().unwrap(),
        };
    }
    s
}

impl Dataset {
    /// Writes `<dir>/<file_stem>.jsonl` and `<dir>/<file_stem>.stats.json`; returns the JSONL path.
    pub fn write(&self, dir: &Path, file_stem: &str) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{file_stem}.jsonl"));
        write_jsonl(&path, &self.records)?;
        let sp = dir.join(format!("{file_stem}.stats.json"));
        std::fs::write(&sp, serde_json::to_string_pretty(&self.stats)? + "\n")
            .with_context(|| format!("writing {}", sp.display()))?;
        Ok(path)
    }
}

/// One JSON object per line.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(f);
    for it in items {
        serde_json::to_writer(&mut w, it)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A record of the paper's released data: only `problem`, `question`, `solution` are required.
#[derive(Deserialize)]
struct PaperRecord {
    problem: String,
    question: String,
    solution: String,
    #[serde(default)]
    op: Option<u32>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    d: Option<u8>,
    #[serde(default)]
    question_position: Option<String>,
}

/// Reads JSONL with the paper's field names (`problem, question, solution, op, id, template, mode, length, d`) —
/// the paper's released data or our own files. Only `problem`, `question`, `solution` are required: a missing
/// `op` is read from the solution ([`crate::verify::solution_op`]), a missing `mode` from the solution's first
/// words, a missing `template` is `crazy_zootopia`, a missing `question_position` is `last` (the paper's order).
/// Unknown templates, modes and question positions are errors naming the line.
pub fn read_paper_jsonl(path: &Path) -> anyhow::Result<Vec<Record>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (ln, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {} line {}", path.display(), ln + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let pr: PaperRecord = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: expected a JSON object with string fields `problem`, `question`, `solution`", path.display(), ln + 1))?;
        let template = match pr.template.as_deref() {
            None => Context::Zoo,
            Some(t) => Context::parse(t).with_context(|| {
                format!("{} line {}: field `template` = {t:?}, expected crazy_zootopia, teachers_in_school or movie_festival_awards", path.display(), ln + 1)
            })?,
        };
        let mode = match pr.mode.as_deref() {
            None => {
                if pr.solution.contains("we use equations") {
                    Mode::Reverse
                } else {
                    Mode::Forward
                }
            }
            Some(m) => Mode::parse(m).with_context(|| {
                format!(
                    "{} line {}: field `mode` = {m:?}, expected normalforward or forwardreverse",
                    path.display(),
                    ln + 1
                )
            })?,
        };
        let question_position = match pr.question_position.as_deref() {
            None | Some("last") => QuestionPosition::Last,
            Some("first") => QuestionPosition::First,
            Some(q) => bail!(
                "{} line {}: field `question_position` = {q:?}, expected \"last\" or \"first\"",
                path.display(),
                ln + 1
            ),
        };
        let id = match pr.id {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(out.len() as u64),
            _ => out.len() as u64,
        };
        let length = text::approx_tokens(&text::training_text(
            &pr.problem,
            &pr.question,
            &pr.solution,
        )) as u64;
        let op = pr
            .op
            .or_else(|| crate::verify::solution_op(&pr.solution))
            .unwrap_or(0);
        out.push(Record {
            problem: pr.problem,
            question: pr.question,
            solution: pr.solution,
            op,
            id,
            template,
            mode,
            length,
            d: pr.d.unwrap_or(2),
            seed: 0,
            gold: None,
            question_position,
        });
    }
    Ok(out)
}

/// Everything the datagen stage builds: evaluation sets first (every training set excludes all of them), then
/// training sets (pre-/mid-training corpora, RL prompt sets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatagenSpec {
    /// Task preset: `paper` or `cpu`.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Overrides of single task-config fields, e.g. `{ max_width = 2, letters = "sequential" }`.
    #[serde(default)]
    pub task: serde_json::Map<String, serde_json::Value>,
    /// Evaluation sets (per op, context and mode).
    #[serde(default)]
    pub eval: Vec<EvalSpec>,
    /// Training sets.
    #[serde(default)]
    pub train: Vec<CorpusSpec>,
}

fn default_preset() -> String {
    "paper".into()
}

/// Builds every dataset of `spec` into `dir` (`<name>.jsonl`, `<name>.stats.json`, and `datasets.json` listing
/// them). `progress(done, total)` is called after each dataset; an error from it (e.g. a stop request) ends the
/// build. Dataset names must be unique file stems.
pub fn build_all(
    spec: &DatagenSpec,
    dir: &Path,
    progress: impl FnMut(u64, u64) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Stats>> {
    build_all_excluding(spec, dir, Exclusion::new(), progress)
}

/// [`build_all`] where no set, evaluation sets included, contains a problem of `exclude` (the datasets of
/// another datagen stage: RL prompts and their held-out problems generated apart from the pre-training data,
/// so that changing them never rebuilds what was trained on).
pub fn build_all_excluding(
    spec: &DatagenSpec,
    dir: &Path,
    mut exclude: Exclusion,
    mut progress: impl FnMut(u64, u64) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Stats>> {
    let cfg = TaskConfig::preset_with(&spec.preset, &spec.task)?;
    let mut names = HashSet::new();
    for n in spec
        .eval
        .iter()
        .map(|e| &e.name)
        .chain(spec.train.iter().map(|c| &c.name))
    {
        ensure!(
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "dataset name {n:?}: use letters, digits, `-` and `_` only (it becomes a file name)"
        );
        ensure!(names.insert(n.clone()), "dataset name `{n}` is used twice");
    }
    let total = (spec.eval.len() + spec.train.len()) as u64;
    let mut done = 0;
    let mut all = Vec::new();
    for e in &spec.eval {
        let ds = build_eval_set_excluding(&cfg, e, &exclude)?;
        exclude.add(&ds);
        ds.write(dir, &e.name)?;
        all.push(ds.stats);
        done += 1;
        progress(done, total)?;
    }
    for c in &spec.train {
        let ds = build_corpus(&cfg, c, &exclude)?;
        ds.write(dir, &c.name)?;
        all.push(ds.stats);
        done += 1;
        progress(done, total)?;
    }
    let index = serde_json::json!({ "task_config": cfg, "datasets": all.iter().map(|s| serde_json::json!({
        "name": s.name, "file": format!("{}.jsonl", s.name), "stats": format!("{}.stats.json", s.name), "records": s.records,
    })).collect::<Vec<_>>() });
    let ip = dir.join("datasets.json");
    std::fs::write(&ip, serde_json::to_string_pretty(&index)? + "\n")
        .with_context(|| format!("writing {}", ip.display()))?;
    Ok(all)
}

/// `per_op` distinct problems for each op, spread evenly over `contexts` and `modes` (problem `j` of an op gets
/// context `j % |contexts|` and mode `(j / |contexts|) % |modes|`), in op order. This is `interplay task gen`.
pub fn generate_per_op(
    cfg: &TaskConfig,
    ops: &[u32],
    per_op: u64,
    contexts: &[Context],
    modes: &[Mode],
    seed: u64,
) -> anyhow::Result<Dataset> {
    cfg.validate()?;
    ensure!(
        !contexts.is_empty() && !modes.is_empty(),
        "need at least one context and one mode"
    );
    let mut acc = Accumulator::new("problems");
    let none = Exclusion::new();
    for &op in ops {
        ensure!(
            cfg.supports_op(op),
            "op {op} is outside the task config's op schedule"
        );
        if cfg.modulus.is_some() {
            ensure!(
                !modes.contains(&Mode::Reverse),
                "reverse mode needs plain integers; the task config sets `modulus`"
            );
        }
        let mut sm = seed ^ ((op as u64) << 40);
        let op_seed = crate::rng::splitmix64(&mut sm);
        let spec_of = |j: u64| ProblemSpec {
            op,
            context: contexts[(j % contexts.len() as u64) as usize],
            mode: modes[((j / contexts.len() as u64) % modes.len() as u64) as usize],
            d: 2,
        };
        // Slot j has a fixed spec; a duplicate is replaced by the slot's next candidate (index j + per_op * t).
        let first: Vec<anyhow::Result<(Record, u32)>> = (0..per_op)
            .into_par_iter()
            .map(|j| make_record(cfg, &spec_of(j), op_seed, j))
            .collect();
        for (j, r) in first.into_iter().enumerate() {
            let j = j as u64;
            let (mut rec, mut attempts) = r.with_context(|| format!("op {op}"))?;
            let mut t = 0u64;
            while !acc.offer(rec, attempts, &none) {
                t += 1;
                ensure!(
                    t < 1000,
                    "cannot find {per_op} distinct problems for op {op}"
                );
                (rec, attempts) = make_record(cfg, &spec_of(j), op_seed, j + per_op * t)
                    .with_context(|| format!("op {op}"))?;
            }
        }
    }
    Ok(acc.finish())
}
