//! The runner. The binary is a one-line `main` over [`main`], so that tests can build an
//! identical binary of their own.
//!
//! ```text
//! interplay run pipelines/quickstart.toml stages.count.config.steps=50 --force count
//! interplay run p.toml pipeline.seed=1 --run-dir runs/p/seed-1 --share-from runs/p/seed-0
//! interplay check pipelines/quickstart.toml            # everything `run` checks first; runs nothing
//! interplay plan pipelines/quickstart.toml --json      # which plugins to build (used by xtask)
//! interplay plugins                                    # what is installed
//! interplay describe example                           # one plugin's manifest and schema
//! interplay schema --out schemas                       # JSON Schemas for editors
//! interplay score --reward fixture-reward batch.jsonl  # score RewardSample lines directly
//! interplay task gen --ops 2..=20 --per-op 100 --seed 7 --out problems.jsonl
//! interplay task score --reward reward-process --input completions.jsonl --out scores.jsonl
//! interplay report runs/rl                              # tables and plots of a run's eval stages
//! interplay report --out runs/rl/report runs/rl/seed-0 runs/rl/seed-1   # mean ± std over seeds
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pipeline::{ExecOptions, Observer, Pipeline, StageReport, StageStatus};
use stage_api::{Event, Level, RewardSample};

mod report_cmd;
mod task_cmd;

/// Ctrl-C presses; the executor forwards the first to the running stage and kills it on the second.
static STOP: AtomicUsize = AtomicUsize::new(0);

#[derive(Parser)]
#[command(
    name = "interplay",
    version,
    about = "Run pipelines of interplay stage plugins."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct PluginDirs {
    /// Extra directory to search for plugin libraries (repeatable); a directory holding a Cargo.toml
    /// (a plugin crate) stands for its build output target/<profile of this runner>. Searched after
    /// a pipeline's `[pipeline] plugin_path` and before $INTERPLAY_PLUGIN_PATH (colon-separated) and
    /// the directory of this executable.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

impl PluginDirs {
    fn resolve(&self) -> Vec<PathBuf> {
        let mut dirs = self.dirs.clone();
        if let Some(p) = std::env::var_os("INTERPLAY_PLUGIN_PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        if let Some(d) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            dirs.push(d);
        }
        // The same directory named twice would list every plugin twice.
        let mut seen = Vec::new();
        dirs.retain(|d| {
            let key = d.canonicalize().unwrap_or_else(|_| d.clone());
            let new = !seen.contains(&key);
            seen.push(key);
            new
        });
        dirs
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: check everything, then run each changed stage in a child process.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Overrides `key.path=value` (value: a TOML literal), e.g. `stages.rl.config.lr=3e-5`.
        overrides: Vec<String>,
        /// Rerun this stage and everything downstream even if unchanged (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Run directory (default: runs/<pipeline name>). Reusing one skips unchanged stages.
        #[arg(long, value_name = "DIR")]
        run_dir: Option<PathBuf>,
        /// Another run directory (repeatable, searched in order): a stage that would run here but
        /// finished there with the same fingerprint, its outputs intact, is hard-linked (or copied)
        /// in instead of run. Works across pipelines (same stage name, same fingerprint).
        #[arg(long = "share-from", value_name = "DIR")]
        share_from: Vec<PathBuf>,
        #[command(flatten)]
        plugins: PluginDirs,
    },
    /// Check a pipeline as `run` does before it starts anything (file, overrides, wiring, plugins, devices,
    /// every config against its plugin's schema), and run nothing.
    Check {
        /// The pipeline file.
        file: PathBuf,
        /// Overrides, as for `run`.
        overrides: Vec<String>,
        #[command(flatten)]
        plugins: PluginDirs,
    },
    /// Parse a pipeline and print what it needs (plugins, features) without loading anything.
    Plan {
        /// The pipeline file.
        file: PathBuf,
        /// Overrides, as for `run`.
        overrides: Vec<String>,
        /// Print JSON (for xtask).
        #[arg(long)]
        json: bool,
    },
    /// List plugins with kind, version, API/ABI and devices.
    Plugins {
        /// Only these plugins (default: every plugin found).
        #[arg(long = "plugin", value_name = "NAME")]
        only: Vec<String>,
        #[command(flatten)]
        plugins: PluginDirs,
    },
    /// Print a plugin's manifest (including its config schema) as JSON.
    Describe {
        /// Plugin name.
        plugin: String,
        #[command(flatten)]
        plugins: PluginDirs,
    },
    /// Write JSON Schemas: pipeline.schema.json and plugins/<name>.schema.json.
    Schema {
        /// Output directory.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        /// Only these plugins (default: every plugin found).
        #[arg(long = "plugin", value_name = "NAME")]
        only: Vec<String>,
        /// Compare with the files in --out instead of writing; fail if any differs.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        plugins: PluginDirs,
    },
    /// The reasoning task without a pipeline: `task gen` (problems) and `task score` (completions through a
    /// reward plugin).
    Task {
        #[command(subcommand)]
        cmd: task_cmd::TaskCommand,
    },
    /// Rebuild evaluation reports from finished runs: report.json, report.md and plots (SVG, PNG) of every
    /// eval stage; over several runs of one pipeline (seeds), each number's mean ± sample std.
    Report {
        /// Finished run directories (the run directory of `run`, e.g. runs/rl), all of one pipeline.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Where to write the report (default with one run: RUN_DIR/report; required with several).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Report only this eval stage (repeatable); default: every finished stage whose
        /// out/report/report.json is an eval report.
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
    },
    /// Score RewardSample JSON lines with a reward plugin; prints one score (or null) per line.
    Score {
        /// Reward plugin name.
        #[arg(long)]
        reward: String,
        /// The reward's config as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// File of RewardSample JSON lines (`{"prompt", "completion", "reference"}`).
        file: PathBuf,
        #[command(flatten)]
        plugins: PluginDirs,
    },
}

/// Entry point of the `interplay` binary.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The child side of a stage run; not a user command, so clap never sees it.
    if args.get(1).map(String::as_str) == Some("__stage-host") {
        return stage_host::child_main(&args[2..]);
    }
    let cli = Cli::parse();
    match dispatch(cli, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli, argv: &[String]) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            file,
            overrides,
            force,
            run_dir,
            share_from,
            plugins,
        } => run(
            &file,
            &overrides,
            force,
            run_dir,
            share_from,
            &plugins.resolve(),
            argv,
        ),
        Command::Check {
            file,
            overrides,
            plugins,
        } => {
            let p = Pipeline::load(&file, &overrides)?;
            let stages = pipeline::preflight(&p, &plugins.resolve())?;
            println!(
                "{}: pipeline {} is ready to run ({} stages)",
                file.display(),
                p.name,
                stages.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            file,
            overrides,
            json,
        } => plan(&file, &overrides, json),
        Command::Plugins { only, plugins } => list_plugins(&plugins.resolve(), &only),
        Command::Describe { plugin, plugins } => {
            let path = stage_host::find_plugin(&plugin, &plugins.resolve())?;
            let manifest = match stage_host::load_stage(&path) {
                Ok(p) => p.manifest,
                Err(stage_err) => stage_host::load_reward(&path)
                    .map(|r| r.manifest)
                    .map_err(|_| stage_err)?,
            };
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema {
            out,
            only,
            check,
            plugins,
        } => schema(&out, &only, check, &plugins.resolve()),
        Command::Report { runs, out, stages } => report_cmd::run(&runs, out, &stages),
        Command::Task { cmd } => {
            task_cmd::run(cmd)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Score {
            reward,
            config,
            file,
            plugins,
        } => {
            let path = stage_host::find_plugin(&reward, &plugins.resolve())?;
            let config: serde_json::Value =
                serde_json::from_str(&config).context("--config is not JSON")?;
            let reward = stage_host::load_reward(&path)?.instantiate(&config)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let batch = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str::<RewardSample>(l)
                        .with_context(|| format!("{}:{}", file.display(), i + 1))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for s in reward.score(&batch)? {
                println!("{}", serde_json::to_string(&s)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(
    file: &Path,
    overrides: &[String],
    force: Vec<String>,
    run_dir: Option<PathBuf>,
    share_from: Vec<PathBuf>,
    dirs: &[PathBuf],
    argv: &[String],
) -> anyhow::Result<ExitCode> {
    let p = Pipeline::load(file, overrides)?;
    let stages = pipeline::preflight(&p, dirs)?;
    let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&p));
    ctrlc::set_handler(|| {
        let n = STOP.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            eprintln!("\nstopping the running stage (it saves a checkpoint if it can); Ctrl-C again to kill it");
        }
    })
    .context("installing the Ctrl-C handler")?;
    let opts = ExecOptions {
        run_dir: run_dir.clone(),
        host_exe: std::env::current_exe().context("locating the runner executable")?,
        force,
        argv: argv.to_vec(),
        runner_version: env!("CARGO_PKG_VERSION").to_string(),
        share_from,
    };
    println!(
        "pipeline {} ({} stages) → {}",
        p.name,
        stages.len(),
        run_dir.display()
    );
    let mut ui = Progress::new();
    let summary = pipeline::execute(&p, &stages, &opts, &STOP, &mut ui)?;
    match summary.failed {
        None => {
            let shared = match summary.shared.len() {
                0 => String::new(),
                n => format!("{n} shared, "),
            };
            println!(
                "done: {} ran, {shared}{} unchanged; outputs in {}",
                summary.ran.len(),
                summary.skipped.len(),
                run_dir.join("stages").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(report) => {
            let tag = if report.status == StageStatus::Interrupted {
                "stopped"
            } else {
                "error"
            };
            eprintln!("{tag}: {}", report.render());
            let finished: Vec<String> = summary
                .ran
                .iter()
                .chain(summary.shared.iter().map(|(s, _)| s))
                .chain(&summary.skipped)
                .cloned()
                .collect();
            if !finished.is_empty() {
                eprintln!("finished stages are kept: {}", finished.join(", "));
            }
            if report.status == StageStatus::Interrupted {
                eprintln!("run the same command again to continue");
                Ok(ExitCode::from(130))
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// Where `run` puts a pipeline's run directory without `--run-dir`.
fn default_run_dir(p: &Pipeline) -> PathBuf {
    PathBuf::from("runs").join(&p.name)
}

fn plan(file: &Path, overrides: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let p = Pipeline::load(file, overrides)?;
    let mut plugins = BTreeSet::new();
    for s in &p.stages {
        plugins.insert(s.plugin.clone());
        plugins.extend(s.rewards.iter().map(|r| r.plugin.clone()));
    }
    let cuda = p.stages.iter().any(|s| s.device.starts_with("cuda"));
    if json {
        let v = serde_json::json!({
            "pipeline": p.name,
            "seed": p.seed,
            "run_dir": default_run_dir(&p),
            "stages": p.stages.iter().map(|s| serde_json::json!({
                "name": s.name, "plugin": s.plugin, "device": s.device, "seed": s.seed,
                "rewards": s.rewards.iter().map(|r| &r.plugin).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "plugins": plugins,
            "plugin_path": p.plugin_path,
            "features": if cuda { vec!["cuda"] } else { vec![] },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("pipeline {} (seed {})", p.name, p.seed);
        for s in &p.stages {
            println!(
                "  {:<16} plugin {:<16} device {:<8} seed {}",
                s.name, s.plugin, s.device, s.seed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_plugins(dirs: &[PathBuf], only: &[String]) -> anyhow::Result<ExitCode> {
    println!(
        "{:<20} {:<16} {:<8} {:<6} {:<4} {:<10} library",
        "plugin", "kind", "version", "api", "abi", "devices"
    );
    let libs: Vec<PathBuf> = if only.is_empty() {
        stage_host::list_libraries(dirs)
    } else {
        only.iter()
            .map(|n| stage_host::find_plugin(n, dirs))
            .collect::<anyhow::Result<_>>()?
    };
    for lib in libs {
        let manifest = match stage_host::load_stage(&lib) {
            Ok(p) => Ok(p.manifest),
            Err(stage_err) => stage_host::load_reward(&lib)
                .map(|r| r.manifest)
                .map_err(|_| stage_err),
        };
        match manifest {
            Ok(m) => println!(
                "{:<20} {:<16} {:<8} {:<6} {:<4} {:<10} {}",
                m.name,
                serde_json::to_value(m.kind)?.as_str().unwrap_or_default(),
                m.version,
                m.api_version,
                stage_api::abi::ABI_VERSION,
                m.devices.join(","),
                lib.display()
            ),
            // Other libraries in the build output are not plugins; say nothing about them.
            Err(e) if format!("{e:#}").contains("not an interplay") => {}
            Err(e) => println!(
                "{:<20} error: {e:#}",
                lib.file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn schema(out: &Path, only: &[String], check: bool, dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).map(|s| s + "\n");
    files.insert(
        out.join("pipeline.schema.json"),
        pretty(&pipeline::pipeline_schema())?,
    );
    let manifests: Vec<stage_api::Manifest> = if only.is_empty() {
        stage_host::list_libraries(dirs)
            .iter()
            .filter_map(|l| {
                stage_host::load_stage(l)
                    .map(|p| p.manifest)
                    .or_else(|_| stage_host::load_reward(l).map(|r| r.manifest))
                    .ok()
            })
            .collect()
    } else {
        only.iter()
            .map(|n| {
                let path = stage_host::find_plugin(n, dirs)?;
                stage_host::load_stage(&path)
                    .map(|p| p.manifest)
                    .or_else(|_| stage_host::load_reward(&path).map(|r| r.manifest))
            })
            .collect::<anyhow::Result<_>>()?
    };
    for m in &manifests {
        let mut schema = m.config_schema.clone();
        if let Some(obj) = schema.as_object_mut() {
            obj.insert(
                "title".into(),
                format!("config of interplay plugin `{}`", m.name).into(),
            );
        }
        files.insert(
            out.join("plugins").join(format!("{}.schema.json", m.name)),
            pretty(&schema)?,
        );
    }
    if check {
        let mut stale = Vec::new();
        for (path, text) in &files {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        if let Ok(entries) = std::fs::read_dir(out.join("plugins")) {
            for e in entries.flatten() {
                if !files.contains_key(&e.path()) {
                    stale.push(format!("{} (no such plugin)", e.path().display()));
                }
            }
        }
        if stale.is_empty() {
            println!(
                "schemas in {} are up to date ({} files)",
                out.display(),
                files.len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("stale schemas (run `cargo xtask schema`):");
        for s in stale {
            eprintln!("  {s}");
        }
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(out.join("plugins"))?;
    if let Ok(entries) = std::fs::read_dir(out.join("plugins")) {
        for e in entries.flatten() {
            if !files.contains_key(&e.path()) {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

// ---- progress display ----------------------------------------------------------------------

struct Progress {
    mp: MultiProgress,
    bar: Option<ProgressBar>,
    metrics: BTreeMap<String, f64>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            mp: MultiProgress::new(),
            bar: None,
            metrics: BTreeMap::new(),
        }
    }

    fn println(&self, line: String) {
        if self.mp.is_hidden() {
            println!("{line}");
        } else {
            let _ = self.mp.println(line);
        }
    }
}

impl Observer for Progress {
    fn skipped(&mut self, stage: &str, plugin: &str) {
        self.println(format!("  {stage:<16} {plugin:<16} unchanged, skipped"));
    }

    fn shared(&mut self, stage: &str, plugin: &str, from: &Path) {
        self.println(format!(
            "  {stage:<16} {plugin:<16} shared from {}",
            from.display()
        ));
    }

    fn not_shared(&mut self, stage: &str, from: &Path, why: &str) {
        self.println(format!(
            "  {stage:<16} not shared from {}: {why}",
            from.display()
        ));
    }

    fn started(&mut self, stage: &str, plugin: &str, resume: bool) {
        self.metrics.clear();
        let bar = self.mp.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {prefix:<33} {spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        bar.set_prefix(format!("{stage:<16} {plugin}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        if resume {
            bar.set_message("resuming from checkpoint");
        }
        self.println(format!(
            "  {stage:<16} {plugin:<16} started{}",
            if resume { " (resuming)" } else { "" }
        ));
        self.bar = Some(bar);
    }

    fn event(&mut self, stage: &str, event: &Event) {
        let Some(bar) = &self.bar else { return };
        match event {
            Event::Progress { step, total } => {
                if bar.length() != Some(*total) {
                    bar.set_style(
                        ProgressStyle::with_template(
                            "  {prefix:<33} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_length(*total);
                }
                bar.set_position(*step);
            }
            Event::Metric { name, value, .. } => {
                self.metrics.insert(name.clone(), *value);
                let msg: Vec<String> = self
                    .metrics
                    .iter()
                    .take(6)
                    .map(|(k, v)| format!("{k}={v:.4}"))
                    .collect();
                bar.set_message(msg.join(" "));
            }
            Event::Log { level, message } => {
                let tag = if *level == Level::Warn {
                    "warning: "
                } else {
                    ""
                };
                self.println(format!("  [{stage}] {tag}{message}"));
            }
            Event::Checkpoint { .. } | Event::Sample { .. } | Event::Artifact { .. } => {}
        }
    }

    fn finished(&mut self, report: &StageReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            self.mp.remove(&bar);
        }
        if report.status == StageStatus::Ok {
            let metrics: Vec<String> = self
                .metrics
                .iter()
                .take(6)
                .map(|(k, v)| format!("{k}={v:.4}"))
                .collect();
            self.println(format!(
                "  {:<16} {:<16} done in {:.1}s {}",
                report.stage,
                report.plugin,
                report.elapsed_s,
                metrics.join(" ")
            ));
        }
    }
}
