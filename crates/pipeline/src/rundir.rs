//! The run directory (see ARCHITECTURE.md):
//!
//! ```text
//! <run-dir>/pipeline.resolved.toml  run.json
//! <run-dir>/stages/<name>/request.json  events.jsonl  stderr.log  outcome.json  DONE
//!                         ckpt/  ckpt.json  out.partial/<output>/  →  out/<output>/
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
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

    /// `stages/<stage>/DONE`, if the stage finished (and the marker parses).
    pub fn done(&self, stage: &str) -> Option<Done> {
        let text = std::fs::read_to_string(self.stage(stage).join("DONE")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The fingerprint in `stages/<stage>/DONE`, if the stage finished.
    pub fn done_fingerprint(&self, stage: &str) -> Option<String> {
        self.done(stage).map(|d| d.fingerprint)
    }
}

/// What `DONE` says about a finished stage (the fields the runner reads back).
#[derive(Clone, Debug, Deserialize)]
pub struct Done {
    /// The fingerprint the stage finished with.
    pub fingerprint: String,
    /// Every file of every output, by output name and path relative to the output directory. `None` in a
    /// marker written before the runner recorded them: such a stage cannot vouch for its outputs.
    #[serde(default)]
    pub outputs: Option<BTreeMap<String, Tree>>,
}

/// Size and SHA-256 of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Lowercase hex.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
}

/// The files under a directory: path relative to it (`/`-separated) → size and SHA-256.
pub type Tree = BTreeMap<String, FileSum>;

/// Relative path → (absolute path, size) of every file under `dir`, directories followed, sorted.
fn list_files(dir: &Path) -> anyhow::Result<BTreeMap<String, (PathBuf, u64)>> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, (PathBuf, u64)>,
    ) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let meta =
                std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).expect("under the root");
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.insert(rel.join("/"), (path, meta.len()));
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Size and SHA-256 of every file under `dir`.
pub fn hash_tree(dir: &Path) -> anyhow::Result<Tree> {
    list_files(dir)?
        .into_iter()
        .map(|(rel, (path, bytes))| {
            let sha256 = hash_file(&path)?;
            Ok((rel, FileSum { sha256, bytes }))
        })
        .collect()
}

/// The first difference between the files under `dir` and `expected` (recorded by [`hash_tree`] when
/// `what` wrote them), naming the file; `None` when every file matches. Sizes and names are compared
/// before any file is hashed, so a truncated or missing file is found without reading the rest.
pub fn verify_tree(dir: &Path, expected: &Tree, what: &str) -> anyhow::Result<Option<String>> {
    verify_tree_as(dir, dir, expected, what)
}

/// [`verify_tree`] of `dir`, naming its files as under `shown` (where `dir`'s files were linked from).
pub(crate) fn verify_tree_as(
    dir: &Path,
    shown: &Path,
    expected: &Tree,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let found = list_files(dir)?;
    for (rel, want) in expected {
        let path = shown.join(rel);
        match found.get(rel) {
            None => {
                return Ok(Some(format!(
                    "{}: missing; expected it, as {what} recorded it",
                    path.display()
                )));
            }
            Some(&(_, bytes)) if bytes != want.bytes => {
                return Ok(Some(format!(
                    "{}: {bytes} bytes, expected {} (recorded in {what}); the file was truncated or replaced",
                    path.display(),
                    want.bytes
                )));
            }
            Some(_) => {}
        }
    }
    if let Some((rel, _)) = found.iter().find(|(rel, _)| !expected.contains_key(*rel)) {
        return Ok(Some(format!(
            "{}: not expected; {what} recorded no such file",
            shown.join(rel).display()
        )));
    }
    for (rel, want) in expected {
        let sha256 = hash_file(&dir.join(rel))?;
        if sha256 != want.sha256 {
            return Ok(Some(format!(
                "{}: sha256 {sha256}, expected {} (recorded in {what}); the file was changed",
                shown.join(rel).display(),
                want.sha256
            )));
        }
    }
    Ok(None)
}

/// Recreates the files under `src` (directories followed, as [`hash_tree`] lists them) under `dst`, each a
/// hard link to the file itself (never to a symlink), or a copy where a hard link cannot be made (another
/// filesystem). Returns how many files were linked and how many copied. A later rewrite of a source file
/// by the runner (which deletes and replaces, never writes in place) leaves the linked file as it was.
pub(crate) fn link_tree(src: &Path, dst: &Path) -> anyhow::Result<(usize, usize)> {
    fn walk(src: &Path, dst: &Path, n: &mut (usize, usize)) -> anyhow::Result<()> {
        std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
            let entry = entry.with_context(|| format!("reading {}", src.display()))?;
            let path = entry.path();
            let to = dst.join(entry.file_name());
            let meta =
                std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                walk(&path, &to, n)?;
                continue;
            }
            let file = std::fs::canonicalize(&path)
                .with_context(|| format!("resolving {}", path.display()))?;
            if std::fs::hard_link(&file, &to).is_ok() {
                n.0 += 1;
            } else {
                std::fs::copy(&file, &to)
                    .with_context(|| format!("copying {} to {}", file.display(), to.display()))?;
                n.1 += 1;
            }
        }
        Ok(())
    }
    let mut n = (0, 0);
    walk(src, dst, &mut n)?;
    Ok(n)
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
pub fn fingerprint(v: &serde_json::Value) -> String {
    let mut s = String::new();
    canonical(v, &mut s);
    hex(&Sha256::digest(s.as_bytes()))
}

fn canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
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
    fn verify_tree_names_the_first_changed_missing_truncated_or_extra_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.bin"), [7u8; 3000]).unwrap();
        std::fs::write(d.join("sub/b.json"), "{\"x\": 1}").unwrap();
        let tree = hash_tree(d).unwrap();
        assert_eq!(tree.keys().collect::<Vec<_>>(), ["a.bin", "sub/b.json"]);
        assert_eq!(tree["a.bin"].bytes, 3000);
        let check = || verify_tree(d, &tree, "DONE").unwrap();
        assert_eq!(check(), None);

        let mut b = std::fs::read(d.join("a.bin")).unwrap();
        b[1500] ^= 1;
        std::fs::write(d.join("a.bin"), &b).unwrap();
        let m = check().unwrap();
        assert!(
            m.contains("a.bin: sha256 ") && m.contains("the file was changed"),
            "{m}"
        );
        b[1500] ^= 1;
        std::fs::write(d.join("a.bin"), &b[..1000]).unwrap();
        let m = check().unwrap();
        assert!(m.contains("a.bin: 1000 bytes, expected 3000"), "{m}");
        std::fs::remove_file(d.join("a.bin")).unwrap();
        let m = check().unwrap();
        assert!(m.contains("a.bin: missing"), "{m}");
        std::fs::write(d.join("a.bin"), &b).unwrap();
        assert_eq!(check(), None);
        std::fs::write(d.join("sub/c.txt"), "new").unwrap();
        let m = check().unwrap();
        assert!(m.contains("c.txt: not expected"), "{m}");
    }

    #[cfg(unix)]
    #[test]
    fn linked_trees_match_their_source_and_outlive_its_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.bin"), [7u8; 3000]).unwrap();
        std::fs::write(src.join("sub/b.json"), "{}").unwrap();
        // A symlink in an output stands for its file: the link is to the file, not to the symlink.
        std::fs::write(dir.path().join("outside.txt"), "target").unwrap();
        std::os::unix::fs::symlink("../../outside.txt", src.join("sub/c.txt")).unwrap();
        let tree = hash_tree(&src).unwrap();
        assert_eq!(link_tree(&src, &dst).unwrap(), (3, 0));
        assert_eq!(verify_tree(&dst, &tree, "DONE").unwrap(), None);
        assert!(
            !std::fs::symlink_metadata(dst.join("sub/c.txt"))
                .unwrap()
                .is_symlink()
        );
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&src.join("a.bin")), ino(&dst.join("a.bin")));
        // The source is rerun: its files are deleted and written again; the linked tree keeps its bytes.
        remove_all(&src).unwrap();
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), [9u8; 10]).unwrap();
        assert_eq!(verify_tree(&dst, &tree, "DONE").unwrap(), None);
        // Messages name the files as under the directory they were linked from.
        std::fs::write(dst.join("extra"), "x").unwrap();
        let m = verify_tree_as(&dst, Path::new("/elsewhere"), &tree, "its DONE")
            .unwrap()
            .unwrap();
        assert!(m.starts_with("/elsewhere/extra: not expected"), "{m}");
    }

    #[test]
    fn fingerprint_ignores_key_order_only() {
        let a = fingerprint(&json!({"b": 1, "a": [1, 2], "c": {"y": 1.5, "x": "s"}}));
        let b = fingerprint(&json!({"c": {"x": "s", "y": 1.5}, "a": [1, 2], "b": 1}));
        let c = fingerprint(&json!({"c": {"x": "s", "y": 1.5}, "a": [2, 1], "b": 1}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
