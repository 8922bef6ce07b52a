//! The C ABI between the host and a plugin library. Plugin authors never touch it: the
//! [`export_stage!`](crate::export_stage) and [`export_reward!`](crate::export_reward) macros
//! generate it.
//!
//! Rules, each of which keeps the boundary sound without a stable Rust ABI:
//! * Only `#[repr(C)]` structs, byte slices and `extern "C"` function pointers cross.
//! * Payloads are UTF-8 JSON. A byte slice is borrowed for the duration of one call only.
//! * Results go back through a host-provided [`Writer`] callback that copies the bytes, so no
//!   side ever frees memory the other side allocated. The one exception is the opaque reward
//!   handle, which only the plugin creates and only the plugin destroys.
//! * Every exported function catches panics and returns a status code.
//! * The entry symbol's name carries the ABI major ([`STAGE_SYMBOL`], [`REWARD_SYMBOL`]); the
//!   [`Header`] at the start of each declaration is read before any other field.
//! * Libraries are never unloaded.
//!
//! Any change to a struct in this module must bump [`ABI_VERSION`] (a layout test guards it).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{
    Event, Host, Manifest, Outcome, Request, RewardFn, RewardSample, RewardScores, RunContext,
    Stage, StageKind,
};

/// Version of the structs in this module. The host requires exact equality.
pub const ABI_VERSION: u32 = 1;
/// First field of every declaration: `b"INTRPLAY"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"INTRPLAY");
/// Entry symbol of a stage plugin: `extern "C" fn() -> *const StageDecl`.
pub const STAGE_SYMBOL: &str = "interplay_stage_v1";
/// Entry symbol of a reward plugin: `extern "C" fn() -> *const RewardDecl`.
pub const REWARD_SYMBOL: &str = "interplay_reward_v1";

/// Status code: success.
pub const STATUS_OK: i32 = 0;
/// Status code: an error, described by the JSON written to the writer.
pub const STATUS_ERROR: i32 = 1;
/// Status code: a caught panic, described by the JSON written to the writer.
pub const STATUS_PANIC: i32 = 2;

/// [`Header::kind`] of a stage plugin.
pub const DECL_STAGE: u32 = 1;
/// [`Header::kind`] of a reward plugin.
pub const DECL_REWARD: u32 = 2;

/// Read first, before any other field of a declaration.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Must equal [`MAGIC`].
    pub magic: u64,
    /// Must equal the host's [`ABI_VERSION`].
    pub abi_version: u32,
    /// [`DECL_STAGE`] or [`DECL_REWARD`].
    pub kind: u32,
}

/// A borrowed byte slice.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    /// Start (may dangle when `len == 0`).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Bytes {
    /// Borrows a static string (for declarations).
    pub const fn from_static(s: &'static str) -> Bytes {
        Bytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Borrows a slice for the duration of a call.
    pub fn from_slice(s: &[u8]) -> Bytes {
        Bytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr..ptr+len` must be readable for the returned lifetime.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// A callback that copies bytes out to its owner (the side that will keep them).
#[repr(C)]
pub struct Writer {
    /// Owner's state.
    pub ctx: *mut c_void,
    /// Copies `bytes` into the owner's buffer.
    pub write: unsafe extern "C" fn(ctx: *mut c_void, bytes: Bytes),
}

/// Services the host lends a running stage.
#[repr(C)]
pub struct HostApi {
    /// Host state.
    pub ctx: *mut c_void,
    /// Records one [`Event`] (JSON).
    pub emit: unsafe extern "C" fn(ctx: *mut c_void, event: Bytes),
    /// True once the stage should stop.
    pub should_stop: unsafe extern "C" fn(ctx: *mut c_void) -> bool,
    /// Scores a `[RewardSample]` batch (JSON); writes `[RewardScores]` (or an error) to `out`.
    pub score: unsafe extern "C" fn(ctx: *mut c_void, batch: Bytes, out: *const Writer) -> i32,
}

/// What [`STAGE_SYMBOL`] returns. Static; lives as long as the (never unloaded) library.
#[repr(C)]
pub struct StageDecl {
    /// Read first.
    pub header: Header,
    /// The plugin's [`API_VERSION`](crate::API_VERSION), UTF-8.
    pub api_version: Bytes,
    /// Writes the [`Manifest`] JSON to `out`.
    pub describe: unsafe extern "C" fn(out: *const Writer) -> i32,
    /// Runs the stage for a [`Request`] (JSON); writes an [`Outcome`] (JSON) to `out`.
    pub run: unsafe extern "C" fn(request: Bytes, host: *const HostApi, out: *const Writer) -> i32,
}

/// What [`REWARD_SYMBOL`] returns. Static; lives as long as the (never unloaded) library.
#[repr(C)]
pub struct RewardDecl {
    /// Read first.
    pub header: Header,
    /// The plugin's [`API_VERSION`](crate::API_VERSION), UTF-8.
    pub api_version: Bytes,
    /// Writes the [`Manifest`] JSON to `out`.
    pub describe: unsafe extern "C" fn(out: *const Writer) -> i32,
    /// Builds a reward from its config (JSON). Returns null and writes an error on failure.
    pub create: unsafe extern "C" fn(config: Bytes, out: *const Writer) -> *mut c_void,
    /// Scores a `[RewardSample]` batch (JSON); writes `[score|null]` to `out`.
    pub score: unsafe extern "C" fn(handle: *mut c_void, batch: Bytes, out: *const Writer) -> i32,
    /// Drops a reward made by `create`.
    pub destroy: unsafe extern "C" fn(handle: *mut c_void),
}

// The declarations are immutable statics holding pointers to static data and functions.
unsafe impl Sync for StageDecl {}
unsafe impl Sync for RewardDecl {}

/// A [`Writer`] that appends to `buf`. Keep `buf` alive and unmoved while the writer is in use.
pub fn vec_writer(buf: &mut Vec<u8>) -> Writer {
    unsafe extern "C" fn append(ctx: *mut c_void, bytes: Bytes) {
        let buf = unsafe { &mut *(ctx as *mut Vec<u8>) };
        buf.extend_from_slice(unsafe { bytes.as_slice() });
    }
    Writer {
        ctx: buf as *mut Vec<u8> as *mut c_void,
        write: append,
    }
}

/// Error payload written next to [`STATUS_ERROR`] / [`STATUS_PANIC`] by `create` and `score`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorMessage {
    /// What went wrong, with its causes.
    pub error: String,
}

/// Glue called by the export macros. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    fn write(out: *const Writer, bytes: &[u8]) {
        // SAFETY: the host passes a valid writer for the duration of the call.
        unsafe { ((*out).write)((*out).ctx, Bytes::from_slice(bytes)) }
    }

    fn write_json<T: serde::Serialize>(out: *const Writer, value: &T) {
        write(
            out,
            &serde_json::to_vec(value).expect("message types serialize"),
        );
    }

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_string()
        }
    }

    fn error_chain(e: &anyhow::Error) -> String {
        format!("{e:#}")
    }

    /// Builds a stage [`Manifest`].
    pub fn stage_manifest<S: Stage>(name: &str, version: &str) -> Manifest {
        let info = S::info();
        Manifest {
            name: name.to_string(),
            version: version.to_string(),
            kind: info.kind,
            description: info.description,
            api_version: crate::API_VERSION.to_string(),
            devices: info.devices,
            inputs: info.inputs,
            outputs: info.outputs,
            supports_resume: info.supports_resume,
            config_schema: crate::config_schema::<S::Config>(),
        }
    }

    /// Builds a reward [`Manifest`].
    pub fn reward_manifest<R: RewardFn>(name: &str, version: &str) -> Manifest {
        Manifest {
            name: name.to_string(),
            version: version.to_string(),
            kind: StageKind::RewardVerifier,
            description: R::DESCRIPTION.to_string(),
            api_version: crate::API_VERSION.to_string(),
            devices: vec!["cpu".to_string()],
            inputs: Vec::new(),
            outputs: Vec::new(),
            supports_resume: false,
            config_schema: crate::config_schema::<R::Config>(),
        }
    }

    /// Body of a `describe` export.
    pub fn describe(manifest: impl FnOnce() -> Manifest, out: *const Writer) -> i32 {
        match catch_unwind(AssertUnwindSafe(manifest)) {
            Ok(m) => {
                write_json(out, &m);
                STATUS_OK
            }
            Err(p) => {
                write_json(
                    out,
                    &ErrorMessage {
                        error: format!("describe panicked: {}", panic_message(&*p)),
                    },
                );
                STATUS_PANIC
            }
        }
    }

    struct AbiHost(*const HostApi);

    impl Host for AbiHost {
        fn emit(&self, event: &Event) {
            let json = serde_json::to_vec(event).expect("events serialize");
            unsafe { ((*self.0).emit)((*self.0).ctx, Bytes::from_slice(&json)) }
        }
        fn should_stop(&self) -> bool {
            unsafe { ((*self.0).should_stop)((*self.0).ctx) }
        }
        fn score(&self, batch: &[RewardSample]) -> anyhow::Result<Vec<RewardScores>> {
            let json = serde_json::to_vec(batch)?;
            let mut buf = Vec::new();
            let w = vec_writer(&mut buf);
            let status = unsafe { ((*self.0).score)((*self.0).ctx, Bytes::from_slice(&json), &w) };
            if status != STATUS_OK {
                let msg: ErrorMessage = serde_json::from_slice(&buf).unwrap_or(ErrorMessage {
                    error: String::from_utf8_lossy(&buf).into_owned(),
                });
                anyhow::bail!("scoring failed: {}", msg.error);
            }
            Ok(serde_json::from_slice(&buf)?)
        }
    }

    /// Body of a stage's `run` export.
    pub fn run_stage<S: Stage>(request: Bytes, host: *const HostApi, out: *const Writer) -> i32 {
        let result = catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<()> {
            let request: Request =
                serde_json::from_slice(unsafe { request.as_slice() }).map_err(|e| {
                    anyhow::anyhow!("the host sent a request this plugin cannot read: {e}")
                })?;
            let config: S::Config =
                serde_json::from_value(request.config.clone()).map_err(|e| {
                    anyhow::anyhow!("invalid config for stage `{}`: {e}", request.stage)
                })?;
            let host = AbiHost(host);
            let mut ctx = RunContext::new(request, &host);
            S::run(config, &mut ctx)
        }));
        let outcome = match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(e)) if e.downcast_ref::<crate::Interrupted>().is_some() => Outcome::Interrupted,
            Ok(Err(e)) => Outcome::Error {
                message: e.to_string(),
                chain: e.chain().skip(1).map(|c| c.to_string()).collect(),
            },
            Err(p) => Outcome::Panic {
                message: panic_message(&*p),
            },
        };
        write_json(out, &outcome);
        match outcome {
            Outcome::Ok | Outcome::Interrupted => STATUS_OK,
            Outcome::Error { .. } => STATUS_ERROR,
            Outcome::Panic { .. } => STATUS_PANIC,
        }
    }

    /// Body of a reward's `create` export.
    pub fn create_reward<R: RewardFn>(config: Bytes, out: *const Writer) -> *mut c_void {
        let result = catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<R> {
            let config: R::Config = serde_json::from_slice(unsafe { config.as_slice() })
                .map_err(|e| anyhow::anyhow!("invalid reward config: {e}"))?;
            R::new(config)
        }));
        match result {
            Ok(Ok(r)) => Box::into_raw(Box::new(r)) as *mut c_void,
            Ok(Err(e)) => {
                write_json(
                    out,
                    &ErrorMessage {
                        error: error_chain(&e),
                    },
                );
                std::ptr::null_mut()
            }
            Err(p) => {
                write_json(
                    out,
                    &ErrorMessage {
                        error: format!("panicked: {}", panic_message(&*p)),
                    },
                );
                std::ptr::null_mut()
            }
        }
    }

    /// Body of a reward's `score` export.
    pub fn score_reward<R: RewardFn>(handle: *mut c_void, batch: Bytes, out: *const Writer) -> i32 {
        let result = catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<Vec<Option<f32>>> {
            let reward = unsafe { &*(handle as *const R) };
            let batch: Vec<RewardSample> = serde_json::from_slice(unsafe { batch.as_slice() })
                .map_err(|e| anyhow::anyhow!("bad reward batch: {e}"))?;
            let scores = reward.score(&batch);
            // Checked here because JSON cannot carry NaN or infinity: serde_json would write
            // `null`, and the host would read "not applicable".
            if let Err(e) = crate::check_scores(&scores, batch.len()) {
                anyhow::bail!("{e}");
            }
            Ok(scores)
        }));
        match result {
            Ok(Ok(scores)) => {
                write_json(out, &scores);
                STATUS_OK
            }
            Ok(Err(e)) => {
                write_json(
                    out,
                    &ErrorMessage {
                        error: error_chain(&e),
                    },
                );
                STATUS_ERROR
            }
            Err(p) => {
                write_json(
                    out,
                    &ErrorMessage {
                        error: format!("panicked: {}", panic_message(&*p)),
                    },
                );
                STATUS_PANIC
            }
        }
    }

    /// Body of a reward's `destroy` export.
    pub fn destroy_reward<R: RewardFn>(handle: *mut c_void) {
        // A panic in Drop must not unwind into the host.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(unsafe { Box::from_raw(handle as *mut R) })
        }));
    }
}

/// Exports a [`Stage`](crate::Stage) implementation as a stage plugin. Call it once, at the
/// crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        /// Entry point of this stage plugin (generated by `stage_api::export_stage!`).
        #[unsafe(no_mangle)]
        pub extern "C" fn interplay_stage_v1() -> *const $crate::abi::StageDecl {
            unsafe extern "C" fn describe(out: *const $crate::abi::Writer) -> i32 {
                $crate::abi::__private::describe(
                    || {
                        $crate::abi::__private::stage_manifest::<$stage>(
                            env!("CARGO_PKG_NAME"),
                            env!("CARGO_PKG_VERSION"),
                        )
                    },
                    out,
                )
            }
            unsafe extern "C" fn run(
                request: $crate::abi::Bytes,
                host: *const $crate::abi::HostApi,
                out: *const $crate::abi::Writer,
            ) -> i32 {
                $crate::abi::__private::run_stage::<$stage>(request, host, out)
            }
            static DECL: $crate::abi::StageDecl = $crate::abi::StageDecl {
                header: $crate::abi::Header {
                    magic: $crate::abi::MAGIC,
                    abi_version: $crate::abi::ABI_VERSION,
                    kind: $crate::abi::DECL_STAGE,
                },
                api_version: $crate::abi::Bytes::from_static($crate::API_VERSION),
                describe,
                run,
            };
            &DECL
        }
    };
}

/// Exports a [`RewardFn`](crate::RewardFn) implementation as a reward plugin. Call it once, at
/// the crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export_reward {
    ($reward:ty) => {
        /// Entry point of this reward plugin (generated by `stage_api::export_reward!`).
        #[unsafe(no_mangle)]
        pub extern "C" fn interplay_reward_v1() -> *const $crate::abi::RewardDecl {
            unsafe extern "C" fn describe(out: *const $crate::abi::Writer) -> i32 {
                $crate::abi::__private::describe(
                    || {
                        $crate::abi::__private::reward_manifest::<$reward>(
                            env!("CARGO_PKG_NAME"),
                            env!("CARGO_PKG_VERSION"),
                        )
                    },
                    out,
                )
            }
            unsafe extern "C" fn create(
                config: $crate::abi::Bytes,
                out: *const $crate::abi::Writer,
            ) -> *mut ::std::ffi::c_void {
                $crate::abi::__private::create_reward::<$reward>(config, out)
            }
            unsafe extern "C" fn score(
                handle: *mut ::std::ffi::c_void,
                batch: $crate::abi::Bytes,
                out: *const $crate::abi::Writer,
            ) -> i32 {
                $crate::abi::__private::score_reward::<$reward>(handle, batch, out)
            }
            unsafe extern "C" fn destroy(handle: *mut ::std::ffi::c_void) {
                $crate::abi::__private::destroy_reward::<$reward>(handle)
            }
            static DECL: $crate::abi::RewardDecl = $crate::abi::RewardDecl {
                header: $crate::abi::Header {
                    magic: $crate::abi::MAGIC,
                    abi_version: $crate::abi::ABI_VERSION,
                    kind: $crate::abi::DECL_REWARD,
                },
                api_version: $crate::abi::Bytes::from_static($crate::API_VERSION),
                describe,
                create,
                score,
                destroy,
            };
            &DECL
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Snapshot of the layout on 64-bit targets. If this fails, you changed the ABI: bump
    /// `ABI_VERSION` (and the `_v1` in the symbol names when the major changes), then update it.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layout_snapshot() {
        let actual = [
            ("Header", size_of::<Header>(), align_of::<Header>()),
            ("Bytes", size_of::<Bytes>(), align_of::<Bytes>()),
            ("Writer", size_of::<Writer>(), align_of::<Writer>()),
            ("HostApi", size_of::<HostApi>(), align_of::<HostApi>()),
            ("StageDecl", size_of::<StageDecl>(), align_of::<StageDecl>()),
            (
                "RewardDecl",
                size_of::<RewardDecl>(),
                align_of::<RewardDecl>(),
            ),
        ];
        let expected = [
            ("Header", 16, 8),
            ("Bytes", 16, 8),
            ("Writer", 16, 8),
            ("HostApi", 32, 8),
            ("StageDecl", 48, 8),
            ("RewardDecl", 64, 8),
        ];
        assert_eq!(actual, expected);
        let offsets = [
            offset_of!(Header, abi_version),
            offset_of!(Header, kind),
            offset_of!(StageDecl, api_version),
            offset_of!(StageDecl, describe),
            offset_of!(StageDecl, run),
            offset_of!(RewardDecl, create),
            offset_of!(RewardDecl, score),
            offset_of!(RewardDecl, destroy),
            offset_of!(HostApi, score),
        ];
        assert_eq!(offsets, [8, 12, 16, 32, 40, 40, 48, 56, 24]);
        assert_eq!(ABI_VERSION, 1);
        assert_eq!(STAGE_SYMBOL, format!("interplay_stage_v{ABI_VERSION}"));
        assert_eq!(REWARD_SYMBOL, format!("interplay_reward_v{ABI_VERSION}"));
    }

    #[test]
    fn combine_rewards_skips_not_applicable() {
        let r = [
            RewardScores {
                name: "a".into(),
                weight: 1.0,
                scores: vec![Some(1.0), None],
            },
            RewardScores {
                name: "b".into(),
                weight: 0.5,
                scores: vec![Some(2.0), Some(4.0)],
            },
        ];
        assert_eq!(crate::combine_rewards(&r, 2), vec![2.0, 2.0]);
    }
}
