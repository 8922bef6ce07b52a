//! Rewards over (completion, gold solution) pairs: what the `reward-outcome` and `reward-process` plugins wrap.
//! Both use the one verifier ([`crate::verify`]); they differ only in their default weights.

use crate::verify::{GoldGraph, RewardConfig, Score, Verifier, VerifyOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Config of a reward plugin (the `config` table of `rewards = [{ plugin = "reward-process", config = {...} }]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardPluginConfig {
    /// a: weight of the outcome reward R_out (answer exact match).
    pub answer_weight: f64,
    /// s: weight of the process reward R_pv. The reward is R_out * (a' + (1 - a') R_pv), a' = a / (a + s).
    pub step_weight: f64,
    /// Strict: reward 0 unless the answer is right and the process has no penalty at all (extra steps included).
    #[serde(default)]
    pub strict: bool,
    /// Check the displayed arithmetic of every step (false = the paper's parser, which reads final values only).
    #[serde(default = "yes")]
    pub check_arithmetic: bool,
    /// Arithmetic modulo this, for iGSM-style data.
    #[serde(default)]
    pub modulus: Option<i64>,
}

fn yes() -> bool {
    true
}

impl RewardPluginConfig {
    /// `reward-outcome`'s defaults: R_out only.
    pub const OUTCOME: RewardPluginConfig = RewardPluginConfig {
        answer_weight: 1.0,
        step_weight: 0.0,
        strict: false,
        check_arithmetic: true,
        modulus: None,
    };
    /// `reward-process`'s defaults: 0.2 R_out + 0.8 R_pv (the paper's best).
    pub const PROCESS: RewardPluginConfig = RewardPluginConfig {
        answer_weight: 0.2,
        step_weight: 0.8,
        strict: false,
        check_arithmetic: true,
        modulus: None,
    };

    /// Reads a plugin config: fields absent from `json` keep `defaults`; unknown fields are errors.
    pub fn from_json(
        json: &serde_json::Value,
        defaults: RewardPluginConfig,
    ) -> anyhow::Result<RewardPluginConfig> {
        let mut v = serde_json::to_value(defaults)?;
        match json {
            serde_json::Value::Null => {}
            serde_json::Value::Object(o) => {
                let base = v.as_object_mut().expect("an object");
                for (k, val) in o {
                    anyhow::ensure!(
                        base.contains_key(k),
                        "reward config: unknown field `{k}` (known: {})",
                        base.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                    base.insert(k.clone(), val.clone());
                }
            }
            other => anyhow::bail!("reward config: expected a table, got {other}"),
        }
        let cfg: RewardPluginConfig =
            serde_json::from_value(v).map_err(|e| anyhow::anyhow!("reward config: {e}"))?;
        cfg.reward().validate()?;
        Ok(cfg)
    }

    pub fn reward(&self) -> RewardConfig {
        RewardConfig {
            answer_weight: self.answer_weight,
            step_weight: self.step_weight,
            strict: self.strict,
        }
    }

    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            check_arithmetic: self.check_arithmetic,
            modulus: self.modulus,
        }
    }
}

/// Scores batches, parsing each distinct gold solution once (RL scores n rollouts per prompt).
pub struct RewardScorer {
    pub config: RewardPluginConfig,
    golds: Mutex<HashMap<u64, (String, Arc<GoldGraph>)>>,
}

/// What a reward plugin returns per sample: the reward itself, or one of the verdicts behind it (to watch
/// a quantity during RL without training on it, as a reward of weight 0).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ScoreValue {
    /// The configured reward.
    #[default]
    Reward,
    /// 1 if VerifiedCorrect (every gold step right, the answer right, extra correct steps allowed), else 0.
    Verified,
    /// R_pv, the process accuracy.
    Process,
    /// R_out, 1 if the answer is right.
    Outcome,
}

impl Scored {
    /// The number `value` selects.
    pub fn value(&self, value: ScoreValue) -> f64 {
        match value {
            ScoreValue::Reward => self.reward,
            ScoreValue::Verified => self.score.verified as u8 as f64,
            ScoreValue::Process => self.score.process,
            ScoreValue::Outcome => self.score.outcome as u8 as f64,
        }
    }
}

/// One scored completion: the verdict and the scalar reward.
#[derive(Clone, Debug)]
pub struct Scored {
    pub score: Score,
    pub reward: f64,
}

fn key(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^ (s.len() as u64).rotate_left(32)
}

impl RewardScorer {
    pub fn new(config: RewardPluginConfig) -> RewardScorer {
        RewardScorer {
            config,
            golds: Mutex::new(HashMap::new()),
        }
    }

    fn gold(&self, solution: &str) -> anyhow::Result<Arc<GoldGraph>> {
        let k = key(solution);
        if let Some((text, g)) = self
            .golds
            .lock()
            .unwrap()
            .get(&k)
            .filter(|(t, _)| t == solution)
        {
            debug_assert_eq!(text, solution);
            return Ok(g.clone());
        }
        let g = Arc::new(GoldGraph::from_solution(solution)?);
        let mut cache = self.golds.lock().unwrap();
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(k, (solution.to_string(), g.clone()));
        Ok(g)
    }

    /// Scores `(completion, gold solution)` pairs in parallel; `None` where the gold solution does not parse.
    pub fn score(&self, batch: &[(&str, &str)]) -> Vec<Option<Scored>> {
        let reward = self.config.reward();
        let opts = self.config.verify_options();
        batch
            .par_iter()
            .map_init(
                || Verifier::new(opts),
                |v, (completion, solution)| {
                    let gold = self.gold(solution).ok()?;
                    let score = v.score(&gold, completion);
                    let r = reward.reward(&score);
                    Some(Scored { score, reward: r })
                },
            )
            .collect()
    }
}
