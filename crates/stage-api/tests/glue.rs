//! The code the export macros generate, driven in-process through the C structs (no dlopen):
//! how `run`, `describe` and the reward exports turn results, errors, panics and stop requests
//! into status codes and JSON.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use stage_api::abi::{self, __private as glue, Bytes, HostApi, Writer};
use stage_api::{
    ArtifactKind, Event, Outcome, Request, RewardFn, RewardSample, RewardScores, RunContext, Stage,
    StageInfo, StageKind,
};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Cfg {
    /// Steps.
    n: u64,
    #[serde(default)]
    panic: bool,
}

struct Steps;

impl Stage for Steps {
    type Config = Cfg;
    fn info() -> StageInfo {
        StageInfo::new(StageKind::RlOptimizer, "test").output(
            "model",
            ArtifactKind::Model,
            "weights",
        )
    }
    fn run(cfg: Cfg, ctx: &mut RunContext) -> anyhow::Result<()> {
        for i in 1..=cfg.n {
            ctx.check_stop()?;
            ctx.progress(i, cfg.n);
        }
        if cfg.panic {
            panic!("boom at the end");
        }
        let batch = [RewardSample {
            prompt: "p".into(),
            completion: "abc".into(),
            reference: json!(null),
            meta: json!(null),
        }];
        let scores = ctx.score(&batch)?;
        ctx.metric(
            cfg.n,
            "reward",
            stage_api::combine_rewards(&scores, 1)[0] as f64,
        );
        Ok(())
    }
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    stop: AtomicBool,
}

unsafe extern "C" fn emit(ctx: *mut c_void, bytes: Bytes) {
    let r = unsafe { &*(ctx as *const Recorder) };
    r.events
        .lock()
        .unwrap()
        .push(serde_json::from_slice(unsafe { bytes.as_slice() }).unwrap());
}

unsafe extern "C" fn should_stop(ctx: *mut c_void) -> bool {
    unsafe { &*(ctx as *const Recorder) }
        .stop
        .load(Ordering::SeqCst)
}

/// Scores each completion by its length, with weight 0.5.
unsafe extern "C" fn score(_ctx: *mut c_void, batch: Bytes, out: *const Writer) -> i32 {
    let batch: Vec<RewardSample> = serde_json::from_slice(unsafe { batch.as_slice() }).unwrap();
    let scores = vec![RewardScores {
        name: "len".into(),
        weight: 0.5,
        scores: batch
            .iter()
            .map(|s| Some(s.completion.len() as f32))
            .collect(),
    }];
    let json = serde_json::to_vec(&scores).unwrap();
    unsafe { ((*out).write)((*out).ctx, Bytes::from_slice(&json)) };
    abi::STATUS_OK
}

fn run(config: serde_json::Value, stop: bool) -> (i32, Outcome, Vec<Event>) {
    let rec = Recorder::default();
    rec.stop.store(stop, Ordering::SeqCst);
    let api = HostApi {
        ctx: &rec as *const Recorder as *mut c_void,
        emit,
        should_stop,
        score,
    };
    let request = Request {
        api_version: stage_api::API_VERSION.into(),
        pipeline: "p".into(),
        stage: "s".into(),
        config,
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        stage_dir: "/nonexistent".into(),
        ckpt_dir: "/nonexistent/ckpt".into(),
        resume: false,
        device: "cpu".into(),
        seed: 1,
        rewards: Vec::new(),
    };
    let bytes = serde_json::to_vec(&request).unwrap();
    let mut buf = Vec::new();
    let w = abi::vec_writer(&mut buf);
    let status = glue::run_stage::<Steps>(Bytes::from_slice(&bytes), &api, &w);
    let outcome = serde_json::from_slice(&buf).unwrap();
    (status, outcome, rec.events.into_inner().unwrap())
}

#[test]
fn run_ok_streams_events_and_scores_through_the_host() {
    let (status, outcome, events) = run(json!({ "n": 3 }), false);
    assert_eq!((status, outcome), (abi::STATUS_OK, Outcome::Ok));
    assert_eq!(events.len(), 4);
    assert_eq!(events[2], Event::Progress { step: 3, total: 3 });
    assert_eq!(
        events[3],
        Event::Metric {
            step: 3,
            name: "reward".into(),
            value: 1.5
        }
    );
}

#[test]
fn a_config_serde_rejects_is_an_error_outcome() {
    let (status, outcome, _) = run(json!({ "n": 3, "m": 1 }), false);
    assert_eq!(status, abi::STATUS_ERROR);
    let Outcome::Error { message, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains("invalid config for stage `s`") && message.contains("unknown field `m`"),
        "{message}"
    );
}

#[test]
fn a_panic_is_caught_at_the_boundary() {
    let (status, outcome, _) = run(json!({ "n": 1, "panic": true }), false);
    assert_eq!(
        (status, outcome),
        (
            abi::STATUS_PANIC,
            Outcome::Panic {
                message: "boom at the end".into()
            }
        )
    );
}

#[test]
fn a_stop_request_ends_the_run_as_interrupted() {
    let (status, outcome, events) = run(json!({ "n": 3 }), true);
    assert_eq!((status, outcome), (abi::STATUS_OK, Outcome::Interrupted));
    assert!(events.is_empty());
}

#[test]
fn describe_embeds_the_config_schema() {
    let mut buf = Vec::new();
    let w = abi::vec_writer(&mut buf);
    let status = glue::describe(|| glue::stage_manifest::<Steps>("steps", "1.2.3"), &w);
    assert_eq!(status, abi::STATUS_OK);
    let m: stage_api::Manifest = serde_json::from_slice(&buf).unwrap();
    assert_eq!(
        (m.name.as_str(), m.version.as_str(), m.kind),
        ("steps", "1.2.3", StageKind::RlOptimizer)
    );
    assert_eq!(m.config_schema["additionalProperties"], json!(false));
    assert_eq!(m.config_schema["required"], json!(["n"]));
    assert_eq!(
        m.config_schema["properties"]["n"]["description"],
        json!("Steps.")
    );
}

struct Len {
    max: usize,
}

#[derive(Deserialize, JsonSchema)]
struct LenCfg {
    max: usize,
}

impl RewardFn for Len {
    type Config = LenCfg;
    const DESCRIPTION: &'static str = "length, capped; misbehaves on empty batches";
    fn new(cfg: LenCfg) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.max > 0, "max must be positive");
        Ok(Len { max: cfg.max })
    }
    fn score(&self, batch: &[RewardSample]) -> Vec<Option<f32>> {
        if batch.is_empty() {
            return vec![None]; // wrong length: the glue must catch it
        }
        batch
            .iter()
            .map(|s| Some(s.completion.len().min(self.max) as f32))
            .collect()
    }
}

#[test]
fn reward_glue_creates_scores_and_destroys() {
    let mut err = Vec::new();
    let w = abi::vec_writer(&mut err);
    let bad = glue::create_reward::<Len>(Bytes::from_slice(br#"{"max": 0}"#), &w);
    assert!(bad.is_null());
    assert!(String::from_utf8_lossy(&err).contains("max must be positive"));

    let mut unused = Vec::new();
    let w = abi::vec_writer(&mut unused);
    let handle = glue::create_reward::<Len>(Bytes::from_slice(br#"{"max": 2}"#), &w);
    assert!(!handle.is_null());
    let score = |batch: &str| {
        let mut out = Vec::new();
        let w = abi::vec_writer(&mut out);
        let status = glue::score_reward::<Len>(handle, Bytes::from_slice(batch.as_bytes()), &w);
        (status, String::from_utf8(out).unwrap())
    };
    let batch = r#"[{"prompt": "", "completion": "a"}, {"prompt": "", "completion": "abcd"}]"#;
    assert_eq!(score(batch), (abi::STATUS_OK, "[1.0,2.0]".to_string()));
    let (status, msg) = score("[]");
    assert_eq!(status, abi::STATUS_ERROR);
    assert!(msg.contains("returned 1 scores for 0 samples"), "{msg}");
    glue::destroy_reward::<Len>(handle);
}

/// Returns NaN or infinity: JSON would carry either as `null` ("not applicable").
struct NonFinite;

#[derive(Deserialize, JsonSchema)]
struct NonFiniteCfg {}

impl RewardFn for NonFinite {
    type Config = NonFiniteCfg;
    const DESCRIPTION: &'static str = "non-finite scores";
    fn new(_cfg: NonFiniteCfg) -> anyhow::Result<Self> {
        Ok(NonFinite)
    }
    fn score(&self, batch: &[RewardSample]) -> Vec<Option<f32>> {
        batch
            .iter()
            .map(|s| match s.completion.as_str() {
                "nan" => Some(f32::NAN),
                "inf" => Some(f32::NEG_INFINITY),
                "skip" => None,
                _ => Some(1.0),
            })
            .collect()
    }
}

#[test]
fn reward_glue_refuses_non_finite_scores() {
    let mut unused = Vec::new();
    let w = abi::vec_writer(&mut unused);
    let handle = glue::create_reward::<NonFinite>(Bytes::from_slice(b"{}"), &w);
    let score = |batch: &str| {
        let mut out = Vec::new();
        let w = abi::vec_writer(&mut out);
        let status =
            glue::score_reward::<NonFinite>(handle, Bytes::from_slice(batch.as_bytes()), &w);
        (status, String::from_utf8(out).unwrap())
    };
    let ok = r#"[{"prompt": "", "completion": "a"}, {"prompt": "", "completion": "skip"}]"#;
    assert_eq!(score(ok), (abi::STATUS_OK, "[1.0,null]".to_string()));
    let (status, msg) =
        score(r#"[{"prompt": "", "completion": "a"}, {"prompt": "", "completion": "nan"}]"#);
    assert_eq!(status, abi::STATUS_ERROR);
    assert!(msg.contains("returned NaN for sample 1 (of 2)"), "{msg}");
    let (status, msg) = score(r#"[{"prompt": "", "completion": "inf"}]"#);
    assert_eq!(status, abi::STATUS_ERROR);
    assert!(msg.contains("returned -inf for sample 0 (of 1)"), "{msg}");
    glue::destroy_reward::<NonFinite>(handle);
}

/// A host implemented directly (no C ABI) whose reward returns `scores`.
struct DirectHost {
    scores: Vec<Option<f32>>,
}

impl stage_api::Host for DirectHost {
    fn emit(&self, _event: &Event) {}
    fn should_stop(&self) -> bool {
        false
    }
    fn score(&self, _batch: &[RewardSample]) -> anyhow::Result<Vec<RewardScores>> {
        Ok(vec![RewardScores {
            name: "exact".into(),
            weight: 1.0,
            scores: self.scores.clone(),
        }])
    }
}

#[test]
fn run_context_score_names_a_misbehaving_reward_whatever_the_host() {
    let request = Request {
        api_version: stage_api::API_VERSION.into(),
        pipeline: "p".into(),
        stage: "s".into(),
        config: json!({}),
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        stage_dir: "/nonexistent".into(),
        ckpt_dir: "/nonexistent/ckpt".into(),
        resume: false,
        device: "cpu".into(),
        seed: 1,
        rewards: vec![stage_api::RewardSpec {
            name: "exact".into(),
            plugin: "exact-match".into(),
            weight: 1.0,
            config: json!({}),
        }],
    };
    let batch = [
        RewardSample {
            prompt: "p".into(),
            completion: "a".into(),
            reference: json!(null),
            meta: json!(null),
        },
        RewardSample {
            prompt: "p".into(),
            completion: "b".into(),
            reference: json!(null),
            meta: json!(null),
        },
    ];
    let score = |scores: Vec<Option<f32>>| {
        let host = DirectHost { scores };
        let ctx = RunContext::new(request.clone(), &host);
        ctx.score(&batch).map_err(|e| e.to_string())
    };
    assert!(score(vec![Some(0.5), None]).is_ok());
    let who = "reward `exact` (plugin `exact-match`)";
    for (scores, what) in [
        (vec![Some(0.5)], "returned 1 scores for 2 samples"),
        (
            vec![None, Some(f32::NAN)],
            "returned NaN for sample 1 (of 2)",
        ),
        (
            vec![Some(f32::INFINITY), None],
            "returned inf for sample 0 (of 2)",
        ),
    ] {
        let e = score(scores).unwrap_err();
        assert!(e.contains(who) && e.contains(what), "{e}");
    }
}
