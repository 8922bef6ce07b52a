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
//!
//! With `inputs = { exclude = ["data.data"] }` no set of this stage contains a problem of any dataset in those
//! directories: RL prompts and their held-out problems can then live in a stage of their own, and changing
//! them rebuilds neither the pre-training corpus nor the model trained on it.

use anyhow::Context;
use stage_api::{ArtifactKind, RunContext, Stage, StageInfo, StageKind};
use task::dataset::{DatagenSpec, Exclusion, build_all_excluding, read_paper_jsonl};

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
        .input_many(
            "exclude",
            ArtifactKind::Dataset,
            "datasets (datagen outputs) whose problems no set of this stage may contain",
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
        let mut exclude = Exclusion::new();
        for input in ctx.inputs("exclude") {
            let index = input.path.join("datasets.json");
            let json: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&index).with_context(|| format!("reading {}", index.display()))?,
            )
            .with_context(|| format!("parsing {}", index.display()))?;
            let files = json["datasets"].as_array().with_context(|| {
                format!(
                    "{}: expected a `datasets` list (a datagen output)",
                    index.display()
                )
            })?;
            for f in files {
                let file = f["file"]
                    .as_str()
                    .with_context(|| format!("{}: a dataset without `file`", index.display()))?;
                exclude.add_records(&read_paper_jsonl(&input.path.join(file))?);
            }
        }
        if !exclude.is_empty() {
            ctx.log(format!(
                "excluding {} problems of the `exclude` inputs",
                exclude.len()
            ));
        }
        let dir = ctx.output("data")?.to_path_buf();
        ctx.check_stop()?;
        let stats = build_all_excluding(&config, &dir, exclude, |done, total| {
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
