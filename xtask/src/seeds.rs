//! `cargo xtask pipeline FILE --seeds 0,1,2`: the same pipeline once per seed, each in its own run
//! directory `PARENT/seed-<s>` with the override `pipeline.seed=<s>`, every earlier seed's directory
//! passed as `--share-from` (so that stages that do not depend on the seed run once), then
//! `interplay report --out PARENT/report PARENT/seed-<s>...` over all of them.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Parses the value of `--seeds`: a comma-separated list of distinct non-negative integers, in the order
/// they are to run.
pub fn parse_seeds(value: &str) -> anyhow::Result<Vec<u64>> {
    if value.trim().is_empty() {
        bail!("--seeds `{value}`: the list is empty; give seeds like `--seeds 0,1,2`");
    }
    let mut seeds = Vec::new();
    let mut seen = BTreeSet::new();
    for item in value.split(',') {
        let item = item.trim();
        let Ok(seed) = item.parse::<u64>() else {
            bail!(
                "--seeds `{value}`: `{item}` is not a seed (a non-negative integer); give seeds like `--seeds 0,1,2`"
            );
        };
        if !seen.insert(seed) {
            bail!("--seeds `{value}`: seed {seed} is listed twice");
        }
        seeds.push(seed);
    }
    Ok(seeds)
}

/// One seed's run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedRun {
    /// The pipeline seed.
    pub seed: u64,
    /// `PARENT/seed-<seed>`.
    pub run_dir: PathBuf,
    /// Run directories whose finished stages this run may share: those given on the command line,
    /// then every earlier seed's.
    pub share_from: Vec<PathBuf>,
}

impl SeedRun {
    /// The runner's arguments for this seed, after `run FILE` and the user's overrides and flags.
    pub fn runner_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            format!("pipeline.seed={}", self.seed).into(),
            "--run-dir".into(),
            self.run_dir.clone().into(),
        ];
        for d in &self.share_from {
            args.push("--share-from".into());
            args.push(d.clone().into());
        }
        args
    }
}

/// The whole loop: one run per seed, then the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedPlan {
    /// The directory holding `seed-<s>/` and `report/`.
    pub parent: PathBuf,
    /// In the order given.
    pub runs: Vec<SeedRun>,
}

impl SeedPlan {
    /// `share_from`: directories given with `--share-from`, offered to every seed before the earlier seeds.
    pub fn new(parent: &Path, seeds: &[u64], share_from: &[PathBuf]) -> SeedPlan {
        let mut runs: Vec<SeedRun> = Vec::new();
        for &seed in seeds {
            let mut from = share_from.to_vec();
            from.extend(runs.iter().map(|r| r.run_dir.clone()));
            runs.push(SeedRun {
                seed,
                run_dir: parent.join(format!("seed-{seed}")),
                share_from: from,
            });
        }
        SeedPlan {
            parent: parent.to_path_buf(),
            runs,
        }
    }

    /// Runs the seeds in order, each with `runner()` (`interplay run FILE` with the overrides and flags
    /// common to all seeds) plus [`SeedRun::runner_args`]. Stops at the first seed that fails or is
    /// stopped, naming it and its run directory.
    pub fn run(&self, mut runner: impl FnMut() -> Command) -> anyhow::Result<()> {
        for r in &self.runs {
            let mut c = runner();
            c.args(r.runner_args());
            let shown = std::iter::once(c.get_program())
                .chain(c.get_args())
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("$ {shown}");
            let status = c.status().with_context(|| format!("starting {shown}"))?;
            if !status.success() {
                let what = if status.code() == Some(130) {
                    "was stopped"
                } else {
                    "failed"
                };
                bail!(
                    "--seeds: seed {} {what} ({status}); its run directory is {}. Run the same command \
                     again to go on: finished seeds and stages are skipped",
                    r.seed,
                    r.run_dir.display()
                );
            }
        }
        Ok(())
    }

    /// `PARENT/report`.
    pub fn report_dir(&self) -> PathBuf {
        self.parent.join("report")
    }

    /// The runner's arguments that aggregate the seeds: `report --out PARENT/report PARENT/seed-<s>...`.
    pub fn report_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["report".into(), "--out".into(), self.report_dir().into()];
        args.extend(self.runs.iter().map(|r| r.run_dir.clone().into()));
        args
    }
}

/// Checks the overrides given next to `--seeds`: the seed is the loop's.
pub fn check_overrides(overrides: &[String]) -> anyhow::Result<()> {
    if let Some(o) = overrides.iter().find(|o| {
        o.split_once('=')
            .is_some_and(|(k, _)| k.trim().trim_start_matches('+') == "pipeline.seed")
    }) {
        bail!("`{o}` and --seeds both set the pipeline seed; --seeds sets it for each run");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn seeds_parse_in_order() {
        assert_eq!(parse_seeds("0,1,2").unwrap(), [0, 1, 2]);
        assert_eq!(parse_seeds(" 7 , 3").unwrap(), [7, 3]);
        assert_eq!(parse_seeds("5").unwrap(), [5]);
    }

    #[test]
    fn bad_seeds_name_the_flag_and_the_value() {
        let err = |v: &str| parse_seeds(v).unwrap_err().to_string();
        for (value, says) in [
            ("", "the list is empty"),
            (" ", "the list is empty"),
            ("0,x,2", "`x` is not a seed"),
            ("0,-1", "`-1` is not a seed"),
            ("1.5", "`1.5` is not a seed"),
            ("0,,2", "`` is not a seed"),
            ("0,1,0", "seed 0 is listed twice"),
        ] {
            let e = err(value);
            assert!(e.starts_with(&format!("--seeds `{value}`: ")), "{e}");
            assert!(e.contains(says), "{value}: {e}");
        }
    }

    #[test]
    fn each_seed_runs_in_its_own_directory_sharing_from_the_earlier_ones() {
        let plan = SeedPlan::new(
            Path::new("runs/rl"),
            &[3, 0, 1],
            &[PathBuf::from("runs/base")],
        );
        let dirs: Vec<&Path> = plan.runs.iter().map(|r| r.run_dir.as_path()).collect();
        assert_eq!(
            dirs,
            [
                Path::new("runs/rl/seed-3"),
                Path::new("runs/rl/seed-0"),
                Path::new("runs/rl/seed-1")
            ]
        );
        assert_eq!(
            strings(plan.runs[0].runner_args()),
            [
                "pipeline.seed=3",
                "--run-dir",
                "runs/rl/seed-3",
                "--share-from",
                "runs/base"
            ]
        );
        assert_eq!(
            strings(plan.runs[2].runner_args()),
            [
                "pipeline.seed=1",
                "--run-dir",
                "runs/rl/seed-1",
                "--share-from",
                "runs/base",
                "--share-from",
                "runs/rl/seed-3",
                "--share-from",
                "runs/rl/seed-0"
            ]
        );
        assert_eq!(plan.report_dir(), Path::new("runs/rl/report"));
        assert_eq!(
            strings(plan.report_args()),
            [
                "report",
                "--out",
                "runs/rl/report",
                "runs/rl/seed-3",
                "runs/rl/seed-0",
                "runs/rl/seed-1"
            ]
        );
    }

    #[test]
    fn a_pipeline_seed_override_conflicts_with_seeds() {
        assert!(check_overrides(&["stages.rl.seed=1".into(), "x.y=2".into()]).is_ok());
        let e = check_overrides(&["pipeline.seed=4".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`pipeline.seed=4`") && e.contains("--seeds"),
            "{e}"
        );
        assert!(check_overrides(&["+pipeline.seed=4".into()]).is_err());
    }
}
