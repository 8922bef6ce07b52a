//! `cargo xtask new-plugin` output builds, loads and runs inside a pipeline, as generated.
//!
//! The scaffold is generated into a temporary copy of the workspace manifest (same pinned
//! dependencies, path dependencies pointing back here) and built with Cargo offline into its own
//! target directory, so the test never touches this workspace's sources.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::scaffold::{Kind, generate};

use crate::support::{ok, runner};

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
