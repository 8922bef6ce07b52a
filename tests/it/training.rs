//! The paper's stages chained through the real runner: datagen -> pretrain -> midtrain -> eval, with a
//! tiny model. A pre-training stage stopped midway resumes from its checkpoint and ends with the same
//! weights as an uninterrupted run; mid-training reports the running token total.

use std::time::Duration;

use crate::support::{Sandbox, interrupt_after_checkpoints, ok};

const PIPELINE: &str = r#"
[pipeline]
name = "train"
seed = 3

[stages.data]
plugin = "datagen"
[stages.data.config]
preset = "cpu"
eval = [{ name = "eval", seed = 1, ops = [2, 3], contexts = ["crazy_zootopia"], modes = ["normalforward"], per_cell = 4 }]
train = [
  { name = "pretrain", seed = 2, ops = { "2" = 1.0, "3" = 1.0 }, contexts = { crazy_zootopia = 1.0 }, modes = { normalforward = 1.0 }, budget = { records = 300 } },
  { name = "midtrain", seed = 3, ops = { "3" = 1.0 }, contexts = { crazy_zootopia = 1.0 }, modes = { normalforward = 1.0 }, budget = { records = 200 } },
]

[stages.pretrain]
plugin = "pretrain"
inputs = { data = "data.data" }
config = { model = "tiny-test", held_out = 20, train = { seq_len = 64, batch_size = 4, token_budget = 7680, eval_every = 10, checkpoint_every = 3, loss_on = "solution" } }

[stages.midtrain]
plugin = "midtrain"
inputs = { model = "pretrain.model", data = "data.data" }
config = { held_out = 20, train = { seq_len = 64, batch_size = 4, token_budget = 2560, checkpoint_every = 5 } }

[stages.eval]
plugin = "eval"
inputs = { models = ["pretrain.model", "midtrain.model"], data = "data.data" }
config = { max_new_tokens = 16, buckets = [{ name = "id", ops = [2, 3] }] }
"#;

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn stopped_pretraining_resumes_to_the_same_weights_and_the_chain_completes() {
    let sb = Sandbox::new(PIPELINE);
    interrupt_after_checkpoints(
        &sb,
        &[],
        "pretrain",
        2,
        Duration::from_secs(300),
        Duration::from_millis(5),
        "pretraining finished before Ctrl-C; raise token_budget",
    );
    assert!(sb.done("data") && !sb.done("pretrain"));

    let t = ok(sb.run(&[]));
    assert!(t.contains("resuming at step"), "{t}");
    for stage in ["pretrain", "midtrain", "eval"] {
        assert!(sb.done(stage), "{stage} not done:\n{t}");
    }

    let fresh = Sandbox::new(PIPELINE);
    ok(fresh.run(&[]));
    let weights = "out/model/model.safetensors";
    let (a, b) = (
        std::fs::read(sb.stage("pretrain").join(weights)).unwrap(),
        std::fs::read(fresh.stage("pretrain").join(weights)).unwrap(),
    );
    assert!(
        a == b,
        "resumed pre-training differs from an uninterrupted run"
    );

    let pre = json(&sb.stage("pretrain").join("out/model/training.json"));
    let mid = json(&sb.stage("midtrain").join("out/model/training.json"));
    assert_eq!(pre["tokens_seen"], 7680);
    assert_eq!(mid["tokens_seen"], 2560);
    assert_eq!(mid["base_tokens_seen"], 7680);
    assert_eq!(mid["total_tokens_seen"], 7680 + 2560);
    for f in ["config.json", "tokenizer.json"] {
        assert!(
            sb.stage("midtrain").join("out/model").join(f).is_file(),
            "{f}"
        );
    }

    let report = json(&sb.stage("eval").join("out/report/report.json"));
    let models: Vec<&str> = report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["pretrain", "midtrain"]);
    assert_eq!(report["models"][1]["source"], "midtrain.model");
    assert_eq!(report["models"][1]["per_bucket"]["id"]["problems"], 8);
    assert_eq!(report["eval_set"]["problems"], 8);
    let plot = sb.stage("eval").join("out/report/plots/eval/op-pass1.png");
    assert!(
        std::fs::read(&plot).unwrap().starts_with(b"\x89PNG"),
        "{}",
        plot.display()
    );

    // The finished run's report, rebuilt by `interplay report` into run/report.
    ok(crate::support::runner()
        .current_dir(sb.path())
        .args(["report", "run"])
        .output()
        .unwrap());
    let summary = json(&sb.run_dir().join("report/report.json"));
    assert_eq!(summary["stages"][0]["stage"], "eval");
    assert_eq!(
        summary["stages"][0]["models"][1]["overall"]["verified_pass"][0]["mean"],
        report["models"][1]["overall"]["verified_pass"][0]
    );
    assert!(sb.run_dir().join("report/report.md").is_file());
}

#[test]
fn training_config_errors_name_the_field() {
    let bad = PIPELINE.replace("token_budget = 7680", "token_budget = 100");
    let sb = Sandbox::new(&bad);
    let out = sb.run(&[]);
    assert!(!out.status.success());
    let t = crate::support::text(&out);
    assert!(
        t.contains("train.token_budget") && t.contains("less than one step"),
        "{t}"
    );
    let sb = Sandbox::new(&PIPELINE.replace("model = \"tiny-test\"", "model = \"huge\""));
    let t = crate::support::text(&sb.run(&[]));
    assert!(t.contains("`model`") && t.contains("huge"), "{t}");
    let sb = Sandbox::new(&PIPELINE.replace(
        "token_budget = 7680",
        "token_budget = 7680, max_minutes = 0",
    ));
    let t = crate::support::text(&sb.run(&[]));
    assert!(
        t.contains("train.max_minutes") && t.contains("positive"),
        "{t}"
    );

    // Mid-training's replay: one run directory, so data and pre-training run once.
    let sb = Sandbox::new(PIPELINE);
    let replay = |r: &str| format!("+stages.midtrain.config.replay={r}");
    for (r, expected) in [
        (
            r#"{dataset="nope",fraction=0.5}"#,
            "`replay.dataset` = \"nope\"",
        ),
        (
            r#"{dataset="pretrain",fraction=1.0}"#,
            "`replay.fraction` = 1: expected a share in [0, 1)",
        ),
        (r#"{dataset="pretrain",fraction=0.9}"#, "needs 1620 records"),
    ] {
        let out = sb.run(&[&replay(r)]);
        assert!(!out.status.success(), "{r}");
        let t = crate::support::text(&out);
        assert!(t.contains(expected), "{r}: {t}");
    }
}

/// Pre-training's `mix` (the paper's long-tail context exposure) and `tokenizer_datasets` (one vocabulary for
/// arms that see different corpora).
#[test]
fn pretraining_mixes_in_other_corpora_and_its_tokenizer_learns_from_more_datasets() {
    let teachers = r#"  { name = "teachers", seed = 4, ops = { "2" = 1.0 }, contexts = { teachers_in_school = 1.0 }, modes = { normalforward = 1.0 }, budget = { records = 100 } },
]"#;
    let pipeline = PIPELINE.replacen("\n]\n", &format!("\n{teachers}\n"), 1);
    let sb = Sandbox::new(&pipeline);
    let vocab = |sb: &Sandbox| {
        std::fs::read_to_string(sb.stage("pretrain").join("out/model/tokenizer.json")).unwrap()
    };
    let events =
        |sb: &Sandbox| std::fs::read_to_string(sb.stage("pretrain").join("events.jsonl")).unwrap();
    let quick = "+stages.eval.config.max_per_cell=1";

    // The zoo corpus alone: no teachers' town in the vocabulary.
    ok(sb.run(&[quick]));
    assert!(!vocab(&sb).contains("Hawkesbury"));
    // Its words learnt, nothing of it trained on.
    ok(sb.run(&[
        quick,
        r#"+stages.pretrain.config.tokenizer_datasets=["teachers"]"#,
    ]));
    assert!(vocab(&sb).contains("Hawkesbury"));
    assert!(!events(&sb).contains("mixing in"));
    // 10 % of the training records from it: 0.1 / 0.9 of the corpus's 280 training records.
    let t = ok(sb.run(&[
        quick,
        r#"+stages.pretrain.config.mix=[{dataset="teachers",fraction=0.1}]"#,
    ]));
    assert!(vocab(&sb).contains("Hawkesbury"), "{t}");
    assert!(
        events(&sb).contains("mixing in 31 records of"),
        "{}",
        events(&sb)
    );

    for (mix, expected) in [
        (
            r#"[{dataset="nope",fraction=0.1}]"#,
            "`mix[0].dataset` = \"nope\"",
        ),
        (
            r#"[{dataset="teachers",fraction=0.6},{dataset="midtrain",fraction=0.5}]"#,
            "config `mix`: the shares add up to 1.1",
        ),
        (
            r#"[{dataset="teachers",fraction=0.5}]"#,
            "`mix[0].fraction` = 0.5: needs 280 records",
        ),
    ] {
        let out = sb.run(&[&format!("+stages.pretrain.config.mix={mix}")]);
        assert!(!out.status.success(), "{mix}");
        let t = crate::support::text(&out);
        assert!(t.contains(expected), "{mix}: {t}");
    }
    let out = sb.run(&[r#"+stages.pretrain.config.tokenizer_datasets=["nope"]"#]);
    assert!(!out.status.success());
    let t = crate::support::text(&out);
    assert!(t.contains("`tokenizer_datasets[0]` = \"nope\""), "{t}");
}
