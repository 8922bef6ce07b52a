//! `cargo xtask new-plugin <name> --kind stage|reward [--out DIR]`: a plugin crate that builds,
//! loads and runs as generated, written to show every part of the interface once.
//!
//! Without `--out` ([`generate`]) the crate goes into this workspace (`plugins/<name>`). With it
//! ([`generate_standalone`]) it is a crate of its own at `DIR/<name>`, outside this repository:
//! its own `[workspace]`, the dependency versions this workspace pins, `stage-api` by path to this
//! checkout (or by git), and a README that says how to build it and point a pipeline at it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What to scaffold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A stage plugin (plus `pipelines/<name>.toml` that runs it).
    Stage,
    /// A reward plugin (plus `plugins/<name>/samples.jsonl` to score).
    Reward,
}

impl std::str::FromStr for Kind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Kind> {
        match s {
            "stage" => Ok(Kind::Stage),
            "reward" => Ok(Kind::Reward),
            other => bail!("unknown kind `{other}`; expected stage or reward"),
        }
    }
}

/// Where a standalone plugin crate gets `stage-api` from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageApi {
    /// `stage-api = { path = "..." }`: this checkout's `crates/stage-api` (the default).
    Path(PathBuf),
    /// `stage-api = { git = "..." }` (`--stage-api-git URL`).
    Git(String),
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

fn camel_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Writes `files`, refusing to overwrite anything (checked before the first is written).
fn write_all(files: Vec<(PathBuf, String)>) -> anyhow::Result<Vec<PathBuf>> {
    for (path, _) in &files {
        if path.exists() {
            bail!("{} already exists", path.display());
        }
    }
    for (path, text) in &files {
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// Writes the plugin under `root/plugins/<name>/` (and its pipeline under `root/pipelines/`).
/// Returns the files written. Refuses to overwrite anything.
pub fn generate(root: &Path, name: &str, kind: Kind) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    let dir = root.join("plugins").join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let camel = camel_case(name);
    let fill = |t: &str| {
        t.replace("__STAGE_USAGE__", IN_TREE_STAGE_USAGE)
            .replace("__REWARD_USAGE__", IN_TREE_REWARD_USAGE)
            .replace("__NAME__", name)
            .replace("__CAMEL__", &camel)
    };
    let mut files = vec![(dir.join("Cargo.toml"), fill(CARGO_TOML))];
    match kind {
        Kind::Stage => {
            files.push((dir.join("src/lib.rs"), fill(STAGE_LIB)));
            files.push((
                root.join("pipelines").join(format!("{name}.toml")),
                fill(STAGE_PIPELINE),
            ));
        }
        Kind::Reward => {
            files.push((dir.join("src/lib.rs"), fill(REWARD_LIB)));
            files.push((dir.join("samples.jsonl"), REWARD_SAMPLES.to_string()));
        }
    }
    write_all(files)
}

/// Writes a standalone plugin crate at `out/<name>/`, outside the workspace at `root`: its own
/// `[workspace]` (it builds on its own), `crate-type = ["cdylib"]`, the edition and dependency
/// versions of `root/Cargo.toml`, `root/Cargo.lock` as its starting lock file (the versions the
/// runner was tested with; Cargo drops what the crate does not use), `stage-api` from `stage_api`,
/// a README, a `.gitignore`, and `samples.jsonl` (reward) or `pipeline.toml` (stage, finding the
/// crate through `plugin_path = ["."]`). Returns the files written. Refuses to overwrite anything,
/// and to write inside `root` (whose `plugins/*` are workspace members: use [`generate`]).
pub fn generate_standalone(
    root: &Path,
    out: &Path,
    name: &str,
    kind: Kind,
    stage_api: &StageApi,
) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    let out = std::path::absolute(out).with_context(|| format!("--out {}", out.display()))?;
    let dir = out.join(name);
    let root_abs = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut existing = dir.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if existing
        .canonicalize()
        .is_ok_and(|e| e.starts_with(&root_abs))
    {
        bail!(
            "--out {}: {} would be inside this repository ({}); --out is for crates outside it \
             (without --out, `cargo xtask new-plugin {name}` writes plugins/{name} into this workspace)",
            out.display(),
            dir.display(),
            root_abs.display()
        );
    }
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let manifest_path = root.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let ws = WorkspaceManifest::parse(&manifest)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let stage_api_dep = match stage_api {
        StageApi::Path(p) => format!("{{ path = {} }}", toml_string(&p.display().to_string())),
        StageApi::Git(url) => format!("{{ git = {} }}", toml_string(url)),
    };
    let stage_api_source = match stage_api {
        StageApi::Path(p) => format!("by path, from {}", p.display()),
        StageApi::Git(url) => format!("by git, from {url}"),
    };
    let camel = camel_case(name);
    let dir_s = dir.display().to_string();
    let root_s = root_abs.display().to_string();
    let fill = |t: &str| {
        t.replace("__STAGE_USAGE__", STANDALONE_STAGE_USAGE)
            .replace("__REWARD_USAGE__", STANDALONE_REWARD_USAGE)
            .replace("__EDITION__", &ws.edition)
            .replace("__RUST_VERSION__", &ws.rust_version)
            .replace("__ANYHOW__", &ws.deps[0])
            .replace("__SCHEMARS__", &ws.deps[1])
            .replace("__SERDE__", &ws.deps[2])
            .replace("__SERDE_JSON__", &ws.deps[3])
            .replace("__STAGE_API_DEP__", &stage_api_dep)
            .replace("__STAGE_API_SOURCE__", &stage_api_source)
            .replace("__LIB_FILE__", &library_file_name(name))
            .replace("__DIR__", &dir_s)
            .replace("__ROOT__", &root_s)
            .replace("__NAME__", name)
            .replace("__CAMEL__", &camel)
    };
    let mut files = vec![
        (dir.join("Cargo.toml"), fill(STANDALONE_CARGO_TOML)),
        (dir.join(".gitignore"), "/target\n".to_string()),
    ];
    if let Ok(lock) = std::fs::read_to_string(root.join("Cargo.lock")) {
        files.push((dir.join("Cargo.lock"), lock));
    }
    match kind {
        Kind::Stage => {
            files.push((dir.join("src/lib.rs"), fill(STAGE_LIB)));
            files.push((dir.join("pipeline.toml"), fill(STANDALONE_STAGE_PIPELINE)));
            files.push((dir.join("README.md"), fill(STANDALONE_STAGE_README)));
        }
        Kind::Reward => {
            files.push((dir.join("src/lib.rs"), fill(REWARD_LIB)));
            files.push((dir.join("samples.jsonl"), REWARD_SAMPLES.to_string()));
            files.push((dir.join("README.md"), fill(STANDALONE_REWARD_README)));
        }
    }
    write_all(files)
}

/// `libmy_reward.so` for `my-reward` (the runner's `stage_host::library_file_name`).
fn library_file_name(plugin: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        plugin.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

fn toml_string(s: &str) -> String {
    // A TOML basic string is a JSON string for everything a path or URL holds.
    serde_json::to_string(s).expect("strings serialize")
}

/// What a standalone crate copies from this workspace's Cargo.toml.
struct WorkspaceManifest {
    edition: String,
    rust_version: String,
    /// The right-hand sides of `anyhow`, `schemars`, `serde`, `serde_json` in
    /// `[workspace.dependencies]`, e.g. `{ version = "=1.0.228", features = ["derive"] }`.
    deps: [String; 4],
}

impl WorkspaceManifest {
    /// Line by line (xtask has no TOML parser): `key = value` lines of `[workspace.package]` and
    /// `[workspace.dependencies]`, each on one line as this workspace writes them.
    fn parse(text: &str) -> anyhow::Result<WorkspaceManifest> {
        let mut section = "";
        let (mut edition, mut rust_version) = (None, None);
        let names = ["anyhow", "schemars", "serde", "serde_json"];
        let mut deps: [Option<String>; 4] = Default::default();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim().to_string());
            match section {
                "[workspace.package]" if k == "edition" => edition = Some(v),
                "[workspace.package]" if k == "rust-version" => rust_version = Some(v),
                "[workspace.dependencies]" => {
                    if let Some(i) = names.iter().position(|n| *n == k) {
                        deps[i] = Some(v);
                    }
                }
                _ => {}
            }
        }
        let unquote = |v: Option<String>, what: &str| -> anyhow::Result<String> {
            let v = v.with_context(|| format!("no `{what}` in [workspace.package]"))?;
            Ok(v.trim_matches('"').to_string())
        };
        let edition = unquote(edition, "edition")?;
        let rust_version = unquote(rust_version, "rust-version")?;
        let mut found = Vec::new();
        for (d, n) in deps.into_iter().zip(names) {
            found.push(d.with_context(|| format!("no `{n}` in [workspace.dependencies]"))?);
        }
        Ok(WorkspaceManifest {
            edition,
            rust_version,
            deps: found.try_into().expect("four names"),
        })
    }
}

const CARGO_TOML: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition.workspace = true
publish = false

# cdylib: the runner loads it; rlib: tests can link it directly.
[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
anyhow.workspace = true
schemars.workspace = true
serde.workspace = true
serde_json.workspace = true
stage-api.workspace = true
"#;

const STAGE_LIB: &str = r#"//! __NAME__: writes `count` pseudo-random numbers, one per line, checkpointing as it goes.
//!
//! ```text
__STAGE_USAGE__//! ```
//!
//! Replace the body of `run` with real work; keep the shape: read inputs from `ctx.input(..)`,
//! write outputs into `ctx.output(..)`, report with `ctx.progress/metric/log`, check
//! `ctx.check_stop()` every step, and keep whatever a restart needs in `ctx.ckpt_dir()`.
//! The stage runs in its own process, so a panic or crash here is reported, not fatal.

use std::fs::OpenOptions;
use std::io::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stage_api::{ArtifactKind, RunContext, Stage, StageInfo, StageKind};

/// The `config` table of this stage in a pipeline file. Doc comments become the JSON Schema's
/// descriptions; unknown keys and wrong types are rejected before any stage runs.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How many numbers to write.
    #[serde(default = "default_count")]
    pub count: u64,
    /// Save a checkpoint every this many numbers.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_count() -> u64 {
    1000
}

fn default_checkpoint_every() -> u64 {
    100
}

/// Everything a restart needs. Saved after the numbers it covers are on disk.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    done: u64,
    sum: u64,
    rng: u64,
    bytes: u64,
}

pub struct __CAMEL__;

impl Stage for __CAMEL__ {
    type Config = Config;

    fn info() -> StageInfo {
        StageInfo::new(
            StageKind::DataGenerator,
            "Writes `count` pseudo-random numbers (seeded), one per line.",
        )
        .input_optional(
            "previous",
            ArtifactKind::Dataset,
            "numbers.txt of an earlier stage, counted in the log",
        )
        .output("numbers", ArtifactKind::Dataset, "numbers.txt")
        .resumable()
    }

    fn run(cfg: Config, ctx: &mut RunContext) -> anyhow::Result<()> {
        anyhow::ensure!(
            cfg.checkpoint_every > 0,
            "checkpoint_every must be positive"
        );
        if let Ok(prev) = ctx.input("previous") {
            let n = std::fs::read_to_string(prev.join("numbers.txt"))?
                .lines()
                .count();
            ctx.log(format!("the previous stage wrote {n} numbers"));
        }

        // ---- start fresh, or continue from the last checkpoint
        // The work file lives in ckpt/ so that it survives a crash; lines written after the last
        // checkpoint are cut off on resume, so a resumed run writes exactly the same bytes.
        let work = ctx.ckpt_dir().join("numbers.txt");
        let state = ctx.ckpt_dir().join("state.json");
        let mut ck = Checkpoint {
            done: 0,
            sum: 0,
            rng: ctx.seed(),
            bytes: 0,
        };
        if ctx.resuming() {
            ck = serde_json::from_slice(&std::fs::read(&state)?)?;
            ctx.log(format!("resuming after {} numbers", ck.done));
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&work)?;
        file.set_len(ck.bytes)?;
        let mut file = OpenOptions::new().append(true).open(&work)?;

        // ---- the loop
        while ck.done < cfg.count {
            ctx.check_stop()?; // Ctrl-C: stop here; the next run resumes from the checkpoint
            let x = splitmix64(&mut ck.rng) % 1000;
            let line = format!("{x}\n");
            file.write_all(line.as_bytes())?;
            ck.done += 1;
            ck.sum += x;
            ck.bytes += line.len() as u64;
            if ck.done.is_multiple_of(cfg.checkpoint_every) || ck.done == cfg.count {
                file.flush()?;
                std::fs::write(&state, serde_json::to_vec(&ck)?)?;
                ctx.checkpointed(ck.done);
                ctx.progress(ck.done, cfg.count);
                ctx.metric(ck.done, "mean", ck.sum as f64 / ck.done as f64);
            }
        }

        // ---- outputs: the host promotes them atomically once `run` returns Ok
        std::fs::copy(&work, ctx.output("numbers")?.join("numbers.txt"))?;
        Ok(())
    }
}

/// SplitMix64: tiny, seeded and the same on every machine.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

stage_api::export_stage!(__CAMEL__);
"#;

const STAGE_PIPELINE: &str = r#"#:schema ../schemas/pipeline.schema.json
# Runs the `__NAME__` plugin twice, the second stage reading the first one's output.
#   cargo xtask pipeline pipelines/__NAME__.toml [stages.first.config.count=50]
[pipeline]
name = "__NAME__"
seed = 1

[stages.first]
plugin = "__NAME__"
config = { count = 1000 }

[stages.second]
plugin = "__NAME__"
inputs = { previous = "first.numbers" }
config = { count = 500, checkpoint_every = 50 }
"#;

const REWARD_LIB: &str = r#"//! __NAME__: a reward plugin. 1.0 when the completion's last line equals the reference answer,
//! `partial_credit` when the answer appears anywhere in it, else 0.0; `None` (not applicable)
//! when the reference has no answer.
//!
//! Attach it to an RL stage in a pipeline file, or score a file directly:
//!
//! ```text
__REWARD_USAGE__//! ```

use schemars::JsonSchema;
use serde::Deserialize;
use stage_api::{RewardFn, RewardSample};

/// The reward's `config` table. Checked against its JSON Schema before any stage runs.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Key of the gold answer in each sample's `reference`.
    #[serde(default = "default_answer_key")]
    pub answer_key: String,
    /// Score when the answer appears in the completion but is not its last line.
    #[serde(default)]
    pub partial_credit: f32,
}

fn default_answer_key() -> String {
    "answer".to_string()
}

pub struct __CAMEL__ {
    cfg: Config,
}

impl RewardFn for __CAMEL__ {
    type Config = Config;
    const DESCRIPTION: &'static str =
        "1 if the last line of the completion is the reference answer.";

    fn new(cfg: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&cfg.partial_credit),
            "partial_credit must be in [0, 1]"
        );
        Ok(__CAMEL__ { cfg })
    }

    fn score(&self, batch: &[RewardSample]) -> Vec<Option<f32>> {
        batch
            .iter()
            .map(|s| {
                let gold = s.reference.get(&self.cfg.answer_key)?.as_str()?.trim();
                let last = s.completion.trim().lines().last().unwrap_or("").trim();
                Some(if last == gold {
                    1.0
                } else if s.completion.contains(gold) {
                    self.cfg.partial_credit
                } else {
                    0.0
                })
            })
            .collect()
    }
}

stage_api::export_reward!(__CAMEL__);
"#;

const REWARD_SAMPLES: &str = r#"{"prompt": "2+2=", "completion": "4", "reference": {"answer": "4"}}
{"prompt": "2+3=", "completion": "it is 5\n6", "reference": {"answer": "5"}}
{"prompt": "2+4=", "completion": "7", "reference": {"answer": "6"}}
{"prompt": "hi", "completion": "hello", "reference": {}}
"#;

const IN_TREE_STAGE_USAGE: &str = "//! cargo xtask pipeline pipelines/__NAME__.toml\n";

const IN_TREE_REWARD_USAGE: &str = r#"//! rewards = [{ plugin = "__NAME__", weight = 1.0, config = { partial_credit = 0.1 } }]
//! target/debug/interplay score --reward __NAME__ plugins/__NAME__/samples.jsonl
"#;

const STANDALONE_STAGE_USAGE: &str =
    "//! cargo xtask pipeline __DIR__/pipeline.toml   # in __ROOT__; builds this crate too\n";

const STANDALONE_REWARD_USAGE: &str = r#"//! [pipeline] plugin_path = ["__DIR__"]
//! rewards = [{ plugin = "__NAME__", weight = 1.0, config = { partial_credit = 0.1 } }]
//! __ROOT__/target/release/interplay score --reward __NAME__ --plugin-dir __DIR__ __DIR__/samples.jsonl
"#;

const STANDALONE_CARGO_TOML: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition = "__EDITION__"
rust-version = "__RUST_VERSION__"
publish = false

# A workspace of its own: this crate builds by itself, outside the interplay repository.
[workspace]

# cdylib: the interplay runner loads it (dlopen) by its package name.
[lib]
crate-type = ["cdylib"]

# The versions interplay pins (its Cargo.toml, [workspace.dependencies]).
[dependencies]
anyhow = __ANYHOW__
schemars = __SCHEMARS__
serde = __SERDE__
serde_json = __SERDE_JSON__
# The plugin interface, __STAGE_API_SOURCE__. The runner refuses a plugin built against a
# stage-api whose ABI or API version it does not speak: rebuild this crate when interplay's changes.
stage-api = __STAGE_API_DEP__

[profile.release]
# Never "abort": the export macro turns a panic into an error that names this plugin.
panic = "unwind"
"#;

const STANDALONE_STAGE_PIPELINE: &str = r#"#:schema __ROOT__/schemas/pipeline.schema.json
# Runs the `__NAME__` plugin twice, the second stage reading the first one's output.
#   cargo xtask pipeline __DIR__/pipeline.toml [stages.first.config.count=50]   # in __ROOT__
[pipeline]
name = "__NAME__"
seed = 1
# This crate (relative to this file): plugins are looked for in its build output target/<profile>
# first, and `cargo xtask pipeline` builds it.
plugin_path = ["."]

[stages.first]
plugin = "__NAME__"
config = { count = 1000 }

[stages.second]
plugin = "__NAME__"
inputs = { previous = "first.numbers" }
config = { count = 500, checkpoint_every = 50 }
"#;

const STANDALONE_REWARD_README: &str = r#"# __NAME__

A reward plugin for interplay (`__ROOT__`), in a crate of its own outside the interplay repository
(`cargo xtask new-plugin __NAME__ --kind reward --out ...`). The reward is `score` in `src/lib.rs`.

* **Build:** `cargo build --release` here. The runner loads `target/release/__LIB_FILE__` (a debug
  runner, `target/debug/`).
* **Try it:** `__ROOT__/target/release/interplay score --reward __NAME__ --plugin-dir __DIR__ __DIR__/samples.jsonl`
  prints one score per sample: `1.0`, `0.0`, `0.0`, `null` (`--config '{"partial_credit": 0.5}'` makes the second `0.5`).
  The runner comes from `cargo build --release -p interplay` in `__ROOT__` (any `cargo xtask pipeline` builds it too);
  `--plugin-dir` names this crate, which stands for its `target/release`.
* **Use it in a pipeline:** put this directory on the pipeline's plugin path and name the plugin in an RL stage's rewards:

  ```toml
  [pipeline]
  plugin_path = ["__DIR__"]   # absolute, or relative to the pipeline file
  [stages.rl]
  rewards = [{ plugin = "__NAME__", weight = 1.0, config = { partial_credit = 0.1 } }]
  ```

  `cargo xtask pipeline FILE` (in `__ROOT__`) then builds this crate
  (`cargo build --release --manifest-path __DIR__/Cargo.toml --target-dir __DIR__/target`) and loads it
  from `target/release`; `interplay run FILE` loads what you built. A rebuilt library changes the
  fingerprint of the stages that use it, so they run again.

Rules of a reward: one score per sample, in order; `None` where the reward does not apply. A panic, an
error, a wrong number of scores or a NaN or infinite score fails the stage with a message naming this
plugin; it is never counted as 0. The `Config` struct is the reward's `config` table, checked against its
JSON Schema (from the doc comments) before any stage runs. `Cargo.lock` started as a copy of interplay's,
so the first build uses the versions the runner was tested with.
"#;

const STANDALONE_STAGE_README: &str = r#"# __NAME__

A stage plugin for interplay (`__ROOT__`), in a crate of its own outside the interplay repository
(`cargo xtask new-plugin __NAME__ --kind stage --out ...`). The stage is `run` in `src/lib.rs`.

* **Build and run:** `cargo xtask pipeline __DIR__/pipeline.toml` in `__ROOT__`: `pipeline.toml` has
  `plugin_path = ["."]`, so xtask builds this crate
  (`cargo build --release --manifest-path __DIR__/Cargo.toml --target-dir __DIR__/target`) and the
  runner loads it from `target/release/__LIB_FILE__`.
* **Build alone:** `cargo build --release` here; then `__ROOT__/target/release/interplay run pipeline.toml`.
* **Use it in another pipeline:** `[pipeline] plugin_path = ["__DIR__"]` (absolute, or relative to that
  pipeline file) and `plugin = "__NAME__"` in a stage.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// A fresh directory under the system temp dir (xtask has no tempfile dependency).
    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-scaffold-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn in_tree_output_is_plugins_example() {
        // plugins/example is `new-plugin example --kind stage`: the in-tree scaffold is unchanged.
        let root = scratch("in-tree");
        generate(&root, "example", Kind::Stage).unwrap();
        for f in [
            "plugins/example/Cargo.toml",
            "plugins/example/src/lib.rs",
            "pipelines/example.toml",
        ] {
            assert_eq!(
                std::fs::read_to_string(root.join(f)).unwrap(),
                std::fs::read_to_string(repo().join(f)).unwrap(),
                "{f}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reads_the_pinned_versions_of_this_workspace() {
        let ws =
            WorkspaceManifest::parse(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap())
                .unwrap();
        assert_eq!(ws.edition, "2024");
        assert!(ws.rust_version.starts_with("1."), "{}", ws.rust_version);
        assert!(ws.deps[0].starts_with("\"="), "{}", ws.deps[0]);
        assert!(ws.deps[2].contains("derive"), "{}", ws.deps[2]);
        assert!(ws.deps[3].contains("float_roundtrip"), "{}", ws.deps[3]);
        let e = WorkspaceManifest::parse("[workspace.package]\nedition = \"2024\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("rust-version"), "{e}");
    }

    #[test]
    fn standalone_crates_stay_outside_the_repository() {
        let out = scratch("standalone");
        let git = StageApi::Git("https://example.org/interplay.git".into());
        let written = generate_standalone(&repo(), &out, "my-reward", Kind::Reward, &git).unwrap();
        let dir = out.join("my-reward");
        for f in [
            "Cargo.toml",
            "Cargo.lock",
            ".gitignore",
            "README.md",
            "samples.jsonl",
            "src/lib.rs",
        ] {
            assert!(written.contains(&dir.join(f)), "{f} not in {written:?}");
        }
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        for want in [
            "\n[workspace]\n",
            "crate-type = [\"cdylib\"]",
            "edition = \"2024\"",
            "stage-api = { git = \"https://example.org/interplay.git\" }",
            "anyhow = \"=",
        ] {
            assert!(manifest.contains(want), "{want} not in\n{manifest}");
        }
        assert!(!manifest.contains(".workspace = true"), "{manifest}");
        let e = generate_standalone(&repo(), &out, "my-reward", Kind::Reward, &git)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = generate_standalone(&repo(), &repo().join("plugins"), "x", Kind::Reward, &git)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside this repository"), "{e}");
        assert!(!repo().join("plugins/x").exists());

        let path = StageApi::Path(repo().join("crates/stage-api"));
        generate_standalone(&repo(), &out, "my-stage", Kind::Stage, &path).unwrap();
        let dir = out.join("my-stage");
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let want = format!(
            "stage-api = {{ path = \"{}\" }}",
            repo().join("crates/stage-api").display()
        );
        assert!(manifest.contains(&want), "{want} not in\n{manifest}");
        let pipeline = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("plugin_path = [\".\"]"), "{pipeline}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
