//! The loader, through the real dlopen path.

use serde_json::json;
use stage_api::{RewardSample, StageKind};

use crate::support::lib;

fn err(r: anyhow::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn loads_a_stage_plugin_and_reads_its_manifest() {
    let p = stage_host::load_stage(&lib("fixture-stage")).unwrap();
    let m = &p.manifest;
    assert_eq!(
        (m.name.as_str(), m.kind, m.api_version.as_str()),
        (
            "fixture-stage",
            StageKind::DataGenerator,
            stage_api::API_VERSION
        )
    );
    assert!(m.supports_resume);
    assert_eq!(
        m.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["data"]
    );
    assert_eq!(m.config_schema["additionalProperties"], json!(false));
    assert_eq!(
        m.config_schema["properties"]["steps"]["type"],
        json!("integer")
    );
}

#[test]
fn refuses_a_wrong_abi_version_naming_both() {
    let e = err(stage_host::load_stage(&lib("fixture-bad-abi")));
    assert!(e.contains("ABI version mismatch"), "{e}");
    assert!(
        e.contains("built for ABI 2") && e.contains("speaks ABI 1"),
        "{e}"
    );
}

#[test]
fn refuses_a_library_without_the_entry_symbol() {
    let e = err(stage_host::load_stage(&lib("fixture-no-symbol")));
    assert!(
        e.contains("not an interplay stage plugin") && e.contains("interplay_stage_v1"),
        "{e}"
    );
    let e = err(stage_host::load_reward(&lib("fixture-no-symbol")));
    assert!(e.contains("interplay_reward_v1"), "{e}");
}

#[test]
fn tells_stage_and_reward_plugins_apart() {
    let e = err(stage_host::load_stage(&lib("fixture-reward")));
    assert!(
        e.contains("this is a reward plugin, not a stage plugin"),
        "{e}"
    );
    let e = err(stage_host::load_reward(&lib("fixture-stage")));
    assert!(
        e.contains("this is a stage plugin, not a reward plugin"),
        "{e}"
    );
}

#[test]
fn missing_plugin_names_the_directories_searched() {
    let e = err(stage_host::find_plugin(
        "no-such-plugin",
        &[crate::support::plugin_dir()],
    ));
    assert!(
        e.contains("plugin `no-such-plugin` not found")
            && e.contains("cargo build -p no-such-plugin"),
        "{e}"
    );
}

#[test]
fn scores_a_batch_with_a_reward_plugin() {
    let r = stage_host::load_reward(&lib("fixture-reward")).unwrap();
    assert_eq!(r.manifest.kind, StageKind::RewardVerifier);
    let reward = r.instantiate(&json!({ "answer_key": "gold" })).unwrap();
    let s = |c: &str, reference| RewardSample {
        prompt: "p".into(),
        completion: c.into(),
        reference,
        meta: json!(null),
    };
    let batch = [
        s(" 7 ", json!({ "gold": "7" })),
        s("8", json!({ "gold": "7" })),
        s("7", json!({ "answer": "7" })),
    ];
    assert_eq!(
        reward.score(&batch).unwrap(),
        vec![Some(1.0), Some(0.0), None]
    );
}

#[test]
fn reward_config_errors_come_back_as_errors() {
    let r = stage_host::load_reward(&lib("fixture-reward")).unwrap();
    let e = err(r.instantiate(&json!({ "answer_key": "" })));
    assert!(e.contains("answer_key must not be empty"), "{e}");
    let e = err(r.instantiate(&json!({ "answer_kye": "x" })));
    assert!(e.contains("unknown field `answer_kye`"), "{e}");
}
