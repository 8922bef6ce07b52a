//! The plugin host: finds plugin libraries, loads and validates them, and runs stages.
//!
//! * [`load_stage`] / [`load_reward`]: `dlopen` plus validation in a fixed order: entry symbol →
//!   magic → ABI version → API semver → manifest. Loading runs the library's initializers, so only
//!   load libraries your own build produced. Libraries are never unloaded.
//! * [`run_child`]: runs one stage in a child process (`<exe> __stage-host ...`, served by
//!   [`child_main`]), streams its events, forwards a stop request as SIGTERM, and reports how the
//!   child ended, including deaths by signal.
//! * [`find_plugin`]: the library of a plugin in a list of search directories; a directory that
//!   holds a `Cargo.toml` stands for its build output ([`library_dir`]).
//! * [`RewardPlugin::instantiate`] and [`Reward::score`]: in-process reward scoring, used by the
//!   child that hosts an RL stage (`HostApi::score`) and by tools that score a dataset directly.
//!   A reward that panics, fails, or returns a wrong number of scores or a non-finite score is an
//!   error naming the reward and its plugin, never a silent score.

mod child;
mod load;

pub use child::{ChildExit, ChildSpec, child_main, describe_exit, run_child};
pub use load::{
    BUILD_PROFILE, Reward, RewardPlugin, StagePlugin, api_compatible, find_plugin, library_dir,
    library_file_name, list_libraries, load_reward, load_stage,
};
