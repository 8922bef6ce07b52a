//! The eval stage end to end, in-process: a random tiny checkpoint, a small evaluation set, a report.

use std::cell::RefCell;
use std::path::Path;

use stage_api::{
    ArtifactKind, ArtifactRef, Event, Host, Request, RewardSample, RewardScores, RunContext, Stage,
};
use task::config::{Mode, TaskConfig};
use task::context::Context;
use task::dataset::{EvalSpec, build_eval_set};

#[derive(Default)]
struct RecordingHost {
    events: RefCell<Vec<Event>>,
}

impl Host for RecordingHost {
    fn emit(&self, event: &Event) {
        self.events.borrow_mut().push(event.clone());
    }
    fn should_stop(&self) -> bool {
        false
    }
    fn score(&self, _: &[RewardSample]) -> anyhow::Result<Vec<RewardScores>> {
        anyhow::bail!("the eval stage has no rewards")
    }
}

fn artifact(stage: &str, output: &str, kind: ArtifactKind, path: &Path) -> ArtifactRef {
    ArtifactRef {
        stage: stage.into(),
        output: output.into(),
        kind,
        path: path.to_path_buf(),
    }
}

/// Runs the stage on `config` in `dir/run`, returning report.json and completions.jsonl.
fn run_eval(
    dir: &Path,
    config: serde_json::Value,
) -> anyhow::Result<(serde_json::Value, String, String)> {
    let run = dir.join("run");
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(run.join("out/report"))?;
    let request = Request {
        api_version: stage_api::API_VERSION.into(),
        pipeline: "test".into(),
        stage: "eval".into(),
        config: config.clone(),
        inputs: [
            (
                "models".to_string(),
                vec![artifact(
                    "base",
                    "model",
                    ArtifactKind::Model,
                    &dir.join("model"),
                )],
            ),
            (
                "data".to_string(),
                vec![artifact(
                    "data",
                    "data",
                    ArtifactKind::Dataset,
                    &dir.join("data"),
                )],
            ),
        ]
        .into(),
        outputs: [("report".to_string(), run.join("out/report"))].into(),
        stage_dir: run.clone(),
        ckpt_dir: run.join("ckpt"),
        resume: false,
        device: "cpu".into(),
        seed: 42,
        rewards: vec![],
    };
    let host = RecordingHost::default();
    let mut ctx = RunContext::new(request, &host);
    let cfg: eval::EvalConfig = serde_json::from_value(config)?;
    eval::Eval::run(cfg, &mut ctx)?;
    let report = std::fs::read_to_string(run.join("out/report/report.json"))?;
    let md = std::fs::read_to_string(run.join("out/report/report.md"))?;
    let completions = std::fs::read_to_string(run.join("out/report/completions.jsonl"))?;
    Ok((serde_json::from_str(&report)?, md, completions))
}

#[test]
fn reports_every_breakdown_and_is_reproducible() {
    let dir = std::env::temp_dir().join(format!("eval-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    lm::export::export_tiny(&dir.join("model")).unwrap();
    let spec = EvalSpec {
        name: "eval".into(),
        seed: 5,
        ops: vec![2, 3, 12],
        contexts: vec![Context::Zoo, Context::Teacher],
        modes: vec![Mode::Forward],
        per_cell: 2,
    };
    build_eval_set(&TaskConfig::cpu(), &spec)
        .unwrap()
        .write(&dir.join("data"), "eval")
        .unwrap();

    let config = serde_json::json!({ "samples": 4, "temperature": 1.0, "max_new_tokens": 12, "batch_size": 5 });
    let (report, md, completions) = run_eval(&dir, config.clone()).unwrap();
    assert_eq!(report["format"], "interplay/eval-report");
    assert_eq!(report["ks"], serde_json::json!([1, 2, 4]));
    assert_eq!(report["eval_set"]["problems"], 12);
    assert_eq!(report["eval_set"]["file"], "eval.jsonl");
    assert_eq!(report["eval_set"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(report["settings"]["estimator"], "unbiased");
    assert_eq!(
        report["settings"]["greedy"], true,
        "greedy by default with samples > 1"
    );
    let m = &report["models"][0];
    assert_eq!(m["model"], "base", "named by its stage");
    assert_eq!(m["source"], "base.model");
    assert_eq!(m["overall"]["problems"], 12);
    assert_eq!(m["overall"]["samples"], 12 * 4);
    assert_eq!(
        completions.lines().count(),
        12 * 4 + 12,
        "one line per sample, and per greedy decode"
    );
    assert_eq!(
        completions.matches(r#""decode":"greedy""#).count(),
        12,
        "{completions}"
    );
    let g = &m["overall"]["greedy"];
    assert_eq!(g["verified_pass1"], 0.0);
    assert_eq!(m["per_op"]["12"]["greedy"]["verified_pass1"], 0.0);
    let mut ops: Vec<u32> = m["per_op"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    ops.sort();
    assert_eq!(ops, [2, 3, 12]);
    assert_eq!(m["per_bucket"]["in-distribution"]["problems"], 8);
    assert_eq!(m["per_bucket"]["ood-edge"]["problems"], 4);
    assert_eq!(m["per_context"]["teachers_in_school"]["problems"], 6);
    assert_eq!(m["per_mode"]["normalforward"]["problems"], 12);
    // A random model writes 12 tokens of noise: nothing verifies.
    assert_eq!(
        m["overall"]["verified_pass"],
        serde_json::json!([0.0, 0.0, 0.0])
    );
    let finished = m["overall"]["finished"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&finished));
    assert!(md.contains("| op 12 | 4 |"), "{md}");
    let report_dir = dir.join("run/out/report");
    for plot in [
        "op-pass1",
        "op-pass4",
        "op-greedy-pass1",
        "pass-at-k-ood-edge",
    ] {
        let png = std::fs::read(report_dir.join(format!("plots/eval/{plot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{plot}");
        assert!(md.contains(&format!("plots/eval/{plot}.svg")), "{md}");
    }
    // What report.json says is what the report crate reads back.
    report::EvalReport::read(&report_dir.join("report.json")).unwrap();

    // Same seed and config: the same bytes.
    let (again, _, completions_again) = run_eval(&dir, config.clone()).unwrap();
    assert_eq!(report, again);
    assert_eq!(completions, completions_again);

    // No greedy decode, first-k pass@k, fewer problems: a different evaluation set and settings.
    let mut other = config.clone();
    other["greedy"] = false.into();
    other["pass_at_k"] = "first-k".into();
    other["max_per_cell"] = 1.into();
    let (r, _, c) = run_eval(&dir, other).unwrap();
    assert_eq!(r["settings"]["greedy"], false);
    assert_eq!(r["settings"]["estimator"], "first-k");
    assert!(r["models"][0]["overall"].get("greedy").is_none());
    assert_eq!(c.lines().count(), 6 * 4);
    assert_eq!(r["eval_set"]["problems"], 6);
    assert_ne!(r["eval_set"]["sha256"], report["eval_set"]["sha256"]);

    // Greedy decoding alone: its pass@1 is the greedy pass@1, decoded once.
    let (r, _, c) = run_eval(
        &dir,
        serde_json::json!({ "max_new_tokens": 4, "max_per_cell": 1 }),
    )
    .unwrap();
    assert_eq!(r["settings"]["greedy"], true);
    assert_eq!(r["ks"], serde_json::json!([1]));
    assert_eq!(c.lines().count(), 6);
    assert_eq!(
        r["models"][0]["overall"]["greedy"]["verified_pass1"],
        r["models"][0]["overall"]["verified_pass"][0]
    );

    // A dataset that is not there is named in the error.
    let err = run_eval(&dir, serde_json::json!({ "dataset": "nope" }))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`dataset`") && err.contains("nope.jsonl"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
