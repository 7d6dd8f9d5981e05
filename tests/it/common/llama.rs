//! A fixture-sized llama checkpoint generated for the llama.cpp end-to-end tests (K-quants,
//! importance matrix): 256-multiple rows, so every K-quant applies, with the tiny fixture's
//! tokenizer so llama.cpp can load and run it. Generated, not committed: a few MB of bf16.

use std::path::Path;
use std::process::Command;

pub use modelpack_testkit::judge::llama_dir;
pub use modelpack_testkit::SplitMix64 as Rng;

/// Run a command that must succeed; its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {}\n{se}", out.status);
    se
}

/// Shape and randomness of a generated model.
pub struct Synth {
    /// Hidden size (a multiple of 256 for K-quants).
    pub hidden: usize,
    /// MLP intermediate size (not a multiple of 256 exercises llama.cpp's fallbacks).
    pub inter: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (GQA).
    pub kv_heads: usize,
    /// Seed of the weights.
    pub seed: u64,
    /// Standard deviation of the norm weights around 1.
    pub norm_noise: f32,
}

impl Synth {
    /// Write the model into `dir`: config.json derived from the tiny fixture's, its tokenizer
    /// files, and a bf16 model.safetensors of Gaussian weights with heavier tails in every 61st
    /// column, like trained weights. Returns the config.
    pub fn write(&self, dir: &Path) -> serde_json::Value {
        let (hidden, inter) = (self.hidden, self.inter);
        let head_dim = hidden / self.heads;
        let fx = super::fixture("tiny-llama");
        std::fs::create_dir_all(dir).unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            std::fs::copy(fx.join(f), dir.join(f)).unwrap();
        }
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fx.join("config.json")).unwrap()).unwrap();
        config["hidden_size"] = hidden.into();
        config["intermediate_size"] = inter.into();
        config["num_hidden_layers"] = self.layers.into();
        config["num_attention_heads"] = self.heads.into();
        config["num_key_value_heads"] = self.kv_heads.into();
        config["head_dim"] = head_dim.into();
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let vocab = config["vocab_size"].as_u64().unwrap() as usize;

        let kv = self.kv_heads * head_dim;
        let mut tensors: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![vocab, hidden]),
            ("lm_head.weight".into(), vec![vocab, hidden]),
            ("model.norm.weight".into(), vec![hidden]),
        ];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            tensors.push((format!("{p}.input_layernorm.weight"), vec![hidden]));
            tensors.push((format!("{p}.post_attention_layernorm.weight"), vec![hidden]));
            tensors.push((format!("{p}.self_attn.q_proj.weight"), vec![hidden, hidden]));
            tensors.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, hidden]));
            tensors.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, hidden]));
            tensors.push((format!("{p}.self_attn.o_proj.weight"), vec![hidden, hidden]));
            tensors.push((format!("{p}.mlp.gate_proj.weight"), vec![inter, hidden]));
            tensors.push((format!("{p}.mlp.up_proj.weight"), vec![inter, hidden]));
            tensors.push((format!("{p}.mlp.down_proj.weight"), vec![hidden, inter]));
        }
        let mut rng = Rng(self.seed);
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, shape) in &tensors {
            let n: usize = shape.iter().product();
            let start = data.len();
            for i in 0..n {
                let v = if shape.len() == 1 {
                    1.0 + self.norm_noise * rng.gauss4()
                } else {
                    let s = if i % 61 == 0 { 0.2 } else { 0.04 };
                    s * rng.gauss4()
                };
                data.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            }
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut h = serde_json::to_vec(&header).unwrap();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut file = (h.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&h);
        file.extend_from_slice(&data);
        std::fs::write(dir.join("model.safetensors"), file).unwrap();
        config
    }
}

/// The per-token log-probabilities `llama-perplexity` computes for `gguf` over `text` (64-token
/// chunks), as the file `--kl-divergence-base` saves. Two models compute the same perplexity
/// exactly when these bytes are equal. The file is written with stdio; the log's `Final
/// estimate` line goes through llama.cpp's asynchronous logger, which can lose its tail at exit
/// on a loaded machine, so tests compare these bytes instead of parsing the log.
pub fn logprobs(llama: &Path, gguf: &Path, text: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logprobs.kld");
    run(Command::new(llama.join("bin/llama-perplexity"))
        .arg("-m")
        .arg(gguf)
        .arg("-f")
        .arg(text)
        .args(["-c", "64", "-b", "64", "-t", "1", "--kl-divergence-base"])
        .arg(&out));
    let b = std::fs::read(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert!(b.len() > 1000, "{} bytes of log-probs from {}", b.len(), gguf.display());
    b
}
