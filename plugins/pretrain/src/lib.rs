//! `pretrain`: a Qwen2 trained from scratch on a `datagen` corpus (spec §4).
//!
//! ```toml
//! [stages.pretrain]
//! plugin = "pretrain"
//! inputs = { data = "data.data" }
//! config = { dataset = "pretrain", model = "bench-3m", tokenizer = "word",
//!            train = { token_budget = 5000000, lr = 2e-3, loss_on = "solution" } }
//! ```
//! The recipe itself lives in the `train-stage` crate, shared with `midtrain`.

use stage_api::{RunContext, Stage, StageInfo};
use train_stage::PretrainConfig;

/// The stage.
pub struct Pretrain;

impl Stage for Pretrain {
    type Config = PretrainConfig;

    fn info() -> StageInfo {
        train_stage::pretrain_info()
    }

    fn run(config: PretrainConfig, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        train_stage::pretrain(config, ctx)
    }
}

stage_api::export_stage!(Pretrain);
