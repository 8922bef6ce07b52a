//! Integration tests through the real paths: `dlopen` of fixture plugins built as cdylibs next to
//! this binary, and the runner binary (`interplay-under-test`, identical to `interplay`) running
//! stages in child processes.

mod checkpoints;
mod cli;
mod loading;
mod pipeline_errors;
mod reasoning_task;
mod report;
mod rewards;
mod rl;
mod runs;
mod scaffold;
mod sharing;
mod support;
mod training;
