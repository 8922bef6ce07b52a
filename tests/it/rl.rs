//! The `rl-grpo` stage through the real runner, on a barely pre-trained test model: a stopped run resumes to
//! the same bytes as an uninterrupted one, the reward named in the pipeline file is the one the optimiser
//! sees, the edge filter counts what it keeps, and bad settings fail naming the field.

use std::time::Duration;

use crate::support::{Sandbox, interrupt_after_checkpoints, ok, text};

/// data -> pretrain (a few steps of `tiny-test`) -> rl -> eval. `REWARDS` and `RL` are filled in per test.
const PIPELINE: &str = r#"
[pipeline]
name = "rl"
seed = 5

[stages.data]
plugin = "datagen"
[stages.data.config]
preset = "cpu"
eval = [{ name = "eval", seed = 1, ops = [2, 3], contexts = ["crazy_zootopia"], modes = ["normalforward"], per_cell = 3 }]
train = [
  { name = "pretrain", seed = 2, ops = { "2" = 1.0, "3" = 1.0 }, contexts = { crazy_zootopia = 1.0 }, modes = { normalforward = 1.0 }, budget = { records = 200 } },
  { name = "rl", seed = 3, ops = { "2" = 1.0, "3" = 1.0 }, contexts = { crazy_zootopia = 1.0 }, modes = { normalforward = 1.0 }, budget = { records = 40 }, gold = true },
]

[stages.pretrain]
plugin = "pretrain"
inputs = { data = "data.data" }
config = { model = "tiny-test", held_out = 10, train = { seq_len = 64, batch_size = 4, token_budget = 2560, data_parallel = 1 } }

[stages.rl]
plugin = "rl-grpo"
inputs = { model = "pretrain.model", data = "data.data" }
REWARDS
[stages.rl.config]
max_new_tokens = 12
prompts_per_step = 2
group_size = 4
mini_batches = 2
lr = 1e-3
checkpoint_every = 1
log_completions_every = 2
validation = { dataset = "eval", every = 2, max_per_op = 2 }
RL

[stages.eval]
plugin = "eval"
inputs = { models = ["pretrain.model", "rl.model"], data = "data.data" }
config = { max_new_tokens = 12, buckets = [{ name = "id", ops = [2, 3] }] }
"#;

/// The parity reward trains; the task's verifier watches (a test model is never verified).
const PARITY: &str = r#"rewards = [
  { plugin = "fixture-parity-reward", name = "parity" },
  { plugin = "reward-process", name = "verified", weight = 0, config = { value = "verified" } },
]"#;

fn pipeline(rewards: &str, rl: &str) -> String {
    PIPELINE.replace("REWARDS", rewards).replace("RL", rl)
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn curve(report: &serde_json::Value, metric: &str) -> Vec<f64> {
    report["curves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["metrics"][metric]
                .as_f64()
                .unwrap_or_else(|| panic!("no {metric} in {c}"))
        })
        .collect()
}

#[test]
fn stopped_rl_resumes_to_the_same_bytes_as_an_uninterrupted_run() {
    let p = pipeline(PARITY, "steps = 6");
    let sb = Sandbox::new(&p);
    interrupt_after_checkpoints(
        &sb,
        &[],
        "rl",
        3,
        Duration::from_secs(300),
        Duration::from_millis(2),
        "RL finished before Ctrl-C; raise `steps`",
    );
    assert!(sb.done("pretrain") && !sb.done("rl"));

    let t = ok(sb.run(&[]));
    assert!(t.contains("resuming at step"), "{t}");
    assert!(sb.done("rl") && sb.done("eval"), "{t}");

    let fresh = Sandbox::new(&p);
    ok(fresh.run(&[]));
    for file in [
        "out/model/model.safetensors",
        "out/report/completions.jsonl",
    ] {
        let (a, b) = (
            std::fs::read(sb.stage("rl").join(file)).unwrap(),
            std::fs::read(fresh.stage("rl").join(file)).unwrap(),
        );
        assert!(
            a == b,
            "{file}: the resumed run differs from an uninterrupted one"
        );
    }
    let (a, b) = (
        json(&sb.stage("rl").join("out/report/report.json")),
        json(&fresh.stage("rl").join("out/report/report.json")),
    );
    for metric in ["reward/mean", "loss", "kl", "entropy", "grad_norm"] {
        assert_eq!(curve(&a, metric), curve(&b, metric), "{metric}");
    }
    assert_eq!(a["validation"], b["validation"]);
    assert_eq!(a["compute"], b["compute"]);

    // The pipeline's token accounting continues through RL.
    let pre = json(&sb.stage("pretrain").join("out/model/training.json"));
    let rl = json(&sb.stage("rl").join("out/model/training.json"));
    assert_eq!(rl["base_tokens_seen"], pre["total_tokens_seen"]);
    let rl_tokens = rl["tokens_seen"].as_u64().unwrap();
    assert!(rl_tokens > 0);
    assert_eq!(
        rl["total_tokens_seen"].as_u64(),
        Some(pre["total_tokens_seen"].as_u64().unwrap() + rl_tokens)
    );
    // Validation before the first step, every 2 steps and after the last.
    let steps: Vec<u64> = a["validation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 2, 4, 6]);
    // The eval report holds both models.
    let report = json(&sb.stage("eval").join("out/report/report.json"));
    assert_eq!(report["models"][1]["model"], "rl");

    // Running the finished pipeline again trains nothing and says so.
    let t = ok(sb.run(&[]));
    assert!(t.contains("unchanged, skipped"), "{t}");
}

#[test]
fn the_reward_named_in_the_pipeline_is_the_one_the_optimiser_sees() {
    let run = |rewards: &str| {
        let sb = Sandbox::new(&pipeline(rewards, "steps = 2"));
        let t = ok(sb.run(&[]));
        let report = json(&sb.stage("rl").join("out/report/report.json"));
        let weights = std::fs::read(sb.stage("rl").join("out/model/model.safetensors")).unwrap();
        (t, report, weights, sb)
    };
    let (_, parity, w_parity, _) = run(PARITY);
    let (_, odd, w_odd, _) = run(&PARITY.replace(
        r#"name = "parity" }"#,
        r#"name = "parity", config = { odd = true } }"#,
    ));
    let process = r#"rewards = [
  { plugin = "reward-process" },
  { plugin = "reward-process", name = "verified", weight = 0, config = { value = "verified" } },
]"#;
    let (_, verified, w_verified, _) = run(process);

    // The same rollouts (same policy, same seed at step 1), scored by other rewards.
    let (even, odd_mean) = (
        curve(&parity, "reward/mean")[0],
        curve(&odd, "reward/mean")[0],
    );
    assert!(
        (even + odd_mean - 1.0).abs() < 1e-6,
        "even and odd parity rewards of the same rollouts must sum to 1: {even} + {odd_mean}"
    );
    assert!(curve(&parity, "groups_all_equal")[0] < 1.0);
    // The task's reward is 0 for a test model's every completion: no group has a signal, so nothing but
    // weight decay moves the weights, and the parity-trained weights differ from both.
    assert_eq!(curve(&verified, "reward/mean"), [0.0, 0.0]);
    assert_eq!(curve(&verified, "groups_all_equal"), [1.0, 1.0]);
    assert!(w_parity != w_odd && w_parity != w_verified);
    // Every reward's own mean is in the curves, under its name.
    assert!(parity["curves"][0]["metrics"]["reward/parity/mean"].is_number());
    assert!(parity["curves"][0]["metrics"]["reward/verified/mean"].is_number());
}

#[test]
fn the_edge_filter_keeps_prompts_solved_sometimes_and_counts_per_op() {
    // With parity as the "verified" signal, about half of each prompt's completions are "verified".
    let rewards = r#"rewards = [{ plugin = "fixture-parity-reward", name = "parity" }]"#;
    let sb = Sandbox::new(&pipeline(
        rewards,
        r#"steps = 1
verified_reward = "parity"
edge_filter = { candidates = 12, samples = 4, max_pass_at_1 = 0.5 }"#,
    ));
    let t = ok(sb.run(&[]));
    let report = json(&sb.stage("rl").join("out/report/report.json"));
    let f = &report["edge_filter"];
    assert_eq!(f["candidates"], 12, "{t}");
    let (mut kept, mut all) = (0, 0);
    for (_, c) in f["per_op"].as_object().unwrap() {
        let k = c["kept"].as_u64().unwrap();
        kept += k;
        all += k + c["too_easy"].as_u64().unwrap() + c["unsolved"].as_u64().unwrap();
    }
    assert_eq!(all, 12);
    assert_eq!(f["kept"], kept);
    assert_eq!(report["pool"], kept);
    assert!(
        kept > 0 && kept < 12,
        "a parity reward keeps some, not all: {f}"
    );
    // min_correct = 0 keeps unsolved prompts too: only the upper bound filters.
    ok(sb.run(&[
        "stages.rl.config.edge_filter.min_correct=0",
        "stages.rl.config.edge_filter.max_pass_at_1=1.0",
    ]));
    let report = json(&sb.stage("rl").join("out/report/report.json"));
    assert_eq!(
        report["edge_filter"]["kept"], 12,
        "{}",
        report["edge_filter"]
    );
}

#[test]
fn rl_setting_errors_name_the_field() {
    let cases = [
        (
            "steps = 2\nprompts = 8",
            "exactly one of `steps` and `prompts`",
        ),
        (
            "steps = 2\nepochs = 0",
            "config `epochs`: expected at least 1",
        ),
        ("steps = 2\nclip_low = 1.5", "config `clip_low` = 1.5"),
        ("steps = 2\ntemperature = 0", "config `temperature` = 0"),
        ("steps = 2\ndual_clip = 0.5", "config `dual_clip` = 0.5"),
        (
            "steps = 2\nverified_reward = \"nope\"",
            "config `verified_reward` = \"nope\"",
        ),
        (
            "steps = 2\ndataset = \"missing\"",
            "config `dataset` = \"missing\"",
        ),
    ];
    for (rl, expected) in cases {
        let sb = Sandbox::new(&pipeline(PARITY, rl));
        let o = sb.run(&[]);
        let t = text(&o);
        assert!(!o.status.success(), "{rl}: the run succeeded:\n{t}");
        assert!(t.contains(expected), "{rl}: expected `{expected}` in:\n{t}");
    }
}

#[test]
fn a_reward_scaffolded_outside_the_repository_trains_through_the_rl_pipeline() {
    use xtask::scaffold::{Kind, StageApi, generate_standalone};
    let tmp = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let out = tmp.path().join("my-rewards");
    let stage_api = StageApi::Path(root.join("crates/stage-api"));
    generate_standalone(&root, &out, "answer-seen", Kind::Reward, &stage_api).unwrap();
    let krate = out.join("answer-seen");
    // Built as `cargo xtask pipeline` builds a crate on the plugin path, its target/ shared across runs.
    let shared = root.join("target").join("scaffold-standalone-test");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, krate.join("target")).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = xtask::plugin_crate_build(&cargo, &krate, stage_host::BUILD_PROFILE == "release")
        .args(["--offline", "--quiet"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "the scaffolded reward does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    // The scaffold's reward reads `reference.answer` (which rl-grpo fills with the gold answer) and gives
    // partial credit to a completion that contains it: something even a test model earns sometimes.
    let rewards = r#"rewards = [
  { plugin = "answer-seen", config = { partial_credit = 0.5 } },
  { plugin = "reward-process", name = "verified", weight = 0, config = { value = "verified" } },
]"#;
    let p = pipeline(rewards, "steps = 2")
        .replace(
            "max_new_tokens = 12\nprompts",
            "max_new_tokens = 48\nprompts",
        )
        .replace(
            "[pipeline]\n",
            &format!(
                "[pipeline]\nplugin_path = [{:?}]\n",
                krate.display().to_string()
            ),
        );
    let sb = Sandbox::new(&p);
    let t = ok(sb.run(&[]));
    let report = json(&sb.stage("rl").join("out/report/report.json"));
    let seen = curve(&report, "reward/answer-seen/mean");
    assert_eq!(seen.len(), 2, "{t}");
    assert!(
        seen.iter().any(|&r| r > 0.0),
        "the scaffolded reward never scored: {seen:?}"
    );
    assert!(sb.done("eval"), "{t}");
}

#[test]
fn a_failing_reward_fails_the_rl_stage_naming_it() {
    for (fail, what) in [
        ("panic", "panicked while scoring"),
        ("nan", "returned NaN for sample"),
    ] {
        let rewards = format!(
            r#"rewards = [
  {{ plugin = "fixture-reward", name = "broken", config = {{ fail = "{fail}" }} }},
  {{ plugin = "reward-process", name = "verified", weight = 0, config = {{ value = "verified" }} }},
]"#
        );
        let sb = Sandbox::new(&pipeline(&rewards, "steps = 2"));
        let o = sb.run(&[]);
        let t = text(&o);
        assert!(!o.status.success(), "{fail}: the run succeeded:\n{t}");
        assert!(!sb.done("rl"), "{fail}: the stage was marked done");
        assert!(
            t.contains("reward `broken` (plugin `fixture-reward`)") && t.contains(what),
            "{fail}: expected the reward named and `{what}` in:\n{t}"
        );
    }
}

#[test]
fn a_token_budget_ends_rl_at_the_first_step_that_reaches_it_and_sampled_log_probs_are_pi_old() {
    let sb = Sandbox::new(&pipeline(PARITY, "steps = 3"));
    let on_policy = ["stages.rl.config.mini_batches=1"];
    let t = ok(sb.run(&on_policy));
    let report = json(&sb.stage("rl").join("out/report/report.json"));
    // One update per step on the rollouts of the policy that sampled them: π_old taken from the sampler gives
    // a ratio of 1 up to float noise (a misplaced log-prob would not).
    for r in curve(&report, "ratio/mean") {
        assert!((r - 1.0).abs() < 1e-3, "ratio/mean {r}:\n{t}");
    }
    assert!(curve(&report, "entropy").iter().all(|e| *e > 0.0));
    let spent = curve(&report, "tokens/train_equivalent");
    assert_eq!(spent.len(), 3);

    // A budget just past step 1's compute ends RL after step 2.
    let budget = format!("stages.rl.config.token_budget={}", spent[0] as u64 + 1);
    let t = ok(sb.run(&[on_policy[0], &budget]));
    let report = json(&sb.stage("rl").join("out/report/report.json"));
    assert_eq!(curve(&report, "tokens/train_equivalent").len(), 2, "{t}");
    let training = json(&sb.stage("rl").join("out/model/training.json"));
    assert_eq!(training["steps"], 2);
    assert!(training["tokens_seen"].as_f64().unwrap() > spent[0]);

    let o = sb.run(&[on_policy[0], "stages.rl.config.token_budget=0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("config `token_budget`"), "{}", text(&o));
}
