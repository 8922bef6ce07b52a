//! Datasets: same seed and config => identical bytes with 1 thread and with 2; no eval problem in a training set;
//! stats add up; the paper-format reader round-trips.

use task::dataset::{
    Budget, CorpusSpec, EvalSpec, Exclusion, build_corpus, build_eval_set, read_paper_jsonl,
    stats_of, write_jsonl,
};
use task::{Context, Mode, QuestionPosition, TaskConfig};

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn jsonl_bytes(records: &[task::dataset::Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).unwrap();
        out.push(b'\n');
    }
    out
}

fn eval_spec() -> EvalSpec {
    EvalSpec {
        name: "eval".into(),
        seed: 5,
        ops: vec![2, 3, 4],
        contexts: vec![Context::Zoo, Context::Teacher],
        modes: Mode::ALL.to_vec(),
        per_cell: 4,
    }
}

#[test]
fn identical_bytes_with_one_and_two_threads() {
    let cfg = TaskConfig::paper();
    let spec = CorpusSpec::paper_pretrain(7, Budget::Records(300));
    let eval = build_eval_set(&cfg, &eval_spec()).unwrap();
    let mut ex = Exclusion::new();
    ex.add(&eval);
    let one = in_pool(1, || build_corpus(&cfg, &spec, &ex).unwrap());
    let two = in_pool(2, || build_corpus(&cfg, &spec, &ex).unwrap());
    assert_eq!(jsonl_bytes(&one.records), jsonl_bytes(&two.records));
    assert_eq!(one.stats, two.stats);
    let e1 = in_pool(1, || build_eval_set(&cfg, &eval_spec()).unwrap());
    let e2 = in_pool(2, || build_eval_set(&cfg, &eval_spec()).unwrap());
    assert_eq!(jsonl_bytes(&e1.records), jsonl_bytes(&e2.records));
    let other = build_corpus(
        &cfg,
        &CorpusSpec {
            seed: 8,
            ..spec.clone()
        },
        &ex,
    )
    .unwrap();
    assert_ne!(
        jsonl_bytes(&one.records),
        jsonl_bytes(&other.records),
        "the seed matters"
    );
}

#[test]
fn eval_problems_never_in_training() {
    // op 2 has few distinct problems, so a small training set collides with the eval set and must drop them.
    let cfg = TaskConfig {
        max_width: 2,
        max_distractors: Some(0),
        ..TaskConfig::cpu()
    };
    let eval = build_eval_set(
        &cfg,
        &EvalSpec {
            ops: vec![2],
            per_cell: 40,
            ..eval_spec()
        },
    )
    .unwrap();
    let mut ex = Exclusion::new();
    ex.add(&eval);
    let spec = CorpusSpec {
        name: "tiny".into(),
        seed: 1,
        ops: [(2, 1.0)].into(),
        contexts: [(Context::Zoo, 1.0), (Context::Teacher, 1.0)].into(),
        modes: [(Mode::Forward, 1.0), (Mode::Reverse, 1.0)].into(),
        budget: Budget::Records(400),
        gold: false,
    };
    let train = build_corpus(&cfg, &spec, &ex).unwrap();
    assert!(train.stats.removed_eval_overlap > 0, "{:?}", train.stats);
    assert!(train.stats.removed_duplicates > 0, "{:?}", train.stats);
    for r in &train.records {
        assert!(!ex.contains(r.text_hash()));
        assert!(r.gold.is_none(), "gold = false drops the graphs");
    }
    let mut seen = std::collections::HashSet::new();
    assert!(
        train.records.iter().all(|r| seen.insert(r.text_hash())),
        "no duplicates inside a set"
    );
}

#[test]
fn stats_and_budgets() {
    let cfg = TaskConfig::cpu();
    let mut spec = CorpusSpec::paper_midtrain(3, Budget::Tokens(20_000));
    spec.contexts = [(Context::Zoo, 0.99), (Context::Teacher, 0.01)].into();
    let ds = build_corpus(&cfg, &spec, &Exclusion::new()).unwrap();
    let s = &ds.stats;
    assert!(s.tokens >= 20_000 && s.tokens < 20_000 + s.length.max);
    assert_eq!(s.records as usize, ds.records.len());
    assert_eq!(s.per_op.values().sum::<u64>(), s.records);
    assert_eq!(s.per_context.values().sum::<u64>(), s.records);
    assert_eq!(s.per_mode.values().sum::<u64>(), s.records);
    assert!(s.per_op.keys().all(|op| (2..=14).contains(op)));
    let high: u64 = s.per_op.range(11..).map(|(_, n)| n).sum();
    assert!(
        high as f64 > 0.6 * s.records as f64,
        "80% of mid-training is op 11-14: {:?}",
        s.per_op
    );
    assert!(
        s.length.min <= s.length.p50
            && s.length.p50 <= s.length.p90
            && s.length.p90 <= s.length.max
    );
    assert_eq!(
        ds.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        (0..ds.records.len() as u64).collect::<Vec<_>>()
    );

    let eval = build_eval_set(&cfg, &eval_spec()).unwrap();
    assert_eq!(eval.records.len(), 3 * 2 * 2 * 4);
    assert!(eval.stats.per_op.values().all(|n| *n == 16));

    let bad = CorpusSpec {
        ops: [(25, 1.0)].into(),
        ..spec.clone()
    };
    let err = build_corpus(&cfg, &bad, &Exclusion::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("op 25"), "{err}");
}

#[test]
fn paper_jsonl_reader_round_trip() {
    let cfg = TaskConfig::paper();
    let ds = build_eval_set(
        &cfg,
        &EvalSpec {
            per_cell: 2,
            ..eval_spec()
        },
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("task-test-{}", std::process::id()));
    let path = ds.write(&dir, "eval").unwrap();
    assert!(dir.join("eval.stats.json").exists());
    let back = read_paper_jsonl(&path).unwrap();
    assert_eq!(back.len(), ds.records.len());
    for (a, b) in back.iter().zip(&ds.records) {
        assert_eq!(
            (
                &a.problem,
                &a.question,
                &a.solution,
                a.op,
                a.template,
                a.mode,
                a.d
            ),
            (
                &b.problem,
                &b.question,
                &b.solution,
                b.op,
                b.template,
                b.mode,
                b.d
            )
        );
    }
    assert_eq!(stats_of("eval", &back, 0, 0).per_op, ds.stats.per_op);
    // Paper files carry only the paper's fields; `length` may be a string there.
    let paper = dir.join("paper.jsonl");
    let line = serde_json::json!({"problem": "P.", "question": "Q?", "solution": "Define a in B as b; so b = 3. Answer: 3.",
        "op": 2, "id": 4, "template": "teachers_in_school", "mode": "normalforward", "length": "zero_context", "d": 2});
    std::fs::write(&paper, format!("{line}\n")).unwrap();
    let recs = read_paper_jsonl(&paper).unwrap();
    assert_eq!(
        (recs[0].template, recs[0].mode, recs[0].id),
        (Context::Teacher, Mode::Forward, 4)
    );
    std::fs::write(&paper, "{\"problem\": \"P\"}\n").unwrap();
    let err = format!("{:#}", read_paper_jsonl(&paper).unwrap_err());
    assert!(
        err.contains("paper.jsonl line 1") && err.contains("solution"),
        "{err}"
    );
    write_jsonl(&paper, &[serde_json::json!({"problem": "P", "question": "Q", "solution": "S", "template": "zoo2"})]).unwrap();
    let err = format!("{:#}", read_paper_jsonl(&paper).unwrap_err());
    assert!(err.contains("template"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn records_carry_their_question_position_through_files() {
    let dir = std::env::temp_dir().join(format!("task-test-qpos-{}", std::process::id()));
    let spec = EvalSpec {
        per_cell: 1,
        ..eval_spec()
    };
    let paper = build_eval_set(&TaskConfig::paper(), &spec).unwrap();
    let cpu = build_eval_set(&TaskConfig::cpu(), &spec).unwrap();
    assert_eq!(TaskConfig::cpu().question_position, QuestionPosition::First);
    for r in &paper.records {
        assert_eq!(r.question_position, QuestionPosition::Last);
        assert_eq!(r.prompt(), task::text::prompt(&r.problem, &r.question));
        let line = serde_json::to_string(r).unwrap();
        assert!(
            !line.contains("question_position"),
            "paper records keep the paper's fields: {line}"
        );
    }
    for r in &cpu.records {
        assert_eq!(r.question_position, QuestionPosition::First);
        let prompt = r.prompt();
        let q = prompt
            .find(r.question.split_whitespace().next().unwrap())
            .unwrap();
        let p = prompt
            .find(r.problem.split_whitespace().next().unwrap())
            .unwrap();
        assert!(q < p, "question first: {prompt}");
        assert!(r.training_text().starts_with(&prompt));
    }
    // Read back from disk, each record keeps its position (and so its prompt).
    let path = cpu.write(&dir, "cpu").unwrap();
    let back = read_paper_jsonl(&path).unwrap();
    assert_eq!(
        back.iter().map(|r| r.prompt()).collect::<Vec<_>>(),
        cpu.records.iter().map(|r| r.prompt()).collect::<Vec<_>>()
    );
    let bad = dir.join("bad.jsonl");
    write_jsonl(&bad, &[serde_json::json!({"problem": "P", "question": "Q", "solution": "S", "question_position": "middle"})]).unwrap();
    let err = format!("{:#}", read_paper_jsonl(&bad).unwrap_err());
    assert!(
        err.contains("bad.jsonl line 1")
            && err.contains("`question_position`")
            && err.contains("\"first\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn generate_per_op_spreads_evenly() {
    let cfg = TaskConfig::paper();
    let ds =
        task::dataset::generate_per_op(&cfg, &[2, 3, 7], 12, &Context::ALL, &Mode::ALL, 7).unwrap();
    assert_eq!(ds.records.len(), 36);
    for op in [2, 3, 7] {
        let of_op: Vec<_> = ds.records.iter().filter(|r| r.op == op).collect();
        assert_eq!(of_op.len(), 12);
        for c in Context::ALL {
            for m in Mode::ALL {
                assert_eq!(
                    of_op
                        .iter()
                        .filter(|r| r.template == c && r.mode == m)
                        .count(),
                    2,
                    "op {op} {c:?} {m:?}"
                );
            }
        }
    }
    let again = in_pool(1, || {
        task::dataset::generate_per_op(&cfg, &[2, 3, 7], 12, &Context::ALL, &Mode::ALL, 7).unwrap()
    });
    assert_eq!(jsonl_bytes(&ds.records), jsonl_bytes(&again.records));
}

#[test]
fn build_all_from_a_spec() {
    let spec: task::dataset::DatagenSpec = serde_json::from_value(serde_json::json!({
        "preset": "cpu",
        "task": { "max_width": 2 },
        "eval": [ { "name": "eval-op2-4", "seed": 1, "ops": [2, 3, 4], "contexts": ["crazy_zootopia"], "modes": ["normalforward"], "per_cell": 5 } ],
        "train": [ { "name": "pretrain", "seed": 2, "ops": { "2": 1.0, "3": 1.0, "4": 1.0 },
                     "contexts": { "crazy_zootopia": 0.99, "teachers_in_school": 0.01 },
                     "modes": { "normalforward": 1.0 }, "budget": { "records": 50 } } ]
    }))
    .unwrap();
    let dir = std::env::temp_dir().join(format!("task-build-all-{}", std::process::id()));
    let mut calls = 0;
    let stats = task::dataset::build_all(&spec, &dir, |_, _| {
        calls += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!((stats.len(), calls), (2, 2));
    assert_eq!(stats[0].records, 15);
    assert_eq!(stats[1].records, 50);
    for f in [
        "eval-op2-4.jsonl",
        "eval-op2-4.stats.json",
        "pretrain.jsonl",
        "pretrain.stats.json",
        "datasets.json",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let bad = task::dataset::DatagenSpec {
        task: serde_json::json!({"max_widht": 2})
            .as_object()
            .unwrap()
            .clone(),
        ..spec.clone()
    };
    let err = format!(
        "{:#}",
        task::dataset::build_all(&bad, &dir, |_, _| Ok(())).unwrap_err()
    );
    assert!(err.contains("max_widht"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
