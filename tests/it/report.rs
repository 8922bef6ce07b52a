//! `interplay report` through the real binary, on fixture run directories: one run, several seeds (the
//! command line `cargo xtask pipeline FILE --seeds ...` uses), and inputs it must refuse.

use std::path::{Path, PathBuf};

use report::eval::{EVAL_FORMAT, EVAL_VERSION, ks};
use report::{Bucket, Estimator, EvalReport, EvalSet, ModelReport, ProblemKey, Settings, Verdict};

use crate::support::{ok, runner, text};

/// `V` VerifiedCorrect, `A` answer only, `x` wrong.
fn verdicts(s: &str) -> Vec<Verdict> {
    s.chars()
        .map(|c| Verdict {
            verified: c == 'V',
            answer: c != 'x',
            strict: c == 'V',
            process: if c == 'V' { 1.0 } else { 0.0 },
            finished: true,
        })
        .collect()
}

/// An eval report of `pretrain` and `rl` on two problems (op 2 and op 5) with two samples each.
fn eval_report(pretrain: [&str; 2], rl: [&str; 2], sha: &str) -> String {
    let keys = [2, 5].map(|op| ProblemKey {
        op,
        context: "crazy_zootopia".into(),
        mode: "normalforward".into(),
    });
    let buckets = vec![
        Bucket {
            name: "easy".into(),
            ops: [2, 3],
        },
        Bucket {
            name: "hard".into(),
            ops: [4, 6],
        },
    ];
    let model = |name: &str, s: [&str; 2]| {
        ModelReport::build(
            name,
            &format!("{name}.model"),
            &keys,
            &buckets,
            &ks(2),
            Estimator::Unbiased,
            &s.map(verdicts),
            Some(&verdicts("Vx")),
        )
    };
    let r = EvalReport {
        format: EVAL_FORMAT.into(),
        version: EVAL_VERSION,
        eval_set: EvalSet {
            dataset: "eval".into(),
            file: "eval.jsonl".into(),
            problems: 2,
            sha256: sha.into(),
        },
        settings: Settings {
            samples: 2,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 32,
            estimator: Estimator::Unbiased,
            greedy: true,
            verify: serde_json::json!({}),
        },
        ks: ks(2),
        buckets: buckets.clone(),
        models: vec![model("pretrain", pretrain), model("rl", rl)],
    };
    serde_json::to_string_pretty(&r).unwrap()
}

/// A finished run directory with an eval stage (DONE when `done`) and a finished data stage.
fn write_run(dir: &Path, seed: u64, report: &str, done: bool) {
    for stage in ["data", "eval"] {
        std::fs::create_dir_all(dir.join("stages").join(stage).join("out/report")).unwrap();
    }
    std::fs::write(dir.join("stages/data/DONE"), "{}").unwrap();
    std::fs::write(dir.join("stages/eval/out/report/report.json"), report).unwrap();
    if done {
        std::fs::write(dir.join("stages/eval/DONE"), "{}").unwrap();
    }
    std::fs::write(
        dir.join("run.json"),
        serde_json::json!({ "pipeline": "rl", "seed": seed, "stages": { "data": { "plugin": "datagen" }, "eval": { "plugin": "eval" } } })
            .to_string(),
    )
    .unwrap();
}

fn report(cwd: &Path, args: &[&str]) -> std::process::Output {
    runner()
        .current_dir(cwd)
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

fn json(p: PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[test]
fn report_of_one_run_and_of_seeds_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // pretrain's verified pass@1 over seeds: 1/4, 1/2, 3/4.
    let seeds = [["Vx", "xx"], ["VV", "xx"], ["VV", "Vx"]];
    for (s, p) in seeds.iter().enumerate() {
        write_run(
            &root.join(format!("rl/seed-{s}")),
            s as u64,
            &eval_report(*p, ["VV", "Ax"], "same"),
            true,
        );
    }

    // One run: the report goes to RUN_DIR/report.
    let t = ok(report(root, &["rl/seed-0"]));
    assert!(t.contains("rl/seed-0/report"), "{t}");
    let one = json(root.join("rl/seed-0/report/report.json"));
    assert_eq!(one["format"], "interplay/eval-summary");
    assert_eq!(one["stages"][0]["runs"], 1);
    assert_eq!(
        one["stages"][0]["models"][0]["overall"]["verified_pass"][0]["mean"],
        0.25
    );
    assert!(one["stages"][0]["models"][0]["overall"]["verified_pass"][0]["std"].is_null());

    // Seeds: exactly the command line `cargo xtask pipeline FILE --seeds 0,1,2` runs.
    let t = ok(report(
        root,
        &["--out", "rl/report", "rl/seed-0", "rl/seed-1", "rl/seed-2"],
    ));
    assert!(t.contains("over 3 runs"), "{t}");
    let all = json(root.join("rl/report/report.json"));
    let p1 = &all["stages"][0]["models"][0]["overall"]["verified_pass"][0];
    assert_eq!(p1["values"], serde_json::json!([0.25, 0.5, 0.75]));
    assert_eq!(p1["mean"], 0.5);
    assert!((p1["std"].as_f64().unwrap() - 0.25).abs() < 1e-12);
    let md = std::fs::read_to_string(root.join("rl/report/report.md")).unwrap();
    assert!(md.contains("0.500 ± 0.250"), "{md}");
    for f in [
        "op-pass1",
        "op-pass2",
        "op-greedy-pass1",
        "pass-at-k-easy",
        "pass-at-k-hard",
    ] {
        let png = std::fs::read(root.join(format!("rl/report/plots/eval/{f}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{f}");
        let svg =
            std::fs::read_to_string(root.join(format!("rl/report/plots/eval/{f}.svg"))).unwrap();
        assert!(
            svg.contains("pretrain") && svg.contains("n = 3 runs"),
            "{f}"
        );
    }
    // Run again with one stage named: same result, and no plot of an earlier report lingers.
    std::fs::write(root.join("rl/report/plots/eval/stale.svg"), "<svg/>").unwrap();
    ok(report(
        root,
        &[
            "--stage",
            "eval",
            "--out",
            "rl/report",
            "rl/seed-0",
            "rl/seed-1",
            "rl/seed-2",
        ],
    ));
    assert_eq!(json(root.join("rl/report/report.json")), all);
    assert!(!root.join("rl/report/plots/eval/stale.svg").exists());
}

#[test]
fn report_refuses_what_it_cannot_aggregate_naming_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let r = eval_report(["Vx", "xx"], ["VV", "Ax"], "set-a");
    write_run(&root.join("a"), 0, &r, true);
    write_run(
        &root.join("b"),
        1,
        &eval_report(["Vx", "xx"], ["VV", "Ax"], "set-b"),
        true,
    );
    write_run(&root.join("unfinished"), 2, &r, false);

    // (arguments, words the error must hold)
    let cases: &[(&[&str], &[&str])] = &[
        (&["a", "b"], &["--out"]),
        (
            &["--out", "r", "a", "b"],
            &[
                "different evaluation sets",
                "a/stages/eval/out/report/report.json",
                "b/stages/eval/out/report/report.json",
                "set-a",
                "set-b",
            ],
        ),
        (
            &["unfinished"],
            &[
                "unfinished",
                "no finished eval stage",
                "eval (not finished: no DONE)",
            ],
        ),
        (
            &["--stage", "eval", "--out", "r", "a", "unfinished"],
            &["stage `eval`", "unfinished", "has not finished", "DONE"],
        ),
        (
            &["--stage", "eval-pass-k", "a"],
            &[
                "missing stage",
                "a has no stage `eval-pass-k`",
                "its stages: data, eval",
            ],
        ),
        (
            &["--stage", "data", "a"],
            &[
                "stage `data`",
                "not an eval stage",
                "its plugin is `datagen`",
            ],
        ),
        (&["nowhere"], &["nowhere is not a run directory"]),
        (
            &["--out", "a/stages/eval/out/report", "a"],
            &["lies inside", "DONE"],
        ),
    ];
    for (args, wants) in cases {
        let out = report(root, args);
        let t = text(&out);
        assert!(!out.status.success(), "{args:?} succeeded:\n{t}");
        for w in *wants {
            assert!(t.contains(w), "{args:?}: error lacks {w:?}:\n{t}");
        }
    }
    // Nothing was written for a refused report, and the stage's own files are untouched.
    assert!(!root.join("r").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("a/stages/eval/out/report/report.json")).unwrap(),
        r
    );
}
