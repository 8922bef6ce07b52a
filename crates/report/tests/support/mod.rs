//! Constructed verdicts, eval reports and run directories.

#![allow(dead_code)]

use std::path::Path;

use report::eval::{EVAL_FORMAT, EVAL_VERSION, ks};
use report::{Bucket, Estimator, EvalReport, EvalSet, ModelReport, ProblemKey, Settings, Verdict};

/// One sample per letter: `V` VerifiedCorrect (process 1), `A` answer right but not verified (process
/// 0.5), `x` wrong (process 0). `s` marks a verified sample that is strict too.
pub fn verdicts(samples: &str) -> Vec<Verdict> {
    samples
        .chars()
        .map(|c| match c {
            'V' => Verdict {
                verified: true,
                answer: true,
                strict: false,
                process: 1.0,
                finished: true,
            },
            's' => Verdict {
                verified: true,
                answer: true,
                strict: true,
                process: 1.0,
                finished: true,
            },
            'A' => Verdict {
                verified: false,
                answer: true,
                strict: false,
                process: 0.5,
                finished: true,
            },
            'x' => Verdict {
                verified: false,
                answer: false,
                strict: false,
                process: 0.0,
                finished: false,
            },
            other => panic!("unknown verdict letter {other:?}"),
        })
        .collect()
}

pub fn key(op: u32, context: &str, mode: &str) -> ProblemKey {
    ProblemKey {
        op,
        context: context.into(),
        mode: mode.into(),
    }
}

pub fn buckets() -> Vec<Bucket> {
    vec![
        Bucket {
            name: "in-distribution".into(),
            ops: [2, 10],
        },
        Bucket {
            name: "ood-edge".into(),
            ops: [11, 14],
        },
    ]
}

/// An eval report of `models` (name, per-problem sample letters, greedy letters) on problems `keys`.
pub fn eval_report(
    keys: &[ProblemKey],
    samples: usize,
    models: &[(&str, &[&str], Option<&str>)],
    set_sha: &str,
) -> EvalReport {
    let ks = ks(samples);
    let greedy = models.first().is_some_and(|m| m.2.is_some());
    EvalReport {
        format: EVAL_FORMAT.into(),
        version: EVAL_VERSION,
        eval_set: EvalSet {
            dataset: "eval".into(),
            file: "eval.jsonl".into(),
            problems: keys.len(),
            sha256: set_sha.into(),
        },
        settings: Settings {
            samples,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 64,
            estimator: Estimator::Unbiased,
            greedy,
            verify: serde_json::json!({}),
        },
        ks: ks.clone(),
        buckets: buckets(),
        models: models
            .iter()
            .map(|(name, sampled, g)| {
                let sampled: Vec<Vec<Verdict>> = sampled.iter().map(|s| verdicts(s)).collect();
                let g: Option<Vec<Verdict>> = g.map(verdicts);
                ModelReport::build(
                    name,
                    &format!("{name}.model"),
                    keys,
                    &buckets(),
                    &ks,
                    Estimator::Unbiased,
                    &sampled,
                    g.as_deref(),
                )
            })
            .collect(),
    }
}

/// Writes a run directory: `run.json`, and for each stage `stages/<stage>/out/report/report.json`
/// (its text) and `DONE` when `done`.
pub fn write_run(dir: &Path, seed: u64, stages: &[(&str, Option<String>, bool)]) {
    let mut plugins = serde_json::Map::new();
    for (stage, report, done) in stages {
        let sdir = dir.join("stages").join(stage);
        std::fs::create_dir_all(sdir.join("out/report")).unwrap();
        if let Some(text) = report {
            std::fs::write(sdir.join("out/report/report.json"), text).unwrap();
        }
        if *done {
            std::fs::write(sdir.join("DONE"), r#"{"fingerprint": "f"}"#).unwrap();
        }
        let plugin = if report.as_deref().is_some_and(|t| t.contains("eval-report")) {
            "eval"
        } else {
            "datagen"
        };
        plugins.insert(stage.to_string(), serde_json::json!({ "plugin": plugin }));
    }
    std::fs::create_dir_all(dir.join("stages")).unwrap();
    std::fs::write(
        dir.join("run.json"),
        serde_json::json!({ "pipeline": "p", "seed": seed, "stages": plugins }).to_string(),
    )
    .unwrap();
}

pub fn json(r: &EvalReport) -> Option<String> {
    Some(serde_json::to_string_pretty(r).unwrap())
}
