//! Profiling aid: `cargo run --release -p task --example verify_loop [rounds]` scores gold completions in a loop.
use task::verify::{GoldGraph, Verifier, VerifyOptions};
fn main() {
    let rounds: u32 = std::env::args().nth(1).map_or(50, |s| s.parse().unwrap());
    let cfg = task::TaskConfig::paper();
    let ps: Vec<_> = (0..2000)
        .map(|i| task::generate(&cfg, &task::bench::bench_spec(i), 1, i).unwrap())
        .collect();
    let golds: Vec<GoldGraph> = ps
        .iter()
        .map(|p| GoldGraph::from_solution(&p.solution).unwrap())
        .collect();
    let comps: Vec<String> = ps
        .iter()
        .map(|p| task::text::target_completion(&p.solution))
        .collect();
    let mean_len = comps.iter().map(|c| c.len()).sum::<usize>() / comps.len();
    let mut v = Verifier::new(VerifyOptions::default());
    let t = std::time::Instant::now();
    let mut ok = 0;
    for _ in 0..rounds {
        for (g, c) in golds.iter().zip(&comps) {
            ok += v.score(g, c).verified as u32;
        }
    }
    let n = rounds as f64 * comps.len() as f64;
    println!(
        "{ok} verified, {:.0}/s, mean completion {mean_len} bytes",
        n / t.elapsed().as_secs_f64()
    );
}
