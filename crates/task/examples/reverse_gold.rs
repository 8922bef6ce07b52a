//! Reverse-mode (`forwardreverse`) facts that the paper's data pin down:
//! `cargo run --release -p task --example reverse_gold [preset] [per_cell]`.
//!
//! * the mean number of problem sentences at op 2 (the reference generator: about 2.5);
//! * the verified fraction of our own reverse gold solutions, scored by the process verifier with arithmetic
//!   checked, over ops 2..=20 and the three contexts;
//! * the verified fraction of the released generator's text in `tests/data/paper_examples.jsonl` (paper-spec
//!   §2.6) and `tests/data/paper_reverse.jsonl` (gold against itself).
use task::verify::{GoldGraph, VerifyOptions, score};
use task::{Context, Mode, ProblemSpec, TaskConfig, generate};

fn main() -> anyhow::Result<()> {
    let preset = std::env::args().nth(1).unwrap_or_else(|| "paper".into());
    let per_cell: u64 = std::env::args().nth(2).map_or(Ok(6), |s| s.parse())?;
    let cfg = TaskConfig::preset(&preset)?;
    let opts = VerifyOptions {
        check_arithmetic: true,
        modulus: cfg.modulus,
    };

    let n = 600u64;
    let mut sentences = 0usize;
    for i in 0..n {
        let spec = ProblemSpec {
            op: 2,
            context: Context::ALL[(i % 3) as usize],
            mode: Mode::Reverse,
            d: 2,
        };
        let p = generate(&cfg, &spec, 5, i)?;
        sentences += p.problem.matches('.').count();
    }
    println!(
        "preset {preset}: op 2 reverse, mean sentences per problem {:.2} (n = {n})",
        sentences as f64 / n as f64
    );

    let (mut total, mut verified, mut unchecked) = (0u32, 0u32, 0u32);
    let mut first_failure = None;
    for op in 2..=20u32 {
        for (ci, context) in Context::ALL.into_iter().enumerate() {
            for k in 0..per_cell {
                let spec = ProblemSpec {
                    op,
                    context,
                    mode: Mode::Reverse,
                    d: 2,
                };
                let p = generate(&cfg, &spec, 21, ci as u64 * 1000 + k)?;
                let gold = GoldGraph::from_solution(&p.solution)?;
                let s = score(&gold, &p.solution, &opts);
                total += 1;
                verified += s.verified as u32;
                unchecked += s.arithmetic_unchecked;
                if !s.verified && first_failure.is_none() {
                    first_failure = Some(format!("{s:?}\n{}", p.solution));
                }
            }
        }
    }
    println!(
        "preset {preset}: own reverse gold verified {verified} / {total} = {:.4} (steps with unchecked arithmetic: {unchecked})",
        verified as f64 / total as f64
    );
    if let Some(f) = first_failure {
        println!("first failure: {f}");
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for file in ["paper_examples.jsonl", "paper_reverse.jsonl"] {
        let (mut total, mut verified, mut reverse) = (0u32, 0u32, 0u32);
        for line in std::fs::read_to_string(dir.join(file))?.lines() {
            let rec: serde_json::Value = serde_json::from_str(line)?;
            let sol = rec["solution"].as_str().unwrap_or_default();
            let gold = GoldGraph::from_solution(sol)?;
            let s = score(&gold, sol, &VerifyOptions::default());
            total += 1;
            verified += s.verified as u32;
            reverse += (rec["mode"] == "forwardreverse") as u32;
        }
        println!(
            "tests/data/{file} (the released generator's text): verified {verified} / {total} = {:.4} ({reverse} in reverse mode)",
            verified as f64 / total as f64
        );
    }
    Ok(())
}
