//! `cargo xtask new-plugin` output builds, loads and runs inside a pipeline, as generated.
//!
//! The in-tree scaffold is generated into a temporary copy of the workspace manifest (same pinned
//! dependencies, path dependencies pointing back here); the `--out` scaffold is a standalone crate
//! in a temporary directory. Both are built with Cargo offline into target directories shared
//! across test runs, so the test never touches this workspace's sources and only its first run
//! compiles the dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use xtask::scaffold::{Kind, StageApi, generate, generate_standalone};

use crate::support::{ok, plugin_dir, runner};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn generated_plugins_build_load_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let root = repo();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members_line = manifest
        .lines()
        .find(|l| l.starts_with("members = "))
        .unwrap();
    let manifest = manifest
        .replace(members_line, "members = [\"plugins/*\"]")
        .replace("path = \"", &format!("path = \"{}/", root.display()));
    std::fs::write(ws.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(root.join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();

    generate(ws, "my-stage", Kind::Stage).unwrap();
    generate(ws, "my-reward", Kind::Reward).unwrap();
    let e = generate(ws, "my-stage", Kind::Stage)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    assert!(generate(ws, "Bad_Name", Kind::Stage).is_err());

    // Shared across test runs so that only the first run compiles the dependencies.
    let target = root.join("target").join("scaffold-test");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Command::new(cargo)
        .current_dir(ws)
        .args([
            "build",
            "--offline",
            "--quiet",
            "-p",
            "my-stage",
            "-p",
            "my-reward",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "scaffold does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let plugins = target.join("debug");

    // The generated pipeline runs, twice: the second time everything is unchanged.
    let run = |extra: &[&str]| {
        runner()
            .current_dir(ws)
            .args([
                "run",
                "pipelines/my-stage.toml",
                "--run-dir",
                "run",
                "--plugin-dir",
            ])
            .arg(&plugins)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = ok(run(&[]));
    assert!(
        out.contains("the previous stage wrote 1000 numbers"),
        "{out}"
    );
    let numbers =
        std::fs::read_to_string(ws.join("run/stages/second/out/numbers/numbers.txt")).unwrap();
    assert_eq!(numbers.lines().count(), 500);
    assert!(ok(run(&[])).matches("unchanged, skipped").count() == 2);

    // The generated reward scores its generated samples.
    let out = runner()
        .current_dir(ws)
        .args([
            "score",
            "--reward",
            "my-reward",
            "--config",
            r#"{"partial_credit": 0.25}"#,
            "--plugin-dir",
        ])
        .arg(&plugins)
        .arg("plugins/my-reward/samples.jsonl")
        .output()
        .unwrap();
    assert_eq!(
        ok(out).lines().collect::<Vec<_>>(),
        ["1.0", "0.25", "0.0", "null"]
    );

    // And it loads as a reward plugin with its schema.
    let lib = plugins.join(stage_host::library_file_name("my-reward"));
    let m = stage_host::load_reward(&lib).unwrap().manifest;
    assert_eq!(
        m.config_schema["properties"]["partial_credit"]["type"],
        serde_json::json!("number")
    );
}

/// `cargo xtask new-plugin NAME --kind reward --out DIR`: a crate outside the repository that
/// builds on its own (as xtask builds it: `xtask::plugin_crate_build`), scores its samples, and is
/// found by a pipeline through `[pipeline] plugin_path` (relative to the pipeline file).
#[test]
fn standalone_plugins_build_outside_the_repo_and_run_through_plugin_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("elsewhere");
    let root = repo();
    let stage_api = StageApi::Path(root.join("crates/stage-api"));
    generate_standalone(&root, &out, "my-reward", Kind::Reward, &stage_api).unwrap();
    generate_standalone(&root, &out, "my-stage", Kind::Stage, &stage_api).unwrap();
    let (reward, stage) = (out.join("my-reward"), out.join("my-stage"));
    let readme = std::fs::read_to_string(reward.join("README.md")).unwrap();
    assert!(
        readme.contains("cargo build --release")
            && readme.contains(&format!("plugin_path = [\"{}\"]", reward.display()))
            && readme.contains("interplay score --reward my-reward"),
        "{readme}"
    );

    // Built the way `cargo xtask pipeline` builds a plugin crate: in its own target/ (here a link
    // to a directory kept across test runs), with the runner's profile.
    let shared = root.join("target").join("scaffold-standalone-test");
    std::fs::create_dir_all(&shared).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for krate in [&reward, &stage] {
        std::os::unix::fs::symlink(&shared, krate.join("target")).unwrap();
        let build =
            xtask::plugin_crate_build(&cargo, krate, stage_host::BUILD_PROFILE == "release")
                .args(["--offline", "--quiet"])
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .unwrap();
        assert!(
            build.status.success(),
            "{} does not build:\n{}",
            krate.display(),
            String::from_utf8_lossy(&build.stderr)
        );
    }

    // Its samples, through `interplay score --plugin-dir <crate>`.
    let scores = runner()
        .args(["score", "--reward", "my-reward", "--plugin-dir"])
        .arg(&reward)
        .arg(reward.join("samples.jsonl"))
        .output()
        .unwrap();
    assert_eq!(
        ok(scores).lines().collect::<Vec<_>>(),
        ["1.0", "0.0", "0.0", "null"]
    );

    // A pipeline elsewhere finds it through plugin_path; the fixture stage scores with it.
    let pipelines = tmp.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("rl.toml"),
        r#"[pipeline]
name = "rl"
plugin_path = ["../elsewhere/my-reward"]

[stages.rl]
plugin = "fixture-stage"
config = { steps = 1 }
rewards = [{ plugin = "my-reward", name = "mine", config = { partial_credit = 0.5 } }]
"#,
    )
    .unwrap();
    let run = || {
        runner()
            .current_dir(tmp.path())
            .args([
                "run",
                "pipelines/rl.toml",
                "--run-dir",
                "run",
                "--plugin-dir",
            ])
            .arg(plugin_dir())
            .output()
            .unwrap()
    };
    ok(run());
    let stage_dir = tmp.path().join("run/stages/rl");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stage_dir.join("out/data/result.json")).unwrap())
            .unwrap();
    assert_eq!(
        result["rewards"],
        json!([{ "name": "mine", "weight": 1.0, "scores": [1.0, 0.0, null] }])
    );
    let run_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("run/run.json")).unwrap()).unwrap();
    let library = run_json["stages"]["rl"]["rewards"][0]["library"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        Path::new(&library),
        reward
            .join("target")
            .join(stage_host::BUILD_PROFILE)
            .join(stage_host::library_file_name("my-reward"))
    );
    assert!(ok(run()).contains("unchanged, skipped"));

    // The standalone stage runs from its own pipeline.toml (plugin_path = ["."]).
    let t = ok(runner()
        .current_dir(tmp.path())
        .arg("run")
        .arg(stage.join("pipeline.toml"))
        .args(["--run-dir", "stage-run"])
        .output()
        .unwrap());
    assert!(t.contains("the previous stage wrote 1000 numbers"), "{t}");
}
