//! The plugin host: finds plugin libraries, loads and validates them, and runs stages.
//!
//! * [`load_stage`] / [`load_reward`]: `dlopen` plus validation in a fixed order: entry symbol →
//!   magic → ABI version → API semver → manifest. Loading runs the library's initializers, so only
//!   load libraries your own build produced. Libraries are never unloaded.
//! * [`run_child`]: runs one stage in a child process (`<exe> __stage-host ...`, served by
//!   [`child_main`]), streams its events, forwards a stop request as SIGTERM, and reports how the
//!   child ended, including deaths by signal.
//! * [`RewardPlugin::instantiate`] and [`Reward::score`]: in-process reward scoring, used by the
//!   child that hosts an RL stage (`HostApi::score`) and by tools that score a dataset directly.

mod child;
mod load;

pub use child::{ChildExit, ChildSpec, child_main, describe_exit, run_child};
pub use load::{
    Reward, RewardPlugin, StagePlugin, api_compatible, find_plugin, library_file_name,
    list_libraries, load_reward, load_stage,
};
