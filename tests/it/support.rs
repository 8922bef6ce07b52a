//! Shared helpers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Cargo put the fixture cdylibs: next to this test binary (`target/<profile>/deps`).
pub fn plugin_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn lib(plugin: &str) -> PathBuf {
    plugin_dir().join(stage_host::library_file_name(plugin))
}

pub fn runner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_interplay-under-test"));
    c.env_remove("RUST_BACKTRACE");
    c
}

/// A temporary directory holding `p.toml`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new(pipeline: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    pub fn stage(&self, name: &str) -> PathBuf {
        self.run_dir().join("stages").join(name)
    }

    /// `interplay run p.toml <args> --run-dir run --plugin-dir <fixtures>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = runner();
        c.current_dir(self.path())
            .arg("run")
            .arg("p.toml")
            .args(args)
            .arg("--run-dir")
            .arg("run")
            .arg("--plugin-dir")
            .arg(plugin_dir());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn result(&self, stage: &str) -> serde_json::Value {
        let p = self.stage(stage).join("out/data/result.json");
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    pub fn outcome(&self, stage: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.stage(stage).join("outcome.json")).unwrap())
            .unwrap()
    }

    pub fn done(&self, stage: &str) -> bool {
        self.stage(stage).join("DONE").is_file()
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that the runner succeeded and returns its output.
#[track_caller]
pub fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "runner failed ({}):\n{t}", o.status);
    t
}

/// Runs the pipeline (with `args`) in the background, sends Ctrl-C once `stage` has recorded `checkpoints` checkpoint
/// events (polling every `poll`, failing after `timeout`), and asserts that the runner stopped on it (exit
/// 130); `too_fast` says what to raise when the stage finished first.
pub fn interrupt_after_checkpoints(
    sb: &Sandbox,
    args: &[&str],
    stage: &str,
    checkpoints: usize,
    timeout: std::time::Duration,
    poll: std::time::Duration,
    too_fast: &str,
) {
    let mut child = sb
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let events = sb.stage(stage).join("events.jsonl");
    let deadline = std::time::Instant::now() + timeout;
    while std::fs::read_to_string(&events)
        .map(|t| t.matches("\"checkpoint\"").count())
        .unwrap_or(0)
        < checkpoints
    {
        assert!(
            std::time::Instant::now() < deadline,
            "stage {stage} never checkpointed"
        );
        std::thread::sleep(poll);
    }
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130), "{too_fast}");
}
