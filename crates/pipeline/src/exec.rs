//! Running a checked pipeline: one child process per stage, in dependency order, skipping stages
//! whose fingerprint has not changed.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stage_api::{ArtifactRef, Event, Outcome, Request, RewardSpec};

use crate::preflight::ResolvedStage;
use crate::rundir::{
    RunDir, Tree, fingerprint, hash_tree, link_tree, remove_all, verify_tree, verify_tree_as,
    write_atomic,
};
use crate::spec::Pipeline;

/// How to run.
pub struct ExecOptions {
    /// The run directory (created if missing, reused if present).
    pub run_dir: PathBuf,
    /// An executable that serves `__stage-host` (the `interplay` binary).
    pub host_exe: PathBuf,
    /// Stages to rerun although unchanged (with everything downstream).
    pub force: Vec<String>,
    /// The command line, recorded in `run.json`.
    pub argv: Vec<String>,
    /// Version of the runner, recorded in `run.json`.
    pub runner_version: String,
    /// Other run directories whose finished stages may be shared: a stage about to run whose
    /// fingerprint one of them finished with, outputs verified, is linked in instead of run.
    pub share_from: Vec<PathBuf>,
}

/// Receives progress as the pipeline runs (the CLI draws bars; tests record).
pub trait Observer {
    /// A stage is unchanged since its last run and is skipped.
    fn skipped(&mut self, stage: &str, plugin: &str);
    /// A stage finished in another run directory with the same fingerprint; its outputs were brought in
    /// instead of running it.
    fn shared(&mut self, stage: &str, plugin: &str, from: &Path);
    /// A stage could not be shared from `from` (`why`), so it runs here.
    fn not_shared(&mut self, stage: &str, from: &Path, why: &str);
    /// A stage starts (`resume`: from its checkpoint).
    fn started(&mut self, stage: &str, plugin: &str, resume: bool);
    /// A running stage reported an event.
    fn event(&mut self, stage: &str, event: &Event);
    /// A stage ended (successfully or not).
    fn finished(&mut self, report: &StageReport);
}

/// How a stage ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Outputs promoted, DONE written.
    Ok,
    /// `run` returned an error.
    Error,
    /// `run` panicked (caught in the plugin).
    Panic,
    /// The stage process died (signal or exit without an outcome): abort, segfault, OOM kill.
    Crashed,
    /// Stopped by Ctrl-C; `ckpt/` is kept for the next attempt.
    Interrupted,
}

/// What `outcome.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub plugin_version: String,
    /// Fingerprint of this attempt.
    pub fingerprint: String,
    /// How it ended.
    pub status: StageStatus,
    /// The error or panic message.
    pub message: Option<String>,
    /// "exit code 0", "killed by signal 6 (SIGABRT: abort)".
    pub exit: String,
    /// Last lines of `stderr.log`.
    pub stderr_tail: Vec<String>,
    /// Whether this attempt resumed from a checkpoint.
    pub resumed: bool,
    /// Wall time of the attempt.
    pub elapsed_s: f64,
    /// The stage directory.
    pub stage_dir: PathBuf,
}

impl StageReport {
    /// A multi-line report for people.
    pub fn render(&self) -> String {
        let what = match self.status {
            StageStatus::Ok => "finished".to_string(),
            StageStatus::Error => "failed".to_string(),
            StageStatus::Panic => "panicked".to_string(),
            StageStatus::Crashed => "crashed".to_string(),
            StageStatus::Interrupted => "was interrupted".to_string(),
        };
        let mut s = format!(
            "stage `{}` (plugin {} {}) {what}: {}",
            self.stage, self.plugin, self.plugin_version, self.exit
        );
        if let Some(m) = &self.message {
            s.push_str(&format!("\n  {m}"));
        }
        if !self.stderr_tail.is_empty() {
            s.push_str(&format!(
                "\n  last lines of {}:",
                self.stage_dir.join("stderr.log").display()
            ));
            for l in &self.stderr_tail {
                s.push_str(&format!("\n  | {l}"));
            }
        }
        s
    }
}

/// The result of [`execute`].
#[derive(Debug, Default)]
pub struct RunSummary {
    /// Stages that ran to completion.
    pub ran: Vec<String>,
    /// Stages skipped as unchanged.
    pub skipped: Vec<String>,
    /// Stages shared from another run directory (see [`ExecOptions::share_from`]), with it.
    pub shared: Vec<(String, PathBuf)>,
    /// The stage that failed or was interrupted; later stages did not run.
    pub failed: Option<StageReport>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Opens a stage's `events.jsonl` for appending (the parent is its only writer).
fn open_events(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("events.jsonl");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

const STDERR_TAIL: usize = 20;

fn stderr_tail(path: &Path) -> Vec<String> {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(STDERR_TAIL)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn git_info(dir: &Path) -> Value {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) => json!({
            "revision": rev,
            "dirty": git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()),
        }),
        None => Value::Null,
    }
}

/// Runs `stages` (from [`crate::preflight`]) of `p`. Stage failures are reported in the summary
/// (and in `outcome.json`); `Err` means the run directory itself could not be managed.
/// `stop` counts Ctrl-C presses (see [`stage_host::run_child`]).
pub fn execute(
    p: &Pipeline,
    stages: &[ResolvedStage],
    opts: &ExecOptions,
    stop: &AtomicUsize,
    obs: &mut dyn Observer,
) -> anyhow::Result<RunSummary> {
    let forced = p.downstream_of(&opts.force)?;
    let rd = RunDir {
        root: opts.run_dir.clone(),
    };
    for d in &opts.share_from {
        anyhow::ensure!(
            d.is_dir(),
            "--share-from {}: no such run directory",
            d.display()
        );
    }
    std::fs::create_dir_all(rd.root.join("stages"))
        .with_context(|| format!("creating {}", rd.root.display()))?;
    // Sharing from the run directory itself would be a no-op.
    let here = rd.root.canonicalize()?;
    let share_from: Vec<&PathBuf> = opts
        .share_from
        .iter()
        .filter(|d| d.canonicalize().ok().as_ref() != Some(&here))
        .collect();
    write_atomic(
        &rd.root.join("pipeline.resolved.toml"),
        p.resolved_toml().as_bytes(),
    )?;
    let plugins: BTreeMap<&str, Value> = stages
        .iter()
        .map(|s| {
            (s.spec.name.as_str(), json!({
                "plugin": s.plugin.manifest.name, "version": s.plugin.manifest.version,
                "library": s.plugin.path, "sha256": s.plugin_sha256, "seed": s.spec.seed, "device": s.spec.device,
                "rewards": s.rewards.iter().map(|(e, rp, h)| json!({
                    "name": e.name, "plugin": rp.manifest.name, "version": rp.manifest.version,
                    "library": rp.path, "sha256": h,
                })).collect::<Vec<_>>(),
            }))
        })
        .collect();
    let run_json = json!({
        "pipeline": p.name,
        "file": p.file,
        "argv": opts.argv,
        "overrides": p.overrides,
        "started_at": now(),
        "runner_version": opts.runner_version,
        "api_version": stage_api::API_VERSION,
        "abi_version": stage_api::abi::ABI_VERSION,
        "git": git_info(p.file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))),
        "seed": p.seed,
        "share_from": opts.share_from.iter().map(std::path::absolute).collect::<Result<Vec<_>, _>>()?,
        "stages": plugins,
    });
    write_atomic(
        &rd.root.join("run.json"),
        &serde_json::to_vec_pretty(&run_json)?,
    )?;

    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    let mut summary = RunSummary::default();
    for rs in stages {
        let s = &rs.spec;
        let m = &rs.plugin.manifest;
        let dir = rd.stage(&s.name);

        // Inputs point at the producers' promoted outputs.
        let mut inputs: BTreeMap<String, Vec<ArtifactRef>> = BTreeMap::new();
        let mut input_fps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (port, refs) in &s.inputs {
            let kind = m
                .inputs
                .iter()
                .find(|i| &i.name == port)
                .map(|i| i.kind)
                .expect("checked in preflight");
            for r in refs {
                inputs.entry(port.clone()).or_default().push(ArtifactRef {
                    stage: r.stage.clone(),
                    output: r.output.clone(),
                    kind,
                    path: std::path::absolute(rd.output(&r.stage, &r.output))?,
                });
                input_fps.entry(port.clone()).or_default().push(json!({
                    "stage": r.stage, "output": r.output, "fingerprint": fingerprints[&r.stage],
                }));
            }
        }
        let rewards: Vec<RewardSpec> = rs
            .rewards
            .iter()
            .map(|(e, _, _)| RewardSpec {
                name: e.name.clone(),
                plugin: e.plugin.clone(),
                weight: e.weight,
                config: e.config.clone(),
            })
            .collect();
        let fp = fingerprint(&json!({
            "api_version": stage_api::API_VERSION,
            "plugin": { "name": m.name, "version": m.version, "sha256": rs.plugin_sha256 },
            "config": s.config,
            "device": s.device,
            "seed": s.seed,
            "inputs": input_fps,
            "rewards": rs.rewards.iter().map(|(e, rp, h)| json!({
                "name": e.name, "plugin": rp.manifest.name, "version": rp.manifest.version, "sha256": h,
                "weight": e.weight, "config": e.config,
            })).collect::<Vec<_>>(),
        }));
        fingerprints.insert(s.name.clone(), fp.clone());

        let is_forced = forced.contains(&s.name);
        let outputs_present = m
            .outputs
            .iter()
            .all(|o| rd.output(&s.name, &o.name).is_dir());
        let done = rd.done(&s.name).filter(|d| d.fingerprint == fp);
        // A DONE written before outputs were recorded cannot vouch for them: such a stage reruns.
        if !is_forced
            && outputs_present
            && let Some(recorded) = done.and_then(|d| d.outputs)
        {
            // Verified here, once per run, so that neither a skip nor a downstream stage trusts an output
            // that changed after its stage finished (stages that run now are hashed as they finish).
            let mut problem = None;
            for o in &m.outputs {
                let dir = rd.output(&s.name, &o.name);
                problem = match recorded.get(&o.name) {
                    None => Some(format!(
                        "{}: DONE records no files for this output",
                        dir.display()
                    )),
                    Some(tree) => verify_tree(&dir, tree, "DONE when the stage finished")?,
                };
                if problem.is_some() {
                    break;
                }
            }
            let Some(problem) = problem else {
                obs.skipped(&s.name, &m.name);
                summary.skipped.push(s.name.clone());
                continue;
            };
            summary.failed = Some(StageReport {
                stage: s.name.clone(),
                plugin: m.name.clone(),
                plugin_version: m.version.clone(),
                fingerprint: fp,
                status: StageStatus::Error,
                message: Some(format!(
                    "its outputs changed after it finished, so neither it nor a later stage can trust them: \
                     {problem}; rerun with `--force {}` to run it again",
                    s.name
                )),
                exit: "not started".into(),
                stderr_tail: Vec::new(),
                resumed: false,
                elapsed_s: 0.0,
                stage_dir: dir.clone(),
            });
            break;
        }
        if stop.load(Ordering::SeqCst) > 0 {
            let report = StageReport {
                stage: s.name.clone(),
                plugin: m.name.clone(),
                plugin_version: m.version.clone(),
                fingerprint: fp,
                status: StageStatus::Interrupted,
                message: Some("stopped before the stage started".into()),
                exit: "not started".into(),
                stderr_tail: Vec::new(),
                resumed: false,
                elapsed_s: 0.0,
                stage_dir: dir.clone(),
            };
            summary.failed = Some(report);
            break;
        }

        // ---- prepare the stage directory
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::remove_file(dir.join("DONE"));
        let partial = dir.join("out.partial");
        remove_all(&partial)?;

        // ---- or bring in the outputs of another run that finished it with this fingerprint
        if !is_forced && !share_from.is_empty() {
            let outputs: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
            let mut shared = None;
            for src in &share_from {
                match share(src, &s.name, &fp, &outputs, &partial)? {
                    Ok(found) => {
                        shared = Some((*src, found));
                        break;
                    }
                    Err(why) => {
                        writeln!(
                            open_events(&dir)?,
                            "{}",
                            json!({ "t": now(), "type": "not_shared", "from": std::path::absolute(src)?, "reason": why })
                        )?;
                        obs.not_shared(&s.name, src, &why);
                        remove_all(&partial)?;
                    }
                }
            }
            if let Some((src, found)) = shared {
                let from = std::path::absolute(src)?;
                let out = dir.join("out");
                remove_all(&out)?;
                std::fs::rename(&partial, &out)
                    .with_context(|| format!("promoting {}", partial.display()))?;
                let report = StageReport {
                    stage: s.name.clone(),
                    plugin: m.name.clone(),
                    plugin_version: m.version.clone(),
                    fingerprint: fp.clone(),
                    status: StageStatus::Ok,
                    message: Some(format!(
                        "not run here: shared from {}, which finished it with this fingerprint",
                        from.display()
                    )),
                    exit: "not run".into(),
                    stderr_tail: Vec::new(),
                    resumed: false,
                    elapsed_s: 0.0,
                    stage_dir: dir.clone(),
                };
                write_atomic(
                    &dir.join("outcome.json"),
                    &serde_json::to_vec_pretty(&report)?,
                )?;
                writeln!(
                    open_events(&dir)?,
                    "{}",
                    json!({ "t": now(), "type": "shared", "fingerprint": fp, "from": from,
                            "files_linked": found.linked, "files_copied": found.copied })
                )?;
                write_atomic(
                    &dir.join("DONE"),
                    &serde_json::to_vec_pretty(&json!({
                        "fingerprint": fp, "plugin": m.name, "version": m.version, "finished_at": now(),
                        "outputs": found.trees, "shared_from": from,
                    }))?,
                )?;
                obs.shared(&s.name, &m.name, src);
                summary.shared.push((s.name.clone(), src.to_path_buf()));
                continue;
            }
        }
        let mut outputs = BTreeMap::new();
        for o in &m.outputs {
            let d = std::path::absolute(partial.join(&o.name))?;
            std::fs::create_dir_all(&d)?;
            outputs.insert(o.name.clone(), d);
        }
        let ckpt = dir.join("ckpt");
        let ckpt_fp: Option<String> = std::fs::read_to_string(dir.join("ckpt.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["fingerprint"].as_str().map(str::to_string));
        let ckpt_nonempty = std::fs::read_dir(&ckpt)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let resume = m.supports_resume
            && !is_forced
            && ckpt_fp.as_deref() == Some(fp.as_str())
            && ckpt_nonempty;
        if !resume {
            remove_all(&ckpt)?;
            std::fs::create_dir_all(&ckpt)?;
            write_atomic(
                &dir.join("ckpt.json"),
                &serde_json::to_vec(&json!({ "fingerprint": fp }))?,
            )?;
        }
        let request = Request {
            api_version: stage_api::API_VERSION.to_string(),
            pipeline: p.name.clone(),
            stage: s.name.clone(),
            config: s.config.clone(),
            inputs,
            outputs,
            stage_dir: std::path::absolute(&dir)?,
            ckpt_dir: std::path::absolute(&ckpt)?,
            resume,
            device: s.device.clone(),
            seed: s.seed,
            rewards,
        };
        let request_path = dir.join("request.json");
        write_atomic(&request_path, &serde_json::to_vec_pretty(&request)?)?;

        // ---- run it in a child process
        let mut events = open_events(&dir)?;
        writeln!(
            events,
            "{}",
            json!({ "t": now(), "type": "attempt", "fingerprint": fp, "resume": resume })
        )?;
        obs.started(&s.name, &m.name, resume);
        let reward_libs: Vec<(String, PathBuf)> = rs
            .rewards
            .iter()
            .map(|(e, rp, _)| (e.name.clone(), rp.path.clone()))
            .collect();
        let spec = stage_host::ChildSpec {
            host_exe: &opts.host_exe,
            plugin: &rs.plugin.path,
            request: &request_path,
            rewards: &reward_libs,
            stderr_log: &dir.join("stderr.log"),
        };
        let started = Instant::now();
        let mut write_err = None;
        let exit = stage_host::run_child(&spec, stop, &mut |e: Event| {
            let mut line = serde_json::to_value(&e).expect("events serialize");
            line.as_object_mut()
                .expect("events are objects")
                .insert("t".into(), json!(now()));
            if let Err(err) = writeln!(events, "{line}") {
                write_err.get_or_insert(err);
            }
            obs.event(&s.name, &e);
        })?;
        if let Some(e) = write_err {
            return Err(e).context("writing events.jsonl");
        }
        let elapsed_s = started.elapsed().as_secs_f64();

        let (mut status, mut message) = match (&exit.outcome, exit.stop_requested) {
            (Some(Outcome::Ok), false) if exit.status.success() => (StageStatus::Ok, None),
            (Some(Outcome::Interrupted), _) | (_, true) => (StageStatus::Interrupted, None),
            (Some(Outcome::Error { message, chain }), _) => {
                let mut m = message.clone();
                for c in chain {
                    m.push_str(&format!(": {c}"));
                }
                (StageStatus::Error, Some(m))
            }
            (Some(Outcome::Panic { message }), _) => {
                (StageStatus::Panic, Some(format!("panic: {message}")))
            }
            (Some(Outcome::Ok), false) | (None, false) => (StageStatus::Crashed, None),
        };
        if status == StageStatus::Ok {
            let missing: Vec<&str> = m
                .outputs
                .iter()
                .filter(|o| !partial.join(&o.name).is_dir())
                .map(|o| o.name.as_str())
                .collect();
            if !missing.is_empty() {
                status = StageStatus::Error;
                message = Some(format!(
                    "the stage removed its output directories: {}",
                    missing.join(", ")
                ));
            }
        }
        let report = StageReport {
            stage: s.name.clone(),
            plugin: m.name.clone(),
            plugin_version: m.version.clone(),
            fingerprint: fp.clone(),
            status,
            message,
            exit: stage_host::describe_exit(&exit.status),
            stderr_tail: if status == StageStatus::Ok {
                Vec::new()
            } else {
                stderr_tail(&dir.join("stderr.log"))
            },
            resumed: resume,
            elapsed_s,
            stage_dir: dir.clone(),
        };
        write_atomic(
            &dir.join("outcome.json"),
            &serde_json::to_vec_pretty(&report)?,
        )?;
        if status == StageStatus::Ok {
            // Promote atomically, then mark done: DONE exists only next to complete outputs.
            let out = dir.join("out");
            remove_all(&out)?;
            std::fs::rename(&partial, &out)
                .with_context(|| format!("promoting {}", partial.display()))?;
            // What later runs verify before they skip this stage or hand its outputs on.
            let outputs = m
                .outputs
                .iter()
                .map(|o| Ok((o.name.clone(), hash_tree(&out.join(&o.name))?)))
                .collect::<anyhow::Result<BTreeMap<String, Tree>>>()?;
            write_atomic(
                &dir.join("DONE"),
                &serde_json::to_vec_pretty(&json!({
                    "fingerprint": fp, "plugin": m.name, "version": m.version, "finished_at": now(),
                    "outputs": outputs,
                }))?,
            )?;
            obs.finished(&report);
            summary.ran.push(s.name.clone());
        } else {
            obs.finished(&report);
            summary.failed = Some(report);
            break;
        }
    }
    Ok(summary)
}

/// Brings the outputs of `stage` from the run directory `src` into `partial` (hard links, or copies across
/// filesystems) when `src` finished it with fingerprint `fp`, and checks them against what `src`'s `DONE`
/// recorded. `Ok(Err(why))` when it cannot be shared; `partial` may then hold a part of the outputs.
fn share(
    src: &Path,
    stage: &str,
    fp: &str,
    outputs: &[&str],
    partial: &Path,
) -> anyhow::Result<Result<Shared, String>> {
    let rd = RunDir {
        root: src.to_path_buf(),
    };
    let marker = rd.stage(stage).join("DONE");
    let Some(done) = rd.done(stage) else {
        return Ok(Err(if marker.exists() {
            format!("{} does not parse", marker.display())
        } else {
            format!("stage `{stage}` has not finished there")
        }));
    };
    if done.fingerprint != fp {
        return Ok(Err(
            "it finished the stage with another fingerprint (plugin, config, device, seed or inputs differ)".into(),
        ));
    }
    let Some(mut recorded) = done.outputs else {
        return Ok(Err(format!(
            "{} records no outputs, so it vouches for none",
            marker.display()
        )));
    };
    let what = format!("{}", marker.display());
    let mut shared = Shared {
        trees: BTreeMap::new(),
        linked: 0,
        copied: 0,
    };
    for o in outputs {
        let from = rd.output(stage, o);
        let Some(tree) = recorded.remove(*o) else {
            return Ok(Err(format!("{what} records no files for output `{o}`")));
        };
        let to = partial.join(o);
        match link_tree(&from, &to) {
            Ok((linked, copied)) => {
                shared.linked += linked;
                shared.copied += copied;
            }
            Err(e) => return Ok(Err(format!("{e:#}"))),
        }
        // The linked files are the source's: checking them checks the source, after any change to it.
        match verify_tree_as(&to, &from, &tree, &what) {
            Ok(None) => {}
            Ok(Some(problem)) => return Ok(Err(problem)),
            Err(e) => return Ok(Err(format!("{e:#}"))),
        }
        shared.trees.insert(o.to_string(), tree);
    }
    Ok(Ok(shared))
}

/// Outputs brought in by [`share`].
struct Shared {
    /// What the source's `DONE` recorded for each output, verified.
    trees: BTreeMap<String, Tree>,
    /// Files hard-linked.
    linked: usize,
    /// Files copied (no hard link possible).
    copied: usize,
}
