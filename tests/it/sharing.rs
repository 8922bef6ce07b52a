//! `interplay run --share-from DIR`: a stage that another run directory finished with the same
//! fingerprint is linked in, not run; and the runs of `cargo xtask pipeline --seeds`, planned by
//! `xtask::seeds`, share the stages that do not depend on the seed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::support::{Sandbox, ok, plugin_dir, runner, text};

/// `data` pins its own seed, so its fingerprint does not depend on the pipeline seed; `train` does.
const SHARED: &str = r#"[pipeline]
name = "shared"
seed = 1

[stages.data]
plugin = "fixture-stage"
seed = 7
config = { steps = 3, label = "data" }

[stages.train]
plugin = "fixture-stage"
inputs = { source = "data.data" }
config = { steps = 2 }
"#;

/// `interplay run p.toml <args> --run-dir <run_dir> --plugin-dir <fixtures>` in the sandbox.
fn run_in(sb: &Sandbox, run_dir: &str, args: &[&str]) -> Output {
    runner()
        .current_dir(sb.path())
        .arg("run")
        .arg("p.toml")
        .args(args)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .output()
        .unwrap()
}

fn stage(sb: &Sandbox, run_dir: &str, stage: &str) -> PathBuf {
    sb.path().join(run_dir).join("stages").join(stage)
}

fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many times the stage's plugin was started in this stage directory.
fn attempts(dir: &Path) -> usize {
    events(dir)
        .iter()
        .filter(|e| e["type"] == "attempt")
        .count()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn result(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("out/data/result.json")).unwrap()
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_stage_finished_elsewhere_with_its_fingerprint_is_shared_not_run() {
    let sb = Sandbox::new(SHARED);
    ok(run_in(&sb, "a", &[]));
    let (a_data, a_train) = (stage(&sb, "a", "data"), stage(&sb, "a", "train"));
    let a_bytes = result(&a_data);

    let out = ok(run_in(&sb, "b", &["pipeline.seed=2", "--share-from", "a"]));
    let (b_data, b_train) = (stage(&sb, "b", "data"), stage(&sb, "b", "train"));
    assert!(out.contains("shared from a"), "{out}");
    assert!(out.contains("done: 1 ran, 1 shared, 0 unchanged"), "{out}");
    // `data` did not run in b: no attempt, no request, no stderr; its files are a's, linked.
    assert_eq!(attempts(&b_data), 0);
    assert!(!b_data.join("request.json").exists());
    assert!(!b_data.join("stderr.log").exists());
    assert_eq!(result(&b_data), a_bytes);
    assert_eq!(
        ino(&b_data.join("out/data/result.json")),
        ino(&a_data.join("out/data/result.json"))
    );
    let shared: Vec<Value> = events(&b_data)
        .into_iter()
        .filter(|e| e["type"] == "shared")
        .collect();
    assert_eq!(shared.len(), 1);
    assert_eq!(
        shared[0]["from"],
        json!(std::path::absolute(sb.path().join("a")).unwrap())
    );
    assert_eq!(shared[0]["files_linked"], json!(1));
    // b's DONE records what a's recorded, and says where it came from.
    let (a_done, b_done) = (
        json_file(&a_data.join("DONE")),
        json_file(&b_data.join("DONE")),
    );
    assert_eq!(b_done["fingerprint"], a_done["fingerprint"]);
    assert_eq!(b_done["outputs"], a_done["outputs"]);
    assert_eq!(b_done["shared_from"], shared[0]["from"]);
    assert_eq!(
        json_file(&b_data.join("outcome.json"))["status"],
        json!("ok")
    );
    // `train` depends on the pipeline seed: a's does not match, so it ran here, on the shared data.
    assert_eq!(attempts(&b_train), 1);
    assert!(
        out.contains(
            "train            not shared from a: it finished the stage with another fingerprint"
        ),
        "{out}"
    );
    let train: Value = serde_json::from_slice(&result(&b_train)).unwrap();
    assert_eq!(train["seed"], json!(pipeline::derive_seed(2, "train")));
    assert_eq!(train["total"], json!(5));
    assert_ne!(result(&b_train), result(&a_train));
    let run: Value = json_file(&sb.path().join("b/run.json"));
    assert_eq!(run["seed"], json!(2));
    assert_eq!(
        run["share_from"],
        json!([std::path::absolute(sb.path().join("a")).unwrap()])
    );

    // b's DONE verifies: the next run skips both stages (the runner checks every recorded file).
    let again = ok(run_in(&sb, "b", &["pipeline.seed=2", "--share-from", "a"]));
    assert_eq!(again.matches("unchanged, skipped").count(), 2, "{again}");

    // a is rerun (its outputs deleted and written again), then deleted: b keeps its files.
    ok(run_in(&sb, "a", &["--force", "data"]));
    assert_eq!(attempts(&a_data), 2);
    assert_ne!(
        ino(&b_data.join("out/data/result.json")),
        ino(&a_data.join("out/data/result.json"))
    );
    std::fs::remove_dir_all(sb.path().join("a")).unwrap();
    let again = ok(run_in(&sb, "b", &["pipeline.seed=2"]));
    assert_eq!(again.matches("unchanged, skipped").count(), 2, "{again}");
    assert_eq!(result(&b_data), a_bytes);
    assert_eq!((attempts(&b_data), attempts(&b_train)), (0, 1));
}

#[test]
fn a_source_with_another_fingerprint_or_damaged_outputs_is_not_shared() {
    let sb = Sandbox::new(SHARED);
    ok(run_in(&sb, "a", &[]));
    let a_data = stage(&sb, "a", "data");

    // Another config, so another fingerprint: the stage runs, and says why it was not shared.
    let out = ok(run_in(
        &sb,
        "c",
        &["stages.data.config.label=\"other\"", "--share-from", "a"],
    ));
    let c_data = stage(&sb, "c", "data");
    assert_eq!(attempts(&c_data), 1, "{out}");
    assert!(
        out.contains(
            "data             not shared from a: it finished the stage with another fingerprint"
        ),
        "{out}"
    );
    let why: Vec<Value> = events(&c_data)
        .into_iter()
        .filter(|e| e["type"] == "not_shared")
        .collect();
    assert_eq!(why.len(), 1);
    assert!(
        why[0]["reason"]
            .as_str()
            .unwrap()
            .contains("another fingerprint")
    );
    assert!(
        !json_file(&c_data.join("DONE"))
            .as_object()
            .unwrap()
            .contains_key("shared_from")
    );

    // The same fingerprint, but a's output was replaced after it finished: not shared, named.
    let file = a_data.join("out/data/result.json");
    let mut bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let out = ok(run_in(&sb, "d", &["--share-from", "a"]));
    let d_data = stage(&sb, "d", "data");
    assert_eq!(attempts(&d_data), 1, "{out}");
    assert!(
        out.contains(&format!(
            "data             not shared from a: {}: sha256 ",
            std::path::Path::new("a/stages/data/out/data/result.json").display()
        )),
        "{out}"
    );
    assert!(out.contains("the file was changed"), "{out}");
    assert_ne!(result(&d_data), bytes);
    // d's own output is not a's damaged file.
    assert_ne!(ino(&d_data.join("out/data/result.json")), ino(&file));

    // An extra file in a's output: not shared either.
    std::fs::write(file.with_file_name("extra.txt"), "x").unwrap();
    let out = ok(run_in(
        &sb,
        "e",
        &["--share-from", "a", "--share-from", "d"],
    ));
    assert!(out.contains("extra.txt: not expected"), "{out}");
    // ... but the next directory offered, d, finished it with this fingerprint: shared from there.
    assert!(
        out.contains("data             fixture-stage    shared from d"),
        "{out}"
    );
    assert_eq!(attempts(&stage(&sb, "e", "data")), 0);
    assert_eq!(result(&stage(&sb, "e", "data")), result(&d_data));

    // A forced stage is never shared.
    let out = ok(run_in(&sb, "e", &["--share-from", "d", "--force", "data"]));
    assert_eq!(attempts(&stage(&sb, "e", "data")), 1, "{out}");

    // A directory that does not exist is an error before anything runs.
    let o = run_in(&sb, "f", &["--share-from", "nope"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--share-from nope: no such run directory"),
        "{}",
        text(&o)
    );
    assert!(!sb.path().join("f").exists());
}

/// `interplay run p.toml <overrides> --plugin-dir <fixtures>` in the sandbox, quiet: what
/// `cargo xtask pipeline` hands [`xtask::seeds::SeedPlan::run`].
fn seed_runner(sb: &Sandbox, overrides: &[&str]) -> std::process::Command {
    let mut c = runner();
    c.current_dir(sb.path())
        .arg("run")
        .arg("p.toml")
        .args(overrides)
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// The runs `cargo xtask pipeline p.toml --seeds 2,0,5` makes, with the runner under test: one run per
/// seed in `runs/shared/seed-<s>`, each offered the earlier seeds' directories to share from.
#[test]
fn seeds_run_once_each_and_share_the_stage_that_does_not_depend_on_the_seed() {
    let sb = Sandbox::new(SHARED);
    // The parent directory xtask uses without --run-dir: the runner's default, from `plan --json`.
    let plan: Value = serde_json::from_slice(
        &runner()
            .current_dir(sb.path())
            .args(["plan", "p.toml", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(plan["run_dir"], json!("runs/shared"));
    let parent = PathBuf::from(plan["run_dir"].as_str().unwrap());
    let seeds = xtask::seeds::parse_seeds("2,0,5").unwrap();
    let seed_plan = xtask::seeds::SeedPlan::new(&parent, &seeds, &[]);
    seed_plan.run(|| seed_runner(&sb, &[])).unwrap();
    let dir = |s: u64| sb.path().join(&parent).join(format!("seed-{s}"));
    let data_results: Vec<Vec<u8>> = seeds
        .iter()
        .map(|&s| result(&dir(s).join("stages/data")))
        .collect();
    for &s in &seeds {
        assert!(dir(s).is_dir(), "seed-{s}");
        assert_eq!(json_file(&dir(s).join("run.json"))["seed"], json!(s));
        let train = dir(s).join("stages/train");
        assert_eq!(attempts(&train), 1, "seed {s}");
        let r: Value = serde_json::from_slice(&result(&train)).unwrap();
        assert_eq!(r["seed"], json!(pipeline::derive_seed(s, "train")));
    }
    // The seed-independent stage ran once, in the first seed's run, and is the same files in the others.
    let attempts_per_seed: Vec<usize> = seeds
        .iter()
        .map(|&s| attempts(&dir(s).join("stages/data")))
        .collect();
    assert_eq!(attempts_per_seed, [1, 0, 0]);
    assert!(data_results.iter().all(|r| *r == data_results[0]));
    let inodes: Vec<u64> = seeds
        .iter()
        .map(|&s| ino(&dir(s).join("stages/data/out/data/result.json")))
        .collect();
    assert!(inodes.iter().all(|i| *i == inodes[0]), "{inodes:?}");
    let r: Value = serde_json::from_slice(&data_results[0]).unwrap();
    assert_eq!(r["seed"], json!(pipeline::derive_seed(7, "data")));
    // The aggregate report is asked for over exactly these directories.
    let args: Vec<String> = seed_plan
        .report_args()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "report",
            "--out",
            "runs/shared/report",
            "runs/shared/seed-2",
            "runs/shared/seed-0",
            "runs/shared/seed-5"
        ]
    );
}

#[test]
fn a_failing_seed_stops_the_loop_naming_the_seed_and_its_run_directory() {
    let sb = Sandbox::new(SHARED);
    let seed_plan = xtask::seeds::SeedPlan::new(Path::new("runs/shared"), &[4, 1], &[]);
    let fail = [
        "stages.train.config.fail=\"error\"",
        "stages.train.config.fail_at=1",
    ];
    let e = seed_plan
        .run(|| seed_runner(&sb, &fail))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "--seeds: seed 4 failed (exit status: 1); its run directory is runs/shared/seed-4."
        ),
        "{e}"
    );
    assert!(
        sb.path()
            .join("runs/shared/seed-4/stages/data/DONE")
            .is_file()
    );
    assert!(!sb.path().join("runs/shared/seed-1").exists());
    // Fixed, the same loop goes on: seed 4's finished stage is kept, and seed 1 shares it.
    seed_plan.run(|| seed_runner(&sb, &[])).unwrap();
    let attempts_per_seed: Vec<usize> = ["seed-4", "seed-1"]
        .iter()
        .map(|d| attempts(&sb.path().join("runs/shared").join(d).join("stages/data")))
        .collect();
    assert_eq!(attempts_per_seed, [1, 0]);
    assert_eq!(
        attempts(&sb.path().join("runs/shared/seed-4/stages/train")),
        2
    );
}

/// `--seeds` end to end on the real stages: data (its own seed) -> pretrain (a few steps of `tiny-test`) ->
/// eval, once per seed through [`xtask::seeds::SeedPlan`], then the aggregate report over the seed runs.
const REAL: &str = r#"
[pipeline]
name = "seeded"
seed = 0

[stages.data]
plugin = "datagen"
seed = 7
[stages.data.config]
preset = "cpu"
eval = [{ name = "eval", seed = 1, ops = [2, 3], contexts = ["crazy_zootopia"], modes = ["normalforward"], per_cell = 3 }]
train = [{ name = "pretrain", seed = 2, ops = { "2" = 1.0, "3" = 1.0 }, contexts = { crazy_zootopia = 1.0 }, modes = { normalforward = 1.0 }, budget = { records = 200 } }]

[stages.pretrain]
plugin = "pretrain"
inputs = { data = "data.data" }
config = { model = "tiny-test", held_out = 10, train = { seq_len = 64, batch_size = 4, token_budget = 1280, data_parallel = 1 } }

[stages.eval]
plugin = "eval"
inputs = { models = ["pretrain.model"], data = "data.data" }
config = { samples = 2, temperature = 1.0, max_new_tokens = 24, buckets = [{ name = "id", ops = [2, 3] }] }
"#;

#[test]
fn seeds_give_one_run_each_and_an_aggregate_whose_mean_and_spread_match_the_per_seed_reports() {
    let sb = Sandbox::new(REAL);
    let parent = PathBuf::from("runs/seeded");
    let seeds = xtask::seeds::parse_seeds("0,1,2").unwrap();
    let plan = xtask::seeds::SeedPlan::new(&parent, &seeds, &[]);
    plan.run(|| seed_runner(&sb, &[])).unwrap();
    let o = runner()
        .current_dir(sb.path())
        .args(plan.report_args())
        .output()
        .unwrap();
    let t = ok(o);
    let per_seed: Vec<Value> = seeds
        .iter()
        .map(|s| {
            json_file(
                &sb.path()
                    .join(&parent)
                    .join(format!("seed-{s}/stages/eval/out/report/report.json")),
            )
        })
        .collect();
    // Data ran once and was shared; the model, and so its samples, differ per seed.
    let data_attempts: Vec<usize> = seeds
        .iter()
        .map(|s| {
            attempts(
                &sb.path()
                    .join(&parent)
                    .join(format!("seed-{s}/stages/data")),
            )
        })
        .collect();
    assert_eq!(data_attempts, [1, 0, 0]);
    let agg = json_file(&sb.path().join(&parent).join("report/report.json"));
    assert_eq!(agg["runs"].as_array().unwrap().len(), 3, "{t}");
    let model = &agg["stages"][0]["models"][0];
    assert_eq!(model["model"], "pretrain");
    let mut compared = 0;
    for cell in ["overall", "per_bucket"] {
        let (agg_cell, seed_cells): (&Value, Vec<&Value>) = if cell == "overall" {
            (
                &model["overall"],
                per_seed
                    .iter()
                    .map(|r| &r["models"][0]["overall"])
                    .collect(),
            )
        } else {
            (
                &model["per_bucket"]["id"],
                per_seed
                    .iter()
                    .map(|r| &r["models"][0]["per_bucket"]["id"])
                    .collect(),
            )
        };
        for key in ["process_mean", "finished", "hacking_rate"] {
            let values: Vec<f64> = seed_cells
                .iter()
                .map(|c| c[key].as_f64().unwrap())
                .collect();
            let mean = values.iter().sum::<f64>() / 3.0;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
            let a = &agg_cell[key];
            assert!(
                (a["mean"].as_f64().unwrap() - mean).abs() < 1e-12,
                "{cell}.{key}: {a} vs {values:?}"
            );
            assert!(
                (a["std"].as_f64().unwrap() - std).abs() < 1e-12,
                "{cell}.{key}: {a} vs {values:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 6);
    // The seeds differ somewhere, or the spread above proves nothing.
    let overall: Vec<String> = per_seed
        .iter()
        .map(|r| r["models"][0]["overall"].to_string())
        .collect();
    assert!(overall.iter().any(|o| *o != overall[0]), "{overall:?}");
}
