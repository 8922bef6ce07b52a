//! The reasoning task through the real paths: `interplay task gen`, `interplay task score` with both reward
//! plugins (swapped by name), and the `datagen` stage in a pipeline.

use crate::support::{Sandbox, plugin_dir, runner};

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn task_gen_is_deterministic_and_spread_evenly() {
    let dir = tempfile::tempdir().unwrap();
    let generate = |seed: &str, out: &str| {
        ok(runner()
            .current_dir(dir.path())
            .args([
                "task", "gen", "--ops", "2..=20", "--per-op", "6", "--seed", seed, "--out", out,
            ])
            .output()
            .unwrap())
    };
    generate("7", "a.jsonl");
    generate("7", "b.jsonl");
    generate("8", "c.jsonl");
    let a = std::fs::read(dir.path().join("a.jsonl")).unwrap();
    assert_eq!(a, std::fs::read(dir.path().join("b.jsonl")).unwrap());
    assert_ne!(a, std::fs::read(dir.path().join("c.jsonl")).unwrap());
    let recs = lines(&dir.path().join("a.jsonl"));
    assert_eq!(recs.len(), 19 * 6);
    for field in [
        "problem", "question", "solution", "op", "id", "template", "mode", "length", "d", "seed",
        "gold",
    ] {
        assert!(recs[0].get(field).is_some(), "field {field}");
    }
    for op in 2..=20 {
        let of_op: Vec<_> = recs.iter().filter(|r| r["op"] == op).collect();
        assert_eq!(of_op.len(), 6);
        for mode in ["normalforward", "forwardreverse"] {
            assert_eq!(
                of_op.iter().filter(|r| r["mode"] == mode).count(),
                3,
                "op {op} {mode}"
            );
        }
    }
    assert!(dir.path().join("a.jsonl.stats.json").exists());
    let bad = runner()
        .current_dir(dir.path())
        .args(["task", "gen", "--ops", "2..=99", "--out", "x.jsonl"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("op 21"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn task_score_through_either_reward_plugin() {
    let dir = tempfile::tempdir().unwrap();
    ok(runner()
        .current_dir(dir.path())
        .args([
            "task", "gen", "--ops", "4,9", "--per-op", "6", "--seed", "3", "--modes", "forward",
            "--out", "p.jsonl",
        ])
        .output()
        .unwrap());
    // Completion kinds, cycling: gold; a wrong intermediate value with the right answer (reward hacking);
    // a wrong answer.
    let recs = lines(&dir.path().join("p.jsonl"));
    let mut input = String::new();
    for (i, r) in recs.iter().enumerate() {
        let sol = r["solution"].as_str().unwrap();
        let mut c = ::task::text::target_completion(sol);
        match i % 3 {
            0 => {}
            1 => {
                let k = c.find(". ").unwrap();
                let eq = c[..k].rfind(" = ").unwrap();
                c = format!("{} = 77{}", &c[..eq], &c[k..]);
            }
            _ => c = c.replace("<answer> ", "<answer> 1"),
        }
        let rec = serde_json::json!({"problem": r["problem"], "question": r["question"], "solution": sol, "completion": c});
        input.push_str(&format!("{rec}\n"));
    }
    std::fs::write(dir.path().join("c.jsonl"), input).unwrap();
    let score = |reward: &str, sets: &[&str], out: &str| {
        let mut cmd = runner();
        cmd.current_dir(dir.path()).args([
            "task", "score", "--reward", reward, "--input", "c.jsonl", "--out", out,
        ]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        ok(cmd.arg("--plugin-dir").arg(plugin_dir()).output().unwrap());
        lines(&dir.path().join(out))
    };
    let outcome = score("reward-outcome", &[], "o.jsonl");
    let process = score("reward-process", &[], "p.jsonl.scores");
    let strict = score(
        "reward-process",
        &["strict=true", "answer_weight=1", "step_weight=0"],
        "s.jsonl",
    );
    for (i, ((o, p), s)) in outcome.iter().zip(&process).zip(&strict).enumerate() {
        for k in ["outcome", "process", "strict", "verified", "reward"] {
            assert!(o.get(k).is_some(), "{k}");
        }
        let (ro, rp, rs) = (
            o["reward"].as_f64().unwrap(),
            p["reward"].as_f64().unwrap(),
            s["reward"].as_f64().unwrap(),
        );
        match i % 3 {
            0 => assert!(ro == 1.0 && rp == 1.0 && rs == 1.0 && o["verified"] == true),
            1 => assert!(
                ro == 1.0 && rp < 1.0 && rs == 0.0 && o["verified"] == false,
                "{o}"
            ),
            _ => assert!(ro == 0.0 && rp == 0.0 && rs == 0.0 && o["outcome"] == 0),
        }
    }
    let bad = runner()
        .current_dir(dir.path())
        .args([
            "task",
            "score",
            "--reward",
            "reward-process",
            "--set",
            "answer_wieght=1",
            "--input",
            "c.jsonl",
            "--out",
            "x",
        ])
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("answer_wieght"));
}

#[test]
fn datagen_stage_builds_named_datasets_without_eval_leaks() {
    let sb = Sandbox::new(
        r#"
[pipeline]
name = "data"
seed = 5

[stages.data]
plugin = "datagen"
config = { preset = "cpu", task = { max_width = 2, max_distractors = 0 }, eval = [
    { name = "eval", seed = 1, ops = [2], contexts = ["crazy_zootopia"], modes = ["normalforward"], per_cell = 30 } ],
  train = [ { name = "pretrain", seed = 2, ops = { "2" = 1.0 }, contexts = { crazy_zootopia = 1.0 },
              modes = { normalforward = 1.0 }, budget = { records = 60 } } ] }
"#,
    );
    ok(sb.run(&[]));
    let data = sb.stage("data").join("out/data");
    let eval = lines(&data.join("eval.jsonl"));
    let train = lines(&data.join("pretrain.jsonl"));
    assert_eq!((eval.len(), train.len()), (30, 60));
    let key = |r: &serde_json::Value| format!("{} {}", r["problem"], r["question"]);
    let eval_keys: std::collections::HashSet<String> = eval.iter().map(key).collect();
    assert!(train.iter().all(|r| !eval_keys.contains(&key(r))));
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("pretrain.stats.json")).unwrap()).unwrap();
    assert!(
        stats["removed_eval_overlap"].as_u64().unwrap() > 0,
        "op-2 problems of a tiny world collide: {stats}"
    );
    assert!(data.join("datasets.json").exists());
}
