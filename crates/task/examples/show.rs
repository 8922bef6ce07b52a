//! Prints generated problems: `cargo run -p task --example show -- [preset] [op] [mode] [count] [seed]`.
use task::{Context, Mode, ProblemSpec, TaskConfig, generate};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = TaskConfig::preset(args.first().map_or("paper", |s| s))?;
    let op: u32 = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let mode = Mode::parse(args.get(2).map_or("forward", |s| s)).unwrap_or(Mode::Forward);
    let count: u64 = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let seed: u64 = args.get(4).map_or(Ok(7), |s| s.parse())?;
    for i in 0..count {
        let spec = ProblemSpec {
            op,
            context: Context::ALL[(i % 3) as usize],
            mode,
            d: 2,
        };
        let p = generate(&cfg, &spec, seed, i)?;
        println!(
            "op={} {:?} {:?} attempts={}\nproblem: {}\nquestion: {}\nsolution: {}\n",
            p.op, p.context, p.mode, p.attempts, p.problem, p.question, p.solution
        );
    }
    Ok(())
}
