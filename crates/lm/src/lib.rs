//! `lm`: the Qwen2 language model of the paper (spec §4) on burn 0.21, with Hugging Face-compatible
//! checkpoints, a task tokenizer, a training loop with exact resume, and the sampling engine shared by RL and
//! evaluation. Generic over `B: Backend`; [`Cpu`] is the default backend, CUDA is behind the `cuda` feature.

pub mod bench;
pub mod checkpoint;
#[cfg(feature = "collective")]
pub mod collective;
pub mod config;
pub mod data;
pub mod device;
pub mod export;
pub mod grpo;
pub mod host;
pub mod host_train;
pub mod model;
pub mod rng;
pub mod sample;
pub mod tokenizer;
pub mod train;

pub use config::ModelConfig;
pub use device::{Cpu, CpuFlex, CpuNdArray, DeviceSpec};
pub use model::{KvCache, Qwen2, cross_entropy};
pub use rng::Rng;
