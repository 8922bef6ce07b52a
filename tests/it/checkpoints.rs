//! Checkpoints and outputs that cannot lie, through the real runner and the real `pretrain` plugin: a
//! checkpoint file that was altered, truncated or deleted fails the resume with a message naming the file
//! and `--force`, and `--force` then trains the stage again; an upstream output altered after its stage
//! finished fails the next run instead of being skipped over and handed on.

use std::path::{Path, PathBuf};

use crate::support::{Sandbox, ok, text};

/// datagen -> pretrain, with a model and budgets small enough that a run takes seconds.
const PIPELINE: &str = r#"
[pipeline]
name = "ckpt"
seed = 5

[stages.data]
plugin = "datagen"
[stages.data.config]
preset = "cpu"
eval = [{ name = "eval", seed = 1, ops = [2], contexts = ["crazy_zootopia"], modes = ["normalforward"], per_cell = 1 }]
train = [
  { name = "pretrain", seed = 2, ops = { "2" = 1.0 }, contexts = { crazy_zootopia = 1.0 }, modes = { normalforward = 1.0 }, budget = { records = 60 } },
]

[stages.pretrain]
plugin = "pretrain"
inputs = { data = "data.data" }
config = { model = "tiny-test", held_out = 5, train = { seq_len = 64, batch_size = 2, token_budget = 512, eval_every = 0, checkpoint_every = 2, data_parallel = 1 } }
"#;

/// Every file of the trainer's checkpoint (`ckpt/trainer` of the stage).
const CKPT_FILES: [&str; 5] = [
    "model.safetensors",
    "config.json",
    "optimizer.safetensors",
    "tokenizer.json",
    "train_state.json",
];

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A sandbox holding a copy of `base`'s pipeline file and run directory.
fn copy_of(base: &Sandbox) -> Sandbox {
    let sb = Sandbox::new(PIPELINE);
    copy_tree(&base.run_dir(), &sb.run_dir());
    sb
}

/// Flips a byte in the middle of a file; for safetensors, in the tensor data past the header.
fn flip_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let start = if path.extension().is_some_and(|e| e == "safetensors") {
        8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
    } else {
        0
    };
    assert!(b.len() > start + 8, "{}: no data to flip", path.display());
    let i = start + (b.len() - start) / 2;
    b[i] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

fn delete(path: &Path) {
    std::fs::remove_file(path).unwrap();
}

/// A way to damage a file.
type Damage = fn(&Path);

fn ckpt_file(sb: &Sandbox, name: &str) -> PathBuf {
    sb.stage("pretrain").join("ckpt/trainer").join(name)
}

#[test]
fn a_damaged_checkpoint_file_fails_the_resume_naming_it_and_force_trains_again() {
    let base = Sandbox::new(PIPELINE);
    ok(base.run(&[]));
    for name in CKPT_FILES {
        assert!(
            ckpt_file(&base, name).is_file(),
            "{name} not in the checkpoint"
        );
    }
    // Control: with DONE gone (a stage killed after its last checkpoint) the intact checkpoint resumes.
    let sb = copy_of(&base);
    std::fs::remove_file(sb.stage("pretrain").join("DONE")).unwrap();
    let t = ok(sb.run(&[]));
    assert!(t.contains("resuming at step 4"), "{t}");

    let damages: [(&str, Damage); 3] = [
        ("flipped", flip_byte),
        ("truncated", truncate),
        ("deleted", delete),
    ];
    for name in CKPT_FILES {
        for (i, (how, damage)) in damages.iter().enumerate() {
            let sb = copy_of(&base);
            std::fs::remove_file(sb.stage("pretrain").join("DONE")).unwrap();
            damage(&ckpt_file(&sb, name));
            let out = sb.run(&[]);
            let t = text(&out);
            assert!(
                !out.status.success(),
                "{name} {how}: the run succeeded:\n{t}"
            );
            assert!(
                t.contains(&format!("ckpt/trainer/{name}")) && t.contains("--force pretrain"),
                "{name} {how}: the error does not name the file and --force:\n{t}"
            );
            assert!(!t.contains("resuming at step"), "{name} {how}:\n{t}");
            assert!(!sb.done("pretrain"), "{name} {how}: marked done");
            // `--force` is the way out; once per file keeps the test short (each retrains the stage).
            if i == 0 {
                let t = ok(sb.run(&["--force", "pretrain"]));
                assert!(sb.done("pretrain"), "{name}: not done after --force:\n{t}");
            }
        }
    }
}

#[test]
fn an_upstream_output_altered_after_it_finished_fails_the_next_run_naming_it() {
    let sb = Sandbox::new(PIPELINE);
    ok(sb.run(&[]));
    let weights = sb.stage("pretrain").join("out/model/model.safetensors");
    flip_byte(&weights);
    let out = sb.run(&[]);
    let t = text(&out);
    assert!(!out.status.success(), "a changed output was trusted:\n{t}");
    assert!(
        t.contains("out/model/model.safetensors")
            && t.contains("sha256")
            && t.contains("--force pretrain"),
        "{t}"
    );
    let t = ok(sb.run(&["--force", "pretrain"]));
    assert!(sb.done("pretrain"), "{t}");
    // The rebuilt output verifies: the next run skips everything.
    let t = ok(sb.run(&[]));
    assert!(t.contains("0 ran, 2 unchanged"), "{t}");

    // The dataset the stage read: truncating it fails the next run as well, naming the upstream stage.
    let data = sb.stage("data").join("out/data/pretrain.jsonl");
    truncate(&data);
    let t = text(&sb.run(&[]));
    assert!(
        t.contains("out/data/pretrain.jsonl") && t.contains("--force data"),
        "{t}"
    );
}
