//! The run directory (see ARCHITECTURE.md):
//!
//! ```text
//! <run-dir>/pipeline.resolved.toml  run.json
//! <run-dir>/stages/<name>/request.json  events.jsonl  stderr.log  outcome.json  DONE
//!                         ckpt/  ckpt.json  out.partial/<output>/  →  out/<output>/
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Paths inside a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The run directory itself.
    pub root: PathBuf,
}

impl RunDir {
    /// `stages/<stage>`.
    pub fn stage(&self, stage: &str) -> PathBuf {
        self.root.join("stages").join(stage)
    }

    /// `stages/<stage>/out/<output>`: where a finished stage's output lives.
    pub fn output(&self, stage: &str, output: &str) -> PathBuf {
        self.stage(stage).join("out").join(output)
    }

    /// The fingerprint in `stages/<stage>/DONE`, if the stage finished.
    pub fn done_fingerprint(&self, stage: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.stage(stage).join("DONE")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["fingerprint"].as_str().map(str::to_string)
    }
}

/// SHA-256 of a file, hex.
pub fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("hashing {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the canonical JSON of `v` (object keys sorted, no whitespace), hex.
pub fn fingerprint(v: &Value) -> String {
    let mut s = String::new();
    canonical(v, &mut s);
    hex(&Sha256::digest(s.as_bytes()))
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

pub(crate) fn remove_all(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_only() {
        let a = fingerprint(&json!({"b": 1, "a": [1, 2], "c": {"y": 1.5, "x": "s"}}));
        let b = fingerprint(&json!({"c": {"x": "s", "y": 1.5}, "a": [1, 2], "b": 1}));
        let c = fingerprint(&json!({"c": {"x": "s", "y": 1.5}, "a": [2, 1], "b": 1}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
