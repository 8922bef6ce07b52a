//! `cargo run --release -p task --example bench [problems]`: the task benchmark without xtask.
fn main() {
    let n = std::env::args()
        .nth(1)
        .map_or(5000, |s| s.parse().expect("problems"));
    let r = task::bench::run(task::bench::BenchOptions {
        problems: n,
        ..Default::default()
    });
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
}
