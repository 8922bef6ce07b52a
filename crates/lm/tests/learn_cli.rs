//! The `learn` binary end to end: flag errors, and a tiny run that writes its report and checkpoint.

use std::process::Command;

fn learn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_learn"))
}

/// Runs `learn` with `args`, asserts that it fails, and returns its stderr.
fn failure(args: &[&str]) -> String {
    let out = learn().args(args).output().unwrap();
    assert!(!out.status.success(), "learn {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_flag_is_named_in_the_error() {
    let err = failure(&["--lrr", "1e-3"]);
    assert!(err.contains("unknown flag `--lrr`"), "{err}");
    assert!(err.contains("--min-lr"), "the error lists the flags: {err}");
}

#[test]
fn bad_value_names_its_flag() {
    for flag in [
        "--rl-steps",
        "--steps",
        "--stop-at-step",
        "--checkpoint-every",
    ] {
        let err = failure(&[flag, "many"]);
        assert!(err.contains(flag), "{err}");
    }
}

#[test]
fn data_parallel_must_divide_the_batch() {
    for (batch, dp) in [("3", "2"), ("2", "0"), ("2", "4")] {
        let err = failure(&["--batch", batch, "--data-parallel", dp]);
        assert!(
            err.contains(&format!("--data-parallel {dp}")) && err.contains("divisor of --batch"),
            "{err}"
        );
    }
    let err = failure(&["--data-parallel", "two"]);
    assert!(err.contains("--data-parallel"), "{err}");
}

#[test]
fn tiny_run_writes_report_checkpoint_and_completions() {
    let dir = std::env::temp_dir().join(format!("lm-learn-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = learn()
        .args(["--out", dir.to_str().unwrap()])
        .args([
            "--model",
            "tiny-test",
            "--records",
            "200",
            "--eval-per-op",
            "3",
        ])
        .args(["--steps", "4", "--seq-len", "256", "--min-lr", "1e-4"])
        .args(["--rl-steps", "1", "--rl-prompts", "2", "--rl-group", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["steps"], 4);
    // The report holds the settings that defaults filled in, not only the flags given.
    assert_eq!(report["train"]["batch_size"], 2);
    assert_eq!(report["train"]["data_parallel"], 2);
    assert_eq!(report["train"]["lr"], 1.4e-3);
    assert_eq!(report["task"]["question_position"], "first");
    let per_op = report["per_op"].as_array().unwrap();
    assert_eq!(
        per_op
            .iter()
            .map(|r| r["op"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert!(per_op.iter().all(|r| r["n"] == 3));
    assert!(dir.join("checkpoint/model.safetensors").exists());
    assert!(dir.join("checkpoint/tokenizer.json").exists());
    let completions = std::fs::read_to_string(dir.join("completions.jsonl")).unwrap();
    assert_eq!(completions.lines().count(), 9);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_boolean_names_its_flag_and_the_choices() {
    for flag in ["--document-mask", "--resume"] {
        let err = failure(&[flag, "yes"]);
        assert!(err.contains(flag), "{err}");
        assert!(err.contains("`true` or `false`"), "{err}");
    }
}

/// A tiny 6-step run: the resume test's runs differ only in what they add to it.
const TINY_6_STEPS: &[&str] = &[
    "--model",
    "tiny-test",
    "--records",
    "100",
    "--eval-per-op",
    "1",
    "--steps",
    "6",
    "--seq-len",
    "256",
];

/// A run stopped after step 3 and resumed ends with the same weights, byte for byte, as one run straight
/// through (the periodic checkpoint at step 2 is overwritten at step 3 and again at the end).
#[test]
fn stopped_and_resumed_run_equals_a_straight_one() {
    let base = std::env::temp_dir().join(format!("lm-learn-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let run = |name: &str, extra: &[&str]| {
        let dir = base.join(name);
        let out = learn()
            .args(["--out", dir.to_str().unwrap()])
            .args(TINY_6_STEPS)
            .args(["--checkpoint-every", "2"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (straight, _) = run("straight", &[]);
    let (pieces, _) = run("pieces", &["--stop-at-step", "3"]);
    assert!(
        !pieces.join("report.json").exists(),
        "a stopped run does not evaluate"
    );
    let (_, log) = run("pieces", &["--resume", "true"]);
    assert!(log.contains("resuming at step 3 of 6"), "{log}");
    let weights =
        |d: &std::path::Path| std::fs::read(d.join("checkpoint/model.safetensors")).unwrap();
    assert!(weights(&straight) == weights(&pieces), "weights differ");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pieces.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["steps"], 6);
    // Other flags than the ones that started it are refused.
    let out_dir = ["--out", pieces.to_str().unwrap()];
    let err = failure(
        &[
            &out_dir[..],
            TINY_6_STEPS,
            &["--lr", "2e-3", "--resume", "true"],
        ]
        .concat(),
    );
    assert!(
        err.contains("--resume") && err.contains("other flags"),
        "{err}"
    );
    // Nothing to resume from is an error too, not a fresh start.
    let empty = base.join("empty");
    let out_dir = ["--out", empty.to_str().unwrap()];
    let err = failure(&[&out_dir[..], TINY_6_STEPS, &["--resume", "true"]].concat());
    assert!(err.contains("no checkpoint"), "{err}");
    let err = failure(&["--resume", "true", "--init", "some/checkpoint"]);
    assert!(err.contains("exclude each other"), "{err}");
    std::fs::remove_dir_all(&base).unwrap();
}
