//! Checkpoints in Hugging Face layout: `model.safetensors` (HF Qwen2 tensor names, `[out, in]` weights,
//! f32), `config.json` (a `Qwen2Config`), next to which callers put `tokenizer.json`. Loading accepts the same
//! layout from transformers (f32, f16 or bf16; an explicit `lm_head.weight` must equal the embeddings).

use crate::config::ModelConfig;
use crate::model::{HostParam, Qwen2};
use crate::tokenizer::{BOS_ID, EOS_ID, PAD_ID};
use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
/// Checksums of a model directory's files, in `sha256sum` format (`sha256sum -c SHA256SUMS` checks them).
pub const SUMS_FILE: &str = "SHA256SUMS";

/// One HF tensor: name, HF shape, row-major values.
type HfTensor = (String, Vec<usize>, Vec<f32>);

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Columns `c0..c0+n` of a row-major `[rows, cols]` matrix.
fn columns(v: &[f32], rows: usize, cols: usize, c0: usize, n: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|r| v[r * cols + c0..r * cols + c0 + n].iter().copied())
        .collect()
}

/// Our internal tensors -> HF Qwen2 tensors.
pub fn to_hf(cfg: &ModelConfig, params: &[HostParam]) -> Vec<HfTensor> {
    let (h, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (qn, kvn) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let by_name: HashMap<&str, &HostParam> = params.iter().map(|p| (p.0.as_str(), p)).collect();
    let get = |n: &str| &by_name[n].2;
    let mut out: Vec<HfTensor> = vec![(
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab_size, h],
        get("embed").clone(),
    )];
    for i in 0..cfg.num_hidden_layers {
        let p = |n: &str| format!("layers.{i}.{n}");
        let hf = |n: &str| format!("model.layers.{i}.{n}");
        let wqkv = get(&p("wqkv"));
        let width = qn + 2 * kvn;
        let bqkv = get(&p("bqkv"));
        for (name, c0, n) in [
            ("q_proj", 0, qn),
            ("k_proj", qn, kvn),
            ("v_proj", qn + kvn, kvn),
        ] {
            out.push((
                hf(&format!("self_attn.{name}.weight")),
                vec![n, h],
                transpose(&columns(wqkv, h, width, c0, n), h, n),
            ));
            out.push((
                hf(&format!("self_attn.{name}.bias")),
                vec![n],
                bqkv[c0..c0 + n].to_vec(),
            ));
        }
        out.push((
            hf("self_attn.o_proj.weight"),
            vec![h, qn],
            transpose(get(&p("wo")), qn, h),
        ));
        out.push((
            hf("input_layernorm.weight"),
            vec![h],
            get(&p("attn_norm")).clone(),
        ));
        out.push((
            hf("post_attention_layernorm.weight"),
            vec![h],
            get(&p("mlp_norm")).clone(),
        ));
        let gu = get(&p("wgate_up"));
        out.push((
            hf("mlp.gate_proj.weight"),
            vec![f, h],
            transpose(&columns(gu, h, 2 * f, 0, f), h, f),
        ));
        out.push((
            hf("mlp.up_proj.weight"),
            vec![f, h],
            transpose(&columns(gu, h, 2 * f, f, f), h, f),
        ));
        out.push((
            hf("mlp.down_proj.weight"),
            vec![h, f],
            transpose(get(&p("wdown")), f, h),
        ));
    }
    out.push((
        "model.norm.weight".into(),
        vec![h],
        get("final_norm").clone(),
    ));
    out
}

/// HF Qwen2 tensors -> our internal tensors (canonical order).
pub fn from_hf(
    cfg: &ModelConfig,
    mut hf: HashMap<String, (Vec<usize>, Vec<f32>)>,
    origin: &str,
) -> Result<Vec<HostParam>> {
    let (h, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (qn, kvn) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let (s, v) = hf
            .remove(name)
            .with_context(|| format!("{origin}: missing tensor `{name}`"))?;
        ensure!(
            s == shape,
            "{origin}: tensor `{name}` has shape {s:?}, expected {shape:?}"
        );
        Ok(v)
    };
    let embed = take("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
    let mut out: Vec<HostParam> = vec![("embed".into(), [cfg.vocab_size, h], embed.clone())];
    for i in 0..cfg.num_hidden_layers {
        let hf = |n: &str| format!("model.layers.{i}.{n}");
        let p = |n: &str| format!("layers.{i}.{n}");
        let attn_norm = take(&hf("input_layernorm.weight"), &[h])?;
        let width = qn + 2 * kvn;
        let mut wqkv = vec![0.0; h * width];
        let mut bqkv = Vec::with_capacity(width);
        for (name, c0, n) in [
            ("q_proj", 0, qn),
            ("k_proj", qn, kvn),
            ("v_proj", qn + kvn, kvn),
        ] {
            let w = transpose(
                &take(&hf(&format!("self_attn.{name}.weight")), &[n, h])?,
                n,
                h,
            ); // [h, n]
            for r in 0..h {
                wqkv[r * width + c0..r * width + c0 + n].copy_from_slice(&w[r * n..(r + 1) * n]);
            }
            bqkv.extend(take(&hf(&format!("self_attn.{name}.bias")), &[n])?);
        }
        let wo = transpose(&take(&hf("self_attn.o_proj.weight"), &[h, qn])?, h, qn);
        let mlp_norm = take(&hf("post_attention_layernorm.weight"), &[h])?;
        let gate = transpose(&take(&hf("mlp.gate_proj.weight"), &[f, h])?, f, h);
        let up = transpose(&take(&hf("mlp.up_proj.weight"), &[f, h])?, f, h);
        let mut gu = Vec::with_capacity(h * 2 * f);
        for r in 0..h {
            gu.extend_from_slice(&gate[r * f..(r + 1) * f]);
            gu.extend_from_slice(&up[r * f..(r + 1) * f]);
        }
        let wdown = transpose(&take(&hf("mlp.down_proj.weight"), &[h, f])?, h, f);
        out.extend([
            (p("attn_norm"), [1, h], attn_norm),
            (p("wqkv"), [h, width], wqkv),
            (p("bqkv"), [1, width], bqkv),
            (p("wo"), [qn, h], wo),
            (p("mlp_norm"), [1, h], mlp_norm),
            (p("wgate_up"), [h, 2 * f], gu),
            (p("wdown"), [f, h], wdown),
        ]);
    }
    out.push((
        "final_norm".into(),
        [1, h],
        take("model.norm.weight", &[h])?,
    ));
    if let Some((_, head)) = hf.remove("lm_head.weight") {
        ensure!(
            head == embed,
            "{origin}: `lm_head.weight` differs from the embeddings; untied heads are not supported"
        );
    }
    if let Some(extra) = hf.keys().next() {
        bail!(
            "{origin}: unexpected tensor `{extra}` ({} unexpected in all)",
            hf.len()
        );
    }
    Ok(out)
}

/// Writes `model.safetensors` and `config.json` into `dir` (created if needed).
pub fn save_model<B: Backend>(dir: &Path, model: &Qwen2<B>, cfg: &ModelConfig) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let hf = to_hf(cfg, &model.to_host(cfg));
    write_safetensors(
        &dir.join(WEIGHTS_FILE),
        &hf,
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
    )?;
    let json = serde_json::to_string_pretty(&cfg.to_hf_json(BOS_ID, EOS_ID, PAD_ID))?;
    let path = dir.join(CONFIG_FILE);
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Loads `config.json` + `model.safetensors` from `dir`, after checking them against `SHA256SUMS` when the
/// directory has one (see [`write_sums`]; a model from elsewhere has none).
pub fn load_model<B: Backend>(dir: &Path, device: &B::Device) -> Result<(ModelConfig, Qwen2<B>)> {
    verify_sums(dir, &[CONFIG_FILE, WEIGHTS_FILE])?;
    let cfg = ModelConfig::from_hf_json_file(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    let tensors = read_safetensors(&path)?;
    let params = from_hf(&cfg, tensors, &path.display().to_string())?;
    let model = Qwen2::from_host(&cfg, params, device)
        .with_context(|| format!("building the model from {}", path.display()))?;
    Ok((cfg, model))
}

/// Writes f32 tensors to a safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &[HfTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    // A NaN or an infinity written here would be loaded later as a model that trains and samples
    // garbage without any error; refusing is the last line of defence behind the step's own check.
    for (name, _, v) in tensors {
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            bail!(
                "refusing to write {}: tensor `{name}` holds a non-finite value ({x}); expected only \
                 finite numbers",
                path.display()
            );
        }
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, metadata).context("serialising safetensors")?;
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// SHA-256 (lowercase hex) and length in bytes of the file at `path`, read in chunks so that a large
/// checkpoint is never held in memory twice.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let (mut h, mut buf, mut len) = (Sha256::new(), vec![0u8; 1 << 20], 0u64);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, len))
}

/// Writes `SHA256SUMS` over every file of `dir` (call it once the directory is complete), so that a model
/// directory copied anywhere can be checked on its own, by [`load_model`] or by `sha256sum -c`.
pub fn write_sums(dir: &Path) -> Result<()> {
    let mut names = vec![];
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string);
        match name {
            Some(n) if path.is_file() && n != SUMS_FILE => names.push(n),
            _ => {}
        }
    }
    names.sort();
    let mut text = String::new();
    for n in names {
        let path = dir.join(&n);
        let (hex, _) = sha256_file(&path).with_context(|| format!("hashing {}", path.display()))?;
        text.push_str(&format!("{hex}  {n}\n"));
    }
    let path = dir.join(SUMS_FILE);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Checks `names` in `dir` against its `SHA256SUMS`; a directory without one passes.
pub fn verify_sums(dir: &Path, names: &[&str]) -> Result<()> {
    let sums_path = dir.join(SUMS_FILE);
    let text = match std::fs::read_to_string(&sums_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r.with_context(|| format!("reading {}", sums_path.display()))?,
    };
    let mut listed = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let (hex, name) = line.split_once("  ").with_context(|| {
            format!(
                "{}:{}: expected `<sha256>  <file name>`",
                sums_path.display(),
                i + 1
            )
        })?;
        listed.insert(name, hex);
    }
    for name in names {
        let path = dir.join(name);
        let want = listed.get(name).with_context(|| {
            format!(
                "{}: not listed in {}; expected every file of the model there",
                path.display(),
                sums_path.display()
            )
        })?;
        let (found, _) =
            sha256_file(&path).with_context(|| format!("reading {}", path.display()))?;
        ensure!(
            found == **want,
            "{}: sha256 {found}, expected {want} (listed in {}); the file was changed after it was written",
            path.display(),
            sums_path.display()
        );
    }
    Ok(())
}

/// Tensors by name: shape and f32 values.
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of a safetensors file as f32 (f32, f16 and bf16 accepted).
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&data)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => bail!(
                "{}: tensor `{name}` has dtype {other:?}; expected F32, BF16 or F16",
                path.display()
            ),
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if mant == 0 => sign,
        0 => {
            // Subnormal: normalise.
            let mut e = -14;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 127) as u32) << 23) | ((m & 0x3ff) << 13)
        }
        31 => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | (((exp - 15 + 127) as u32) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn save_then_load_gives_identical_parameters_and_hf_names() {
        let cfg = ModelConfig::preset("tiny-test").unwrap();
        let m = Qwen2::<Cpu>::init(&cfg, 11, &Default::default());
        let dir = std::env::temp_dir().join(format!("lm-ckpt-test-{}", std::process::id()));
        save_model(&dir, &m, &cfg).unwrap();
        let names = read_safetensors(&dir.join(WEIGHTS_FILE)).unwrap();
        assert!(names.contains_key("model.layers.1.self_attn.k_proj.bias"));
        assert_eq!(
            names["model.layers.0.self_attn.k_proj.weight"].0,
            vec![16, 32]
        );
        assert!(
            !names.contains_key("lm_head.weight"),
            "tied head is not stored (as transformers does)"
        );
        let (cfg2, m2) = load_model::<Cpu>(&dir, &Default::default()).unwrap();
        assert_eq!(cfg2, cfg);
        assert_eq!(m.to_host(&cfg), m2.to_host(&cfg));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_model_directory_with_sums_refuses_a_changed_file() {
        let cfg = ModelConfig::preset("tiny-test").unwrap();
        let m = Qwen2::<Cpu>::init(&cfg, 11, &Default::default());
        let dir = std::env::temp_dir().join(format!("lm-sums-test-{}", std::process::id()));
        save_model(&dir, &m, &cfg).unwrap();
        write_sums(&dir).unwrap();
        let sums = std::fs::read_to_string(dir.join(SUMS_FILE)).unwrap();
        assert_eq!(sums.lines().count(), 2, "{sums}");
        load_model::<Cpu>(&dir, &Default::default()).unwrap();
        let path = dir.join(WEIGHTS_FILE);
        let mut b = std::fs::read(&path).unwrap();
        let last = b.len() - 3;
        b[last] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        let e = load_model::<Cpu>(&dir, &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(WEIGHTS_FILE) && e.contains("expected"), "{e}");
        // Without the sums file (a model from elsewhere) nothing is checked.
        std::fs::remove_file(dir.join(SUMS_FILE)).unwrap();
        load_model::<Cpu>(&dir, &Default::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn f16_conversion_matches_known_values() {
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
        ] {
            assert_eq!(f16_to_f32(h), f, "{h:#x}");
        }
    }
}
