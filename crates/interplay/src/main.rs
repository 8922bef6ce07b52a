//! `interplay`: run pipelines of stage plugins. See `interplay --help` and README.md.
fn main() -> std::process::ExitCode {
    interplay::main()
}
