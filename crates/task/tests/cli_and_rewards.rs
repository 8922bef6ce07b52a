//! The library side of `interplay task gen/score` and of the reward plugins.

use task::cli::{self, CompletionRecord, GenArgs};
use task::reward::{RewardPluginConfig, RewardScorer};
use task::{Context, Mode, text};

#[test]
fn op_lists() {
    assert_eq!(cli::parse_ops("2..=5").unwrap(), vec![2, 3, 4, 5]);
    assert_eq!(cli::parse_ops("2..5").unwrap(), vec![2, 3, 4]);
    assert_eq!(cli::parse_ops("11-14").unwrap(), vec![11, 12, 13, 14]);
    assert_eq!(cli::parse_ops("2,7, 9").unwrap(), vec![2, 7, 9]);
    assert_eq!(cli::parse_ops("7").unwrap(), vec![7]);
    assert!(
        cli::parse_ops("a..=3")
            .unwrap_err()
            .to_string()
            .contains("`a`")
    );
    assert!(cli::parse_ops("5..2").is_err());
    assert_eq!(
        cli::parse_contexts("zoo,teachers_in_school").unwrap(),
        vec![Context::Zoo, Context::Teacher]
    );
    assert!(cli::parse_contexts("zo").is_err());
    assert_eq!(cli::parse_modes("both").unwrap(), Mode::ALL.to_vec());
    let sets = cli::parse_sets(&["max_width=2".into(), "letters=sequential".into()]).unwrap();
    assert_eq!(sets["max_width"], 2);
    assert_eq!(sets["letters"], "sequential");
}

#[test]
fn gen_then_score_round_trip() {
    let dir = std::env::temp_dir().join(format!("task-cli-{}", std::process::id()));
    let out = dir.join("problems.jsonl");
    let args = GenArgs {
        ops: vec![2, 5, 9],
        per_op: 6,
        seed: 7,
        out: out.clone(),
        preset: "paper".into(),
        contexts: Context::ALL.to_vec(),
        modes: Mode::ALL.to_vec(),
        set: Default::default(),
    };
    let stats = cli::generate_file(&args).unwrap();
    assert_eq!(stats.records, 18);
    assert!(dir.join("problems.jsonl.stats.json").exists());
    let recs = task::dataset::read_paper_jsonl(&out).unwrap();
    // Completions: the gold continuation for even records, a wrong answer for odd ones.
    let comps: Vec<CompletionRecord> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut c = text::target_completion(&r.solution);
            if i % 2 == 1 {
                c = c.replace("<answer> ", "<answer> 9");
            }
            serde_json::from_value(serde_json::json!({"problem": r.problem, "question": r.question, "solution": r.solution, "completion": c, "model": "m1"})).unwrap()
        })
        .collect();
    let inp = dir.join("completions.jsonl");
    task::dataset::write_jsonl(&inp, &comps).unwrap();
    let back = cli::read_completions(&inp).unwrap();
    let verdicts = cli::verdicts(&back, task::verify::VerifyOptions::default()).unwrap();
    let scorer = RewardScorer::new(RewardPluginConfig::PROCESS);
    let pairs: Vec<(&str, &str)> = back
        .iter()
        .map(|r| (r.completion.as_str(), r.solution.as_str()))
        .collect();
    let rewards: Vec<Option<f32>> = scorer
        .score(&pairs)
        .into_iter()
        .map(|s| s.map(|s| s.reward as f32))
        .collect();
    let scores = dir.join("scores.jsonl");
    cli::write_scores(&scores, &back, &verdicts, &rewards).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 18);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["model"], "m1", "extra input fields are kept");
        let good = i % 2 == 0;
        assert_eq!(l["verified"], good);
        assert_eq!(l["strict"], good);
        assert_eq!(l["outcome"], good as u8);
        assert_eq!(l["reward"].as_f64().unwrap(), if good { 1.0 } else { 0.0 });
        assert!(l["process"].as_f64().unwrap() <= 1.0);
    }
    std::fs::write(
        &inp,
        "{\"problem\": \"p\", \"question\": \"q\", \"solution\": \"s\"}\n",
    )
    .unwrap();
    let err = format!("{:#}", cli::read_completions(&inp).unwrap_err());
    assert!(
        err.contains("line 1") && err.contains("completion"),
        "{err}"
    );
    // The question position is optional (the paper's order when absent) and must be one of the two.
    std::fs::write(
        &inp,
        "{\"problem\": \"p\", \"question\": \"q\", \"solution\": \"s\", \"completion\": \"c\", \"question_position\": \"first\"}\n",
    )
    .unwrap();
    let back = cli::read_completions(&inp).unwrap();
    assert_eq!(back[0].question_position, task::QuestionPosition::First);
    std::fs::write(
        &inp,
        "{\"problem\": \"p\", \"question\": \"q\", \"solution\": \"s\", \"completion\": \"c\", \"question_position\": \"middle\"}\n",
    )
    .unwrap();
    let err = format!("{:#}", cli::read_completions(&inp).unwrap_err());
    assert!(
        err.contains("line 1") && err.contains("question_position") && err.contains("middle"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reward_plugin_configs() {
    let c = RewardPluginConfig::from_json(
        &serde_json::json!({"strict": true}),
        RewardPluginConfig::PROCESS,
    )
    .unwrap();
    assert!(c.strict && c.answer_weight == 0.2 && c.check_arithmetic);
    let c = RewardPluginConfig::from_json(&serde_json::Value::Null, RewardPluginConfig::OUTCOME)
        .unwrap();
    assert_eq!(c, RewardPluginConfig::OUTCOME);
    let e = RewardPluginConfig::from_json(
        &serde_json::json!({"answer_wieght": 1}),
        RewardPluginConfig::OUTCOME,
    )
    .unwrap_err();
    assert!(e.to_string().contains("answer_wieght"));
    assert!(
        RewardPluginConfig::from_json(
            &serde_json::json!({"answer_weight": 0, "step_weight": 0}),
            RewardPluginConfig::OUTCOME
        )
        .is_err()
    );
    assert!(
        RewardPluginConfig::from_json(
            &serde_json::json!({"answer_weight": "x"}),
            RewardPluginConfig::OUTCOME
        )
        .is_err()
    );
}

#[test]
fn outcome_and_process_rewards_differ_only_in_weights() {
    let cfg = task::TaskConfig::paper();
    let p = task::generate(
        &cfg,
        &task::ProblemSpec {
            op: 6,
            context: Context::Zoo,
            mode: Mode::Forward,
            d: 2,
        },
        3,
        0,
    )
    .unwrap();
    let gold = text::target_completion(&p.solution);
    // A right answer through a wrong step: the outcome reward is fooled, the process reward is not.
    let (a, b) = (gold.find(" = ").unwrap(), gold.find('.').unwrap());
    let hacked = format!("{} = 99{}", &gold[..a], &gold[b..]);
    let bad_gold = "no steps here";
    let batch = [
        (gold.as_str(), p.solution.as_str()),
        (hacked.as_str(), p.solution.as_str()),
        (gold.as_str(), bad_gold),
    ];
    let outcome = RewardScorer::new(RewardPluginConfig::OUTCOME).score(&batch);
    let process = RewardScorer::new(RewardPluginConfig::PROCESS).score(&batch);
    assert_eq!(outcome[0].as_ref().unwrap().reward, 1.0);
    assert_eq!(outcome[1].as_ref().unwrap().reward, 1.0);
    assert_eq!(process[0].as_ref().unwrap().reward, 1.0);
    assert!(process[1].as_ref().unwrap().reward < 1.0);
    assert!(
        outcome[2].is_none() && process[2].is_none(),
        "no gold graph: not applicable"
    );
}

#[test]
fn a_bad_override_value_names_its_field_and_the_choices() {
    let sets = task::cli::parse_sets(&["solution_order=random".into()]).unwrap();
    let err = task::TaskConfig::preset_with("cpu", &sets)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`solution_order`"), "{err}");
    assert!(err.contains("`generator` or `problem`"), "{err}");
    let sets = task::cli::parse_sets(&["question_position=middle".into()]).unwrap();
    let err = task::TaskConfig::preset_with("cpu", &sets)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`question_position`"), "{err}");
    assert!(err.contains("`last` or `first`"), "{err}");
}
