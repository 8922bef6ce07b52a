//! `datagen`: builds the named datasets of its config with the `task` library and writes them into its `data`
//! output: `<name>.jsonl` (paper field names plus `seed` and `gold`), `<name>.stats.json`, and `datasets.json`
//! listing them. Evaluation sets are built first; no training set contains any of their problems.
//!
//! ```toml
//! [stages.data]
//! plugin = "datagen"
//! config = { preset = "cpu", eval = [{ name = "eval", seed = 1, ops = [2, 3, 4], contexts = ["crazy_zootopia"],
//!            modes = ["normalforward"], per_cell = 100 }],
//!            train = [{ name = "pretrain", seed = 2, ops = { "2" = 1.0, "3" = 1.0 }, contexts = { crazy_zootopia = 1.0 },
//!                       modes = { normalforward = 1.0 }, budget = { tokens = 5000000 } }] }
//! ```
//! The run seed is added to every dataset's `seed` (a run seed of 0 keeps the config's seeds).

use stage_api::{ArtifactKind, RunContext, Stage, StageInfo, StageKind};
use task::dataset::{DatagenSpec, build_all};

/// The stage.
pub struct Datagen;

impl Stage for Datagen {
    type Config = DatagenSpec;

    fn info() -> StageInfo {
        StageInfo::new(
            StageKind::DataGenerator,
            "GSM-Infinite-style DAG word problems with exact op(G): evaluation sets per op/context/mode and training \
             sets (pre-training, mid-training, RL prompts) with per-op, context and mode mixtures; stats.json per set.",
        )
        .output("data", ArtifactKind::Dataset, "<name>.jsonl and <name>.stats.json per dataset, datasets.json")
    }

    fn run(mut config: DatagenSpec, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        let seed = ctx.seed();
        for e in &mut config.eval {
            e.seed = e.seed.wrapping_add(seed);
        }
        for c in &mut config.train {
            c.seed = c.seed.wrapping_add(seed);
        }
        let dir = ctx.output("data")?.to_path_buf();
        ctx.check_stop()?;
        let stats = build_all(&config, &dir, |done, total| {
            ctx.progress(done, total);
            ctx.check_stop()
        })?;
        for s in &stats {
            ctx.log(format!(
                "{}: {} records, ~{} tokens, {} dropped as eval overlap, {} as duplicates",
                s.name, s.records, s.tokens, s.removed_eval_overlap, s.removed_duplicates
            ));
        }
        Ok(())
    }
}

stage_api::export_stage!(Datagen);
