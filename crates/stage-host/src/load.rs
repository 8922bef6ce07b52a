//! Loading and validating plugin libraries.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};
use libloading::Library;
use stage_api::abi::{self, Bytes, Header, RewardDecl, StageDecl};
use stage_api::{API_VERSION, Manifest, RewardSample, StageKind};

/// File name of a plugin library: `libfoo_bar.so` for `foo-bar` on Linux.
pub fn library_file_name(plugin: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        plugin.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// The Cargo profile this runner was built with: `"release"` or `"debug"`.
pub const BUILD_PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// Where plugin libraries are looked for in search directory `dir`: in `dir` itself, or, when
/// `dir` holds a `Cargo.toml` (a plugin crate, or a workspace of them), in its build output
/// `dir/target/<profile>` for the profile of this runner ([`BUILD_PROFILE`]): a release runner
/// loads release builds, a debug runner debug builds.
pub fn library_dir(dir: &Path) -> PathBuf {
    if dir.join("Cargo.toml").is_file() {
        dir.join("target").join(BUILD_PROFILE)
    } else {
        dir.to_path_buf()
    }
}

/// The library of plugin `name` in the first of `dirs` that has it (see [`library_dir`]).
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let file = library_file_name(name);
    for dir in dirs {
        let p = library_dir(dir).join(&file);
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut searched = Vec::new();
    let mut crates = Vec::new();
    for dir in dirs {
        let lib_dir = library_dir(dir);
        if lib_dir == *dir {
            searched.push(dir.display().to_string());
        } else {
            searched.push(format!(
                "{} (the build output of the crate in {})",
                lib_dir.display(),
                dir.display()
            ));
            crates.push(dir);
        }
    }
    let release = if BUILD_PROFILE == "release" {
        " --release"
    } else {
        ""
    };
    let build = match crates.as_slice() {
        [] => format!("build it with `cargo build -p {name}`"),
        [one] => format!(
            "build it with `cargo build{release} --manifest-path {}` (or `cargo build -p {name}` if it is a member of this workspace)",
            one.join("Cargo.toml").display()
        ),
        _ => format!(
            "build it with `cargo build{release} --manifest-path <crate>/Cargo.toml` (or `cargo build -p {name}` if it is a member of this workspace)"
        ),
    };
    bail!(
        "plugin `{name}` not found: no {file} in {}; {build}, pass --plugin-dir, or add its directory to \
         `[pipeline] plugin_path`",
        if searched.is_empty() {
            "(no plugin directories)".to_string()
        } else {
            searched.join(", ")
        }
    )
}

/// Every file in `dirs` (see [`library_dir`]) named like a plugin library (`lib*.so`), sorted.
pub fn list_libraries(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(library_dir(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with(suffix) && e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Opens `path` once per process and never closes it: pointers into a plugin (its declaration,
/// its function pointers, a reward handle) must stay valid for the life of the process.
fn open(path: &Path) -> anyhow::Result<&'static Library> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, &'static Library>>> = OnceLock::new();
    let canonical = path
        .canonicalize()
        .with_context(|| format!("plugin library {}", path.display()))?;
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap();
    if let Some(lib) = open.get(&canonical) {
        return Ok(lib);
    }
    // SAFETY: loading runs the library's initializers; we only load plugin libraries by name
    // from the build output or directories the user named.
    let lib = unsafe { Library::new(&canonical) }
        .with_context(|| format!("cannot load {}", path.display()))?;
    let lib: &'static Library = Box::leak(Box::new(lib));
    open.insert(canonical, lib);
    Ok(lib)
}

/// Looks up `symbol` and reads the declaration header. Errors name what was found instead.
fn entry(
    lib: &'static Library,
    path: &Path,
    symbol: &str,
    decl_kind: u32,
) -> anyhow::Result<*const Header> {
    type Entry = unsafe extern "C" fn() -> *const Header;
    // SAFETY: our entry symbols all have this signature; the pointer is checked below.
    let found = unsafe { lib.get::<Entry>(symbol) };
    let f = match found {
        Ok(f) => *f,
        Err(_) => bail!(
            "{}: {}",
            path.display(),
            missing_symbol_hint(lib, symbol, decl_kind)
        ),
    };
    let decl = unsafe { f() };
    anyhow::ensure!(
        !decl.is_null(),
        "{}: `{symbol}` returned a null declaration",
        path.display()
    );
    let header = unsafe { *decl };
    anyhow::ensure!(
        header.magic == abi::MAGIC,
        "{}: `{symbol}` does not point to an interplay declaration (bad magic {:#x})",
        path.display(),
        header.magic
    );
    anyhow::ensure!(
        header.abi_version == abi::ABI_VERSION,
        "{}: ABI version mismatch: the plugin was built for ABI {}, this runner speaks ABI {}; rebuild the plugin \
         against this workspace's stage-api",
        path.display(),
        header.abi_version,
        abi::ABI_VERSION
    );
    anyhow::ensure!(
        header.kind == decl_kind,
        "{}: declaration kind {} where {decl_kind} was expected",
        path.display(),
        header.kind
    );
    Ok(decl)
}

fn missing_symbol_hint(lib: &Library, symbol: &str, decl_kind: u32) -> String {
    let has = |s: &str| unsafe { lib.get::<unsafe extern "C" fn()>(s).is_ok() };
    let (this, other, other_sym) = if decl_kind == abi::DECL_STAGE {
        ("stage", "reward", abi::REWARD_SYMBOL)
    } else {
        ("reward", "stage", abi::STAGE_SYMBOL)
    };
    if has(other_sym) {
        return format!(
            "this is a {other} plugin, not a {this} plugin (it exports `{other_sym}`, not `{symbol}`)"
        );
    }
    let stem = symbol.trim_end_matches(|c: char| c.is_ascii_digit());
    for v in 0..100 {
        let s = format!("{stem}{v}");
        if s != symbol && has(&s) {
            return format!(
                "ABI version mismatch: the plugin exports `{s}` (ABI {v}), this runner needs `{symbol}` (ABI {})",
                abi::ABI_VERSION
            );
        }
    }
    format!(
        "not an interplay {this} plugin: no entry symbol `{symbol}` (did the crate call `stage_api::export_{this}!`?)"
    )
}

/// Whether a plugin built against API `plugin` can talk to a host at API `host`: same major
/// (for 0.x: same minor too), and the plugin is not newer than the host.
pub fn api_compatible(host: &str, plugin: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    }
    let (Some(h), Some(p)) = (parse(host), parse(plugin)) else {
        return false;
    };
    let same_line = if h.0 == 0 {
        h.0 == p.0 && h.1 == p.1
    } else {
        h.0 == p.0
    };
    same_line && p <= h
}

fn check_api(path: &Path, api: Bytes) -> anyhow::Result<()> {
    let api = std::str::from_utf8(unsafe { api.as_slice() }).context("API version is not UTF-8")?;
    anyhow::ensure!(
        api_compatible(API_VERSION, api),
        "{}: API version mismatch: the plugin was built against stage-api {api}, this runner has {API_VERSION}",
        path.display()
    );
    Ok(())
}

fn describe(
    path: &Path,
    f: unsafe extern "C" fn(*const abi::Writer) -> i32,
) -> anyhow::Result<Manifest> {
    let mut buf = Vec::new();
    let w = abi::vec_writer(&mut buf);
    let status = unsafe { f(&w) };
    anyhow::ensure!(
        status == abi::STATUS_OK,
        "{}: describe failed: {}",
        path.display(),
        String::from_utf8_lossy(&buf)
    );
    serde_json::from_slice(&buf).with_context(|| format!("{}: unreadable manifest", path.display()))
}

/// A loaded, validated stage plugin.
#[derive(Clone)]
pub struct StagePlugin {
    /// The library file.
    pub path: PathBuf,
    /// What `describe` returned.
    pub manifest: Manifest,
    decl: &'static StageDecl,
}

/// Loads and validates a stage plugin (in this process; `describe` is cheap and side-effect free).
pub fn load_stage(path: &Path) -> anyhow::Result<StagePlugin> {
    let lib = open(path)?;
    let decl = entry(lib, path, abi::STAGE_SYMBOL, abi::DECL_STAGE)? as *const StageDecl;
    let decl: &'static StageDecl = unsafe { &*decl };
    check_api(path, decl.api_version)?;
    let manifest = describe(path, decl.describe)?;
    anyhow::ensure!(
        manifest.kind != StageKind::RewardVerifier,
        "{}: a stage plugin declared kind reward_verifier",
        path.display()
    );
    Ok(StagePlugin {
        path: path.to_path_buf(),
        manifest,
        decl,
    })
}

impl StagePlugin {
    /// Calls the plugin's `run` in *this* process and returns the raw outcome JSON. Only the
    /// child process ([`crate::child_main`]) calls this: a crash here takes the process down.
    pub fn run_in_this_process(&self, request: &[u8], host: &abi::HostApi) -> Vec<u8> {
        let mut buf = Vec::new();
        let w = abi::vec_writer(&mut buf);
        unsafe { (self.decl.run)(Bytes::from_slice(request), host, &w) };
        buf
    }
}

/// A loaded, validated reward plugin.
#[derive(Clone)]
pub struct RewardPlugin {
    /// The library file.
    pub path: PathBuf,
    /// What `describe` returned.
    pub manifest: Manifest,
    decl: &'static RewardDecl,
}

/// Loads and validates a reward plugin.
pub fn load_reward(path: &Path) -> anyhow::Result<RewardPlugin> {
    let lib = open(path)?;
    let decl = entry(lib, path, abi::REWARD_SYMBOL, abi::DECL_REWARD)? as *const RewardDecl;
    let decl: &'static RewardDecl = unsafe { &*decl };
    check_api(path, decl.api_version)?;
    let manifest = describe(path, decl.describe)?;
    anyhow::ensure!(
        manifest.kind == StageKind::RewardVerifier,
        "{}: a reward plugin declared kind {:?}",
        path.display(),
        manifest.kind
    );
    Ok(RewardPlugin {
        path: path.to_path_buf(),
        manifest,
        decl,
    })
}

impl RewardPlugin {
    /// Builds a reward from its config (`RewardFn::new` in the plugin).
    pub fn instantiate(&self, config: &serde_json::Value) -> anyhow::Result<Reward> {
        let json = serde_json::to_vec(config)?;
        let mut buf = Vec::new();
        let w = abi::vec_writer(&mut buf);
        let handle = unsafe { (self.decl.create)(Bytes::from_slice(&json), &w) };
        if handle.is_null() {
            bail!("reward `{}`: {}", self.manifest.name, error_text(&buf));
        }
        Ok(Reward {
            plugin: self.clone(),
            handle,
            name: self.manifest.name.clone(),
        })
    }
}

fn error_text(buf: &[u8]) -> String {
    match serde_json::from_slice::<abi::ErrorMessage>(buf) {
        Ok(m) => m.error,
        Err(_) => String::from_utf8_lossy(buf).into_owned(),
    }
}

/// A reward made by [`RewardPlugin::instantiate`]; destroyed by the plugin on drop.
pub struct Reward {
    plugin: RewardPlugin,
    handle: *mut c_void,
    name: String,
}

impl Reward {
    /// The plugin's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.plugin.manifest
    }

    /// Gives the reward the name it has in a pipeline (`rewards = [{ name = ... }]`; the plugin
    /// name by default), which error messages then use besides the plugin name.
    pub fn named(mut self, name: &str) -> Reward {
        self.name = name.to_string();
        self
    }

    /// How messages name this reward: "reward `outcome` (plugin `reward-outcome`)", or
    /// "reward plugin `reward-outcome`" when the two names are the same.
    pub fn label(&self) -> String {
        let plugin = &self.plugin.manifest.name;
        if self.name == *plugin {
            format!("reward plugin `{plugin}`")
        } else {
            format!("reward `{}` (plugin `{plugin}`)", self.name)
        }
    }

    /// Scores a batch of `samples` samples given as `[RewardSample]` JSON (passed through without
    /// re-encoding). Fails, naming the reward, when the plugin panics or reports an error, or returns
    /// anything but one finite score or `None` per sample.
    pub fn score_json(&self, batch: &[u8], samples: usize) -> anyhow::Result<Vec<Option<f32>>> {
        let mut buf = Vec::new();
        let w = abi::vec_writer(&mut buf);
        let status = unsafe { (self.plugin.decl.score)(self.handle, Bytes::from_slice(batch), &w) };
        match status {
            abi::STATUS_OK => {}
            abi::STATUS_PANIC => {
                let text = error_text(&buf);
                bail!(
                    "{} panicked while scoring {samples} samples: {}",
                    self.label(),
                    text.strip_prefix("panicked: ").unwrap_or(&text)
                )
            }
            _ => bail!(
                "{} failed while scoring {samples} samples: {}",
                self.label(),
                error_text(&buf)
            ),
        }
        let scores: Vec<Option<f32>> = serde_json::from_slice(&buf).with_context(|| {
            format!(
                "{}: unreadable scores `{}`",
                self.label(),
                String::from_utf8_lossy(&buf)
            )
        })?;
        if let Err(e) = stage_api::check_scores(&scores, samples) {
            bail!("{} {e}", self.label());
        }
        Ok(scores)
    }

    /// Scores a batch: one score per sample, `None` where the reward does not apply.
    pub fn score(&self, batch: &[RewardSample]) -> anyhow::Result<Vec<Option<f32>>> {
        self.score_json(&serde_json::to_vec(batch)?, batch.len())
    }
}

impl Drop for Reward {
    fn drop(&mut self) {
        unsafe { (self.plugin.decl.destroy)(self.handle) }
    }
}

#[cfg(test)]
mod tests {
    use super::api_compatible;

    #[test]
    fn api_semver() {
        let cases = [
            ("0.1.0", "0.1.0", true),
            ("0.1.3", "0.1.0", true),
            ("0.1.0", "0.1.3", false),
            ("0.2.0", "0.1.0", false),
            ("1.4.0", "1.2.9", true),
            ("1.4.0", "2.0.0", false),
            ("1.4.0", "1.5.0", false),
            ("1.0.0", "garbage", false),
        ];
        for (host, plugin, ok) in cases {
            assert_eq!(
                api_compatible(host, plugin),
                ok,
                "host {host} plugin {plugin}"
            );
        }
    }
}
