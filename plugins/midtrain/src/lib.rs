//! `midtrain`: continued pre-training of a model on a corpus concentrated on the RL target range
//! (spec §5: 20 % op 2-10 + 80 % op 11-14 in the paper), with a fresh optimizer and its own schedule.
//!
//! ```toml
//! [stages.midtrain]
//! plugin = "midtrain"
//! inputs = { model = "pretrain.model", data = "data.data" }
//! config = { dataset = "midtrain", train = { token_budget = 1000000, lr = 1e-3 } }
//! ```
//! `training.json` in the output carries this stage's tokens and the running total (`total_tokens_seen`),
//! the compute that RL is matched against. The recipe lives in the `train-stage` crate.

use stage_api::{RunContext, Stage, StageInfo};
use train_stage::MidtrainConfig;

/// The stage.
pub struct Midtrain;

impl Stage for Midtrain {
    type Config = MidtrainConfig;

    fn info() -> StageInfo {
        train_stage::midtrain_info()
    }

    fn run(config: MidtrainConfig, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        train_stage::midtrain(config, ctx)
    }
}

stage_api::export_stage!(Midtrain);
