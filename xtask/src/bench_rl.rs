//! `cargo xtask bench rl [--json FILE]`: GRPO steps per second and rollout tokens per second on the fixed
//! workload of `pipelines/bench-rl.toml`, through the real `rl-grpo` stage (release build). The data and the
//! small pre-trained model are built once and kept in `target/bench/rl`; the `rl` stage runs again every
//! time. The first step is left out of the means (it pays for allocations and first-touch of buffers).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

pub fn bench_rl(args: &[String], root: &Path, target: &Path) -> Result<()> {
    let mut json_out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => {
                let f = it.next().context("--json needs a file")?;
                json_out = Some(std::env::current_dir()?.join(f));
            }
            other => {
                bail!("unexpected argument `{other}`; usage: cargo xtask bench rl [--json FILE]")
            }
        }
    }
    let run_dir = target.join("bench").join("rl");
    let pipeline = root.join("pipelines").join("bench-rl.toml");
    // This very binary runs the pipeline task, which builds in release mode and then becomes the runner.
    let status = Command::new(std::env::current_exe()?)
        .arg("pipeline")
        .arg(&pipeline)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--force", "rl"])
        .status()
        .context("running the benchmark pipeline")?;
    ensure!(status.success(), "the benchmark pipeline failed ({status})");

    let path = run_dir.join("stages/rl/out/report/report.json");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let curves = report["curves"]
        .as_array()
        .with_context(|| format!("{}: no `curves`", path.display()))?;
    ensure!(curves.len() >= 2, "{}: fewer than 2 steps", path.display());
    let mean = |k: &str| {
        let v: Vec<f64> = curves[1..]
            .iter()
            .filter_map(|c| c["metrics"][k].as_f64())
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (step, sample, score, logprob, update) = (
        mean("time/step_s"),
        mean("time/sample_s"),
        mean("time/score_s"),
        mean("time/logprob_s"),
        mean("time/update_s"),
    );
    let other = (step - sample - score - logprob - update).max(0.0);
    let rollout_tokens = mean("response_length/mean") * rows(&report) as f64;
    let result = serde_json::json!({
        "workload": "pipelines/bench-rl.toml",
        "steps_measured": curves.len() - 1,
        "rl_steps_per_s": 1.0 / step,
        "rollout_tokens_per_s": rollout_tokens / sample,
        "step_s": step,
        "sample_s": sample,
        "score_s": score,
        "logprob_s": logprob,
        "update_s": update,
        "other_s": other,
        "step_over_sampling": step / sample,
        "rollout_tokens_per_step": rollout_tokens,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let pct = |x: f64| 100.0 * x / step;
    println!(
        "rl: {:.3} steps/s, {:.0} rollout tokens/s ({:.0} tokens per step)\n\
         step {step:.3} s = sampling {sample:.3} s ({:.0} %) + scoring {score:.3} s ({:.0} %) + log-probs \
         {logprob:.3} s ({:.0} %) + update {update:.3} s ({:.0} %) + other {other:.3} s\n\
         step / sampling = {:.2} (target <= 1.5)",
        1.0 / step,
        rollout_tokens / sample,
        rollout_tokens,
        pct(sample),
        pct(score),
        pct(logprob),
        pct(update),
        step / sample,
    );
    if let Some(f) = json_out {
        std::fs::write(&f, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("writing {}", f.display()))?;
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// Completions per step, from the settings the stage recorded.
fn rows(report: &serde_json::Value) -> u64 {
    let s = &report["settings"];
    s["prompts_per_step"].as_u64().unwrap_or(0) * s["group_size"].as_u64().unwrap_or(0)
}
