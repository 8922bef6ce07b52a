//! The runner end to end: run directory, skip/force/resume, crash isolation, Ctrl-C.

use std::time::Duration;

use serde_json::json;

use crate::support::{Sandbox, interrupt_after_checkpoints, ok, text};

const CHAIN: &str = r#"[pipeline]
name = "chain"
seed = 42

[stages.a]
plugin = "fixture-stage"
config = { steps = 3, label = "first" }

[stages.b]
plugin = "fixture-stage"
inputs = { source = "a.data" }
config = { steps = 4 }

[stages.c]
plugin = "fixture-stage"
inputs = { source = "b.data" }
config = { steps = 2 }
"#;

fn attempts(sb: &Sandbox, stage: &str) -> usize {
    std::fs::read_to_string(sb.stage(stage).join("events.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"attempt\""))
        .count()
}

#[test]
fn run_directory_layout_and_outputs() {
    let sb = Sandbox::new(CHAIN);
    ok(sb.run(&[]));
    let root = sb.run_dir();
    for f in ["pipeline.resolved.toml", "run.json"] {
        assert!(root.join(f).is_file(), "{f}");
    }
    for f in [
        "request.json",
        "events.jsonl",
        "stderr.log",
        "outcome.json",
        "DONE",
        "ckpt",
        "out/data/result.json",
    ] {
        assert!(sb.stage("b").join(f).exists(), "stages/b/{f}");
    }
    assert!(!sb.stage("b").join("out.partial").exists());
    // Data flowed a -> b -> c.
    assert_eq!(sb.result("c")["total"], json!(9));
    assert_eq!(sb.result("a")["label"], json!("first"));
    assert_eq!(
        sb.result("a")["seed"],
        json!(pipeline::derive_seed(42, "a"))
    );
    // The request is exactly what the plugin got; the events are machine-readable.
    let req: stage_api::Request =
        serde_json::from_slice(&std::fs::read(sb.stage("b").join("request.json")).unwrap())
            .unwrap();
    assert_eq!(
        req.inputs["source"][0].path,
        std::path::absolute(sb.stage("a").join("out/data")).unwrap()
    );
    assert_eq!(req.config, json!({ "steps": 4 }));
    let events = std::fs::read_to_string(sb.stage("b").join("events.jsonl")).unwrap();
    let progress: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "progress")
        .collect();
    assert_eq!(progress.len(), 4);
    assert_eq!(progress[3]["step"], json!(4));
    // The plugin's println! went to stderr.log, not into the event stream.
    assert!(
        std::fs::read_to_string(sb.stage("b").join("stderr.log"))
            .unwrap()
            .contains("fixture: step 4")
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["stages"]["a"]["plugin"], json!("fixture-stage"));
    assert!(
        run["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "p.toml")
    );
}

#[test]
fn unchanged_stages_are_skipped_and_changes_rerun_downstream() {
    let sb = Sandbox::new(CHAIN);
    ok(sb.run(&[]));
    let first = std::fs::read(sb.stage("c").join("out/data/result.json")).unwrap();
    let out = ok(sb.run(&[]));
    assert_eq!(out.matches("unchanged, skipped").count(), 3, "{out}");
    assert_eq!(
        (attempts(&sb, "a"), attempts(&sb, "b"), attempts(&sb, "c")),
        (1, 1, 1)
    );

    // Changing b's config reruns b and c, not a.
    let out = ok(sb.run(&["stages.b.config.steps=5"]));
    assert_eq!(
        (attempts(&sb, "a"), attempts(&sb, "b"), attempts(&sb, "c")),
        (1, 2, 2),
        "{out}"
    );
    assert_eq!(sb.result("c")["total"], json!(10));

    // Back to the original config: same seed and config give the same bytes.
    ok(sb.run(&[]));
    assert_eq!(
        std::fs::read(sb.stage("c").join("out/data/result.json")).unwrap(),
        first
    );
}

#[test]
fn force_reruns_the_stage_and_everything_downstream() {
    let sb = Sandbox::new(CHAIN);
    ok(sb.run(&[]));
    ok(sb.run(&["--force", "b"]));
    assert_eq!(
        (attempts(&sb, "a"), attempts(&sb, "b"), attempts(&sb, "c")),
        (1, 2, 2)
    );
    ok(sb.run(&["--force", "a"]));
    assert_eq!(
        (attempts(&sb, "a"), attempts(&sb, "b"), attempts(&sb, "c")),
        (2, 3, 3)
    );
    let out = sb.run(&["--force", "zz"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--force zz: no stage named `zz` (stages: a, b, c)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_finished_stage_whose_output_changed_is_neither_skipped_nor_handed_on() {
    let sb = Sandbox::new(CHAIN);
    ok(sb.run(&[]));
    let result = sb.stage("a").join("out/data/result.json");
    let good = std::fs::read(&result).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    for (how, bytes) in [
        ("changed", &bad[..]),
        ("truncated", &good[..good.len() / 2]),
    ] {
        std::fs::write(&result, bytes).unwrap();
        let out = sb.run(&[]);
        let t = text(&out);
        assert!(!out.status.success(), "{how}: {t}");
        assert!(
            t.contains("stages/a/out/data/result.json") && t.contains("--force a"),
            "{how}: {t}"
        );
        assert_eq!(attempts(&sb, "b"), 1, "{how}: b ran on a's changed output");
    }
    std::fs::remove_file(&result).unwrap();
    let t = text(&sb.run(&[]));
    assert!(
        t.contains("result.json: missing") && t.contains("--force a"),
        "{t}"
    );
    std::fs::write(&result, &good).unwrap();
    std::fs::write(sb.stage("a").join("out/data/extra.txt"), "x").unwrap();
    let t = text(&sb.run(&[]));
    assert!(
        t.contains("extra.txt: not expected") && t.contains("--force a"),
        "{t}"
    );
    // The original bytes verify again; --force rebuilds the output.
    std::fs::remove_file(sb.stage("a").join("out/data/extra.txt")).unwrap();
    let t = ok(sb.run(&[]));
    assert_eq!(t.matches("unchanged, skipped").count(), 3, "{t}");
    std::fs::write(&result, &bad).unwrap();
    ok(sb.run(&["--force", "a"]));
    assert_eq!(std::fs::read(&result).unwrap(), good);

    // A DONE from before outputs were recorded vouches for nothing: the stage runs again.
    let done = sb.stage("c").join("DONE");
    let mut marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&done).unwrap()).unwrap();
    assert!(
        marker["outputs"]["data"]["result.json"]["sha256"].is_string(),
        "{marker}"
    );
    marker.as_object_mut().unwrap().remove("outputs");
    std::fs::write(&done, marker.to_string()).unwrap();
    let before = attempts(&sb, "c");
    ok(sb.run(&[]));
    assert_eq!(attempts(&sb, "c"), before + 1);
}

/// A crash in one stage: clear report, runner exits non-zero, earlier outputs intact, and the
/// next run resumes the crashed stage from its last checkpoint.
fn crash_case(fail: &str, expect: &[&str]) {
    let sb = Sandbox::new(CHAIN);
    let fail_override = format!("stages.b.config.fail=\"{fail}\"");
    let args = [
        fail_override.as_str(),
        "stages.b.config.fail_at=3",
        "stages.b.config.fail_only_fresh=true",
    ];
    let out = sb.run(&args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for e in expect {
        assert!(t.contains(e), "expected `{e}` in:\n{t}");
    }
    assert!(t.contains("stage `b` (plugin fixture-stage 0.1.0)"), "{t}");
    assert!(
        t.contains("fixture: failing at step 3"),
        "stderr tail missing:\n{t}"
    );
    assert!(t.contains("finished stages are kept: a"), "{t}");
    // Earlier outputs intact, the crashed stage not done, nothing after it ran.
    assert!(sb.done("a") && !sb.done("b") && !sb.stage("c").exists());
    assert_eq!(sb.result("a")["total"], json!(3));
    assert!(!sb.stage("b").join("out").exists());
    let outcome = sb.outcome("b");
    assert_eq!(outcome["stage"], json!("b"));
    assert!(
        outcome["stderr_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("failing at step 3"))
    );

    // Run again: a is skipped, b resumes after its last checkpoint (step 2) and finishes.
    let t = ok(sb.run(&args));
    assert!(t.contains("resuming after step 2"), "{t}");
    assert_eq!(attempts(&sb, "a"), 1);
    assert_eq!(sb.result("b")["resumed_after"], json!(2));
    assert_eq!(sb.result("c")["total"], json!(9));
}

#[test]
fn abort_is_reported_and_resumed() {
    crash_case("abort", &["crashed: killed by signal 6 (SIGABRT: abort)"]);
}

#[test]
fn segfault_is_reported_and_resumed() {
    crash_case(
        "segfault",
        &["crashed: killed by signal 11 (SIGSEGV: segmentation fault)"],
    );
}

#[test]
fn panic_is_caught_and_reported() {
    crash_case(
        "panic",
        &["panicked: exit code 1", "panic: asked to panic at step 3"],
    );
}

#[test]
fn error_is_reported_with_its_message() {
    crash_case("error", &["failed: exit code 1", "asked to fail at step 3"]);
}

#[test]
fn resume_is_skipped_when_the_stage_changed() {
    // A crashed attempt's checkpoint belongs to its fingerprint: a different config starts over.
    let sb = Sandbox::new(CHAIN);
    let out = sb.run(&[
        "stages.b.config.fail=\"abort\"",
        "stages.b.config.fail_at=3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    ok(sb.run(&[]));
    assert_eq!(sb.result("b")["resumed_after"], json!(null));
}

#[test]
fn ctrl_c_stops_the_stage_cleanly_and_the_next_run_resumes() {
    let sb = Sandbox::new(CHAIN);
    let slow = ["stages.b.config.steps=400", "stages.b.config.step_ms=10"];
    // Until b has written a few checkpoints.
    interrupt_after_checkpoints(
        &sb,
        &slow,
        "b",
        3,
        Duration::from_secs(60),
        Duration::from_millis(20),
        "stage b finished before Ctrl-C",
    );
    // The plugin saw should_stop() and returned Interrupted: a clean exit, not a kill.
    let outcome = sb.outcome("b");
    assert_eq!(
        (outcome["status"].as_str(), outcome["exit"].as_str()),
        (Some("interrupted"), Some("exit code 0"))
    );
    assert!(sb.done("a") && !sb.done("b") && !sb.stage("c").exists());
    let saved: u64 = std::fs::read_to_string(sb.stage("b").join("ckpt/step.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((3..400).contains(&saved), "{saved}");

    let t = ok(sb.run(&slow));
    assert!(t.contains("started (resuming)"), "{t}");
    let resumed = sb.result("b")["resumed_after"].as_u64().unwrap();
    assert!(
        resumed >= saved,
        "resumed after {resumed}, checkpoint said {saved}"
    );
    assert_eq!(sb.result("c")["total"], json!(405));
}

#[test]
fn rewards_are_scored_in_the_stage_host() {
    let sb = Sandbox::new(
        r#"[pipeline]
name = "rl"

[stages.rl]
plugin = "fixture-stage"
config = { steps = 1 }
rewards = [
  { plugin = "fixture-reward", weight = 0.5 },
  { plugin = "fixture-reward", name = "gold", config = { answer_key = "gold" } },
]
"#,
    );
    ok(sb.run(&[]));
    assert_eq!(
        sb.result("rl")["rewards"],
        json!([
            { "name": "fixture-reward", "weight": 0.5, "scores": [1.0, 0.0, null] },
            { "name": "gold", "weight": 1.0, "scores": [null, null, null] },
        ])
    );
}

#[test]
fn interrupted_then_resumed_gives_the_same_bytes_as_uninterrupted() {
    let toml = "[pipeline]\nname = \"ex\"\nseed = 5\n\n[stages.n]\nplugin = \"example\"\n\
                config = { count = 1000000, checkpoint_every = 1000 }\n";
    let sb = Sandbox::new(toml);
    interrupt_after_checkpoints(
        &sb,
        &[],
        "n",
        2,
        Duration::from_secs(60),
        Duration::from_millis(5),
        "the stage finished before Ctrl-C; raise count",
    );
    let t = ok(sb.run(&[]));
    assert!(t.contains("resuming after"), "{t}");

    let fresh = Sandbox::new(toml);
    ok(fresh.run(&[]));
    let file = "out/numbers/numbers.txt";
    let (a, b) = (
        std::fs::read(sb.stage("n").join(file)).unwrap(),
        std::fs::read(fresh.stage("n").join(file)).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert!(a == b, "resumed output differs from an uninterrupted run");
}
