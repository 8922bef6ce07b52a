//! Training on the CPU backends must run in constant memory: a 15-minute run takes ~30,000 steps, so a few
//! KiB kept per step is gigabytes by the end (it once was: every step's new weights registered autodiff graphs
//! that only a backward pass frees, and the host-gradient path never runs one).
//!
//! This binary counts live heap bytes with its own global allocator (one test, so nothing else allocates
//! meanwhile) and checks that steps 50–250 leave the count where step 50 had it.

use burn::backend::Autodiff;
use lm::data::{LossOn, PackedData, Packing};
use lm::tokenizer::{Tokenizer, TokenizerKind};
use lm::train::{TrainConfig, Trainer};
use lm::{Cpu, ModelConfig, Qwen2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn host_training_steps_keep_no_memory() {
    let texts: Vec<String> = (0..8)
        .map(|i| {
            let (a, v) = (["fox", "wolf", "owl", "deer"][i % 4], 1 + i % 4);
            format!(
                "<question> The number of adult {a} in Pine Ridge equals {v}. How many adult {a} does Pine \
                 Ridge have? </question> <solution> Define adult {a} in Pine Ridge as A; so A = {v}. \
                 </solution> <answer> {v} </answer>[EOS]"
            )
        })
        .collect();
    let tok = Tokenizer::train(TokenizerKind::Word, texts.iter()).unwrap();
    let docs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
    let mut cfg = ModelConfig::preset("tiny-test").unwrap();
    cfg.vocab_size = tok.vocab_size();
    let tc = TrainConfig {
        seq_len: 64,
        batch_size: 2,
        token_budget: 2 * 64 * 1000,
        loss_on: LossOn::Solution,
        ..Default::default()
    };
    let data = PackedData::new(docs, tc.loss_on, tc.packing, tc.seq_len, tc.seed, true);
    assert_eq!(tc.packing, Packing::Whole);
    let device = Default::default();
    let mut trainer =
        Trainer::<Autodiff<Cpu>>::new(Qwen2::init(&cfg, 0, &device), cfg, tc, data, device);
    // Warm-up: workspaces, thread pools and allocator caches reach their size.
    for _ in 0..50 {
        trainer.step();
    }
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for _ in 0..200 {
        trainer.step();
    }
    let grown = LIVE_BYTES.load(Ordering::Relaxed) - before;
    // A leak of one small allocation per parameter per step would be ~10 parameters × 200 steps × ≥ 64 bytes.
    assert!(
        grown < 16 * 1024,
        "200 training steps kept {grown} more live heap bytes (expected none)"
    );
}
