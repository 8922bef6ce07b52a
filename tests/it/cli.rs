//! The runner's other commands: `plan --json` (what xtask builds) and `schema --check` (CI).

use serde_json::json;

use crate::support::{Sandbox, ok, plugin_dir, runner, text};

#[test]
fn plan_lists_plugins_rewards_and_features() {
    let sb = Sandbox::new(
        r#"[pipeline]
name = "p"
device = "cuda:0"

[stages.rl]
plugin = "fixture-stage"
rewards = [{ plugin = "fixture-reward" }]

[stages.eval]
plugin = "fixture-stage"
device = "cpu"
inputs = { source = "rl.data" }
"#,
    );
    let out = runner()
        .current_dir(sb.path())
        .args(["plan", "p.toml", "--json"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(plan["plugins"], json!(["fixture-reward", "fixture-stage"]));
    assert_eq!(plan["features"], json!(["cuda"]));
    assert_eq!(plan["stages"][1]["device"], json!("cpu"));
    // Overrides apply to the plan too; errors are the parser's.
    let out = runner()
        .current_dir(sb.path())
        .args([
            "plan",
            "p.toml",
            "pipeline.device=cpu",
            "stages.rl.device=cpu",
            "--json",
        ])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(plan["features"], json!([]));
    let out = runner()
        .current_dir(sb.path())
        .args(["plan", "p.toml", "stages.nope.plugin=x"])
        .output()
        .unwrap();
    assert!(
        !out.status.success()
            && text(&out).contains("command-line override `stages.nope.plugin=x`"),
        "{}",
        text(&out)
    );
}

#[test]
fn schema_check_detects_stale_files() {
    let sb = Sandbox::new("");
    let schema = |extra: &[&str]| {
        runner()
            .current_dir(sb.path())
            .args([
                "schema",
                "--out",
                "schemas",
                "--plugin",
                "fixture-stage",
                "--plugin-dir",
            ])
            .arg(plugin_dir())
            .args(extra)
            .output()
            .unwrap()
    };
    ok(schema(&[]));
    let file = sb.path().join("schemas/plugins/fixture-stage.schema.json");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        written["properties"]["steps"]["description"],
        json!("Steps to count.")
    );
    assert!(sb.path().join("schemas/pipeline.schema.json").is_file());
    ok(schema(&["--check"]));

    std::fs::write(&file, "{}\n").unwrap();
    let out = schema(&["--check"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("fixture-stage.schema.json"),
        "{}",
        text(&out)
    );
    std::fs::write(sb.path().join("schemas/plugins/gone.schema.json"), "{}\n").unwrap();
    ok(schema(&[]));
    assert!(!sb.path().join("schemas/plugins/gone.schema.json").exists());
    ok(schema(&["--check"]));
}

/// Every pipeline file shipped in `pipelines/` (the paper's included) passes everything `run` checks before it
/// starts: structure, wiring, plugins, devices and every config against its plugin's schema.
#[test]
fn every_shipped_pipeline_passes_the_checks_run_makes_first() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![];
    for dir in ["pipelines", "pipelines/paper"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 14, "{files:?}");
    for f in files {
        let o = crate::support::runner()
            .arg("check")
            .arg(&f)
            .arg("--plugin-dir")
            .arg(crate::support::plugin_dir())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}:\n{}",
            f.display(),
            crate::support::text(&o)
        );
    }
}
