//! Evaluation reports, without a model: the numbers an `eval` stage computes from its verifier's
//! verdicts, the `report.json` format it writes, and the reports built from it, for one run or
//! several runs of a pipeline (seeds): `report.json`, `report.md` and plots (SVG and PNG).
//!
//! * [`eval`]: pass@k (unbiased estimator or first-k), per op / bucket / context / mode, greedy pass@1,
//!   process accuracy, the reward-hacking rate; [`EvalReport`] is an eval stage's `report.json`
//!   (`"format": "interplay/eval-report"`, version 2).
//! * [`summary`]: one stage over several runs: every number as mean, sample standard deviation and the
//!   per-run values ([`Summary`], `"format": "interplay/eval-summary"`), refusing runs that did not
//!   evaluate the same thing.
//! * [`runs`]: finished run directories (`stages/<stage>/DONE`, `out/report/report.json`).
//! * [`write_report`]: `report.json`, `report.md`, `plots/<stage>/*.{svg,png}`.
//!
//! The eval plugin builds its report with this crate, and `interplay report` rebuilds reports from run
//! directories with it; it never links burn or the plugin interface.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub mod eval;
pub mod markdown;
pub mod plot;
pub mod runs;
pub mod summary;

pub use eval::{
    Bucket, Cell, Estimator, EvalReport, EvalSet, Greedy, ModelReport, ProblemKey, Settings,
    Verdict,
};
pub use summary::{StageSummary, Stat, Summary};

/// Writes `report.md` and `plots/<stage>/*.{svg,png}` for `summary` into `out` (created if needed), and
/// `report.json` (the summary itself) when `json`. Returns the files written.
pub fn write_report(out: &Path, summary: &Summary, json: bool) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    if json {
        let p = out.join("report.json");
        std::fs::write(&p, serde_json::to_string_pretty(summary)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
    }
    let mut plots = Vec::new();
    for st in &summary.stages {
        plots.extend(plot::write_stage(out, st)?);
    }
    let p = out.join("report.md");
    std::fs::write(&p, markdown::render(summary, &plots))
        .with_context(|| format!("writing {}", p.display()))?;
    written.push(p);
    for pl in &plots {
        written.push(out.join(&pl.svg));
        written.push(out.join(&pl.png));
    }
    Ok(written)
}
