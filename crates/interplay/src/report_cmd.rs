//! `interplay report [--out DIR] [--stage NAME]... RUN_DIR...`: reports rebuilt from finished runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

pub fn run(runs: &[PathBuf], out: Option<PathBuf>, stages: &[String]) -> anyhow::Result<ExitCode> {
    let out = match (out, runs) {
        (Some(out), _) => out,
        (None, [one]) => one.join("report"),
        (None, _) => bail!(
            "{} run directories: say where their combined report goes with --out DIR (e.g. --out {})",
            runs.len(),
            runs[0]
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("report")
                .display()
        ),
    };
    // A finished stage's outputs are checked against DONE on every run: never write among them.
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    for r in runs {
        if abs(&out).starts_with(abs(&r.join("stages"))) {
            bail!(
                "--out {} lies inside {}: the runner checks every file there against DONE; choose another directory",
                out.display(),
                r.join("stages").display()
            );
        }
    }
    let (summary, notes) = report::runs::summarize(runs, stages)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    // Plots of an earlier report here would linger beside the new ones: drop them, but only when the
    // directory holds a report of ours.
    let old = out.join("report.json");
    if let Ok(text) = std::fs::read_to_string(&old)
        && serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|v| v["format"] == report::summary::SUMMARY_FORMAT)
        && out.join("plots").is_dir()
    {
        std::fs::remove_dir_all(out.join("plots"))
            .with_context(|| format!("removing {}", out.join("plots").display()))?;
    }
    let files = report::write_report(&out, &summary, true)?;
    let n = summary.stages.first().map_or(0, |s| s.runs);
    let stages: Vec<&str> = summary.stages.iter().map(|s| s.stage.as_str()).collect();
    println!(
        "report of {} ({}) over {n} run{} → {} ({} files: report.json, report.md, plots/)",
        if stages.len() == 1 {
            "eval stage"
        } else {
            "eval stages"
        },
        stages.join(", "),
        if n == 1 { "" } else { "s" },
        out.display(),
        files.len()
    );
    println!("  {}", out.join("report.md").display());
    Ok(ExitCode::SUCCESS)
}
