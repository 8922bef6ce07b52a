//! Project automation, run as `cargo xtask <task>` (the pattern of matklad/cargo-xtask).
//!
//! ```text
//! cargo xtask pipeline <file> [key=value...] [--debug] [--cuda] [--force S] [--run-dir D] [--seeds 0,1,2]
//! cargo xtask report [--out DIR] [--stage S] RUN_DIR...   # tables and plots; mean ± std over several runs
//! cargo xtask new-plugin <name> --kind stage|reward [--out DIR [--stage-api-git URL]]
//! cargo xtask schema [--check]
//! cargo xtask plugins
//! cargo xtask bench <target>            # e.g. cargo xtask bench tasks --json bench.json
//! cargo xtask export-tiny <dir>
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use xtask::scaffold;

mod bench_rl;
mod lm_tasks;

const USAGE: &str = "\
usage: cargo xtask <task>

  pipeline <file> [key=value...] [--debug] [--cuda] [--force S] [--run-dir D] [--plugin-dir D]
        build (release unless --debug) the runner and exactly the plugins the pipeline names,
        then run it; key=value overrides go to the runner. Plugins of this workspace are built
        with `cargo build -p`; every plugin crate (a directory with a Cargo.toml) on the
        pipeline's `[pipeline] plugin_path` or given as --plugin-dir is built in its own
        target/ with the same profile, and the runner finds its plugins there.
        --seeds 0,1,2: run it once per seed (override pipeline.seed=<s>) in D/seed-<s> (D: --run-dir,
        else runs/<pipeline name>), each sharing the stages that do not depend on the seed from
        the earlier seeds (--share-from), then `interplay report --out D/report D/seed-<s>...`
  report [--debug] [--out DIR] [--stage NAME]... RUN_DIR...
        build the runner (release unless --debug) and run `interplay report`: report.json, report.md
        and plots (SVG, PNG) of every finished eval stage, written to RUN_DIR/report for one run; for
        several runs of one pipeline (seeds) each number's mean ± sample std, written to --out
  new-plugin <name> --kind stage|reward [--out DIR [--stage-api-git URL]]
        scaffold plugins/<name> (and pipelines/<name>.toml for a stage); it builds and runs as is.
        --out DIR: a standalone crate DIR/<name> outside this repository (its own workspace,
        stage-api by path to this checkout, or by git with --stage-api-git), with a README
  schema [--check]
        write JSON Schemas for pipeline files and every plugin config into schemas/
        (--check: fail if the committed ones are stale)
  plugins
        build every plugin under plugins/ and list them (kind, version, ABI, devices)
  bench <target> [args]
        benchmarks, in release mode: `tasks [--json FILE] [--problems N]` (problem generation and
        completion verification throughput of the reasoning task); `model [--device D] [--json FILE]`
        (bench-3m train/sample tok/s and peak RSS of the language model); `rl [--json FILE]` (GRPO steps/s,
        rollout tokens/s and where a step's time goes, on pipelines/bench-rl.toml)
  export-tiny <dir>
        write a random tiny checkpoint in Hugging Face layout plus our logits (scripts/hf_parity.py)
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match task.as_str() {
        "pipeline" => pipeline(rest),
        "report" => report(rest),
        "new-plugin" => new_plugin(rest),
        "schema" => schema(rest),
        "plugins" => plugins(),
        "bench" => bench(rest),
        "export-tiny" => lm_tasks::export_tiny(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Cargo through `$CARGO`, so that the toolchain running xtask builds everything.
fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    anyhow::ensure!(status.success(), "`{}` failed ({status})", show(cmd));
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Package names of the plugins under plugins/ (folder name == package name).
fn workspace_plugins() -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let dir = root().join("plugins");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().join("Cargo.toml").is_file() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

fn has_cuda_feature(plugin: &str) -> bool {
    let manifest = root().join("plugins").join(plugin).join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(manifest) else {
        return false;
    };
    let mut in_features = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features && (line.starts_with("cuda ") || line.starts_with("cuda=")) {
            return true;
        }
    }
    false
}

/// Package names of this workspace's members (`cargo metadata --no-deps`).
fn workspace_members() -> anyhow::Result<Vec<String>> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("starting cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading `cargo metadata`")?;
    Ok(meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect())
}

fn pipeline(args: &[String]) -> anyhow::Result<()> {
    let (mut file, mut overrides, mut runner_flags) = (None, Vec::new(), Vec::new());
    let mut plugin_dirs: Vec<PathBuf> = Vec::new();
    let (mut release, mut cuda) = (true, false);
    let (mut seeds, mut run_dir, mut share_from) = (None, None, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--release" => release = true,
            "--debug" => release = false,
            "--cuda" => cuda = true,
            "--seeds" => {
                let value = it.next().context("--seeds needs a list, like 0,1,2")?;
                seeds = Some(xtask::seeds::parse_seeds(value)?);
            }
            s if s.starts_with("--seeds=") => {
                seeds = Some(xtask::seeds::parse_seeds(&s["--seeds=".len()..])?);
            }
            "--run-dir" | "--share-from" => {
                let value = it.next().with_context(|| format!("{a} needs a value"))?;
                if a == "--run-dir" {
                    run_dir = Some(PathBuf::from(value));
                } else {
                    share_from.push(PathBuf::from(value));
                }
            }
            s if s.starts_with("--run-dir=") => {
                run_dir = Some(PathBuf::from(&s["--run-dir=".len()..]))
            }
            s if s.starts_with("--share-from=") => {
                share_from.push(PathBuf::from(&s["--share-from=".len()..]))
            }
            "--force" | "--plugin-dir" => {
                let value = it
                    .next()
                    .with_context(|| format!("{a} needs a value"))?
                    .clone();
                if a == "--plugin-dir" {
                    plugin_dirs.push(PathBuf::from(&value));
                }
                runner_flags.push(a.clone());
                runner_flags.push(value);
            }
            s if s.starts_with("--plugin-dir=") => {
                plugin_dirs.push(PathBuf::from(&s["--plugin-dir=".len()..]));
                runner_flags.push(a.clone());
            }
            s if s.starts_with("--") => runner_flags.push(a.clone()),
            s if file.is_none() && !s.contains('=') => file = Some(PathBuf::from(s)),
            _ => overrides.push(a.clone()),
        }
    }
    let file = file.context("usage: cargo xtask pipeline <file> [key=value...]")?;
    if seeds.is_some() {
        xtask::seeds::check_overrides(&overrides)?;
    }
    let profile = if release { "release" } else { "debug" };
    let profile_args: &[&str] = if release { &["--release"] } else { &[] };

    // 1. The runner, which knows how to read pipelines.
    let bin = build_runner(release)?;

    // 2. Ask it what the pipeline needs.
    let out = Command::new(&bin)
        .arg("plan")
        .arg(&file)
        .args(&overrides)
        .arg("--json")
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let plan: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading `interplay plan --json`")?;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    // Plugins that are not members of this workspace come from the plugin path: never `-p`.
    let members = workspace_members()?;
    let (plugins, outside): (Vec<String>, Vec<String>) = strings(&plan["plugins"])
        .into_iter()
        .partition(|p| members.contains(p));
    // The plugin crates to build: directories with a Cargo.toml on the pipeline's plugin_path
    // (absolute already) or given as --plugin-dir (relative to the current directory, as the
    // runner reads them).
    let mut crates: Vec<PathBuf> = Vec::new();
    for d in strings(&plan["plugin_path"])
        .into_iter()
        .map(PathBuf::from)
        .chain(
            plugin_dirs
                .iter()
                .map(std::path::absolute)
                .collect::<Result<Vec<_>, _>>()?,
        )
    {
        if xtask::is_plugin_crate(&d) && !crates.contains(&d) {
            crates.push(d);
        }
    }
    if !outside.is_empty() {
        eprintln!(
            "not in this workspace, looked up on the plugin path: {}",
            outside.join(", ")
        );
    }
    cuda |= plan["features"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "cuda"));

    // 3. Exactly those plugins, in one cargo invocation that names the runner too: Cargo
    //    unifies features per invocation, so a plugin built alone would rebuild shared
    //    dependencies (syn, serde, ...) with other features; with the runner they stay cached.
    let mut build = cargo();
    build.args(["build", "-p", "interplay"]).args(profile_args);
    for p in &plugins {
        build.args(["-p", p]);
        if cuda && has_cuda_feature(p) {
            build.args(["--features", &format!("{p}/cuda")]);
        }
    }
    run(&mut build)?;
    // 3b. Plugin crates outside this workspace, each in its own target/ with the same profile, where
    //     the runner looks for them (`stage_host::library_dir`).
    let cargo_exe = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for dir in &crates {
        run(&mut xtask::plugin_crate_build(&cargo_exe, dir, release))?;
    }

    // 4. Run it with the plugins just built.
    let runner = || {
        let mut c = Command::new(&bin);
        c.arg("run").arg(&file).args(&overrides).args(&runner_flags);
        c.arg("--plugin-dir").arg(target_dir().join(profile));
        c
    };
    if let Some(seeds) = seeds {
        // Where the runner would put the run directory, from the runner.
        let parent = match run_dir {
            Some(d) => d,
            None => PathBuf::from(
                plan["run_dir"]
                    .as_str()
                    .context("`interplay plan --json` gives no run_dir")?,
            ),
        };
        let seeds = xtask::seeds::SeedPlan::new(&parent, &seeds, &share_from);
        seeds.run(runner)?;
        return run(Command::new(&bin).args(seeds.report_args())).with_context(|| {
            format!(
                "every seed finished ({}), but the report over them failed",
                seeds.parent.display()
            )
        });
    }
    let mut runner = runner();
    for d in &share_from {
        runner.arg("--share-from").arg(d);
    }
    if let Some(d) = &run_dir {
        runner.arg("--run-dir").arg(d);
    }
    eprintln!("$ {}", show(&runner));
    // Become the runner, so that Ctrl-C reaches it alone and it can stop the stage cleanly.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        Err(runner.exec()).with_context(|| format!("starting {}", bin.display()))
    }
    #[cfg(not(unix))]
    {
        let status = runner.status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// `cargo xtask report [--debug] ARGS...`: builds the runner and runs `interplay report ARGS...` in the
/// current directory.
fn report(args: &[String]) -> anyhow::Result<()> {
    let mut release = true;
    let mut pass = Vec::new();
    for a in args {
        match a.as_str() {
            "--release" => release = true,
            "--debug" => release = false,
            _ => pass.push(a.clone()),
        }
    }
    if pass.iter().all(|a| a.starts_with('-')) {
        bail!("usage: cargo xtask report [--debug] [--out DIR] [--stage NAME]... RUN_DIR...");
    }
    let bin = build_runner(release)?;
    run(Command::new(&bin).arg("report").args(&pass))
}

/// Builds the runner (`cargo build -p interplay`, release or debug) and returns its path.
fn build_runner(release: bool) -> anyhow::Result<PathBuf> {
    let (profile, profile_args): (&str, &[&str]) = if release {
        ("release", &["--release"])
    } else {
        ("debug", &[])
    };
    run(cargo()
        .args(["build", "-p", "interplay"])
        .args(profile_args))?;
    Ok(target_dir().join(profile).join("interplay"))
}

const NEW_PLUGIN_USAGE: &str =
    "usage: cargo xtask new-plugin <name> --kind stage|reward [--out DIR [--stage-api-git URL]]";

fn new_plugin(args: &[String]) -> anyhow::Result<()> {
    let (mut name, mut kind, mut out, mut git) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag} needs {what}")),
            }
        };
        match flag {
            "--kind" => kind = Some(value("stage or reward")?.parse::<scaffold::Kind>()?),
            "--out" => out = Some(PathBuf::from(value("a directory")?)),
            "--stage-api-git" => git = Some(value("a git URL")?),
            s if name.is_none() && !s.starts_with('-') => name = Some(s.to_string()),
            other => bail!("unexpected argument `{other}`; {NEW_PLUGIN_USAGE}"),
        }
    }
    let name = name.context(NEW_PLUGIN_USAGE)?;
    let kind = kind.context("--kind stage|reward is required")?;
    let Some(out) = out else {
        anyhow::ensure!(
            git.is_none(),
            "--stage-api-git only applies with --out (a plugin in this workspace uses its stage-api)"
        );
        let written = scaffold::generate(&root(), &name, kind)?;
        for w in &written {
            println!("wrote {}", w.strip_prefix(root()).unwrap_or(w).display());
        }
        match kind {
            scaffold::Kind::Stage => {
                println!(
                    "\nnext: cargo xtask pipeline pipelines/{name}.toml\n      cargo xtask schema"
                )
            }
            scaffold::Kind::Reward => println!(
                "\nnext: attach it to an RL stage: rewards = [{{ plugin = \"{name}\", weight = 1.0 }}]\n      \
                 or score a file: cargo build -p interplay -p {name} && target/debug/interplay score --reward {name} plugins/{name}/samples.jsonl\n      \
                 cargo xtask schema"
            ),
        }
        return Ok(());
    };
    let stage_api = match git {
        Some(url) => scaffold::StageApi::Git(url),
        None => scaffold::StageApi::Path(root().join("crates").join("stage-api")),
    };
    let written = scaffold::generate_standalone(&root(), &out, &name, kind, &stage_api)?;
    for w in &written {
        println!("wrote {}", w.display());
    }
    let dir = std::path::absolute(out.join(&name))?;
    let d = dir.display();
    match kind {
        scaffold::Kind::Stage => println!(
            "\nnext: cargo xtask pipeline {d}/pipeline.toml   (builds {d} too; see {d}/README.md)"
        ),
        scaffold::Kind::Reward => println!(
            "\nnext: cargo build --release --manifest-path {d}/Cargo.toml\n      \
             target/release/interplay score --reward {name} --plugin-dir {d} {d}/samples.jsonl\n      \
             in a pipeline: [pipeline] plugin_path = [\"{d}\"] and rewards = [{{ plugin = \"{name}\" }}] \
             (see {d}/README.md)"
        ),
    }
    Ok(())
}

fn schema(args: &[String]) -> anyhow::Result<()> {
    let check = match args {
        [] => false,
        [c] if c == "--check" => true,
        _ => bail!("usage: cargo xtask schema [--check]"),
    };
    let plugins = workspace_plugins()?;
    let mut build = cargo();
    build.args(["build", "-p", "interplay"]);
    for p in &plugins {
        build.args(["-p", p]);
    }
    run(&mut build)?;
    let dir = target_dir().join("debug");
    let mut cmd = Command::new(dir.join("interplay"));
    cmd.current_dir(root())
        .args(["schema", "--out", "schemas", "--plugin-dir"])
        .arg(&dir);
    for p in &plugins {
        cmd.args(["--plugin", p]);
    }
    if check {
        cmd.arg("--check");
    }
    run(&mut cmd)
}

fn plugins() -> anyhow::Result<()> {
    let plugins = workspace_plugins()?;
    let mut build = cargo();
    build.args(["build", "-p", "interplay"]);
    for p in &plugins {
        build.args(["-p", p]);
    }
    run(&mut build)?;
    let dir = target_dir().join("debug");
    let mut cmd = Command::new(dir.join("interplay"));
    cmd.arg("plugins").arg("--plugin-dir").arg(&dir);
    for p in &plugins {
        cmd.args(["--plugin", p]);
    }
    run(&mut cmd)
}

/// Benchmarks register here (`cargo xtask bench tasks`, `cargo xtask bench model`).
fn bench(args: &[String]) -> anyhow::Result<()> {
    let registered: &[(&str, Bench)] = &[
        ("tasks", bench_tasks),
        ("model", lm_tasks::bench_model),
        ("rl", |a| bench_rl::bench_rl(a, &root(), &target_dir())),
    ];
    let Some((target, rest)) = args.split_first() else {
        bail!(
            "usage: cargo xtask bench <target>; registered: {}",
            names(registered)
        );
    };
    match registered.iter().find(|(n, _)| n == target) {
        Some((_, f)) => f(rest),
        None => bail!("no benchmark `{target}`; registered: {}", names(registered)),
    }
}

/// `cargo xtask bench tasks [--json FILE] [--problems N]`: the reasoning task's generator and verifier
/// throughput (`crates/task/examples/bench.rs`), built in release mode. `--json` writes
/// `{"problems_per_s_one_core", "problems_per_s_all_cores", "verified_per_s", ...}`.
fn bench_tasks(args: &[String]) -> anyhow::Result<()> {
    let mut pass = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        pass.push(a.clone());
        if a == "--json" {
            let file = it.next().context("--json needs a file")?;
            // cargo runs from the workspace root; keep the user's relative path relative to their cwd.
            pass.push(std::env::current_dir()?.join(file).display().to_string());
        }
    }
    run(cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "task",
            "--example",
            "bench",
            "--",
        ])
        .args(&pass))
}

/// A benchmark entry point: gets the arguments after `cargo xtask bench <target>`.
type Bench = fn(&[String]) -> anyhow::Result<()>;

fn names(registered: &[(&str, Bench)]) -> String {
    if registered.is_empty() {
        "(none yet)".into()
    } else {
        registered
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
