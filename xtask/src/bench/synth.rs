//! A deterministic synthetic llama-shaped bf16 checkpoint for end-to-end benchmarks.
//!
//! Never committed: it is generated into `~/.cache/modelpack/bench/` and reused while its
//! `.complete` stamp matches the shape. The weights are heavy-tailed (a normal times a scale
//! mixture, as trained weights' outliers) with a few ×8 outlier input columns per Linear, so
//! the quantizers take the same code paths as on a real model. Every value is a pure function
//! of (tensor name, row chunk), so the bytes do not depend on the thread count.

use crate::fixture_gen::rng::{seed_for, SplitMix64};
use crate::util::{cache_dir, root};
use anyhow::Context;
use serde_json::json;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Shape of a synthetic model.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Embedding width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vocabulary (embedding rows).
    pub vocab: usize,
    /// Decoder blocks.
    pub layers: usize,
    /// Routed experts per block (0: a dense llama; otherwise a Qwen3-MoE whose MLP is
    /// `experts` SwiGLU experts of `intermediate` rows plus an F32-kept router).
    pub experts: usize,
}

/// Parameters of one decoder block.
fn layer_params(s: &Shape) -> usize {
    let kv = s.hidden / s.heads * s.kv_heads;
    let attn = 2 * s.hidden * s.hidden + 2 * s.hidden * kv + 2 * s.hidden;
    if s.experts == 0 {
        attn + 3 * s.hidden * s.intermediate
    } else {
        // q/k norms, router, experts.
        attn + 2 * (s.hidden / s.heads) + s.experts * s.hidden + s.experts * 3 * s.hidden * s.intermediate
    }
}

impl Shape {
    /// The issue's llama shape (hidden 4096, intermediate 14336, GQA 32/8, vocab 32000) with as
    /// many layers as make the bf16 size reach `bytes` (at least one; 2 GB gives the issue's 4).
    pub fn llama_of_size(bytes: u64) -> Shape {
        let s =
            Shape { hidden: 4096, intermediate: 14336, heads: 32, kv_heads: 8, vocab: 32000, layers: 1, experts: 0 };
        s.with_layers_for(bytes)
    }

    /// A Qwen3-MoE shape (hidden 2048, GQA 16/4, head_dim 128, 32 experts of 768 rows: the
    /// expert width of Qwen3-30B-A3B, and not llama-quantize's special 8 experts) with as many
    /// layers as make the bf16 size reach `bytes`.
    pub fn moe_of_size(bytes: u64) -> Shape {
        let s = Shape { hidden: 2048, intermediate: 768, heads: 16, kv_heads: 4, vocab: 32000, layers: 1, experts: 32 };
        s.with_layers_for(bytes)
    }

    /// `--quick --moe`: a few tens of MB.
    pub fn quick_moe() -> Shape {
        Shape { hidden: 1024, intermediate: 512, heads: 8, kv_heads: 2, vocab: 8000, layers: 2, experts: 12 }
    }

    fn with_layers_for(mut self, bytes: u64) -> Shape {
        let s = &mut self;
        let fixed = (2 * s.vocab * s.hidden + s.hidden) as f64 * 2.0;
        let per = layer_params(s) as f64 * 2.0;
        s.layers = (((bytes as f64 - fixed) / per).ceil() as usize).max(1);
        self
    }

    /// A small model for `--quick` (a few tens of MB): proves the harness, not the numbers.
    pub fn quick() -> Shape {
        Shape { hidden: 1024, intermediate: 2816, heads: 16, kv_heads: 4, vocab: 8000, layers: 2, experts: 0 }
    }

    /// Total tensor bytes (bf16).
    pub fn bytes(&self) -> u64 {
        ((2 * self.vocab * self.hidden + self.hidden + self.layers * layer_params(self)) * 2) as u64
    }

    fn tag(&self) -> String {
        let moe = if self.experts > 0 { format!("-e{}", self.experts) } else { String::new() };
        format!(
            "h{}-i{}-a{}-kv{}-v{}-l{}{moe}",
            self.hidden, self.intermediate, self.heads, self.kv_heads, self.vocab, self.layers
        )
    }
}

struct TensorSpec {
    name: String,
    shape: Vec<usize>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Heavy-tailed matrix of this standard deviation with outlier input columns.
    Matrix(f64),
    /// A norm weight ≈ 1.
    Norm,
}

fn specs(s: &Shape) -> Vec<TensorSpec> {
    let kv = s.hidden / s.heads * s.kv_heads;
    let m = |name: String, rows: usize, cols: usize| TensorSpec {
        name,
        shape: vec![rows, cols],
        kind: Kind::Matrix(0.5 / (cols as f64).sqrt()),
    };
    let mut v = vec![TensorSpec {
        name: "model.embed_tokens.weight".into(),
        shape: vec![s.vocab, s.hidden],
        kind: Kind::Matrix(0.02),
    }];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        v.push(TensorSpec { name: format!("{p}.input_layernorm.weight"), shape: vec![s.hidden], kind: Kind::Norm });
        v.push(m(format!("{p}.self_attn.q_proj.weight"), s.hidden, s.hidden));
        v.push(m(format!("{p}.self_attn.k_proj.weight"), kv, s.hidden));
        v.push(m(format!("{p}.self_attn.v_proj.weight"), kv, s.hidden));
        v.push(m(format!("{p}.self_attn.o_proj.weight"), s.hidden, s.hidden));
        v.push(TensorSpec {
            name: format!("{p}.post_attention_layernorm.weight"),
            shape: vec![s.hidden],
            kind: Kind::Norm,
        });
        if s.experts == 0 {
            v.push(m(format!("{p}.mlp.gate_proj.weight"), s.intermediate, s.hidden));
            v.push(m(format!("{p}.mlp.up_proj.weight"), s.intermediate, s.hidden));
            v.push(m(format!("{p}.mlp.down_proj.weight"), s.hidden, s.intermediate));
            continue;
        }
        let hd = s.hidden / s.heads;
        for n in ["q_norm", "k_norm"] {
            v.push(TensorSpec { name: format!("{p}.self_attn.{n}.weight"), shape: vec![hd], kind: Kind::Norm });
        }
        v.push(m(format!("{p}.mlp.gate.weight"), s.experts, s.hidden));
        for e in 0..s.experts {
            v.push(m(format!("{p}.mlp.experts.{e}.gate_proj.weight"), s.intermediate, s.hidden));
            v.push(m(format!("{p}.mlp.experts.{e}.up_proj.weight"), s.intermediate, s.hidden));
            v.push(m(format!("{p}.mlp.experts.{e}.down_proj.weight"), s.hidden, s.intermediate));
        }
    }
    v.push(TensorSpec { name: "model.norm.weight".into(), shape: vec![s.hidden], kind: Kind::Norm });
    v.push(m("lm_head.weight".into(), s.vocab, s.hidden));
    v
}

/// Rows generated from one seed: the unit of determinism and of parallel work.
const ROWS_PER_CHUNK: usize = 64;

/// bf16 bytes of rows `r0..r1` of a tensor.
fn chunk_bytes(t: &TensorSpec, r0: usize, r1: usize) -> Vec<u8> {
    let cols = *t.shape.last().expect("non-empty shape");
    let mut out = Vec::with_capacity((r1 - r0) * cols * 2);
    match t.kind {
        Kind::Norm => {
            let mut r = SplitMix64::new(seed_for(0x6e6f_726d, &t.name));
            for _ in 0..cols {
                let x = 1.0 + (r.uniform() - 0.5) * 0.1;
                out.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes());
            }
        }
        Kind::Matrix(std) => {
            // Four outlier input columns per matrix, chosen from the tensor's own seed.
            let mut r = SplitMix64::new(seed_for(0x6f75_746c, &t.name));
            let outliers: Vec<usize> = (0..4).map(|_| (r.next_u64() % cols as u64) as usize).collect();
            let mut r = SplitMix64::new(seed_for(r0 as u64, &t.name));
            // Irwin–Hall of four 16-bit uniforms, scaled to unit variance: exact arithmetic.
            let unit = 3f64.sqrt() / 32768.0;
            for _ in r0..r1 {
                for c in 0..cols {
                    let u = r.next_u64();
                    let s = (u & 0xffff) + ((u >> 16) & 0xffff) + ((u >> 32) & 0xffff) + (u >> 48);
                    let z = (s as f64 - 131070.0) * unit;
                    let m = r.next_u64() % 1000;
                    let scale = if m < 5 {
                        6.0
                    } else if m < 45 {
                        2.5
                    } else {
                        0.85
                    };
                    let mut x = z * scale * std;
                    if outliers.contains(&c) {
                        x *= 8.0;
                    }
                    out.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes());
                }
            }
        }
    }
    out
}

/// Shards of at most `shard_bytes` (a tensor never splits), in model order.
fn shard(specs: &[TensorSpec], shard_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut acc = 0u64;
    for (i, t) in specs.iter().enumerate() {
        let b = t.shape.iter().product::<usize>() as u64 * 2;
        if acc > 0 && acc + b > shard_bytes {
            shards.push(Vec::new());
            acc = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        acc += b;
    }
    shards
}

/// Write one safetensors shard, streaming chunks at their offsets from `threads` workers.
fn write_shard(path: &Path, specs: &[TensorSpec], members: &[usize], threads: usize) -> anyhow::Result<u64> {
    let mut sorted: Vec<usize> = members.to_vec();
    sorted.sort_by(|&a, &b| specs[a].name.cmp(&specs[b].name));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut off = 0u64;
    let mut offsets = Vec::new();
    for &i in &sorted {
        let t = &specs[i];
        let end = off + t.shape.iter().product::<usize>() as u64 * 2;
        header.insert(t.name.clone(), json!({"dtype": "BF16", "shape": t.shape, "data_offsets": [off, end]}));
        offsets.push(off);
        off = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let base = 8 + h.len() as u64;
    let tmp = path.with_extension("partial");
    let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all_at(&(h.len() as u64).to_le_bytes(), 0)?;
    f.write_all_at(&h, 8)?;
    // Work items: (tensor, r0, r1, absolute offset).
    let mut work = Vec::new();
    for (k, &i) in sorted.iter().enumerate() {
        let t = &specs[i];
        let rows = if t.shape.len() == 1 { 1 } else { t.shape[0] };
        let cols = *t.shape.last().expect("shape");
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + ROWS_PER_CHUNK).min(rows);
            work.push((i, r0, r1, base + offsets[k] + (r0 * cols * 2) as u64));
            r0 = r1;
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let w = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(i, r0, r1, at)) = work.get(w) else { return Ok(()) };
                        f.write_all_at(&chunk_bytes(&specs[i], r0, r1), at)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        }
        Ok(())
    })?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(off)
}

/// Name of the file written last into a generated checkpoint: it holds the generation key.
const STAMP: &str = ".complete";

/// True when `dir` already holds the generation `key` describes (its stamp matches, so an
/// interrupted generation is never reused); otherwise `dir` is emptied for a fresh one.
fn reuse_or_reset(dir: &Path, key: &str) -> anyhow::Result<bool> {
    if std::fs::read_to_string(dir.join(STAMP)).ok().as_deref() == Some(key) {
        return Ok(true);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(false)
}

/// Generate (or reuse) the checkpoint for `shape`, sharded at `shard_bytes`; returns its directory.
pub fn ensure(shape: &Shape, shard_bytes: u64) -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("bench").join(format!("synth-{}", shape.tag()));
    let key = format!("synth v1 {} shard {shard_bytes}\n", shape.tag());
    if reuse_or_reset(&dir, &key)? {
        return Ok(dir);
    }
    let t0 = std::time::Instant::now();
    eprintln!("bench: generating synthetic checkpoint {} ({:.2} GB)", shape.tag(), shape.bytes() as f64 / 1e9);
    let specs = specs(shape);
    let shards = shard(&specs, shard_bytes);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (k, members) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        total += write_shard(&dir.join(&name), &specs, members, threads)?;
        for &i in members {
            weight_map.insert(specs[i].name.clone(), json!(name));
        }
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec_pretty(&index)?)?;
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "vocab_size": shape.vocab,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "hidden_act": "silu", "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "bos_token_id": 270, "eos_token_id": 271
    });
    if shape.experts > 0 {
        config["architectures"] = json!(["Qwen3MoeForCausalLM"]);
        config["model_type"] = json!("qwen3_moe");
        config["head_dim"] = json!(shape.hidden / shape.heads);
        config["num_experts"] = json!(shape.experts);
        config["num_experts_per_tok"] = json!(8);
        config["moe_intermediate_size"] = json!(shape.intermediate);
        config["norm_topk_prob"] = json!(true);
    }
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    // The tiny fixture's byte-level BPE tokenizer: ids above it are padded by the converter.
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(root().join("fixtures/tiny-llama").join(f), dir.join(f))
            .with_context(|| format!("copying {f} from fixtures/tiny-llama"))?;
    }
    std::fs::write(dir.join(STAMP), key)?;
    eprintln!("bench: generated in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(dir)
}

/// Rows of one FP8 scale block (DeepSeek-V3's `weight_block_size` is 128×128).
const FP8_BLOCK: usize = 128;

/// The nearest E4M3 code of `x` (ties to the even code; |x| ≤ 448 after block scaling), found in
/// modelpack-quant's decode table (codes `0x00..=0x7e` are increasing in value).
fn e4m3_code(x: f32) -> u8 {
    let t = modelpack_quant::fp8::table(modelpack_quant::fp8::Fp8Format::E4M3);
    let a = x.abs().min(448.0);
    // First positive code whose value is ≥ a.
    let hi = t[..0x7f].partition_point(|&v| v < a);
    let code = if hi == 0 {
        0
    } else if hi >= 0x7f {
        0x7e
    } else {
        let (lo_d, hi_d) = (a - t[hi - 1], t[hi] - a);
        if lo_d < hi_d || (lo_d == hi_d && (hi - 1) % 2 == 0) {
            hi - 1
        } else {
            hi
        }
    };
    code as u8 | if x.is_sign_negative() && code != 0 { 0x80 } else { 0 }
}

/// FP8 codes and the `ceil(cols / 128)` block scales of rows `r0..r1` (at most one block of
/// 128 rows) of a bf16 matrix: the bf16 twin's values, scaled per 128×128 block so the block's
/// largest magnitude maps to 448 (as DeepSeek's and llm-compressor's FP8 block quantizers do).
fn fp8_block(t: &TensorSpec, r0: usize, r1: usize) -> (Vec<u8>, Vec<f32>) {
    let cols = *t.shape.last().expect("shape");
    let mut vals = Vec::with_capacity((r1 - r0) * cols);
    // Same 64-row generator chunks as the bf16 twin, so the values are that model's.
    let mut r = r0;
    while r < r1 {
        let e = (r + ROWS_PER_CHUNK).min(r1);
        let b = chunk_bytes(t, r, e);
        vals.extend(b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()));
        r = e;
    }
    let nb = cols.div_ceil(FP8_BLOCK);
    let mut scales = vec![0f32; nb];
    for (b, s) in scales.iter_mut().enumerate() {
        let (c0, c1) = (b * FP8_BLOCK, ((b + 1) * FP8_BLOCK).min(cols));
        let amax =
            (0..r1 - r0).flat_map(|i| vals[i * cols + c0..i * cols + c1].iter()).fold(0f32, |m, v| m.max(v.abs()));
        *s = if amax > 0.0 { amax / 448.0 } else { 1.0 };
    }
    let codes = vals.iter().enumerate().map(|(k, &v)| e4m3_code(v / scales[(k % cols) / FP8_BLOCK])).collect();
    (codes, scales)
}

/// Whether the FP8 twin stores tensor `t` as FP8: the Linear weights of the decoder blocks, as
/// DeepSeek-V3 ships (embeddings, `lm_head`, norms and routers stay bf16).
fn is_fp8(t: &TensorSpec) -> bool {
    matches!(t.kind, Kind::Matrix(_)) && t.name.contains(".layers.") && !t.name.ends_with(".mlp.gate.weight")
}

/// Bytes of `t` in the FP8 twin (codes plus f32 scales, or bf16).
fn fp8_twin_bytes(t: &TensorSpec) -> u64 {
    let n = t.shape.iter().product::<usize>() as u64;
    if is_fp8(t) {
        n + (t.shape[0].div_ceil(FP8_BLOCK) * t.shape[1].div_ceil(FP8_BLOCK) * 4) as u64
    } else {
        n * 2
    }
}

impl Shape {
    /// Tensor bytes of the FP8 twin ([`ensure_fp8`]): what its GB/s figures are relative to.
    pub fn fp8_bytes(&self) -> u64 {
        specs(self).iter().map(fp8_twin_bytes).sum()
    }
}

/// Write one shard of the FP8 twin: each FP8 weight with its `_scale_inv` (F32, one per
/// 128×128 block) in the same file, from `threads` workers, 128-row blocks at a time.
fn write_shard_fp8(path: &Path, specs: &[TensorSpec], members: &[usize], threads: usize) -> anyhow::Result<u64> {
    // (name, dtype, shape, spec index, is the scale of that spec)
    let mut entries: Vec<(String, &str, Vec<usize>, usize, bool)> = Vec::new();
    for &i in members {
        let t = &specs[i];
        if is_fp8(t) {
            entries.push((t.name.clone(), "F8_E4M3", t.shape.clone(), i, false));
            let ss = vec![t.shape[0].div_ceil(FP8_BLOCK), t.shape[1].div_ceil(FP8_BLOCK)];
            entries.push((format!("{}_scale_inv", t.name), "F32", ss, i, true));
        } else {
            entries.push((t.name.clone(), "BF16", t.shape.clone(), i, false));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut off = 0u64;
    // Offsets of each spec's data and of its scales.
    let mut data_at = std::collections::HashMap::new();
    let mut scale_at = std::collections::HashMap::new();
    for (name, dtype, shape, i, is_scale) in &entries {
        let esz = match *dtype {
            "F8_E4M3" => 1,
            "BF16" => 2,
            _ => 4,
        };
        let end = off + (shape.iter().product::<usize>() * esz) as u64;
        header.insert(name.clone(), json!({"dtype": dtype, "shape": shape, "data_offsets": [off, end]}));
        if *is_scale {
            scale_at.insert(*i, off);
        } else {
            data_at.insert(*i, off);
        }
        off = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let base = 8 + h.len() as u64;
    let tmp = path.with_extension("partial");
    let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all_at(&(h.len() as u64).to_le_bytes(), 0)?;
    f.write_all_at(&h, 8)?;
    let mut work = Vec::new();
    for &i in members {
        let t = &specs[i];
        let rows = if t.shape.len() == 1 { 1 } else { t.shape[0] };
        let step = if is_fp8(t) { FP8_BLOCK } else { ROWS_PER_CHUNK };
        let mut r0 = 0;
        while r0 < rows {
            work.push((i, r0, (r0 + step).min(rows)));
            r0 += step;
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let w = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(i, r0, r1)) = work.get(w) else { return Ok(()) };
                        let t = &specs[i];
                        let cols = *t.shape.last().expect("shape");
                        if is_fp8(t) {
                            let (codes, scales) = fp8_block(t, r0, r1);
                            f.write_all_at(&codes, base + data_at[&i] + (r0 * cols) as u64)?;
                            let sb: Vec<u8> = scales.iter().flat_map(|x| x.to_le_bytes()).collect();
                            f.write_all_at(&sb, base + scale_at[&i] + (r0 / FP8_BLOCK * sb.len()) as u64)?;
                        } else {
                            f.write_all_at(&chunk_bytes(t, r0, r1), base + data_at[&i] + (r0 * cols * 2) as u64)?;
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        }
        Ok(())
    })?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(off)
}

/// Generate (or reuse) the FP8 E4M3 twin of [`ensure`]'s checkpoint: the same values, the decoder
/// blocks' Linear weights stored as DeepSeek-V3 ships them (`F8_E4M3` codes, an F32
/// `weight_scale_inv` per 128×128 block, `quantization_config` `fp8`), the rest bf16.
pub fn ensure_fp8(shape: &Shape, shard_bytes: u64) -> anyhow::Result<PathBuf> {
    let dense = ensure(shape, shard_bytes)?;
    let dir = cache_dir().join("bench").join(format!("synth-fp8-{}", shape.tag()));
    let key = format!("synth-fp8 v1 {} shard {shard_bytes}\n", shape.tag());
    if reuse_or_reset(&dir, &key)? {
        return Ok(dir);
    }
    let t0 = std::time::Instant::now();
    eprintln!("bench: generating the FP8 twin {} ({:.2} GB)", shape.tag(), shape.fp8_bytes() as f64 / 1e9);
    let specs = specs(shape);
    // Shards by FP8 size (a weight and its scales never split).
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut acc = 0u64;
    for (i, t) in specs.iter().enumerate() {
        let b = fp8_twin_bytes(t);
        if acc > 0 && acc + b > shard_bytes {
            shards.push(Vec::new());
            acc = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        acc += b;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (k, members) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        total += write_shard_fp8(&dir.join(&name), &specs, members, threads)?;
        for &i in members {
            weight_map.insert(specs[i].name.clone(), json!(name));
            if is_fp8(&specs[i]) {
                weight_map.insert(format!("{}_scale_inv", specs[i].name), json!(name));
            }
        }
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec_pretty(&index)?)?;
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(dense.join("config.json"))?)?;
    config["quantization_config"] = json!({
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
        "weight_block_size": [FP8_BLOCK, FP8_BLOCK]
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(dense.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    std::fs::write(dir.join(STAMP), key)?;
    eprintln!("bench: generated in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_shape_of_2gb_has_four_layers() {
        let s = Shape::llama_of_size(2_000_000_000);
        assert_eq!(s.layers, 4);
        let m = Shape::moe_of_size(1_000_000_000);
        assert!(m.bytes() >= 1_000_000_000 && m.layers >= 2, "{m:?}");
        assert!(s.bytes() >= 2_000_000_000 && s.bytes() < 2_500_000_000, "{}", s.bytes());
        assert_eq!(Shape::llama_of_size(1).layers, 1);
        // 2·32000·4096 embedding/head params + 4096 norm + per-layer params, bf16.
        assert_eq!(layer_params(&s), 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096);
    }

    #[test]
    fn chunks_depend_only_on_tensor_and_rows() {
        let t = TensorSpec { name: "x".into(), shape: vec![130, 48], kind: Kind::Matrix(0.02) };
        let a = chunk_bytes(&t, 64, 128);
        assert_eq!(a, chunk_bytes(&t, 64, 128));
        assert_ne!(a, chunk_bytes(&t, 0, 64));
        assert_eq!(a.len(), 64 * 48 * 2);
    }

    #[test]
    fn shards_never_exceed_the_limit_unless_one_tensor_does() {
        let s = Shape::quick();
        let sp = specs(&s);
        let limit = 20_000_000;
        for sh in shard(&sp, limit) {
            let b: u64 = sh.iter().map(|&i| sp[i].shape.iter().product::<usize>() as u64 * 2).sum();
            assert!(b <= limit || sh.len() == 1, "{b}");
        }
    }

    #[test]
    fn e4m3_codes_round_to_the_nearest_value() {
        use modelpack_quant::fp8::{decode, Fp8Format::E4M3};
        for c in 0u8..=0xfe {
            if c & 0x7f == 0x7f || c == 0x80 {
                continue;
            }
            assert_eq!(e4m3_code(decode(E4M3, c)), c, "code {c:#x}");
        }
        assert_eq!(e4m3_code(1.0 + 1.0 / 16.0), 0x38, "tie to even: 1.0625 between 1.0 and 1.125");
        assert_eq!(e4m3_code(1.0 + 3.0 / 16.0), 0x3a, "tie to even: 1.1875 between 1.125 and 1.25");
        assert_eq!(e4m3_code(-500.0), 0xfe);
    }

    #[test]
    fn fp8_blocks_decode_close_to_the_bf16_twin() {
        let t = TensorSpec { name: "model.layers.0.x".into(), shape: vec![130, 200], kind: Kind::Matrix(0.02) };
        for (r0, r1) in [(0, 128), (128, 130)] {
            let (codes, scales) = fp8_block(&t, r0, r1);
            assert_eq!(scales.len(), 2);
            // The bf16 twin is written in 64-row generator chunks.
            let bf: Vec<u8> = (r0..r1)
                .step_by(ROWS_PER_CHUNK)
                .flat_map(|r| chunk_bytes(&t, r, (r + ROWS_PER_CHUNK).min(r1)))
                .collect();
            let tab = modelpack_quant::fp8::table(modelpack_quant::fp8::Fp8Format::E4M3);
            for (k, (&c, b)) in codes.iter().zip(bf.chunks_exact(2)).enumerate() {
                let want = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                let got = tab[c as usize] * scales[(k % 200) / 128];
                // E4M3 keeps 3 mantissa bits: relative error ≤ 1/16, or the subnormal step.
                assert!(
                    (got - want).abs() <= want.abs() / 16.0 + scales[(k % 200) / 128] * 2f32.powi(-10),
                    "{got} {want}"
                );
            }
        }
    }
}
