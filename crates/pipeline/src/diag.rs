//! Located error messages: `pipelines/x.toml:12: stages.rl.config.lr: expected a number`.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// A line of the pipeline file (1-based).
    File {
        /// The pipeline file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// A command-line override, e.g. `stages.rl.config.lr=3e-5`.
    Override(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, line } => write!(f, "{}:{line}", file.display()),
            Origin::Override(arg) => write!(f, "command-line override `{arg}`"),
        }
    }
}

/// One problem, with its location and the key path it concerns.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Where.
    pub origin: Origin,
    /// Key path, e.g. `stages.rl.config.lr` (empty for the whole file).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.path, self.message)
        }
    }
}

/// Every problem found in a pipeline; displayed one per line.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
