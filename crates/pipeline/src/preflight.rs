//! Everything checked before any stage runs: plugins found and valid, devices supported, inputs
//! wired to outputs of the right kind, and every config valid under its plugin's JSON Schema.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use stage_host::{RewardPlugin, StagePlugin};

use crate::diag::{Diagnostic, Diagnostics};
use crate::spec::{Origins, Pipeline, RewardEntry, Seg, StageSpec, key};

/// A stage with its loaded plugin (and reward plugins).
#[derive(Clone)]
pub struct ResolvedStage {
    /// The stage as written.
    pub spec: StageSpec,
    /// Its plugin.
    pub plugin: StagePlugin,
    /// SHA-256 of the plugin library (part of the fingerprint: rebuilt code reruns the stage).
    pub plugin_sha256: String,
    /// Reward plugins with their library hashes.
    pub rewards: Vec<(RewardEntry, RewardPlugin, String)>,
}

/// Loads every plugin `p` names and checks the whole pipeline. Plugins are looked for in the
/// pipeline's own `plugin_path` first, then in `plugin_dirs` (see `stage_host::find_plugin`).
/// Reports every problem found, each with its location.
pub fn preflight(p: &Pipeline, plugin_dirs: &[PathBuf]) -> Result<Vec<ResolvedStage>, Diagnostics> {
    let o = p.origins();
    let mut dirs = p.plugin_path.clone();
    dirs.extend(plugin_dirs.iter().cloned());
    let plugin_dirs = &dirs[..];
    let mut diags = Vec::new();
    let mut hashes: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut hash = |path: &PathBuf| -> anyhow::Result<String> {
        if let Some(h) = hashes.get(path) {
            return Ok(h.clone());
        }
        let h = crate::rundir::hash_file(path)?;
        hashes.insert(path.clone(), h.clone());
        Ok(h)
    };
    let mut resolved: Vec<ResolvedStage> = Vec::new();
    for s in &p.stages {
        let sp = vec![key("stages"), key(&s.name)];
        let plugin_path = [sp.clone(), vec![key("plugin")]].concat();
        let plugin = match stage_host::find_plugin(&s.plugin, plugin_dirs)
            .and_then(|f| stage_host::load_stage(&f))
        {
            Ok(pl) => pl,
            Err(e) => {
                diags.push(o.diag(&plugin_path, format!("{e:#}")));
                continue;
            }
        };
        let m = &plugin.manifest;
        if m.name != s.plugin {
            diags.push(o.diag(
                &plugin_path,
                format!(
                    "the library found for `{}` says it is plugin `{}`",
                    s.plugin, m.name
                ),
            ));
        }
        let family = s.device.split(':').next().unwrap_or_default();
        if !m.devices.iter().any(|d| d == family) {
            let dev_path = if p.resolved["stages"][&s.name].get("device").is_some() {
                [sp.clone(), vec![key("device")]].concat()
            } else {
                vec![key("pipeline"), key("device")]
            };
            diags.push(o.diag(
                &dev_path,
                format!(
                    "plugin `{}` cannot run on `{}`; it supports: {}",
                    m.name,
                    s.device,
                    m.devices.join(", ")
                ),
            ));
        }
        check_inputs(s, &plugin, &resolved, o, &mut diags);
        check_config(
            &m.config_schema,
            &s.config,
            &[sp.clone(), vec![key("config")]].concat(),
            &m.name,
            o,
            &mut diags,
        );
        let mut rewards = Vec::new();
        for (i, r) in s.rewards.iter().enumerate() {
            let rp = [sp.clone(), vec![key("rewards"), Seg::Index(i)]].concat();
            let loaded = stage_host::find_plugin(&r.plugin, plugin_dirs)
                .and_then(|f| stage_host::load_reward(&f));
            match loaded {
                Ok(rw) => {
                    let cp = [rp.clone(), vec![key("config")]].concat();
                    check_config(
                        &rw.manifest.config_schema,
                        &r.config,
                        &cp,
                        &rw.manifest.name,
                        o,
                        &mut diags,
                    );
                    match hash(&rw.path) {
                        Ok(h) => rewards.push((r.clone(), rw, h)),
                        Err(e) => diags.push(o.diag(&rp, format!("{e:#}"))),
                    }
                }
                Err(e) => diags.push(o.diag(&[rp, vec![key("plugin")]].concat(), format!("{e:#}"))),
            }
        }
        match hash(&plugin.path) {
            Ok(h) => resolved.push(ResolvedStage {
                spec: s.clone(),
                plugin,
                plugin_sha256: h,
                rewards,
            }),
            Err(e) => diags.push(o.diag(&plugin_path, format!("{e:#}"))),
        }
    }
    if diags.is_empty() {
        Ok(resolved)
    } else {
        Err(Diagnostics(diags))
    }
}

fn check_inputs(
    s: &StageSpec,
    plugin: &StagePlugin,
    earlier: &[ResolvedStage],
    o: &Origins,
    diags: &mut Vec<Diagnostic>,
) {
    let m = &plugin.manifest;
    let ip = vec![key("stages"), key(&s.name), key("inputs")];
    let names = |ports: &[stage_api::Port]| -> String {
        if ports.is_empty() {
            "(none)".to_string()
        } else {
            ports
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for (port, refs) in &s.inputs {
        let pp = [ip.clone(), vec![key(port)]].concat();
        let Some(decl) = m.inputs.iter().find(|i| &i.name == port) else {
            diags.push(o.diag(
                &pp,
                format!(
                    "plugin `{}` has no input `{port}`; its inputs: {}",
                    m.name,
                    names(&m.inputs)
                ),
            ));
            continue;
        };
        if !decl.many && refs.len() != 1 {
            diags.push(o.diag(
                &pp,
                format!(
                    "input `{port}` takes exactly one reference, found {}",
                    refs.len()
                ),
            ));
        }
        for r in refs {
            // Stages are in dependency order, so a producer is already resolved (unless it failed).
            let Some(producer) = earlier.iter().find(|e| e.spec.name == r.stage) else {
                continue;
            };
            let pm = &producer.plugin.manifest;
            match pm.outputs.iter().find(|out| out.name == r.output) {
                None => diags.push(o.diag(
                    &pp,
                    format!(
                        "stage `{}` (plugin `{}`) has no output `{}`; its outputs: {}",
                        r.stage,
                        pm.name,
                        r.output,
                        names(&pm.outputs)
                    ),
                )),
                Some(out) if out.kind != decl.kind => diags.push(o.diag(
                    &pp,
                    format!(
                        "`{}.{}` is a {:?} artifact but input `{port}` takes {:?}",
                        r.stage, r.output, out.kind, decl.kind
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    for decl in &m.inputs {
        if !decl.optional && !s.inputs.contains_key(&decl.name) {
            diags.push(o.diag(
                &[key("stages"), key(&s.name)],
                format!(
                    "missing input `{}` ({:?}: {}) required by plugin `{}`",
                    decl.name, decl.kind, decl.description, m.name
                ),
            ));
        }
    }
}

/// Validates `config` against `schema`, reporting each error at its key path.
pub(crate) fn check_config(
    schema: &Value,
    config: &Value,
    base: &[Seg],
    plugin: &str,
    o: &Origins,
    diags: &mut Vec<Diagnostic>,
) {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            diags.push(o.diag(
                base,
                format!("plugin `{plugin}` ships an invalid config schema: {e}"),
            ));
            return;
        }
    };
    for e in validator.iter_errors(config) {
        let mut path = base.to_vec();
        for seg in e.instance_path().iter() {
            match seg {
                jsonschema::paths::LocationSegment::Property(p) => path.push(key(&p)),
                jsonschema::paths::LocationSegment::Index(i) => path.push(Seg::Index(i)),
            }
        }
        match e.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = if path.len() == base.len() {
                    let mut k: Vec<&str> = schema["properties"]
                        .as_object()
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    k.sort();
                    format!(
                        "; expected one of: {}",
                        if k.is_empty() {
                            "(no keys)".to_string()
                        } else {
                            k.join(", ")
                        }
                    )
                } else {
                    String::new()
                };
                for u in unexpected {
                    let up = [path.clone(), vec![key(u)]].concat();
                    diags.push(o.diag(
                        &up,
                        format!("unknown key `{u}` for plugin `{plugin}`{known}"),
                    ));
                }
            }
            _ => diags.push(o.diag(
                &path,
                format!("{e} (checked against plugin `{plugin}`'s config schema)"),
            )),
        }
    }
}
