//! Pipelines: declarative TOML files that chain stage plugins.
//!
//! * [`Pipeline::load`] parses a file plus command-line overrides into a checked DAG. Every error
//!   names the file and line (or the override) and the key path.
//! * [`preflight`] loads every plugin the pipeline names and checks wiring, devices and every
//!   stage config against its plugin's JSON Schema, before anything runs.
//! * [`execute`] runs the stages in order in child processes, inside a run directory that makes
//!   re-runs incremental (skip unchanged, `--force`, resume from checkpoints), and shares stages
//!   that other run directories finished with the same fingerprint (`--share-from`).

mod diag;
mod exec;
mod format;
mod preflight;
mod rundir;
mod spec;

pub use diag::{Diagnostic, Diagnostics, Origin};
pub use exec::{ExecOptions, Observer, RunSummary, StageReport, StageStatus, execute};
pub use format::pipeline_schema;
pub use preflight::{ResolvedStage, preflight};
pub use rundir::{RunDir, fingerprint, hash_file};
pub use spec::{InputRef, Pipeline, RewardEntry, StageSpec, derive_seed};
