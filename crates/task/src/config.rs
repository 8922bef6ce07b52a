//! Generator configuration and the two presets.
//!
//! `TaskConfig::paper()` is the paper's driver (`generate_zero_context_medium.py`): `number_range = 5`, no modulus,
//! `ip_max = 20`, `force = true`, d = 2, random variable letters, the op -> op_max tier schedule, the (0, 1000] value
//! filter, every instance parameter of the structure graph mentioned in the problem.
//! `TaskConfig::cpu()` keeps every mechanic (op(G), contexts, modes, solution grammar, verification) but shrinks the
//! problems so that a ~3M-parameter model can learn something in 15 CPU minutes (see `shared/docs/learnability.md`).

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

/// Forward solution (`normalforward`) or equation solution (`forwardreverse`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Mode {
    #[serde(rename = "normalforward")]
    Forward,
    #[serde(rename = "forwardreverse")]
    Reverse,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Forward, Mode::Reverse];
    pub fn id(self) -> &'static str {
        match self {
            Mode::Forward => "normalforward",
            Mode::Reverse => "forwardreverse",
        }
    }
    /// Accepts the paper's ids and `forward` / `reverse`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "normalforward" | "forward" => Some(Mode::Forward),
            "forwardreverse" | "reverse" => Some(Mode::Reverse),
            _ => None,
        }
    }
}

/// How solution variables are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Letters {
    /// Drawn uniformly without replacement from A-Z, a-z (the paper).
    Random,
    /// A, B, C, ... in order of first appearance (a departure from the paper; removes pure-entropy tokens).
    Sequential,
}

/// The order of the solution's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SolutionOrder {
    /// The generator's own topological order, drawn at random (the paper).
    Generator,
    /// Of the steps whose inputs are known, the one whose sentence comes first in the problem; a total right
    /// after its parts; the query last (a departure from the paper: where the paper's order is a free choice
    /// among independent steps, it is pure entropy, like random letters).
    Problem,
}

/// Where the question stands in the prompt.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum QuestionPosition {
    /// After the problem (the paper).
    #[default]
    Last,
    /// Before the problem (a departure from the paper: a causal model then reads every fact knowing what is
    /// asked; the problem, solution and verification are unchanged).
    First,
}

impl QuestionPosition {
    pub fn is_last(&self) -> bool {
        *self == QuestionPosition::Last
    }
}

/// Every knob of the generator. All fields are plain data so a pipeline file can override any of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Constants: "plus c" and leaves use 1..=number_range-1, "times c" uses 2..=number_range-1 (paper: 5).
    pub number_range: i64,
    /// Arithmetic modulo this (iGSM used 23); `None` = plain integers (the paper). Forward mode only.
    pub modulus: Option<i64>,
    /// Maximum number of instance parameters (structure-graph edges) (paper: 20).
    pub ip_max: usize,
    /// Layer widths t0, t1 are drawn from 1..=max_width with the iGSM softmax (paper: 5; at most 5).
    pub max_width: usize,
    /// Reject any solution-path value above this (paper: 1000). Values must also be > 0 (totals may be 0).
    pub max_value: i64,
    /// Cap on distractor (not-on-the-solution-path) instance parameters; `None` = all of the structure graph
    /// (the paper).
    pub max_distractors: Option<usize>,
    /// Variable naming.
    pub letters: Letters,
    /// The order of the solution's steps.
    pub solution_order: SolutionOrder,
    /// Where the question stands in prompts and training texts; every record carries it.
    pub question_position: QuestionPosition,
    /// Probability of depth d=3 ("hard": a third layer of "average number of X per Y" parameters) (paper: 0).
    pub d3_probability: f64,
    /// `strictline` per requested op (index = op; 0 = op not allowed). The generator uses
    /// `op_max = (strictline + 1) / 2` and rejects samples with op > strictline.
    pub strictline: Vec<u32>,
    /// Rejection-sampling attempts before giving up on one problem.
    pub max_attempts: u32,
}

/// The paper driver's op -> op_max tier: 30->{19,20}; 25->{16,17,18}; 20->{12..15}; 15->{10,11}; 10->{7,8,9};
/// 6->{5,6}; 4->{4}; 3->{3}; 3->{2}.
pub fn paper_strictline() -> Vec<u32> {
    (0..=20u32)
        .map(|op| match op {
            0 | 1 => 0,
            2 | 3 => 3,
            4 => 4,
            5 | 6 => 6,
            7..=9 => 10,
            10 | 11 => 15,
            12..=15 => 20,
            16..=18 => 25,
            _ => 30,
        })
        .collect()
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig::paper()
    }
}

impl TaskConfig {
    /// Exactly the paper's settings.
    pub fn paper() -> TaskConfig {
        TaskConfig {
            number_range: 5,
            modulus: None,
            ip_max: 20,
            max_width: 5,
            max_value: 1000,
            max_distractors: None,
            letters: Letters::Random,
            solution_order: SolutionOrder::Generator,
            question_position: QuestionPosition::Last,
            d3_probability: 0.0,
            strictline: paper_strictline(),
            max_attempts: 200_000,
        }
    }

    /// CPU scale: at most 3 entities / types per layer, at most 4 distractor sentences, constants 1..=4,
    /// sequential letters, solution steps in the problem's order, the question before the problem. Same op
    /// schedule, contexts, modes, graphs and grammar as the paper; letters and order remove tokens that are
    /// pure entropy (crates/lm/README.md: verified accuracy at op 2-4 rose ~5 points with the problem order),
    /// and the question first lets a small causal model read each fact knowing what is asked (the
    /// learnability recipe's largest gain, crates/lm/README.md).
    pub fn cpu() -> TaskConfig {
        TaskConfig {
            max_width: 3,
            max_distractors: Some(4),
            letters: Letters::Sequential,
            solution_order: SolutionOrder::Problem,
            question_position: QuestionPosition::First,
            ..TaskConfig::paper()
        }
    }

    /// A preset by name: `paper` or `cpu`.
    pub fn preset(name: &str) -> anyhow::Result<TaskConfig> {
        match name {
            "paper" => Ok(TaskConfig::paper()),
            "cpu" => Ok(TaskConfig::cpu()),
            other => bail!("unknown task preset `{other}` (expected `paper` or `cpu`)"),
        }
    }

    /// Whether problems of this op can be requested.
    pub fn supports_op(&self, op: u32) -> bool {
        self.strictline.get(op as usize).is_some_and(|s| *s >= op)
    }

    /// Checks the invariants the generator relies on; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.number_range >= 3,
            "task config: `number_range` must be >= 3 (constants 2..=number_range-1), got {}",
            self.number_range
        );
        if let Some(m) = self.modulus {
            ensure!(m >= 2, "task config: `modulus` must be >= 2, got {m}");
        }
        ensure!(
            (1..=25).contains(&self.ip_max),
            "task config: `ip_max` must be in 1..=25, got {}",
            self.ip_max
        );
        ensure!(
            (1..=5).contains(&self.max_width),
            "task config: `max_width` must be in 1..=5, got {}",
            self.max_width
        );
        ensure!(
            self.max_value >= 1,
            "task config: `max_value` must be >= 1, got {}",
            self.max_value
        );
        ensure!(
            (0.0..=1.0).contains(&self.d3_probability),
            "task config: `d3_probability` must be in [0, 1], got {}",
            self.d3_probability
        );
        ensure!(
            self.max_attempts >= 1,
            "task config: `max_attempts` must be >= 1"
        );
        for (op, s) in self.strictline.iter().enumerate() {
            ensure!(
                *s == 0 || *s as usize >= op,
                "task config: `strictline[{op}]` = {s} is below the op it serves"
            );
        }
        Ok(())
    }
}

impl TaskConfig {
    /// A preset with some fields replaced: `overrides` is a JSON object of [`TaskConfig`] fields
    /// (`{"max_width": 2, "letters": "sequential"}`). Unknown fields are errors naming the field.
    pub fn preset_with(
        preset: &str,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<TaskConfig> {
        let base = TaskConfig::preset(preset)?;
        if overrides.is_empty() {
            return Ok(base);
        }
        let base_v = serde_json::to_value(&base)?;
        let mut v = base_v.clone();
        let obj = v
            .as_object_mut()
            .expect("TaskConfig serializes to an object");
        for (k, val) in overrides {
            anyhow::ensure!(
                obj.contains_key(k),
                "task config: unknown field `{k}` (known: {})",
                obj.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            // Each override alone on the preset, so that a bad value is reported with its field's name.
            let mut one = base_v.clone();
            one[k.as_str()] = val.clone();
            serde_json::from_value::<TaskConfig>(one)
                .map_err(|e| anyhow::anyhow!("task config: field `{k}`: {e}"))?;
            obj.insert(k.clone(), val.clone());
        }
        let cfg: TaskConfig =
            serde_json::from_value(v).map_err(|e| anyhow::anyhow!("task config overrides: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }
}
