//! Reading finished run directories (the layout of `crates/pipeline`'s `RunDir`):
//!
//! ```text
//! RUN_DIR/run.json                                   pipeline name, seed, each stage's plugin
//! RUN_DIR/stages/<stage>/DONE                        the stage finished
//! RUN_DIR/stages/<stage>/out/report/report.json      an eval stage's report
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

use crate::eval::{EvalReport, looks_like_eval_report};
use crate::summary::{RunInfo, RunReport, StageSummary, Summary};

/// One run directory's finished eval stages.
pub struct Run {
    /// The directory, as given.
    pub dir: PathBuf,
    /// What `run.json` says about it.
    pub info: RunInfo,
    /// Each eval stage: its name, the report's path, the report.
    pub stages: Vec<(String, PathBuf, EvalReport)>,
    /// Things worth saying that are not errors (an eval stage that has not finished, left out).
    pub notes: Vec<String>,
}

/// `RUN_DIR/stages/<stage>/out/report/report.json`.
pub fn report_path(dir: &Path, stage: &str) -> PathBuf {
    dir.join("stages")
        .join(stage)
        .join("out")
        .join("report")
        .join("report.json")
}

/// Reads the eval stages of the run in `dir`: the ones named in `only`, or else every finished stage whose
/// `out/report/report.json` is an eval report.
pub fn load_run(dir: &Path, only: &[String]) -> anyhow::Result<Run> {
    let stages_dir = dir.join("stages");
    ensure!(
        stages_dir.is_dir(),
        "{} is not a run directory: it has no stages/ (expected the run directory of `interplay run`, \
         e.g. runs/<pipeline>)",
        dir.display()
    );
    let run_json: Option<serde_json::Value> = std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let plugin_of = |stage: &str| -> Option<String> {
        run_json.as_ref()?["stages"][stage]["plugin"]
            .as_str()
            .map(str::to_owned)
    };
    let info = RunInfo {
        dir: dir.display().to_string(),
        pipeline: run_json
            .as_ref()
            .and_then(|v| v["pipeline"].as_str().map(str::to_owned)),
        seed: run_json.as_ref().and_then(|v| v["seed"].as_u64()),
    };
    let mut names: Vec<String> = std::fs::read_dir(&stages_dir)
        .with_context(|| format!("reading {}", stages_dir.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();

    let mut run = Run {
        dir: dir.to_path_buf(),
        info,
        stages: vec![],
        notes: vec![],
    };
    if !only.is_empty() {
        for stage in only {
            let sdir = stages_dir.join(stage);
            ensure!(
                sdir.is_dir(),
                "missing stage: {} has no stage `{stage}` (no {}); its stages: {}",
                dir.display(),
                sdir.display(),
                list(&names)
            );
            ensure!(
                sdir.join("DONE").is_file(),
                "stage `{stage}` of {} has not finished: no {} (run the pipeline to the end first)",
                dir.display(),
                sdir.join("DONE").display()
            );
            let path = report_path(dir, stage);
            ensure!(
                path.is_file(),
                "stage `{stage}` of {} is not an eval stage: no {}{}",
                dir.display(),
                path.display(),
                plugin_of(stage)
                    .map(|p| format!(" (its plugin is `{p}`)"))
                    .unwrap_or_default()
            );
            let report = EvalReport::read(&path)
                .with_context(|| format!("stage `{stage}` of {}", dir.display()))?;
            run.stages.push((stage.clone(), path, report));
        }
        return Ok(run);
    }

    let mut seen = Vec::new();
    for stage in &names {
        let sdir = stages_dir.join(stage);
        let path = report_path(dir, stage);
        let done = sdir.join("DONE").is_file();
        let text = std::fs::read_to_string(&path).ok();
        let is_eval = text.as_deref().is_some_and(looks_like_eval_report)
            || plugin_of(stage).as_deref() == Some("eval");
        if !done {
            if is_eval || sdir.join("out.partial").join("report").is_dir() {
                run.notes.push(format!(
                    "stage `{stage}` of {} has not finished (no DONE): left out",
                    dir.display()
                ));
            }
            seen.push(format!("{stage} (not finished: no DONE)"));
            continue;
        }
        match text {
            Some(t) if looks_like_eval_report(&t) => {
                let report =
                    EvalReport::parse(&t).with_context(|| format!("{}", path.display()))?;
                run.stages.push((stage.clone(), path, report));
            }
            _ if is_eval => bail!(
                "stage `{stage}` of {} ran the eval plugin but {} is missing or not an eval report",
                dir.display(),
                path.display()
            ),
            _ => seen.push(format!("{stage} (finished, not an evaluation)")),
        }
    }
    ensure!(
        !run.stages.is_empty(),
        "{} has no finished eval stage (a stage with DONE and out/report/report.json in the eval report \
         format); its stages: {}. Run the pipeline to the end, or name a stage with --stage",
        dir.display(),
        list(&seen)
    );
    Ok(run)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Reads every run and summarises each eval stage over them. Every run must hold the same eval stages
/// (those named in `only`, or else the ones found in the first run), and each stage the same evaluation.
/// Returns the summary and notes for the user.
pub fn summarize(dirs: &[PathBuf], only: &[String]) -> anyhow::Result<(Summary, Vec<String>)> {
    ensure!(!dirs.is_empty(), "no run directory given");
    let runs = dirs
        .iter()
        .map(|d| load_run(d, only))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = &runs[0];
    let stage_names: Vec<&String> = first.stages.iter().map(|(s, _, _)| s).collect();
    for r in &runs[1..] {
        let names: Vec<&String> = r.stages.iter().map(|(s, _, _)| s).collect();
        for s in &stage_names {
            ensure!(
                names.contains(s),
                "missing stage: eval stage `{s}` finished in {} but not in {} (its finished eval stages: {})",
                first.dir.display(),
                r.dir.display(),
                list(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            );
        }
        for s in &names {
            ensure!(
                stage_names.contains(s),
                "missing stage: eval stage `{s}` finished in {} but not in {}",
                r.dir.display(),
                first.dir.display()
            );
        }
    }
    let mut stages = Vec::new();
    for name in &stage_names {
        let reports: Vec<RunReport<'_>> = runs
            .iter()
            .map(|r| {
                let (_, path, report) = r
                    .stages
                    .iter()
                    .find(|(s, _, _)| s == *name)
                    .expect("checked above");
                RunReport {
                    origin: path.display().to_string(),
                    report,
                }
            })
            .collect();
        stages.push(StageSummary::aggregate(name, &reports)?);
    }
    let notes = runs.iter().flat_map(|r| r.notes.clone()).collect();
    Ok((
        Summary::new(runs.into_iter().map(|r| r.info).collect(), stages),
        notes,
    ))
}
