//! `reward-outcome`: Outcome reward R_out: 1 when the extracted answer equals the gold answer (one documented extractor), else 0; the weights can mix in the process score.
//!
//! Both reward plugins run the same verifier (`task::verify`) and differ only in their default weights
//! (`reward-outcome`: a = 1, s = 0; `reward-process`: a = 0.2, s = 0.8). Each sample's `reference` must hold
//! the gold solution as `{"solution": "..."}` (or be that string); samples without one score `None`.

use schemars::JsonSchema;
use serde::Deserialize;
use stage_api::{RewardFn, RewardSample};
use task::reward::{RewardPluginConfig, RewardScorer, ScoreValue};

/// Config (every field optional).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// a: weight of the outcome reward R_out.
    #[serde(default = "answer_weight")]
    pub answer_weight: f64,
    /// s: weight of the process reward R_pv; the reward is R_out * (a' + (1 - a') R_pv) with a' = a / (a + s).
    #[serde(default = "step_weight")]
    pub step_weight: f64,
    /// Reward 0 unless the answer is right and the process has no penalty at all (extra steps included).
    #[serde(default)]
    pub strict: bool,
    /// Check the displayed arithmetic of every step (false = the paper's parser, final values only).
    #[serde(default = "yes")]
    pub check_arithmetic: bool,
    /// Arithmetic modulo this (iGSM-style data).
    #[serde(default)]
    pub modulus: Option<i64>,
    /// What to return: `reward` (the default), or a verdict to watch during RL: `verified` (1 if
    /// VerifiedCorrect), `process` (R_pv) or `outcome` (R_out).
    #[serde(default)]
    pub value: ScoreValue,
}

fn answer_weight() -> f64 {
    RewardPluginConfig::OUTCOME.answer_weight
}
fn step_weight() -> f64 {
    RewardPluginConfig::OUTCOME.step_weight
}
fn yes() -> bool {
    true
}

/// The reward.
pub struct OutcomeReward(RewardScorer, ScoreValue);

impl RewardFn for OutcomeReward {
    type Config = Config;
    const DESCRIPTION: &'static str = "Outcome reward R_out: 1 when the extracted answer equals the gold answer (one documented extractor), else 0; the weights can mix in the process score.";

    fn new(c: Config) -> anyhow::Result<Self> {
        let cfg = RewardPluginConfig {
            answer_weight: c.answer_weight,
            step_weight: c.step_weight,
            strict: c.strict,
            check_arithmetic: c.check_arithmetic,
            modulus: c.modulus,
        };
        cfg.reward().validate()?;
        Ok(OutcomeReward(RewardScorer::new(cfg), c.value))
    }

    fn score(&self, batch: &[RewardSample]) -> Vec<Option<f32>> {
        let pairs: Vec<(&str, &str)> = batch
            .iter()
            .map(|s| {
                let gold = s
                    .reference
                    .get("solution")
                    .and_then(|v| v.as_str())
                    .or_else(|| s.reference.as_str())
                    .unwrap_or("");
                (s.completion.as_str(), gold)
            })
            .collect();
        self.0
            .score(&pairs)
            .into_iter()
            .map(|r| r.map(|r| r.value(self.1) as f32))
            .collect()
    }
}

stage_api::export_reward!(OutcomeReward);
