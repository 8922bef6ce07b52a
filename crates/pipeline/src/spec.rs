//! Parsing a pipeline file plus overrides into a checked [`Pipeline`].
//!
//! The file is parsed with `toml_edit` (which keeps spans), converted to JSON while recording the
//! line of every key, patched by the overrides (which record themselves as the origin), and then
//! checked by hand so that each error names its location and key path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use toml_edit::{Item, TableLike};

use crate::diag::{Diagnostic, Diagnostics, Origin};

/// A parsed, checked pipeline (before its plugins are loaded; see [`crate::preflight`]).
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The pipeline file.
    pub file: PathBuf,
    /// `[pipeline] name`.
    pub name: String,
    /// `[pipeline] seed`.
    pub seed: u64,
    /// `[pipeline] device` (default `"cpu"`).
    pub device: String,
    /// `[pipeline] plugin_path`: directories searched for plugins before any other, as canonical
    /// paths (relative ones are relative to the pipeline file, or to the current directory when
    /// they come from an override). Each exists; one holding a `Cargo.toml` stands for its build
    /// output (`stage_host::library_dir`).
    pub plugin_path: Vec<PathBuf>,
    /// Stages in dependency order (every stage after the stages it reads from).
    pub stages: Vec<StageSpec>,
    /// The overrides applied, as given.
    pub overrides: Vec<String>,
    /// The whole pipeline after overrides, as JSON.
    pub resolved: Value,
    origins: Origins,
}

/// One `[stages.NAME]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    /// Stage name (the table key).
    pub name: String,
    /// Plugin name.
    pub plugin: String,
    /// The `config` table (empty object when absent).
    pub config: Value,
    /// Device: the stage's own `device`, else the pipeline's.
    pub device: String,
    /// Seed derived from the pipeline seed and the stage name ([`derive_seed`]).
    pub seed: u64,
    /// `inputs`: port name → references (a single string becomes a list of one).
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    /// `after`: stages that must finish first although no data flows.
    pub after: Vec<String>,
    /// `rewards` (RL stages).
    pub rewards: Vec<RewardEntry>,
}

/// `"stage.output"`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputRef {
    /// Producing stage.
    pub stage: String,
    /// Output port of that stage.
    pub output: String,
}

/// One entry of a stage's `rewards` list.
#[derive(Clone, Debug, PartialEq)]
pub struct RewardEntry {
    /// Name in metrics (default: the plugin name).
    pub name: String,
    /// Reward plugin name.
    pub plugin: String,
    /// Weight in the combined reward (default 1).
    pub weight: f32,
    /// The reward's config (empty object when absent).
    pub config: Value,
}

/// Seed of a stage: a hash of the pipeline seed and the stage name, so that adding or renaming
/// one stage changes no other stage's seed.
pub fn derive_seed(pipeline_seed: u64, stage: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"interplay/stage-seed/v1\0");
    h.update(pipeline_seed.to_le_bytes());
    h.update(stage.as_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().unwrap())
}

// ---- paths and origins -------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) fn show(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Origins {
    file: PathBuf,
    at: BTreeMap<Vec<Seg>, Origin>,
}

impl Origins {
    /// Origin of the longest recorded prefix of `path`.
    pub(crate) fn of(&self, path: &[Seg]) -> Origin {
        (0..=path.len())
            .rev()
            .find_map(|n| self.at.get(&path[..n]).cloned())
            .unwrap_or(Origin::File {
                file: self.file.clone(),
                line: 1,
            })
    }

    pub(crate) fn diag(&self, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            origin: self.of(path),
            path: show(path),
            message: message.into(),
        }
    }
}

impl Pipeline {
    /// Reads `file`, applies `overrides` (`key.path=value`, value a TOML literal; `+key=value`
    /// adds a key that the file lacks) and checks the result.
    pub fn load(file: &Path, overrides: &[String]) -> anyhow::Result<Pipeline> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        Ok(Pipeline::parse(file, &text, overrides)?)
    }

    /// Like [`Pipeline::load`] for text already in memory (`file` is used in messages).
    pub fn parse(file: &Path, text: &str, overrides: &[String]) -> Result<Pipeline, Diagnostics> {
        let doc = toml_edit::Document::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let msg = e.message().trim().to_string();
            Diagnostics(vec![Diagnostic {
                origin: Origin::File {
                    file: file.to_path_buf(),
                    line,
                },
                path: String::new(),
                message: format!("TOML syntax error: {msg}"),
            }])
        })?;
        let mut origins = Origins {
            file: file.to_path_buf(),
            at: BTreeMap::new(),
        };
        let mut stage_order = Vec::new();
        let mut diags = Vec::new();
        let mut root = table_to_json(
            doc.as_table(),
            &mut Vec::new(),
            text,
            &mut origins,
            &mut diags,
        );
        if let Some(stages) = doc.as_table().get("stages").and_then(Item::as_table_like) {
            stage_order.extend(stages.iter().map(|(k, _)| k.to_string()));
        }
        for arg in overrides {
            if let Err(d) = apply_override(&mut root, &mut origins, arg) {
                diags.push(d);
            }
        }
        if !diags.is_empty() {
            return Err(Diagnostics(diags));
        }
        let mut p = check(file, &root, &origins, &stage_order)?;
        p.overrides = overrides.to_vec();
        Ok(p)
    }

    /// A stage by name.
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// `names` and every stage that (transitively) reads from them. Unknown names are an error.
    pub fn downstream_of(&self, names: &[String]) -> anyhow::Result<BTreeSet<String>> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for n in names {
            anyhow::ensure!(
                self.stage(n).is_some(),
                "--force {n}: no stage named `{n}` (stages: {})",
                self.stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            out.insert(n.clone());
        }
        // Stages are in dependency order, so one pass suffices.
        for s in &self.stages {
            if s.inputs.values().flatten().any(|r| out.contains(&r.stage))
                || s.after.iter().any(|a| out.contains(a))
            {
                out.insert(s.name.clone());
            }
        }
        Ok(out)
    }

    /// The location of `path` (dotted, e.g. `stages.rl.config`) for messages.
    pub fn origin_of(&self, path: &[&str]) -> Origin {
        let p: Vec<Seg> = path.iter().map(|k| key(k)).collect();
        self.origins.of(&p)
    }

    pub(crate) fn origins(&self) -> &Origins {
        &self.origins
    }

    /// The resolved pipeline as TOML (what `pipeline.resolved.toml` holds).
    pub fn resolved_toml(&self) -> String {
        let mut doc = toml_edit::DocumentMut::new();
        if let Value::Object(m) = &self.resolved {
            fill_table(doc.as_table_mut(), m);
        }
        doc.to_string()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

// ---- TOML → JSON, recording origins ------------------------------------------------------------

fn table_to_json(
    t: &dyn TableLike,
    path: &mut Vec<Seg>,
    text: &str,
    origins: &mut Origins,
    diags: &mut Vec<Diagnostic>,
) -> Value {
    let mut m = Map::new();
    for (k, item) in t.iter() {
        path.push(key(k));
        let span = t
            .get_key_value(k)
            .and_then(|(key, _)| key.span())
            .or_else(|| item.span());
        if let Some(span) = span {
            origins.at.insert(
                path.clone(),
                Origin::File {
                    file: origins.file.clone(),
                    line: line_of(text, span.start),
                },
            );
        }
        if let Some(v) = item_to_json(item, path, text, origins, diags) {
            m.insert(k.to_string(), v);
        }
        path.pop();
    }
    Value::Object(m)
}

fn item_to_json(
    item: &Item,
    path: &mut Vec<Seg>,
    text: &str,
    origins: &mut Origins,
    diags: &mut Vec<Diagnostic>,
) -> Option<Value> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(value_to_json(v, path, text, origins, diags)),
        Item::Table(t) => Some(table_to_json(t, path, text, origins, diags)),
        Item::ArrayOfTables(a) => Some(Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, t)| {
                    path.push(Seg::Index(i));
                    if let Some(span) = t.span() {
                        origins.at.insert(
                            path.clone(),
                            Origin::File {
                                file: origins.file.clone(),
                                line: line_of(text, span.start),
                            },
                        );
                    }
                    let v = table_to_json(t, path, text, origins, diags);
                    path.pop();
                    v
                })
                .collect(),
        )),
    }
}

fn value_to_json(
    v: &toml_edit::Value,
    path: &mut Vec<Seg>,
    text: &str,
    origins: &mut Origins,
    diags: &mut Vec<Diagnostic>,
) -> Value {
    use toml_edit::Value as T;
    match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::from(*i.value()),
        T::Float(f) => match serde_json::Number::from_f64(*f.value()) {
            Some(n) => Value::Number(n),
            None => {
                diags.push(
                    origins.diag(path, "inf and nan are not allowed (configs travel as JSON)"),
                );
                Value::Null
            }
        },
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| {
                    path.push(Seg::Index(i));
                    if let Some(span) = v.span() {
                        origins.at.insert(
                            path.clone(),
                            Origin::File {
                                file: origins.file.clone(),
                                line: line_of(text, span.start),
                            },
                        );
                    }
                    let j = value_to_json(v, path, text, origins, diags);
                    path.pop();
                    j
                })
                .collect(),
        ),
        T::InlineTable(t) => table_to_json(t, path, text, origins, diags),
    }
}

// ---- JSON → TOML (for pipeline.resolved.toml) --------------------------------------------------

fn fill_table(t: &mut toml_edit::Table, m: &Map<String, Value>) {
    // Scalars first, then sub-tables, as TOML requires.
    for (k, v) in m {
        if !v.is_object() {
            t.insert(k, toml_edit::value(json_to_toml(v)));
        }
    }
    for (k, v) in m {
        if let Value::Object(sub) = v {
            let mut st = toml_edit::Table::new();
            st.set_implicit(sub.values().all(Value::is_object) && !sub.is_empty());
            fill_table(&mut st, sub);
            t.insert(k, Item::Table(st));
        }
    }
}

fn json_to_toml(v: &Value) -> toml_edit::Value {
    match v {
        Value::Null => toml_edit::Value::from("null"),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => toml_edit::Value::Array(a.iter().map(json_to_toml).collect()),
        Value::Object(m) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, v) in m {
                t.insert(k, json_to_toml(v));
            }
            toml_edit::Value::InlineTable(t)
        }
    }
}

// ---- overrides ----------------------------------------------------------------------------------

fn apply_override(root: &mut Value, origins: &mut Origins, arg: &str) -> Result<(), Diagnostic> {
    let origin = Origin::Override(arg.to_string());
    let fail = |path: &str, message: String| Diagnostic {
        origin: origin.clone(),
        path: path.to_string(),
        message,
    };
    let Some((raw_key, raw_value)) = arg.split_once('=') else {
        return Err(fail("", "expected `key.path=value`".into()));
    };
    let (add, raw_key) = match raw_key.strip_prefix('+') {
        Some(k) => (true, k),
        None => (false, raw_key),
    };
    let value = parse_literal(raw_value).ok_or_else(|| {
        fail(
            raw_key,
            format!(
                "`{raw_value}` is not a TOML value (strings with spaces or symbols need quotes)"
            ),
        )
    })?;
    if raw_key.is_empty() || raw_key.split('.').any(str::is_empty) {
        return Err(fail(raw_key, "empty key in path".into()));
    }
    let segs: Vec<&str> = raw_key.split('.').collect();
    let mut path: Vec<Seg> = Vec::new();
    let mut cur = &mut *root;
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        // New keys are fine where the file format knows them (optional keys, input ports) and
        // inside a `config` table, whose keys the plugin's schema checks later.
        let known = match (i, segs.first().copied()) {
            (1, Some("pipeline")) => PIPELINE_KEYS.contains(s),
            (2, Some("stages")) => STAGE_KEYS.contains(s),
            (3, Some("stages")) => segs[2] == "inputs",
            _ => false,
        };
        let in_config = known || path.iter().any(|p| *p == key("config"));
        match cur {
            Value::Array(a) => {
                let idx: usize = s.parse().map_err(|_| {
                    fail(
                        &show(&path),
                        format!("`{s}` is not an index into this list"),
                    )
                })?;
                let len = a.len();
                path.push(Seg::Index(idx));
                cur = a.get_mut(idx).ok_or_else(|| {
                    fail(
                        &show(&path),
                        format!("index {idx} is out of range (the list has {len} items)"),
                    )
                })?;
            }
            Value::Object(m) => {
                path.push(key(s));
                if !m.contains_key(*s) {
                    if !(add || in_config) {
                        return Err(fail(
                            &show(&path),
                            format!(
                                "no such key in {} (write `+{raw_key}=...` to add it)",
                                origins.file.display()
                            ),
                        ));
                    }
                    if !last {
                        m.insert(s.to_string(), Value::Object(Map::new()));
                    }
                }
                if last {
                    m.insert(s.to_string(), value);
                    origins.at.retain(|p, _| !p.starts_with(&path));
                    origins.at.insert(path, origin);
                    return Ok(());
                }
                cur = m.get_mut(*s).unwrap();
            }
            _ => {
                return Err(fail(
                    &show(&path),
                    "is not a table, so it has no keys".into(),
                ));
            }
        }
        if last {
            *cur = value;
            origins.at.retain(|p, _| !p.starts_with(&path));
            origins.at.insert(path, origin);
            return Ok(());
        }
    }
    unreachable!("the loop returns at the last segment")
}

/// A TOML literal (`3e-5`, `true`, `"text"`, `[1, 2]`, `{ a = 1 }`), or a bare word such as
/// `cuda:0` taken as a string.
fn parse_literal(raw: &str) -> Option<Value> {
    let doc = toml_edit::Document::parse(format!("v = {raw}")).ok();
    if let Some(doc) = doc {
        let item = doc.as_table().get("v")?;
        let mut origins = Origins::default();
        let mut diags = Vec::new();
        let v = item_to_json(item, &mut Vec::new(), "", &mut origins, &mut diags)?;
        return diags.is_empty().then_some(v);
    }
    let bare = !raw.is_empty()
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:./".contains(c));
    bare.then(|| Value::String(raw.to_string()))
}

// ---- checking the structure ---------------------------------------------------------------------

struct Checker<'a> {
    origins: &'a Origins,
    diags: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        self.diags.push(self.origins.diag(path, message));
    }

    fn object<'v>(&mut self, v: &'v Value, path: &[Seg]) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            _ => {
                self.err(path, format!("expected a table, found {}", type_name(v)));
                None
            }
        }
    }

    fn table<'v>(
        &mut self,
        v: &'v Value,
        path: &[Seg],
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let m = self.object(v, path)?;
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                let mut p = path.to_vec();
                p.push(key(k));
                self.err(
                    &p,
                    format!("unknown key `{k}`; expected one of: {}", allowed.join(", ")),
                );
            }
        }
        Some(m)
    }

    fn string(
        &mut self,
        m: &Map<String, Value>,
        path: &[Seg],
        k: &str,
        required: bool,
    ) -> Option<String> {
        let mut p = path.to_vec();
        p.push(key(k));
        match m.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                self.err(&p, format!("expected a string, found {}", type_name(v)));
                None
            }
            None => {
                if required {
                    self.err(path, format!("missing key `{k}` (a string)"));
                }
                None
            }
        }
    }
}

impl Checker<'_> {
    /// `[pipeline] plugin_path`: a list of existing directories, resolved against the pipeline
    /// file's directory (or the current directory, for an override).
    fn plugin_path(&mut self, m: &Map<String, Value>) -> Vec<PathBuf> {
        let lp = vec![key("pipeline"), key("plugin_path")];
        let Some(v) = m.get("plugin_path") else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            self.err(
                &lp,
                format!(
                    "expected a list of directories (`plugin_path = [\"../my-reward\"]`), found {}",
                    type_name(v)
                ),
            );
            return Vec::new();
        };
        let mut dirs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = [lp.clone(), vec![Seg::Index(i)]].concat();
            let Some(raw) = item.as_str().filter(|s| !s.is_empty()) else {
                self.err(
                    &ip,
                    format!("expected a directory path, found {}", type_name(item)),
                );
                continue;
            };
            let (base, against) = match self.origins.of(&ip) {
                Origin::File { file, .. } => (
                    file.parent().map(Path::to_path_buf).unwrap_or_default(),
                    format!("the directory of {}", file.display()),
                ),
                Origin::Override(_) => (PathBuf::new(), "the current directory".to_string()),
            };
            let joined = base.join(raw);
            let dir = std::path::absolute(&joined).unwrap_or(joined);
            let resolved = if Path::new(raw).is_absolute() {
                String::new()
            } else {
                format!(" (relative to {against}: {})", dir.display())
            };
            if !dir.exists() {
                self.err(
                    &ip,
                    format!(
                        "plugin directory `{raw}` does not exist{resolved}; name a directory holding plugin \
                         libraries, or a plugin crate (with its Cargo.toml) that `cargo xtask pipeline` builds"
                    ),
                );
            } else if !dir.is_dir() {
                self.err(
                    &ip,
                    format!("plugin directory `{raw}` is not a directory{resolved}"),
                );
            } else {
                // Canonical: `run.json` records where each plugin was found, without `..`.
                dirs.push(dir.canonicalize().unwrap_or(dir));
            }
        }
        dirs
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

const PIPELINE_KEYS: &[&str] = &["name", "seed", "device", "plugin_path", "description"];
const STAGE_KEYS: &[&str] = &[
    "plugin",
    "config",
    "inputs",
    "after",
    "device",
    "rewards",
    "seed",
    "description",
];
const REWARD_KEYS: &[&str] = &["plugin", "name", "weight", "config"];

#[cfg(test)]
pub(crate) fn allowed_keys() -> [(&'static str, &'static [&'static str]); 3] {
    [
        ("pipeline", PIPELINE_KEYS),
        ("stage", STAGE_KEYS),
        ("reward", REWARD_KEYS),
    ]
}

fn check(
    file: &Path,
    root: &Value,
    origins: &Origins,
    stage_order: &[String],
) -> Result<Pipeline, Diagnostics> {
    let mut c = Checker {
        origins,
        diags: Vec::new(),
    };
    let top = c
        .table(root, &[], &["pipeline", "stages"])
        .cloned()
        .unwrap_or_default();

    // [pipeline]
    let pp = vec![key("pipeline")];
    let (mut name, mut seed, mut device) = (String::new(), 0u64, "cpu".to_string());
    let mut plugin_path = Vec::new();
    match top.get("pipeline") {
        None => c.err(&[], "missing table [pipeline] (with at least `name`)"),
        Some(v) => {
            if let Some(m) = c.table(v, &pp, PIPELINE_KEYS) {
                name = c.string(m, &pp, "name", true).unwrap_or_default();
                if !name.is_empty() && !valid_name(&name) {
                    c.err(
                        &[key("pipeline"), key("name")],
                        "use only letters, digits, `-` and `_` (it names a directory)",
                    );
                }
                device = c.string(m, &pp, "device", false).unwrap_or(device);
                plugin_path = c.plugin_path(m);
                match m.get("seed") {
                    None => {}
                    Some(v) => match v.as_u64() {
                        Some(s) => seed = s,
                        None => c.err(
                            &[key("pipeline"), key("seed")],
                            format!("expected a non-negative integer, found {}", type_name(v)),
                        ),
                    },
                }
            }
        }
    }

    // [stages.*]
    let mut stages = Vec::new();
    let sp = vec![key("stages")];
    let stage_tables = match top.get("stages") {
        None => {
            c.err(
                &[],
                "missing [stages.NAME] tables: a pipeline needs at least one stage",
            );
            Map::new()
        }
        Some(v) => c.object(v, &sp).cloned().unwrap_or_default(),
    };
    let mut names: Vec<&String> = stage_order
        .iter()
        .filter(|n| stage_tables.contains_key(*n))
        .collect();
    names.extend(stage_tables.keys().filter(|k| !stage_order.contains(k)));
    for sname in names {
        let v = &stage_tables[sname];
        let p = vec![key("stages"), key(sname)];
        if !valid_name(sname) {
            c.err(
                &p,
                "stage names use only letters, digits, `-` and `_` (they name directories)",
            );
        }
        let Some(m) = c.table(v, &p, STAGE_KEYS) else {
            continue;
        };
        let plugin = c.string(m, &p, "plugin", true).unwrap_or_default();
        let sdevice = c
            .string(m, &p, "device", false)
            .unwrap_or_else(|| device.clone());
        let config = match m.get("config") {
            None => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(v) => {
                c.err(
                    &[p.clone(), vec![key("config")]].concat(),
                    format!("expected a table, found {}", type_name(v)),
                );
                Value::Object(Map::new())
            }
        };
        let mut inputs = BTreeMap::new();
        if let Some(v) = m.get("inputs") {
            let ip = [p.clone(), vec![key("inputs")]].concat();
            if let Some(im) = c.object(v, &ip) {
                for (port, refs) in im {
                    let pp = [ip.clone(), vec![key(port)]].concat();
                    let list: Vec<(&Value, Vec<Seg>)> = match refs {
                        Value::Array(a) => a
                            .iter()
                            .enumerate()
                            .map(|(i, r)| (r, [pp.clone(), vec![Seg::Index(i)]].concat()))
                            .collect(),
                        r => vec![(r, pp.clone())],
                    };
                    let mut parsed = Vec::new();
                    for (r, rp) in list {
                        match r.as_str().and_then(|s| s.split_once('.')) {
                            Some((st, out)) if valid_name(st) && valid_name(out) => {
                                parsed.push(InputRef { stage: st.to_string(), output: out.to_string() })
                            }
                            _ => c.err(&rp, format!("expected a reference `stage.output` (or a list of them), found {r}")),
                        }
                    }
                    inputs.insert(port.clone(), parsed);
                }
            }
        }
        let mut after = Vec::new();
        if let Some(v) = m.get("after") {
            let ap = [p.clone(), vec![key("after")]].concat();
            match v.as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            }) {
                Some(Some(a)) => after = a,
                _ => c.err(&ap, format!("expected a list of stage names, found {v}")),
            }
        }
        let mut rewards = Vec::new();
        if let Some(v) = m.get("rewards") {
            let rp = [p.clone(), vec![key("rewards")]].concat();
            match v {
                Value::Array(a) => {
                    for (i, r) in a.iter().enumerate() {
                        let ep = [rp.clone(), vec![Seg::Index(i)]].concat();
                        let Some(rm) = c.table(r, &ep, REWARD_KEYS) else {
                            continue;
                        };
                        let rplugin = c.string(rm, &ep, "plugin", true).unwrap_or_default();
                        let rname = c
                            .string(rm, &ep, "name", false)
                            .unwrap_or_else(|| rplugin.clone());
                        let weight = match rm.get("weight") {
                            None => 1.0,
                            Some(w) => match w.as_f64() {
                                Some(w) => w as f32,
                                None => {
                                    c.err(
                                        &[ep.clone(), vec![key("weight")]].concat(),
                                        format!("expected a number, found {}", type_name(w)),
                                    );
                                    1.0
                                }
                            },
                        };
                        let rconfig = match rm.get("config") {
                            None => Value::Object(Map::new()),
                            Some(v @ Value::Object(_)) => v.clone(),
                            Some(v) => {
                                c.err(
                                    &[ep.clone(), vec![key("config")]].concat(),
                                    format!("expected a table, found {}", type_name(v)),
                                );
                                Value::Object(Map::new())
                            }
                        };
                        if rewards.iter().any(|e: &RewardEntry| e.name == rname) {
                            c.err(
                                &ep,
                                format!("two rewards are named `{rname}`; give one a `name`"),
                            );
                        }
                        rewards.push(RewardEntry {
                            name: rname,
                            plugin: rplugin,
                            weight,
                            config: rconfig,
                        });
                    }
                }
                v => c.err(
                    &rp,
                    format!("expected a list of tables, found {}", type_name(v)),
                ),
            }
        }
        // A stage's own `seed` replaces the pipeline's in its derivation: another RL seed on the same
        // pre-trained model, say.
        let mut stage_seed = seed;
        if let Some(v) = m.get("seed") {
            match v.as_u64() {
                Some(s) => stage_seed = s,
                None => c.err(
                    &[p.clone(), vec![key("seed")]].concat(),
                    format!("expected a non-negative integer, found {}", type_name(v)),
                ),
            }
        }
        stages.push(StageSpec {
            name: sname.clone(),
            plugin,
            config,
            device: sdevice,
            seed: derive_seed(stage_seed, sname),
            inputs,
            after,
            rewards,
        });
    }
    if !c.diags.is_empty() {
        return Err(Diagnostics(c.diags));
    }

    let stages = order(stages, origins)?;
    Ok(Pipeline {
        file: file.to_path_buf(),
        name,
        seed,
        device,
        plugin_path,
        stages,
        overrides: Vec::new(),
        resolved: root.clone(),
        origins: origins.clone(),
    })
}

/// Builds the DAG (edges from `inputs` and `after`), rejects dangling references and cycles, and
/// returns the stages in dependency order.
fn order(stages: Vec<StageSpec>, origins: &Origins) -> Result<Vec<StageSpec>, Diagnostics> {
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| g.add_node(i)).collect();
    let index: BTreeMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let all = stages
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut diags = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        let deps = s
            .inputs
            .iter()
            .flat_map(|(port, refs)| {
                refs.iter()
                    .map(move |r| (vec![key("inputs"), key(port)], r.stage.as_str()))
            })
            .chain(s.after.iter().map(|a| (vec![key("after")], a.as_str())));
        for (sub, dep) in deps {
            let path = [vec![key("stages"), key(&s.name)], sub].concat();
            match index.get(dep) {
                Some(&j) => {
                    g.update_edge(nodes[j], nodes[i], ());
                }
                None => diags.push(origins.diag(
                    &path,
                    format!("dangling reference: no stage named `{dep}` (stages: {all})"),
                )),
            }
        }
    }
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    match petgraph::algo::toposort(&g, None) {
        Ok(_) => {
            // Acyclic. Order stably: among the stages whose dependencies are done, file order.
            let mut indegree: Vec<usize> = nodes
                .iter()
                .map(|&n| {
                    g.neighbors_directed(n, petgraph::Direction::Incoming)
                        .count()
                })
                .collect();
            let mut done = vec![false; stages.len()];
            let mut sorted = Vec::with_capacity(stages.len());
            while let Some(i) = (0..stages.len()).find(|&i| !done[i] && indegree[i] == 0) {
                done[i] = true;
                sorted.push(i);
                for n in g.neighbors(nodes[i]) {
                    indegree[g[n]] -= 1;
                }
            }
            let mut slots: Vec<Option<StageSpec>> = stages.into_iter().map(Some).collect();
            Ok(sorted
                .into_iter()
                .map(|i| slots[i].take().unwrap())
                .collect())
        }
        Err(_) => {
            // Name the stages on the cycle, in the order data flows.
            let scc = petgraph::algo::tarjan_scc(&g)
                .into_iter()
                .find(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
                .expect("toposort found a cycle");
            let first = scc.iter().map(|&n| g[n]).min().unwrap();
            let mut cycle = vec![first];
            let mut cur = nodes[first];
            loop {
                let next = g
                    .neighbors(cur)
                    .filter(|n| scc.contains(n))
                    .map(|n| g[n])
                    .min()
                    .unwrap();
                cycle.push(next);
                if next == first || cycle.len() > scc.len() + 1 {
                    break;
                }
                cur = nodes[next];
            }
            let names: Vec<&str> = cycle.iter().map(|&i| stages[i].name.as_str()).collect();
            let second = &stages[cycle[1]];
            let field = if second.after.iter().any(|a| a == &stages[first].name) {
                "after"
            } else {
                "inputs"
            };
            let path = vec![key("stages"), key(&second.name), key(field)];
            Err(Diagnostics(vec![
                origins.diag(&path, format!("cycle: {}", names.join(" -> "))),
            ]))
        }
    }
}
