//! Throughput benchmarks (called by `cargo xtask bench tasks`): problems generated per second on one core and on
//! all cores (op 2-20 uniform, both modes, the three contexts, paper preset), and completions verified per second.

use crate::config::{Mode, TaskConfig};
use crate::context::Context;
use crate::generate::{Problem, ProblemSpec, generate};
use crate::verify::{GoldGraph, Verifier, VerifyOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Benchmark figures. JSON keys are the ones `cargo xtask bench tasks --json` promises.
///
/// One-core figures are per second of the benchmarking thread's CPU time (Linux `schedstat`), so other processes
/// on a shared machine do not distort them; the `_wall` twins are per wall-clock second. Where the CPU clock is
/// unavailable the two are equal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub problems_per_s_one_core: f64,
    pub problems_per_s_one_core_wall: f64,
    /// Wall clock, all rayon threads.
    pub problems_per_s_all_cores: f64,
    /// Completions parsed and scored per second on one core (gold graphs parsed once, as in RL).
    pub verified_per_s: f64,
    pub verified_per_s_wall: f64,
    /// Same, but each completion also re-parses its gold solution (the reference's "parse both and compare").
    pub verified_with_gold_parse_per_s: f64,
    pub threads: usize,
    pub problems: u64,
    pub completions: u64,
    pub mean_attempts: f64,
}

/// CPU time of the calling thread in seconds (Linux), else `None`.
pub fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

/// Times `f` on this thread: (wall seconds, CPU seconds or wall when unavailable).
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let c0 = thread_cpu_seconds();
    let t = Instant::now();
    f();
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (c0, thread_cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    (wall, cpu)
}

/// How much work to time.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub problems: u64,
    pub completions_rounds: u32,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            problems: 20_000,
            completions_rounds: 20,
            seed: 1,
        }
    }
}

/// The spec of benchmark problem `i`: op 2..=20 uniform, modes alternating, contexts cycling.
pub fn bench_spec(i: u64) -> ProblemSpec {
    ProblemSpec {
        op: 2 + (i % 19) as u32,
        mode: if (i / 19).is_multiple_of(2) {
            Mode::Forward
        } else {
            Mode::Reverse
        },
        context: Context::ALL[((i / 38) % 3) as usize],
        d: 2,
    }
}

fn make(cfg: &TaskConfig, seed: u64, i: u64) -> Problem {
    generate(cfg, &bench_spec(i), seed, i).expect("benchmark problem")
}

/// Runs the benchmark with the paper preset.
pub fn run(opts: BenchOptions) -> BenchReport {
    let cfg = TaskConfig::paper();
    let n = opts.problems;
    // One core.
    let mut attempts = 0u64;
    let mut problems = Vec::with_capacity(n as usize);
    let (gen_wall, gen_cpu) = timed(|| {
        for i in 0..n {
            let p = make(&cfg, opts.seed, i);
            attempts += p.attempts as u64;
            problems.push(p);
        }
    });
    // All cores.
    let t = Instant::now();
    let all: Vec<Problem> = (0..n)
        .into_par_iter()
        .map(|i| make(&cfg, opts.seed + 1, i))
        .collect();
    let many = n as f64 / t.elapsed().as_secs_f64();
    drop(all);
    // Completions: each gold solution, and a perturbed copy (a changed value), in the completion format.
    let golds: Vec<GoldGraph> = problems
        .iter()
        .map(|p| GoldGraph::from_solution(&p.solution).expect("gold parses"))
        .collect();
    let completions: Vec<String> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = crate::text::target_completion(&p.solution);
            if i % 2 == 0 {
                c
            } else {
                c.replacen(" = ", " = 1 + ", 1)
            }
        })
        .collect();
    let mut v = Verifier::new(VerifyOptions::default());
    let mut ok = 0u64;
    let (ver_wall, ver_cpu) = timed(|| {
        for _ in 0..opts.completions_rounds {
            for (g, c) in golds.iter().zip(&completions) {
                ok += v.score(g, c).verified as u64;
            }
        }
    });
    let scored = n * opts.completions_rounds as u64;
    assert!(ok > 0);
    let rounds = (opts.completions_rounds / 4).max(1);
    let (_, with_gold_cpu) = timed(|| {
        for _ in 0..rounds {
            for (p, c) in problems.iter().zip(&completions) {
                let g = GoldGraph::from_solution(&p.solution).expect("gold parses");
                ok += v.score(&g, c).verified as u64;
            }
        }
    });
    std::hint::black_box(ok);
    BenchReport {
        problems_per_s_one_core: n as f64 / gen_cpu,
        problems_per_s_one_core_wall: n as f64 / gen_wall,
        problems_per_s_all_cores: many,
        verified_per_s: scored as f64 / ver_cpu,
        verified_per_s_wall: scored as f64 / ver_wall,
        verified_with_gold_parse_per_s: (n * rounds as u64) as f64 / with_gold_cpu,
        threads: rayon::current_num_threads(),
        problems: n,
        completions: scored,
        mean_attempts: attempts as f64 / n as f64,
    }
}
