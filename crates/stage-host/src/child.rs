//! Running a stage in a child process.
//!
//! The parent starts `<host_exe> __stage-host --plugin P --request R [--reward NAME=PATH]...`. The
//! child moves its stdout to a private descriptor used only for messages (one JSON object per
//! line: `{"event": Event}` or `{"outcome": Outcome}`) and points fd 1 at stderr, so a plugin's
//! `println!` cannot corrupt the message stream. Its stderr goes to `stderr.log`.

use std::ffi::c_void;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use stage_api::abi::{self, Bytes, HostApi, Writer};
use stage_api::{Event, Outcome, Request, RewardScores};

use crate::load::{Reward, load_reward, load_stage};

/// How long a stage gets to checkpoint and exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// What to run.
pub struct ChildSpec<'a> {
    /// An executable that serves `__stage-host` with [`child_main`] (the `interplay` binary).
    pub host_exe: &'a Path,
    /// The stage plugin library.
    pub plugin: &'a Path,
    /// The request file (`stages/<name>/request.json`).
    pub request: &'a Path,
    /// Reward plugin libraries by reward name (RL stages).
    pub rewards: &'a [(String, PathBuf)],
    /// Where the child's stderr goes.
    pub stderr_log: &'a Path,
}

/// How a child ended.
#[derive(Debug)]
pub struct ChildExit {
    /// The plugin's own outcome, if it got to report one.
    pub outcome: Option<Outcome>,
    /// The process status (exit code or signal).
    pub status: ExitStatus,
    /// Whether the parent asked the child to stop.
    pub stop_requested: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    Event(Event),
    Outcome(Outcome),
}

/// Runs one stage in a child process. `stop` counts stop requests (Ctrl-C presses): the first is
/// forwarded as SIGTERM, so the plugin sees `should_stop()`; the second, or a stage that has not
/// exited [`STOP_GRACE`] after the first, gets SIGKILL.
pub fn run_child(
    spec: &ChildSpec,
    stop: &AtomicUsize,
    on_event: &mut dyn FnMut(Event),
) -> anyhow::Result<ChildExit> {
    let stderr = File::create(spec.stderr_log)
        .with_context(|| format!("creating {}", spec.stderr_log.display()))?;
    let mut cmd = Command::new(spec.host_exe);
    cmd.arg("__stage-host")
        .arg("--plugin")
        .arg(spec.plugin)
        .arg("--request")
        .arg(spec.request);
    for (name, path) in spec.rewards {
        cmd.arg("--reward")
            .arg(format!("{name}={}", path.display()));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Own process group: a terminal Ctrl-C reaches only the runner, which decides what the
        // stage sees. On Linux the child also dies with the runner.
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.host_exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut outcome = None;
    let mut term_sent: Option<Instant> = None;
    let mut killed = false;
    let mut stream_open = true;
    let status = loop {
        if stream_open {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => match serde_json::from_str::<Message>(&line) {
                    Ok(Message::Event(e)) => on_event(e),
                    Ok(Message::Outcome(o)) => outcome = Some(o),
                    Err(e) => on_event(Event::Log {
                        level: stage_api::Level::Warn,
                        message: format!("unreadable message from stage host ({e}): {line}"),
                    }),
                },
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => stream_open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
        let stops = stop.load(Ordering::SeqCst);
        if stops >= 1 && term_sent.is_none() {
            #[cfg(unix)]
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            #[cfg(not(unix))]
            let _ = child.kill();
            term_sent = Some(Instant::now());
        }
        let overdue = term_sent.is_some_and(|t| t.elapsed() > STOP_GRACE);
        if (stops >= 2 || overdue) && !killed {
            let _ = child.kill();
            killed = true;
        }
        if !stream_open && let Some(status) = child.try_wait()? {
            break status;
        }
    };
    let _ = reader.join();
    Ok(ChildExit {
        outcome,
        status,
        stop_requested: term_sent.is_some(),
    })
}

/// "exit code 1", "killed by signal 6 (SIGABRT)".
pub fn describe_exit(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                libc::SIGABRT => " (SIGABRT: abort)",
                libc::SIGSEGV => " (SIGSEGV: segmentation fault)",
                libc::SIGKILL => " (SIGKILL: killed, possibly out of memory)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(c) => format!("exit code {c}"),
        None => "unknown exit status".to_string(),
    }
}

// ---- the child side ---------------------------------------------------------------------------

static STOP: AtomicBool = AtomicBool::new(false);

struct ChildHost {
    messages: Mutex<File>,
    rewards: Vec<(stage_api::RewardSpec, Reward)>,
}

impl ChildHost {
    fn send(&self, tag: &str, json: &[u8]) {
        let mut line = Vec::with_capacity(json.len() + tag.len() + 8);
        line.extend_from_slice(b"{\"");
        line.extend_from_slice(tag.as_bytes());
        line.extend_from_slice(b"\":");
        line.extend_from_slice(json);
        line.extend_from_slice(b"}\n");
        let mut f = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        // If the parent is gone there is nobody to tell; the stage will see SIGTERM.
        let _ = f.write_all(&line);
    }

    fn score(&self, batch: &[u8]) -> anyhow::Result<Vec<RewardScores>> {
        anyhow::ensure!(
            !self.rewards.is_empty(),
            "this stage has no reward plugins (add `rewards = [...]` to it)"
        );
        // Only the length: the bytes go to each reward as they are.
        let samples = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(batch)
            .context("the stage sent a batch that is not a JSON list of samples")?
            .len();
        self.rewards
            .iter()
            .map(|(spec, reward)| {
                Ok(RewardScores {
                    name: spec.name.clone(),
                    weight: spec.weight,
                    scores: reward.score_json(batch, samples)?,
                })
            })
            .collect()
    }
}

unsafe extern "C" fn host_emit(ctx: *mut c_void, event: Bytes) {
    let host = unsafe { &*(ctx as *const ChildHost) };
    let json = unsafe { event.as_slice() };
    // One event per line: reject anything that would break the framing.
    if !json.contains(&b'\n') && serde_json::from_slice::<serde_json::Value>(json).is_ok() {
        host.send("event", json);
    }
}

unsafe extern "C" fn host_should_stop(_ctx: *mut c_void) -> bool {
    STOP.load(Ordering::SeqCst)
}

unsafe extern "C" fn host_score(ctx: *mut c_void, batch: Bytes, out: *const Writer) -> i32 {
    let host = unsafe { &*(ctx as *const ChildHost) };
    let result = catch_unwind(AssertUnwindSafe(|| host.score(unsafe { batch.as_slice() })));
    let (status, json) = match result {
        Ok(Ok(scores)) => (
            abi::STATUS_OK,
            serde_json::to_vec(&scores).expect("serializable"),
        ),
        Ok(Err(e)) => (
            abi::STATUS_ERROR,
            serde_json::to_vec(&abi::ErrorMessage {
                error: format!("{e:#}"),
            })
            .unwrap(),
        ),
        Err(_) => (
            abi::STATUS_PANIC,
            serde_json::to_vec(&abi::ErrorMessage {
                error: "host panicked while scoring".into(),
            })
            .unwrap(),
        ),
    };
    unsafe { ((*out).write)((*out).ctx, Bytes::from_slice(&json)) };
    status
}

struct ChildArgs {
    plugin: PathBuf,
    request: PathBuf,
    rewards: Vec<(String, PathBuf)>,
}

fn parse_args(args: &[String]) -> anyhow::Result<ChildArgs> {
    let (mut plugin, mut request, mut rewards) = (None, None, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--plugin" => plugin = Some(PathBuf::from(value()?)),
            "--request" => request = Some(PathBuf::from(value()?)),
            "--reward" => {
                let v = value()?;
                let (name, path) = v.split_once('=').context("--reward takes NAME=PATH")?;
                rewards.push((name.to_string(), PathBuf::from(path)));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(ChildArgs {
        plugin: plugin.context("--plugin is required")?,
        request: request.context("--request is required")?,
        rewards,
    })
}

/// Entry point of `interplay __stage-host --plugin P --request R [--reward NAME=PATH]...`
/// (`args` excludes the program name and `__stage-host`).
pub fn child_main(args: &[String]) -> ExitCode {
    // The message channel is the original stdout; fd 1 becomes stderr for the plugin's prints.
    #[cfg(unix)]
    let messages = unsafe {
        use std::os::fd::FromRawFd;
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            eprintln!("stage host: cannot set up the message channel");
            return ExitCode::from(3);
        }
        File::from_raw_fd(fd)
    };
    #[cfg(not(unix))]
    let messages = compile_error!("the stage host needs a Unix-like OS");

    let _ = ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst));
    let mut host = ChildHost {
        messages: Mutex::new(messages),
        rewards: Vec::new(),
    };
    match serve(args, &mut host) {
        Ok(outcome) => {
            host.send("outcome", &outcome);
            match serde_json::from_slice::<Outcome>(&outcome) {
                Ok(Outcome::Ok | Outcome::Interrupted) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            eprintln!("stage host: {e:#}");
            let outcome = Outcome::Error {
                message: e.to_string(),
                chain: e.chain().skip(1).map(|c| c.to_string()).collect(),
            };
            host.send("outcome", &serde_json::to_vec(&outcome).unwrap());
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &[String], host: &mut ChildHost) -> anyhow::Result<Vec<u8>> {
    let args = parse_args(args)?;
    let plugin = load_stage(&args.plugin)?;
    let request_bytes = std::fs::read(&args.request)
        .with_context(|| format!("reading {}", args.request.display()))?;
    let request: Request = serde_json::from_slice(&request_bytes).context("unreadable request")?;
    for spec in &request.rewards {
        let (_, path) = args
            .rewards
            .iter()
            .find(|(n, _)| *n == spec.name)
            .with_context(|| format!("no library given for reward `{}`", spec.name))?;
        let reward = load_reward(path)?
            .instantiate(&spec.config)
            .with_context(|| format!("reward `{}`", spec.name))?
            .named(&spec.name);
        host.rewards.push((spec.clone(), reward));
    }
    let api = HostApi {
        ctx: host as *mut ChildHost as *mut c_void,
        emit: host_emit,
        should_stop: host_should_stop,
        score: host_score,
    };
    Ok(plugin.run_in_this_process(&request_bytes, &api))
}
