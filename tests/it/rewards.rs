//! Reward plugins that misbehave fail the stage with a message naming the reward and its plugin
//! (never a silent 0 or "not applicable"), and plugins found through `[pipeline] plugin_path`.

use serde_json::json;
use stage_api::RewardSample;

use crate::support::{Sandbox, lib, ok, plugin_dir, runner, text};

/// An RL-like stage (the fixture stage scores one batch of 3 samples) with one reward named `exact`.
fn scoring_pipeline(reward_config: &str) -> String {
    format!(
        r#"[pipeline]
name = "rl"

[stages.rl]
plugin = "fixture-stage"
config = {{ steps = 1 }}
rewards = [{{ plugin = "fixture-reward", name = "exact", config = {reward_config} }}]
"#
    )
}

#[test]
fn a_misbehaving_reward_fails_the_stage_naming_it() {
    let who = "reward `exact` (plugin `fixture-reward`)";
    for (fail, what) in [
        (
            "panic",
            "panicked while scoring 3 samples: fixture-reward asked to panic",
        ),
        ("count", "returned 4 scores for 3 samples"),
        ("nan", "returned NaN for sample 0 (of 3)"),
        ("inf", "returned inf for sample 0 (of 3)"),
    ] {
        let sb = Sandbox::new(&scoring_pipeline(&format!("{{ fail = \"{fail}\" }}")));
        let out = sb.run(&[]);
        let t = text(&out);
        assert!(!out.status.success(), "{fail}: the run succeeded:\n{t}");
        assert!(!sb.done("rl"), "{fail}: the stage was marked done");
        let outcome = sb.outcome("rl");
        assert_eq!(outcome["status"], json!("error"), "{fail}: {outcome}");
        let message = outcome["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(who) && message.contains(what),
            "{fail}: the message should name {who} and say `{what}`:\n{message}"
        );
        assert!(
            t.contains(who) && t.contains("stage `rl` (plugin fixture-stage"),
            "{fail}: the runner should report it:\n{t}"
        );
    }
    // "Not applicable" stays allowed, and a well-behaved reward still passes.
    let sb = Sandbox::new(&scoring_pipeline("{}"));
    ok(sb.run(&[]));
    assert_eq!(
        sb.result("rl")["rewards"][0]["scores"],
        json!([1.0, 0.0, null])
    );
}

#[test]
fn a_misbehaving_reward_fails_in_process_naming_it() {
    let plugin = stage_host::load_reward(&lib("fixture-reward")).unwrap();
    let s = |c: &str| RewardSample {
        prompt: "p".into(),
        completion: c.into(),
        reference: json!({ "answer": "7" }),
        meta: json!(null),
    };
    let batch = [s("7"), s("8")];
    for (fail, what) in [
        (
            "panic",
            "reward plugin `fixture-reward` panicked while scoring 2 samples",
        ),
        (
            "count",
            "reward plugin `fixture-reward` failed while scoring 2 samples: returned 3 scores for 2 samples",
        ),
        (
            "nan",
            "reward plugin `fixture-reward` failed while scoring 2 samples: returned NaN for sample 0",
        ),
    ] {
        let reward = plugin.instantiate(&json!({ "fail": fail })).unwrap();
        let e = format!("{:#}", reward.score(&batch).unwrap_err());
        assert!(e.contains(what), "{fail}: {e}");
        let e = format!("{:#}", reward.named("exact").score(&batch).unwrap_err());
        assert!(
            e.contains("reward `exact` (plugin `fixture-reward`)"),
            "{fail}: {e}"
        );
    }

    // `interplay score` fails too, rather than print a null for the NaN.
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.jsonl");
    std::fs::write(
        &samples,
        "{\"prompt\": \"p\", \"completion\": \"7\", \"reference\": {\"answer\": \"7\"}}\n",
    )
    .unwrap();
    let out = runner()
        .args([
            "score",
            "--reward",
            "fixture-reward",
            "--config",
            r#"{"fail": "inf"}"#,
            "--plugin-dir",
        ])
        .arg(plugin_dir())
        .arg(&samples)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("reward plugin `fixture-reward` failed while scoring 1 samples: returned inf for sample 0"),
        "{t}"
    );
}

/// `[pipeline] plugin_path` is searched before `--plugin-dir`, relative to the pipeline file; a
/// directory holding a Cargo.toml stands for its `target/<profile>`; and a plugin found there is
/// fingerprinted by its library like any other, so replacing the library reruns the stage.
#[test]
fn plugin_path_is_searched_first_and_its_plugins_are_fingerprinted() {
    let sb = Sandbox::new("");
    let libs = sb.path().join("libs");
    std::fs::create_dir(&libs).unwrap();
    let file = stage_host::library_file_name("fixture-reward");
    let copy = libs.join(&file);
    std::fs::copy(lib("fixture-reward"), &copy).unwrap();
    let pipeline = scoring_pipeline("{}").replace(
        "name = \"rl\"\n",
        "name = \"rl\"\nplugin_path = [\"libs\"]\n",
    );
    std::fs::write(sb.path().join("p.toml"), &pipeline).unwrap();

    ok(sb.run(&[]));
    let run_json = |sb: &Sandbox| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(sb.run_dir().join("run.json")).unwrap()).unwrap()
    };
    let reward = &run_json(&sb)["stages"]["rl"]["rewards"][0];
    assert_eq!(reward["library"], json!(copy), "{reward}");
    assert_eq!(reward["sha256"], json!(pipeline::hash_file(&copy).unwrap()));
    assert!(ok(sb.run(&[])).contains("unchanged, skipped"));

    // Another build of the library (here: the same code with bytes appended) reruns the stage.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&copy, bytes).unwrap();
    let t = ok(sb.run(&[]));
    assert!(
        !t.contains("unchanged, skipped") && t.contains("started"),
        "{t}"
    );

    // A directory with a Cargo.toml stands for its build output of the runner's profile.
    let krate = sb.path().join("my-crate");
    let out_dir = krate.join("target").join(stage_host::BUILD_PROFILE);
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(krate.join("Cargo.toml"), "").unwrap();
    std::fs::copy(lib("fixture-reward"), out_dir.join(&file)).unwrap();
    std::fs::write(
        sb.path().join("p.toml"),
        pipeline.replace("[\"libs\"]", "[\"my-crate\"]"),
    )
    .unwrap();
    ok(sb.run(&[]));
    assert_eq!(
        run_json(&sb)["stages"]["rl"]["rewards"][0]["library"],
        json!(out_dir.join(&file))
    );
    assert_eq!(
        sb.result("rl")["rewards"][0]["scores"],
        json!([1.0, 0.0, null])
    );

    // Not built yet: the error names where the runner looked and how to build it.
    let e = format!(
        "{:#}",
        stage_host::find_plugin("my-crate", std::slice::from_ref(&krate)).unwrap_err()
    );
    for want in [
        format!(
            "{} (the build output of the crate in {})",
            out_dir.display(),
            krate.display()
        ),
        format!("--manifest-path {}", krate.join("Cargo.toml").display()),
        "`[pipeline] plugin_path`".to_string(),
    ] {
        assert!(e.contains(&want), "{want} not in {e}");
    }
}
