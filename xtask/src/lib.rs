//! The parts of xtask that tests use too: the plugin scaffold, how a plugin crate outside
//! this workspace is built, and the runs of `pipeline --seeds`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

pub mod scaffold;
pub mod seeds;

/// Whether `dir` is a plugin crate (or a workspace of them) to build rather than a directory of
/// libraries: it holds a `Cargo.toml`. The runner then looks in `dir/target/<profile>`
/// (`stage_host::library_dir`), which is where [`plugin_crate_build`] puts the libraries.
pub fn is_plugin_crate(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file()
}

/// `cargo build [--release] --manifest-path DIR/Cargo.toml --target-dir DIR/target`, run in `dir`
/// (so that the crate's own `.cargo/config.toml` applies). The target directory is named
/// explicitly so that a `CARGO_TARGET_DIR` in the environment cannot put the libraries where the
/// runner does not look.
pub fn plugin_crate_build(cargo: &OsStr, dir: &Path, release: bool) -> Command {
    let mut c = Command::new(cargo);
    c.current_dir(dir).arg("build");
    if release {
        c.arg("--release");
    }
    c.arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"));
    c
}
