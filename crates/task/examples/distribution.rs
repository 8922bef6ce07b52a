//! Distribution checks against the reference generator's measured facts (paper spec §11, §2.7):
//! `cargo run --release -p task --example distribution [preset] [per_op]`.
use task::{Context, Mode, ProblemSpec, TaskConfig, generate, text};

fn main() -> anyhow::Result<()> {
    let preset = std::env::args().nth(1).unwrap_or_else(|| "paper".into());
    let n: u64 = std::env::args().nth(2).map_or(Ok(200), |s| s.parse())?;
    let cfg = TaskConfig::preset(&preset)?;
    println!("preset {preset}, {n} problems per op and mode (zoo/teacher/movie cycling)");
    println!(
        "op | mode | aggregate-question % | mean attempts | mean tokens (prompt / solution) | max value | answers"
    );
    for op in [2u32, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18, 20] {
        for mode in Mode::ALL {
            let (mut agg, mut att, mut pt, mut st, mut maxv) = (0u64, 0u64, 0usize, 0usize, 0i64);
            let mut answers = std::collections::BTreeMap::new();
            for i in 0..n {
                let spec = ProblemSpec {
                    op,
                    context: Context::ALL[(i % 3) as usize],
                    mode,
                    d: 2,
                };
                let p = generate(&cfg, &spec, 99, i)?;
                agg += p.question.starts_with("What is") as u64;
                att += p.attempts as u64;
                pt += text::approx_tokens(&text::prompt(&p.problem, &p.question));
                st += text::approx_tokens(&text::target_completion(&p.solution));
                for node in &p.gold.nodes {
                    if let Ok(v) = node.value.parse::<i64>() {
                        maxv = maxv.max(v);
                    }
                }
                *answers.entry(p.answer.min(20)).or_insert(0u64) += 1;
            }
            let top: Vec<String> = answers
                .iter()
                .take(6)
                .map(|(a, c)| format!("{a}:{c}"))
                .collect();
            println!(
                "{op} | {} | {:.0} | {:.1} | {:.0} / {:.0} | {maxv} | {}",
                mode.id(),
                100.0 * agg as f64 / n as f64,
                att as f64 / n as f64,
                pt as f64 / n as f64,
                st as f64 / n as f64,
                top.join(" ")
            );
        }
    }
    Ok(())
}
