//! `export-tiny`: a small random checkpoint in HF layout plus fixed inputs and our logits, for
//! `scripts/hf_parity.py` to compare against `transformers.Qwen2ForCausalLM`.

use crate::checkpoint::{save_model, write_safetensors};
use crate::tokenizer::{Tokenizer, TokenizerKind};
use crate::{Cpu, ModelConfig, Qwen2, Rng};
use anyhow::{Context, Result};
use burn::tensor::{Int, Tensor, TensorData};
use std::path::Path;

pub const INPUTS_FILE: &str = "parity_inputs.json";
pub const LOGITS_FILE: &str = "parity_logits.safetensors";

const SAMPLE: &str = "<question> The number of adult fox in Cedar Valley equals 4. The number of adult wolf in Oakridge equals 2 times the number of adult fox in Cedar Valley. What is the number of adult wolf in Oakridge? </question> <solution> Define adult fox in Cedar Valley as G; so G = 4. Define adult wolf in Oakridge as d; so d = 2 * G = 2 * 4 = 8. </solution> <answer> 8 </answer>[EOS]";

pub fn export_tiny(dir: &Path) -> Result<()> {
    let tok = Tokenizer::train(
        TokenizerKind::Bpe { vocab_size: 300 },
        std::iter::once(SAMPLE),
    )?;
    let mut cfg = ModelConfig::preset("tiny-1m")?;
    cfg.vocab_size = tok.vocab_size();
    let device = Default::default();
    let model = Qwen2::<Cpu>::init(&cfg, 1234, &device);
    // Fresh init has zero biases and unit norms, which would leave them untested: randomise every tensor.
    let mut rng = Rng::new(99);
    let mut host = model.to_host(&cfg);
    for (name, _, values) in host.iter_mut() {
        if name.ends_with("norm") || name.ends_with("bqkv") {
            let base = if name.ends_with("norm") { 1.0 } else { 0.0 };
            values
                .iter_mut()
                .for_each(|x| *x = base + 0.2 * rng.normal() as f32);
        }
    }
    let model = Qwen2::<Cpu>::from_host(&cfg, host, &device)?;
    save_model(dir, &model, &cfg)?;
    tok.save(&dir.join("tokenizer.json"))?;

    // Fixed inputs: a real encoded sample (row 0) and random ids (row 1), equal length.
    let sample = tok.encode(SAMPLE)?;
    let t = sample.len().min(64);
    let rows: Vec<Vec<u32>> = vec![
        sample[..t].to_vec(),
        (0..t).map(|_| rng.below(cfg.vocab_size) as u32).collect(),
    ];
    let flat: Vec<i32> = rows.iter().flatten().map(|&x| x as i32).collect();
    let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(flat, [2, t]), &device);
    let logits = model
        .forward(ids, None)
        .into_data()
        .to_vec::<f32>()
        .expect("f32");
    write_safetensors(
        &dir.join(LOGITS_FILE),
        &[("logits".into(), vec![2, t, cfg.vocab_size], logits)],
        None,
    )?;
    let path = dir.join(INPUTS_FILE);
    std::fs::write(
        &path,
        serde_json::to_string(&serde_json::json!({ "input_ids": rows }))?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} ({} params, vocab {}, inputs 2x{t})",
        dir.display(),
        cfg.num_params(),
        cfg.vocab_size
    );
    Ok(())
}
