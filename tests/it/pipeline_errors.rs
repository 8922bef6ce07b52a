//! Every pipeline error names its location (file:line or the override) and the key path.
//! Data-driven: each case is a pipeline, overrides, and the lines the error must contain.

use std::path::Path;

use crate::support::plugin_dir;

/// Parses (and, if parsing succeeds, preflights against the fixture plugins) and returns the error.
fn error_of(toml: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let p = match pipeline::Pipeline::parse(Path::new("p.toml"), toml, &overrides) {
        Ok(p) => p,
        Err(e) => return e.to_string(),
    };
    match pipeline::preflight(&p, &[plugin_dir()]) {
        Ok(_) => panic!("expected an error for:\n{toml}\noverrides {overrides:?}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn check(toml: &str, overrides: &[&str], expected: &[&str]) {
    let e = error_of(toml, overrides);
    for want in expected {
        assert!(
            e.contains(want),
            "error should contain\n  {want}\nbut was\n  {}",
            e.replace('\n', "\n  ")
        );
    }
}

const HEAD: &str = "[pipeline]\nname = \"t\"\nseed = 1\n\n"; // lines 1-4

fn with_head(stages: &str) -> String {
    format!("{HEAD}{stages}")
}

#[test]
fn cycle() {
    let toml = with_head(
        r#"[stages.a]
plugin = "fixture-stage"
inputs = { source = "b.data" }

[stages.b]
plugin = "fixture-stage"
inputs = { source = "a.data" }
"#,
    );
    check(
        &toml,
        &[],
        &["p.toml:11: stages.b.inputs: cycle: a -> b -> a"],
    );
    let self_loop = with_head("[stages.a]\nplugin = \"fixture-stage\"\nafter = [\"a\"]\n");
    check(
        &self_loop,
        &[],
        &["p.toml:7: stages.a.after: cycle: a -> a"],
    );
}

#[test]
fn dangling_input() {
    let toml =
        with_head("[stages.a]\nplugin = \"fixture-stage\"\ninputs = { source = \"zz.data\" }\n");
    check(
        &toml,
        &[],
        &["p.toml:7: stages.a.inputs.source: dangling reference: no stage named `zz` (stages: a)"],
    );
    let bad_ref =
        with_head("[stages.a]\nplugin = \"fixture-stage\"\ninputs = { source = \"zzdata\" }\n");
    check(
        &bad_ref,
        &[],
        &["p.toml:7: stages.a.inputs.source: expected a reference `stage.output`"],
    );
    let toml = with_head(
        "[stages.a]\nplugin = \"fixture-stage\"\n\n[stages.b]\nplugin = \"fixture-stage\"\ninputs = { source = \"a.nope\" }\n",
    );
    check(
        &toml,
        &[],
        &[
            "p.toml:10: stages.b.inputs.source: stage `a` (plugin `fixture-stage`) has no output `nope`; its outputs: data",
        ],
    );
    let toml = with_head(
        "[stages.a]\nplugin = \"fixture-stage\"\n\n[stages.b]\nplugin = \"fixture-stage\"\ninputs = { sorce = \"a.data\" }\n",
    );
    check(
        &toml,
        &[],
        &[
            "p.toml:10: stages.b.inputs.sorce: plugin `fixture-stage` has no input `sorce`; its inputs: source",
        ],
    );
}

#[test]
fn unknown_key() {
    check(
        &with_head("[stages.a]\nplugn = \"fixture-stage\"\n"),
        &[],
        &["p.toml:6: stages.a.plugn: unknown key `plugn`; expected one of: plugin, config, inputs"],
    );
    check(
        "[pipeline]\nname = \"t\"\nsed = 3\n[stages.a]\nplugin = \"fixture-stage\"\n",
        &[],
        &["p.toml:3: pipeline.sed: unknown key `sed`"],
    );
    // Keys inside `config` are checked against the plugin's JSON Schema.
    check(
        &with_head("[stages.a]\nplugin = \"fixture-stage\"\nconfig = { steps = 2, stpes = 3 }\n"),
        &[],
        &[
            "p.toml:7: stages.a.config.stpes: unknown key `stpes` for plugin `fixture-stage`; expected one of: fail, fail_at",
        ],
    );
    check(
        &with_head(
            "[stages.a]\nplugin = \"fixture-stage\"\n\n[[stages.a.rewards]]\nplugin = \"fixture-reward\"\nconfig = { answer_kye = \"x\" }\n",
        ),
        &[],
        &[
            "p.toml:10: stages.a.rewards[0].config.answer_kye: unknown key `answer_kye` for plugin `fixture-reward`",
        ],
    );
}

#[test]
fn wrong_type() {
    check(
        "[pipeline]\nname = \"t\"\nseed = \"one\"\n[stages.a]\nplugin = \"fixture-stage\"\n",
        &[],
        &["p.toml:3: pipeline.seed: expected a non-negative integer, found a string"],
    );
    check(
        "[pipeline]\nname = \"t\"\n[stages.a]\nplugin = \"fixture-stage\"\nseed = 1.5\n",
        &[],
        &["p.toml:5: stages.a.seed: expected a non-negative integer, found a float"],
    );
    check(
        &with_head(
            "[stages.a]\nplugin = \"fixture-stage\"\n\n[stages.a.config]\nlabel = \"x\"\nsteps = \"two\"\n",
        ),
        &[],
        &["p.toml:10: stages.a.config.steps: \"two\" is not of type \"integer\""],
    );
    check(
        &with_head("[stages.a]\nplugin = \"fixture-stage\"\nconfig = { fail = \"explode\" }\n"),
        &[],
        &["p.toml:7: stages.a.config.fail:"],
    );
    check(
        &with_head("[stages.a]\nplugin = 3\n"),
        &[],
        &["p.toml:6: stages.a.plugin: expected a string, found an integer"],
    );
}

#[test]
fn bad_override() {
    let toml = with_head("[stages.a]\nplugin = \"fixture-stage\"\nconfig = { steps = 2 }\n");
    check(
        &toml,
        &["stages.a.confg.steps=3"],
        &[
            "command-line override `stages.a.confg.steps=3`: stages.a.confg: no such key in p.toml (write `+stages.a.confg.steps=...` to add it)",
        ],
    );
    check(
        &toml,
        &["stages.a.config.steps=[1,"],
        &[
            "command-line override `stages.a.config.steps=[1,`: stages.a.config.steps: `[1,` is not a TOML value",
        ],
    );
    check(
        &toml,
        &["stages.a.config.steps"],
        &["command-line override `stages.a.config.steps`: expected `key.path=value`"],
    );
    check(
        &toml,
        &["stages.a.config.steps=\"x\""],
        &[
            "command-line override `stages.a.config.steps=\"x\"`: stages.a.config.steps: \"x\" is not of type \"integer\"",
        ],
    );
    // New keys inside `config` are allowed by the parser and then judged by the schema.
    check(
        &toml,
        &["stages.a.config.nope=1"],
        &[
            "command-line override `stages.a.config.nope=1`: stages.a.config.nope: unknown key `nope`",
        ],
    );
    check(
        &toml,
        &["pipeline.seed=-1"],
        &[
            "command-line override `pipeline.seed=-1`: pipeline.seed: expected a non-negative integer",
        ],
    );
    check(
        &toml,
        &["stages.a.seed=-1"],
        &[
            "command-line override `stages.a.seed=-1`: stages.a.seed: expected a non-negative integer",
        ],
    );
}

#[test]
fn overrides_apply() {
    let toml = with_head("[stages.a]\nplugin = \"fixture-stage\"\nconfig = { steps = 2 }\n");
    let o = [
        "stages.a.config.steps=7",
        "stages.a.config.label=hello",
        "pipeline.device=cpu",
        "+stages.a.description=\"x y\"",
    ];
    let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
    let p = pipeline::Pipeline::parse(Path::new("p.toml"), &toml, &o).unwrap();
    assert_eq!(
        p.stages[0].config,
        serde_json::json!({ "steps": 7, "label": "hello" })
    );
    let resolved = p.resolved_toml();
    assert!(
        resolved.contains("steps = 7") && resolved.contains("description = \"x y\""),
        "{resolved}"
    );
    // The resolved TOML parses back to the same pipeline.
    let again = pipeline::Pipeline::parse(Path::new("r.toml"), &resolved, &[]).unwrap();
    assert_eq!(again.stages, p.stages);
}

#[test]
fn syntax_error_has_a_line() {
    check(
        &with_head("[stages.a]\nplugin = \"fixture-stage\nconfig = {}\n"),
        &[],
        &["p.toml:6: TOML syntax error"],
    );
}

#[test]
fn preflight_checks_devices_plugins_and_inputs() {
    check(
        "[pipeline]\nname = \"t\"\ndevice = \"cuda\"\n[stages.a]\nplugin = \"fixture-stage\"\n",
        &[],
        &[
            "p.toml:3: pipeline.device: plugin `fixture-stage` cannot run on `cuda`; it supports: cpu",
        ],
    );
    check(
        &with_head("[stages.a]\nplugin = \"no-such\"\n"),
        &[],
        &["p.toml:6: stages.a.plugin: plugin `no-such` not found"],
    );
    check(
        &with_head("[stages.a]\nplugin = \"fixture-bad-abi\"\n"),
        &[],
        &["p.toml:6: stages.a.plugin:", "ABI version mismatch"],
    );
    // All problems are reported at once, not one per run.
    check(
        &with_head(
            "[stages.a]\nplugin = \"fixture-stage\"\nconfig = { steps = -1 }\n[stages.b]\nplugin = \"nope\"\n",
        ),
        &[],
        &[
            "p.toml:7: stages.a.config.steps",
            "p.toml:9: stages.b.plugin",
        ],
    );
}

#[test]
fn seeds_depend_on_pipeline_seed_and_stage_name_only() {
    let toml = with_head(
        "[stages.a]\nplugin = \"fixture-stage\"\n[stages.b]\nplugin = \"fixture-stage\"\n",
    );
    let p = pipeline::Pipeline::parse(Path::new("p.toml"), &toml, &[]).unwrap();
    let q =
        pipeline::Pipeline::parse(Path::new("p.toml"), &toml, &["pipeline.seed=2".into()]).unwrap();
    assert_ne!(p.stages[0].seed, p.stages[1].seed);
    assert_ne!(p.stages[0].seed, q.stages[0].seed);
    assert_eq!(p.stages[0].seed, pipeline::derive_seed(1, "a"));
}

#[test]
fn plugin_path_errors_name_file_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("libs")).unwrap();
    std::fs::write(d.join("notes.txt"), "").unwrap();
    let file = d.join("p.toml");
    let f = file.display();
    let stages = "\n[stages.a]\nplugin = \"fixture-stage\"\n";
    let parse = |pipeline: &str, overrides: &[&str]| {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        pipeline::Pipeline::parse(&file, &format!("{pipeline}{stages}"), &o)
    };
    let err =
        |pipeline: &str, overrides: &[&str]| parse(pipeline, overrides).unwrap_err().to_string();

    let e = err(
        "[pipeline]\nname = \"t\"\nplugin_path = [\n  \"libs\",\n  \"nope\",\n]\n",
        &[],
    );
    let want = format!(
        "{f}:5: pipeline.plugin_path[1]: plugin directory `nope` does not exist (relative to the directory of {f}: {})",
        d.join("nope").display()
    );
    assert!(e.contains(&want), "{want}\nnot in\n{e}");
    assert!(!e.contains("plugin_path[0]"), "{e}");

    let e = err(
        "[pipeline]\nname = \"t\"\nplugin_path = [\"notes.txt\"]\n",
        &[],
    );
    assert!(
        e.contains(&format!(
            "{f}:3: pipeline.plugin_path[0]: plugin directory `notes.txt` is not a directory"
        )),
        "{e}"
    );
    let e = err("[pipeline]\nname = \"t\"\nplugin_path = \"libs\"\n", &[]);
    assert!(
        e.contains(&format!(
            "{f}:3: pipeline.plugin_path: expected a list of directories"
        )),
        "{e}"
    );
    let e = err("[pipeline]\nname = \"t\"\nplugin_path = [3]\n", &[]);
    assert!(
        e.contains(&format!(
            "{f}:3: pipeline.plugin_path[0]: expected a directory path, found an integer"
        )),
        "{e}"
    );
    // From the command line, relative to the current directory.
    let e = err(
        "[pipeline]\nname = \"t\"\n",
        &["pipeline.plugin_path=[\"no-such-dir\"]"],
    );
    let cwd = std::env::current_dir().unwrap();
    assert!(
        e.contains(&format!(
            "command-line override `pipeline.plugin_path=[\"no-such-dir\"]`: pipeline.plugin_path[0]: plugin directory \
             `no-such-dir` does not exist (relative to the current directory: {})",
            cwd.join("no-such-dir").display()
        )),
        "{e}"
    );

    // A good one resolves against the file's directory; absolute paths stay as they are.
    let abs = d.join("libs").display().to_string();
    let p = parse(
        &format!("[pipeline]\nname = \"t\"\nplugin_path = [\"libs\", {abs:?}]\n"),
        &[],
    )
    .unwrap();
    assert_eq!(p.plugin_path, [d.join("libs"), d.join("libs")]);

    // The runner reports it before anything runs, and `plan --json` hands xtask absolute paths.
    std::fs::write(
        &file,
        format!("[pipeline]\nname = \"t\"\nplugin_path = [\"nope\"]\n{stages}"),
    )
    .unwrap();
    let out = crate::support::runner()
        .current_dir(d)
        .args(["run", "p.toml"])
        .output()
        .unwrap();
    let t = crate::support::text(&out);
    assert!(
        !out.status.success()
            && t.contains(
                "p.toml:3: pipeline.plugin_path[0]: plugin directory `nope` does not exist"
            ),
        "{t}"
    );
    std::fs::write(
        &file,
        format!("[pipeline]\nname = \"t\"\nplugin_path = [\"libs\"]\n{stages}"),
    )
    .unwrap();
    let out = crate::support::runner()
        .current_dir(d)
        .args(["plan", "p.toml", "--json"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["plugin_path"], serde_json::json!([d.join("libs")]));
}
