//! The runner under test: identical to the `interplay` binary (same library entry point).
fn main() -> std::process::ExitCode {
    interplay::main()
}
