//! The JSON Schema of pipeline files, for editors (`cargo xtask schema` writes it to `schemas/`).
//! The parser in `spec.rs` checks files by hand for located messages; a test keeps the two in step.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde_json::Value;

/// A pipeline: stages wired by their inputs.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(title = "interplay pipeline", deny_unknown_fields)]
struct PipelineFile {
    /// Settings of the whole pipeline.
    pipeline: PipelineTable,
    /// The stages, by name. Order does not matter: the inputs define it.
    stages: BTreeMap<String, StageTable>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PipelineTable {
    /// Name; the default run directory is `runs/<name>`.
    name: String,
    /// Seed; each stage gets a seed derived from it and the stage name.
    #[serde(default)]
    seed: u64,
    /// Device for every stage: `cpu` (default), `cuda`, `cuda:1`.
    #[serde(default)]
    device: Option<String>,
    /// Directories searched for plugins before `--plugin-dir`, `$INTERPLAY_PLUGIN_PATH` and the
    /// runner's own directory; relative to this file. Each must exist. A directory holding a
    /// `Cargo.toml` (a plugin crate outside this repository, e.g. from `cargo xtask new-plugin NAME
    /// --kind reward --out DIR`) stands for its build output `target/<profile>` (the runner's
    /// profile), and `cargo xtask pipeline` builds it first.
    #[serde(default)]
    plugin_path: Option<Vec<String>>,
    /// Free text.
    #[serde(default)]
    description: Option<String>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(untagged)]
enum InputRefs {
    /// `"stage.output"`
    One(String),
    /// `["stage.output", ...]`
    Many(Vec<String>),
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct StageTable {
    /// Plugin name (its Cargo package name).
    plugin: String,
    /// The plugin's config; see `schemas/plugins/<plugin>.schema.json`.
    #[serde(default)]
    config: Option<BTreeMap<String, Value>>,
    /// Input port → `"stage.output"` or a list of them.
    #[serde(default)]
    inputs: Option<BTreeMap<String, InputRefs>>,
    /// Stages that must finish first although no data flows from them.
    #[serde(default)]
    after: Option<Vec<String>>,
    /// Device for this stage (overrides the pipeline's).
    #[serde(default)]
    device: Option<String>,
    /// Reward plugins (RL stages), scored in the stage's host process.
    #[serde(default)]
    rewards: Option<Vec<RewardTable>>,
    /// This stage's seed derives from this number instead of the pipeline's `seed` (another seed for one
    /// stage; the stages before it are kept).
    #[serde(default)]
    seed: Option<u64>,
    /// Free text.
    #[serde(default)]
    description: Option<String>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RewardTable {
    /// Reward plugin name.
    plugin: String,
    /// Name in metrics; defaults to the plugin name.
    #[serde(default)]
    name: Option<String>,
    /// Weight in the combined reward (default 1).
    #[serde(default)]
    weight: Option<f64>,
    /// The reward plugin's config.
    #[serde(default)]
    config: Option<BTreeMap<String, Value>>,
}

/// JSON Schema of pipeline files.
pub fn pipeline_schema() -> Value {
    schemars::schema_for!(PipelineFile).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(schema: &Value, def: Option<&str>) -> Vec<String> {
        let obj = match def {
            None => schema,
            Some(d) => &schema["$defs"][d],
        };
        let mut keys: Vec<String> = obj["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn schema_matches_parser() {
        let s = pipeline_schema();
        let sorted = |k: &[&str]| {
            let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        for (what, keys) in crate::spec::allowed_keys() {
            let def = match what {
                "pipeline" => "PipelineTable",
                "stage" => "StageTable",
                _ => "RewardTable",
            };
            assert_eq!(props(&s, Some(def)), sorted(keys), "{what}");
        }
        assert_eq!(props(&s, None), sorted(&["pipeline", "stages"]));
    }
}
