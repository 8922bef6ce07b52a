//! The reasoning task of "On the Interplay of Pre-Training, Mid-Training, and RL on Reasoning Language Models"
//! (arXiv 2512.07783): GSM-Infinite-style arithmetic word problems built from DAGs whose difficulty op(G) and
//! surface context are set exactly, their step-by-step solutions, and a parser + process verifier that reads a
//! model's solution back into a graph and checks it node by node.
//!
//! ```
//! use task::{generate, ProblemSpec, TaskConfig, Context, Mode, verify::{GoldGraph, score, VerifyOptions}};
//! let cfg = TaskConfig::paper();
//! let spec = ProblemSpec { op: 5, context: Context::Zoo, mode: Mode::Forward, d: 2 };
//! let p = generate(&cfg, &spec, 7, 0).unwrap();
//! let gold = GoldGraph::from_solution(&p.solution).unwrap();
//! let s = score(&gold, &p.solution, &VerifyOptions::default());
//! assert!(s.verified && s.strict && s.process == 1.0);
//! ```
//!
//! Map: [`config`] (knobs and presets), [`generate`](mod@generate) (the generator), [`text`] (training text and
//! prompts), [`verify`] (parser, scores, rewards), [`reward`] (batch scoring for the reward plugins),
//! [`dataset`] (corpora, eval sets, JSONL, stats, the paper's files), [`cli`] (`interplay task gen/score`),
//! [`bench`](mod@bench) (throughput; `cargo run --release -p task --example bench`).

pub mod bench;
pub mod cli;
pub mod config;
pub mod context;
pub mod dataset;
pub mod generate;
pub mod reward;
pub mod rng;
pub mod text;
pub mod verify;

pub use config::{Letters, Mode, QuestionPosition, SolutionOrder, TaskConfig};
pub use context::Context;
pub use generate::{Gold, GoldNode, Problem, ProblemSpec, generate};
