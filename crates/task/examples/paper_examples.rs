//! Writes one paper-preset problem per op 2, 5, 10, 15, 20 as Markdown:
//! `cargo run --release -p task --example paper_examples > task-examples.md`.
use task::{Context, Mode, ProblemSpec, TaskConfig, generate};

fn main() -> anyhow::Result<()> {
    let cfg = TaskConfig::paper();
    println!("# Generated problems, paper preset (seed 7)\n");
    println!("Command: `cargo run --release -p task --example paper_examples` (crate `task`).\n");
    let cases = [
        (2, Context::Zoo, Mode::Forward),
        (5, Context::Movie, Mode::Forward),
        (10, Context::Teacher, Mode::Reverse),
        (15, Context::Zoo, Mode::Forward),
        (20, Context::Teacher, Mode::Forward),
    ];
    for (i, (op, context, mode)) in cases.into_iter().enumerate() {
        let spec = ProblemSpec {
            op,
            context,
            mode,
            d: 2,
        };
        let p = generate(&cfg, &spec, 7, i as u64)?;
        println!(
            "## op {} · {} · {} · d=2 (generator attempts: {})\n",
            p.op,
            context.id(),
            mode.id(),
            p.attempts
        );
        println!(
            "**problem:** {}\n\n**question:** {}\n\n**solution:** {}\n",
            p.problem, p.question, p.solution
        );
    }
    Ok(())
}
