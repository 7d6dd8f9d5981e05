//! The architecture registry: config.json + safetensors names → GGUF hyperparameters and a
//! tensor plan, one module per family, following llama.cpp's `convert_hf_to_gguf.py`.
//!
//! A family ([`Family`]) says three things: which hyperparameter keys it writes beyond the
//! generic ones, which HF tensors a decoder layer holds (and under which GGUF names and shapes),
//! and its tokenizer's `pre` name. Everything shared lives here: reading config.json (both RoPE
//! spellings, see [`config`]), the generic keys, global tensors (embedding, final norm, output,
//! tied embeddings), shape checks against config.json, and expert stacking. Adding a family is
//! one module and one row of [`REGISTRY`].
//!
//! Expert stacking is planned, not performed: a stacked `ffn_*_exps` tensor is described as the
//! row ranges of HF tensors it concatenates ([`Segment`]), so the pipeline quantizes each
//! expert's rows straight into their slab of the output and no expert is ever held in memory.

pub mod config;
mod deci;
mod deepseek2;
mod glm4;
mod glm4moe;
pub mod llama;
mod minimax_m2;
mod nemotron_h;
pub mod q4km;
mod qwen2;
mod qwen3;
mod qwen3moe;

use super::MetaValue;
use crate::FormatError;
use config::{bad, HfConfig};
use serde_json::Value;
use std::collections::BTreeMap;

pub use llama::{permute_qk, QkPermutation};

/// One supported architecture family.
pub trait Family: Sync {
    /// The GGUF `general.architecture`.
    fn arch(&self) -> &'static str;

    /// The transformers class default of `tie_word_embeddings` (used when config.json omits it).
    fn tied_default(&self) -> bool {
        false
    }

    /// Read family-specific hyperparameters (experts, rotary width, extra layers) into `m`,
    /// after the generic dimensions are known; config contradictions are errors here.
    fn read(&self, _cfg: &HfConfig, _m: &mut Model) -> Result<(), FormatError> {
        Ok(())
    }

    /// Keys written after the generic ones (names without the `<arch>.` prefix; see [`Kvs`]).
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError>;

    /// The tensors of decoder layer `layer` (`0..m.block_count()`).
    fn layer(&self, m: &Model, layer: u32) -> LayerSpec;

    /// `tokenizer.ggml.pre` this family's reference writes for a byte-level BPE tokenizer, or
    /// `None` to recognise it from tokenizer.json (llama, qwen2).
    fn tokenizer_pre(&self) -> Option<&'static str> {
        None
    }

    /// [`Family::tokenizer_pre`] for one config (Kimi K2 shares DeepSeek-V3's class but not its
    /// tokenizer).
    fn tokenizer_pre_for(&self, _cfg: &HfConfig) -> Option<&'static str> {
        self.tokenizer_pre()
    }

    /// Why the checkpoint's layer `layer` (≥ [`Model::block_count`]) is dropped on purpose, as
    /// the reference drops it (DeepSeek's multi-token-prediction layers); `None`: such a layer
    /// is an error.
    fn dropped_layer(&self, _m: &Model, _layer: u32) -> Option<&'static str> {
        None
    }

    /// Special tokens the reference sets from the tokenizer's added tokens (`(kind, content)`,
    /// e.g. `("eot", "<|user|>")`) when the tokenizer files do not already set that kind.
    fn special_tokens(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Whether llama.cpp needs an explicit `output.weight` (it cannot fall back to the tied
    /// embedding).
    fn requires_output(&self) -> bool {
        false
    }

    /// Extra F32 tensors computed from config.json (llama-3's `rope_freqs.weight`).
    fn computed_tensors(&self, _m: &Model) -> Result<Vec<(String, Vec<f32>)>, FormatError> {
        Ok(Vec::new())
    }

    /// Whether head counts and FFN widths come per layer from config.json's `block_configs`
    /// (Nemotron's `DeciLMForCausalLM`): `intermediate_size` and `num_key_value_heads` are then
    /// not required and [`Family::read`] fills [`Model::blocks`].
    fn per_block_sizes(&self) -> bool {
        false
    }

    /// llama-quantize's "70B" model type (llama with 80 layers): `attn_v` gets Q5_K instead of
    /// Q4_K in the Q4_K_M mix.
    fn is_70b(&self, _m: &Model) -> bool {
        false
    }

    /// The HF prefix of decoder layer tensors (`model.layers.`; Nemotron-H and other Mamba-style
    /// checkpoints use `backbone.layers.`).
    fn layer_prefix(&self) -> &'static str {
        "model.layers."
    }

    /// The HF names of the token embedding and the final norm.
    fn global_names(&self) -> [&'static str; 2] {
        ["model.embed_tokens.weight", "model.norm.weight"]
    }

    /// The layer count when config.json states it some other way than `num_hidden_layers`
    /// (transformers 5's Nemotron-H `layers_block_type` list, whose length the reference uses).
    fn layer_count(&self, _cfg: &HfConfig) -> Result<Option<u32>, FormatError> {
        Ok(None)
    }

    /// Whether the norms are described by `layer_norm_epsilon` (written as
    /// `attention.layer_norm_epsilon`, as the reference does for Nemotron-H) instead of
    /// `rms_norm_eps` (`attention.layer_norm_rms_epsilon`).
    fn layer_norm_eps(&self) -> bool {
        false
    }
}

/// HF `architectures[0]` → family. The order is the order of the "supported" list in errors.
pub static REGISTRY: &[(&str, &dyn Family)] = &[
    ("LlamaForCausalLM", &llama::Llama),
    ("MistralForCausalLM", &llama::Llama),
    ("Qwen2ForCausalLM", &qwen2::Qwen2),
    ("Qwen3ForCausalLM", &qwen3::Qwen3),
    ("Qwen3MoeForCausalLM", &qwen3moe::Qwen3Moe),
    ("Glm4ForCausalLM", &glm4::Glm4),
    ("Glm4MoeForCausalLM", &glm4moe::Glm4Moe),
    ("MiniMaxM2ForCausalLM", &minimax_m2::MiniMaxM2),
    ("DeepseekV3ForCausalLM", &deepseek2::Deepseek2),
    ("DeciLMForCausalLM", &deci::Deci),
    ("NemotronHForCausalLM", &nemotron_h::NemotronH),
];

/// The supported HF architectures, comma-separated (for error messages).
pub fn supported_list() -> String {
    REGISTRY.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// config.json's `architectures[0]`.
pub fn hf_architecture(config: &Value) -> Result<&str, FormatError> {
    let archs = config
        .get("architectures")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("architectures", "is missing or not a list"))?;
    archs.first().and_then(Value::as_str).ok_or_else(|| bad("architectures", "is empty or not a list of strings"))
}

/// The family of config.json's architecture; an unknown one is an error naming the supported.
pub fn family(config: &Value) -> Result<&'static dyn Family, FormatError> {
    let hf = hf_architecture(config)?;
    REGISTRY
        .iter()
        .find(|(n, _)| *n == hf)
        .map(|(_, f)| *f)
        .ok_or_else(|| FormatError::UnsupportedArchitecture(hf.to_owned()))
}

/// Mixture-of-experts dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Moe {
    /// Routed experts per MoE layer.
    pub experts: u32,
    /// Experts used per token.
    pub used: u32,
    /// Rows of one expert's gate/up projection.
    pub expert_ff: u32,
    /// Rows of the shared expert's gate/up projection (0: no shared expert).
    pub shared_ff: u32,
    /// Number of shared experts (`expert_shared_count`).
    pub shared_count: u32,
    /// Leading layers with a dense MLP instead of experts.
    pub leading_dense: u32,
}

/// Per-layer sizes of a heterogeneous model (Nemotron's `block_configs`); the GGUF writes them
/// as INT32 arrays of `head_count`, `head_count_kv` and `feed_forward_length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocks {
    /// Query heads per layer (0: no attention; with 0 kv heads: a linear "attention" layer).
    pub heads: Vec<u32>,
    /// Key/value heads per layer (0: no or linear attention).
    pub kv_heads: Vec<u32>,
    /// FFN width per layer (0: no FFN).
    pub ff: Vec<u32>,
}

/// Model dimensions read from config.json and checked for consistency.
#[derive(Clone)]
pub struct Model {
    /// The family.
    pub family: &'static dyn Family,
    /// GGUF architecture name.
    pub arch: &'static str,
    /// The merged config.
    pub cfg: HfConfig,
    /// `hidden_size`.
    pub hidden: u32,
    /// `intermediate_size`.
    pub intermediate: u32,
    /// `num_hidden_layers`.
    pub layers: u32,
    /// `num_attention_heads`.
    pub heads: u32,
    /// `num_key_value_heads` (defaults to `heads`).
    pub kv_heads: u32,
    /// `head_dim` (defaults to `hidden / heads`).
    pub head_dim: u32,
    /// Whether config.json states `head_dim` (the converter then writes key/value lengths).
    pub head_dim_in_config: bool,
    /// `vocab_size`.
    pub vocab: u32,
    /// `max_position_embeddings`.
    pub context: u32,
    /// `tie_word_embeddings`.
    pub tied_embeddings: bool,
    /// `rms_norm_eps` (or `layer_norm_epsilon` for families with [`Family::layer_norm_eps`]).
    pub rms_eps: f64,
    /// Experts, for MoE families.
    pub moe: Option<Moe>,
    /// Extra blocks after `layers` that the GGUF keeps (GLM-4.5's multi-token-prediction layer).
    pub nextn_layers: u32,
    /// Per-layer sizes, for families with [`Family::per_block_sizes`].
    pub blocks: Option<Blocks>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.arch)
            .field("hidden", &self.hidden)
            .field("layers", &self.layers)
            .field("heads", &self.heads)
            .field("kv_heads", &self.kv_heads)
            .field("head_dim", &self.head_dim)
            .field("moe", &self.moe)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Read and check the dimensions of a supported architecture.
    pub fn from_config(config: &Value) -> Result<Self, FormatError> {
        let family = family(config)?;
        let cfg = HfConfig::new(config);
        let hidden = cfg.req_u32("hidden_size")?;
        let heads = cfg.req_u32("num_attention_heads")?;
        let per_block = family.per_block_sizes();
        let kv_heads = if per_block { heads } else { cfg.u32("num_key_value_heads")?.unwrap_or(heads) };
        if heads % kv_heads != 0 {
            return Err(bad("num_key_value_heads", format!("{kv_heads} does not divide num_attention_heads {heads}")));
        }
        let head_dim_cfg = cfg.u32("head_dim")?;
        let head_dim = match head_dim_cfg {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(bad("hidden_size", format!("{hidden} is not divisible by num_attention_heads {heads}")))
            }
        };
        if head_dim % 2 != 0 {
            return Err(bad("head_dim", format!("{head_dim} is odd; RoPE needs pairs")));
        }
        let tied_embeddings = cfg.tied_embeddings(family.tied_default())?;
        let intermediate = if per_block { 0 } else { cfg.req_u32("intermediate_size")? };
        let layers = match family.layer_count(&cfg)? {
            Some(n) => n,
            None => cfg.req_u32("num_hidden_layers")?,
        };
        let vocab = cfg.req_u32("vocab_size")?;
        let context = cfg.req_u32("max_position_embeddings")?;
        let eps_key = if family.layer_norm_eps() { "layer_norm_epsilon" } else { "rms_norm_eps" };
        let rms_eps = cfg.f64(eps_key)?.ok_or_else(|| bad(eps_key, "is missing"))?;
        let mut m = Model {
            family,
            arch: family.arch(),
            cfg,
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads,
            head_dim,
            head_dim_in_config: head_dim_cfg.is_some(),
            vocab,
            context,
            tied_embeddings,
            rms_eps,
            moe: None,
            nextn_layers: 0,
            blocks: None,
        };
        let cfg = m.cfg.clone();
        family.read(&cfg, &mut m)?;
        Ok(m)
    }

    /// GGUF `block_count`: the decoder layers plus kept extra (MTP) layers.
    pub fn block_count(&self) -> u32 {
        self.layers + self.nextn_layers
    }

    /// `n_head · head_dim`, the query width.
    pub fn q_width(&self) -> usize {
        (self.heads * self.head_dim) as usize
    }

    /// `n_kv_head · head_dim`, the key/value width.
    pub fn kv_width(&self) -> usize {
        (self.kv_heads * self.head_dim) as usize
    }

    /// `general.name`: the last component of `_name_or_path`, else the arch.
    pub fn name(&self) -> String {
        self.cfg
            .get("_name_or_path")
            .and_then(Value::as_str)
            .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or(self.arch)
            .to_owned()
    }

    /// GGUF metadata (architecture and hyperparameters), in the converter's key order: generic
    /// keys, then the family's, then RoPE scaling. `general.file_type`, quantization version and
    /// tokenizer keys are the pipeline's to add.
    pub fn metadata(&self) -> Result<Vec<(String, MetaValue)>, FormatError> {
        let mut kv = Kvs::new(self.arch);
        kv.raw("general.architecture", MetaValue::string(self.arch));
        kv.raw("general.name", MetaValue::String(self.name()));
        kv.u32("context_length", self.context);
        kv.u32("embedding_length", self.hidden);
        let arr = |v: &[u32]| MetaValue::Array(v.iter().map(|&x| MetaValue::I32(x as i32)).collect());
        match &self.blocks {
            Some(b) => kv.set("feed_forward_length", arr(&b.ff)),
            None => kv.u32("feed_forward_length", self.intermediate),
        }
        kv.u32("block_count", self.block_count());
        match &self.blocks {
            Some(b) => {
                kv.set("attention.head_count", arr(&b.heads));
                kv.set("attention.head_count_kv", arr(&b.kv_heads));
            }
            None => {
                kv.u32("attention.head_count", self.heads);
                kv.u32("attention.head_count_kv", self.kv_heads);
            }
        }
        kv.f32("rope.freq_base", self.cfg.rope_theta()?);
        if self.family.layer_norm_eps() {
            kv.f32("attention.layer_norm_epsilon", self.rms_eps);
        } else {
            kv.f32("attention.layer_norm_rms_epsilon", self.rms_eps);
        }
        if self.head_dim_in_config {
            kv.u32("attention.key_length", self.head_dim);
            kv.u32("attention.value_length", self.head_dim);
        }
        self.family.metadata(self, &mut kv)?;
        rope_scaling(&self.cfg, &mut kv)?;
        Ok(kv.into_vec())
    }
}

/// The generic RoPE scaling keys (`linear`, `yarn`; llama-3 is a tensor, see the llama family).
fn rope_scaling(cfg: &HfConfig, kv: &mut Kvs) -> Result<(), FormatError> {
    let Some(p) = cfg.rope_params() else { return Ok(()) };
    let ty = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str);
    let factor = config::finite(p.get("factor"), "rope_scaling.factor")?;
    match (ty, factor) {
        (None | Some("default"), _) => {}
        (Some("llama3"), _) => {}
        (Some("linear"), Some(f)) => {
            kv.str("rope.scaling.type", "linear");
            kv.f32("rope.scaling.factor", f);
        }
        (Some("yarn"), Some(f)) => {
            kv.str("rope.scaling.type", "yarn");
            kv.f32("rope.scaling.factor", f);
            // The converter mirrors a top-level original_max_position_embeddings into the RoPE
            // parameters when they lack one.
            let orig = config::positive_u32(
                p.get("original_max_position_embeddings").or_else(|| cfg.get("original_max_position_embeddings")),
                "rope_scaling.original_max_position_embeddings",
            )?
            .ok_or_else(|| bad("rope_scaling.original_max_position_embeddings", "missing for yarn"))?;
            kv.u32("rope.scaling.original_context_length", orig);
            for (hf, alt, key) in [
                ("extrapolation_factor", None, "rope.scaling.yarn_ext_factor"),
                ("attention_factor", Some("attn_factor"), "rope.scaling.yarn_attn_factor"),
                ("beta_fast", None, "rope.scaling.yarn_beta_fast"),
                ("beta_slow", None, "rope.scaling.yarn_beta_slow"),
            ] {
                let v = p.get(hf).or_else(|| alt.and_then(|a| p.get(a)));
                if let Some(v) = config::finite(v, &format!("rope_scaling.{hf}"))? {
                    kv.f32(key, v);
                }
            }
        }
        (Some("linear" | "yarn"), None) => return Err(bad("rope_scaling.factor", "is missing")),
        (Some(other), _) => return Err(bad("rope_scaling", format!("RoPE type `{other}` is not supported"))),
    }
    Ok(())
}

/// Ordered GGUF metadata under construction: a key set twice keeps its first position and the
/// last value, as gguf-py's writer does.
#[derive(Debug)]
pub struct Kvs {
    arch: &'static str,
    kv: Vec<(String, MetaValue)>,
}

impl Kvs {
    fn new(arch: &'static str) -> Self {
        Kvs { arch, kv: Vec::new() }
    }
    /// Set a full key.
    pub fn raw(&mut self, key: &str, v: MetaValue) {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.kv.push((key.to_owned(), v)),
        }
    }
    /// Set `<arch>.<key>`.
    pub fn set(&mut self, key: &str, v: MetaValue) {
        let k = format!("{}.{key}", self.arch);
        self.raw(&k, v);
    }
    /// Drop `<arch>.<key>` (a generic key the family's reference does not write).
    pub fn remove(&mut self, key: &str) {
        let k = format!("{}.{key}", self.arch);
        self.kv.retain(|(x, _)| *x != k);
    }
    /// A u32 under the arch prefix.
    pub fn u32(&mut self, key: &str, v: u32) {
        self.set(key, MetaValue::U32(v));
    }
    /// An f32 under the arch prefix (from config's f64, rounded as numpy does).
    pub fn f32(&mut self, key: &str, v: f64) {
        self.set(key, MetaValue::F32(v as f32));
    }
    /// A bool under the arch prefix.
    pub fn bool(&mut self, key: &str, v: bool) {
        self.set(key, MetaValue::Bool(v));
    }
    /// A string under the arch prefix.
    pub fn str(&mut self, key: &str, v: &str) {
        self.set(key, MetaValue::string(v));
    }
    fn into_vec(self) -> Vec<(String, MetaValue)> {
        self.kv
    }
}

/// The generic MoE keys of the converter's `TextModel`: `expert_count`, `expert_used_count`,
/// `expert_group_count` / `expert_group_used_count` (config `n_group` / `topk_group`, when
/// present) and `expert_gating_func` from `scoring_func` (softmax 1, sigmoid 2,
/// sqrtsoftplus 4; another value is refused, as the reference does).
pub fn moe_kvs(m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
    let Some(moe) = &m.moe else { return Ok(()) };
    kv.u32("expert_count", moe.experts);
    kv.u32("expert_used_count", moe.used);
    if let Some(g) = m.cfg.u32_or_zero("n_group")? {
        kv.u32("expert_group_count", g);
    }
    if let Some(g) = m.cfg.u32_or_zero("topk_group")? {
        kv.u32("expert_group_used_count", g);
    }
    for key in ["score_function", "scoring_func", "score_func"] {
        if let Some(f) = m.cfg.str(key)? {
            let id = match f {
                "softmax" => 1,
                "sigmoid" => 2,
                "sqrtsoftplus" => 4,
                other => return Err(bad(key, format!("gating function `{other}` is not supported"))),
            };
            kv.u32("expert_gating_func", id);
            break;
        }
    }
    Ok(())
}

/// One HF tensor a layer may hold.
#[derive(Debug, Clone)]
pub struct Slot {
    /// HF name after `model.layers.N.`.
    pub hf: String,
    /// Other HF names of the same tensor (e.g. transformers-5's renamed modules).
    pub aliases: Vec<String>,
    /// GGUF name after `blk.N.`.
    pub gguf: String,
    /// Expected HF shape.
    pub shape: Vec<usize>,
    /// A checkpoint without it is refused.
    pub required: bool,
    /// Heads of llama's q/k row permutation, if any.
    pub permute_heads: Option<u32>,
    /// A router: stays F32 (the converter's and llama-quantize's rule).
    pub router: bool,
    /// MLA's `kv_b_proj`, written as `attn_k_b` + `attn_v_b` instead of one tensor.
    pub split: Option<KvbSplit>,
    /// The GGUF shape (HF order) when it differs from the checkpoint's but holds the same values
    /// in the same order (Mamba's `conv1d [C,1,K]` → `[C,K]`, `A_log [n]` → `[n,1]`).
    pub out_shape: Option<Vec<usize>>,
    /// A function applied to every value (Mamba's `A_log` → `ssm_a = −exp(A_log)`).
    pub transform: Option<Transform>,
    /// Always written in F32, with the reason (llama.cpp never quantizes it: Mamba's conv1d,
    /// `ssm_a`, `ssm_d`, the grouped `ssm_norm`).
    pub keep_f32: Option<&'static str>,
}

/// An element-wise function the reference applies to a tensor before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// `−exp(x)`: Mamba2 stores `A_log`, llama.cpp's `ssm_a` is `A = −exp(A_log)`.
    NegExp,
}

impl Transform {
    /// Apply in place. `exp` is evaluated in f64 and rounded once to f32 (the correctly rounded
    /// result, the same on every machine). The reference uses torch's f32 `exp`, which is within
    /// 1 ulp but not always correctly rounded: 45 of the 65 280 finite bf16 inputs give a value
    /// 1 ulp away from ours (docs/families.md).
    pub fn apply(self, x: &mut [f32]) {
        match self {
            Transform::NegExp => {
                for v in x {
                    *v = -(f64::from(*v).exp() as f32);
                }
            }
        }
    }
}

/// How `kv_b_proj [heads·(nope+v), kv_lora]` is split (llama.cpp's converter, `DeepseekV2Model`):
/// per head, the first `nope` rows are K and the next `v` rows V; `attn_k_b` is K transposed
/// (torch `[heads, kv_lora, nope]`), `attn_v_b` is V as is (`[heads, v, kv_lora]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvbSplit {
    /// Heads (the HF `num_key_value_heads`, not the GGUF's 1).
    pub heads: usize,
    /// `qk_nope_head_dim`.
    pub nope: usize,
    /// `v_head_dim`.
    pub v: usize,
    /// `kv_lora_rank`.
    pub kv_lora: usize,
}

/// The experts of one MoE layer.
#[derive(Debug, Clone)]
pub struct ExpertSpec {
    /// HF modules that may hold them (`mlp.experts`; MiniMax: `block_sparse_moe.experts`, which
    /// transformers 5 renames `mlp.experts`).
    pub modules: &'static [&'static str],
    /// Per-expert HF names of the gate, up and down projections (`gate_proj`, `w1`, ...); an
    /// empty name: the experts have no such projection (Nemotron-H's up/down-only experts).
    pub names: [&'static str; 3],
    /// Whether the fused transformers-5 layout (`gate_up_proj [E,2F,H]`, `down_proj [E,H,F]`)
    /// is accepted.
    pub fused: bool,
    /// Experts.
    pub n: usize,
    /// Rows of gate/up (`F`).
    pub ff: usize,
    /// Hidden size (`H`).
    pub hidden: usize,
}

/// The GGUF stacked names of gate, up and down.
const EXPS: [&str; 3] = ["ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"];

/// What one decoder layer holds.
#[derive(Debug, Clone, Default)]
pub struct LayerSpec {
    /// Plain tensors.
    pub slots: Vec<Slot>,
    /// Stacked experts, for MoE layers.
    pub experts: Option<ExpertSpec>,
}

impl LayerSpec {
    /// Add a required tensor.
    pub fn req(mut self, hf: &str, gguf: &str, shape: &[usize]) -> Self {
        self.slots.push(Slot {
            hf: hf.into(),
            aliases: Vec::new(),
            gguf: gguf.into(),
            shape: shape.to_vec(),
            required: true,
            permute_heads: None,
            router: false,
            split: None,
            out_shape: None,
            transform: None,
            keep_f32: None,
        });
        self
    }
    /// Add an optional tensor.
    pub fn opt(mut self, hf: &str, gguf: &str, shape: &[usize]) -> Self {
        self = self.req(hf, gguf, shape);
        self.slots.last_mut().expect("just pushed").required = false;
        self
    }
    /// Mark the last tensor for llama's q/k permutation with `heads` heads.
    pub fn permuted(mut self, heads: u32) -> Self {
        self.slots.last_mut().expect("a slot").permute_heads = Some(heads);
        self
    }
    /// Accept `hf` as another name of the last tensor.
    pub fn alias(mut self, hf: &str) -> Self {
        self.slots.last_mut().expect("a slot").aliases.push(hf.into());
        self
    }
    /// Write the last tensor (MLA's `kv_b_proj`) split into `attn_k_b` and `attn_v_b`.
    pub fn split_kv_b(mut self, split: KvbSplit) -> Self {
        self.slots.last_mut().expect("a slot").split = Some(split);
        self
    }
    /// Mark the last tensor a router (kept F32).
    pub fn router(mut self) -> Self {
        self.slots.last_mut().expect("a slot").router = true;
        self
    }
    /// Write the last tensor with GGUF shape `shape` (HF order, same element count and order).
    pub fn reshaped(mut self, shape: &[usize]) -> Self {
        self.slots.last_mut().expect("a slot").out_shape = Some(shape.to_vec());
        self
    }
    /// Apply `t` to every value of the last tensor.
    pub fn transformed(mut self, t: Transform) -> Self {
        self.slots.last_mut().expect("a slot").transform = Some(t);
        self
    }
    /// Always write the last tensor in F32, for `why`.
    pub fn f32(mut self, why: &'static str) -> Self {
        self.slots.last_mut().expect("a slot").keep_f32 = Some(why);
        self
    }
    /// `input_layernorm`, q/k/v/o projections with optional biases (all optional biases: the
    /// converter maps a bias when the checkpoint has one).
    pub fn attention(self, m: &Model) -> Self {
        let (h, q, kv) = (m.hidden as usize, m.q_width(), m.kv_width());
        self.req("input_layernorm.weight", "attn_norm.weight", &[h])
            .req("self_attn.q_proj.weight", "attn_q.weight", &[q, h])
            .req("self_attn.k_proj.weight", "attn_k.weight", &[kv, h])
            .req("self_attn.v_proj.weight", "attn_v.weight", &[kv, h])
            .req("self_attn.o_proj.weight", "attn_output.weight", &[h, q])
            .opt("self_attn.q_proj.bias", "attn_q.bias", &[q])
            .opt("self_attn.k_proj.bias", "attn_k.bias", &[kv])
            .opt("self_attn.v_proj.bias", "attn_v.bias", &[kv])
            .opt("self_attn.o_proj.bias", "attn_output.bias", &[h])
    }
    /// Per-head q/k RMS norms (`ne={head_dim}`), required.
    pub fn qk_norm(self, m: &Model) -> Self {
        let d = m.head_dim as usize;
        self.req("self_attn.q_norm.weight", "attn_q_norm.weight", &[d]).req(
            "self_attn.k_norm.weight",
            "attn_k_norm.weight",
            &[d],
        )
    }
    /// A SwiGLU MLP `mlp.{gate,up,down}_proj` of `ff` rows under `prefix`/`gguf_suffix`.
    pub fn swiglu(self, prefix: &str, gguf_suffix: &str, h: usize, ff: usize) -> Self {
        self.req(&format!("{prefix}.gate_proj.weight"), &format!("ffn_gate{gguf_suffix}.weight"), &[ff, h])
            .req(&format!("{prefix}.up_proj.weight"), &format!("ffn_up{gguf_suffix}.weight"), &[ff, h])
            .req(&format!("{prefix}.down_proj.weight"), &format!("ffn_down{gguf_suffix}.weight"), &[h, ff])
    }
    /// The DeepSeek-style MoE block GLM-4.5 copied: router `mlp.gate` (F32) with its
    /// `e_score_correction_bias` (`exp_probs_b`, required when `bias_required`), fused or
    /// per-expert `mlp.experts`, and `moe.shared_ff`-wide shared experts (`_shexp`) when present.
    pub fn deepseek_moe(self, moe: &Moe, h: usize, bias_required: bool) -> Self {
        let e = moe.experts as usize;
        let s = self.req("mlp.gate.weight", "ffn_gate_inp.weight", &[e, h]).router();
        let s = if bias_required {
            s.req("mlp.gate.e_score_correction_bias", "exp_probs_b.bias", &[e])
        } else {
            s.opt("mlp.gate.e_score_correction_bias", "exp_probs_b.bias", &[e])
        };
        let s = s.experts(ExpertSpec {
            modules: &["mlp.experts"],
            names: ["gate_proj", "up_proj", "down_proj"],
            fused: true,
            n: e,
            ff: moe.expert_ff as usize,
            hidden: h,
        });
        if moe.shared_ff > 0 {
            s.swiglu("mlp.shared_experts", "_shexp", h, moe.shared_ff as usize)
        } else {
            s
        }
    }
    /// Add stacked experts.
    pub fn experts(mut self, e: ExpertSpec) -> Self {
        self.experts = Some(e);
        self
    }
}

/// A run of whole rows of one HF tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// HF tensor name.
    pub hf: String,
    /// First row (rows are the product of all dims but the last).
    pub row0: usize,
    /// Number of rows.
    pub rows: usize,
}

/// One tensor of the GGUF, before types are chosen.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// GGUF name.
    pub name: String,
    /// Shape in HF order (GGUF `ne` reversed); stacked experts are `[E, rows, cols]`.
    pub shape: Vec<usize>,
    /// Its rows, in order, as runs of HF tensor rows (one segment for a plain tensor).
    pub segments: Vec<Segment>,
    /// q/k row permutation (plain tensors only).
    pub perm: Option<QkPermutation>,
    /// A router, kept in F32.
    pub router: bool,
    /// Each segment is a `[rows, cols]` block of its HF tensor written transposed: it becomes
    /// `cols` output rows of `rows` values (`shape[len-2]` = `cols`). MLA's `attn_k_b`.
    pub transposed: bool,
    /// A function applied to every value before it is written.
    pub transform: Option<Transform>,
    /// Always F32, with the reason.
    pub keep_f32: Option<&'static str>,
}

/// A checkpoint tensor as the planner needs it.
#[derive(Debug, Clone, Copy)]
pub struct SourceTensor<'a> {
    /// HF name.
    pub name: &'a str,
    /// HF shape.
    pub shape: &'a [usize],
}

/// HF tensors the converter drops on purpose (RoPE caches that some checkpoints serialize).
pub fn is_skipped_tensor(hf: &str) -> bool {
    hf.ends_with(".rotary_emb.inv_freq")
}

fn tensor_err(tensor: &str, reason: impl Into<String>) -> FormatError {
    FormatError::BadTensor { tensor: tensor.to_owned(), reason: reason.into() }
}

fn shape_err(hf: &str, got: &[usize], want: &[usize]) -> FormatError {
    tensor_err(hf, format!("has shape {got:?} but config.json implies {want:?}"))
}

/// Parse `{prefix}N.rest` (`model.layers.N.rest`) with a canonical decimal N ("01" would collide
/// with "1").
fn split_layer<'a>(prefix: &str, hf: &'a str) -> Option<(u32, &'a str)> {
    let rest = hf.strip_prefix(prefix)?;
    let (n, tail) = rest.split_once('.')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, tail))
}

/// Where an expert tensor goes: stacked tensor index (0 gate, 1 up, 2 down) and its experts.
enum ExpertHit {
    /// `{module}.{e}.{name}.weight`: one expert of one projection.
    One { which: usize, expert: usize },
    /// Fused `gate_up_proj [E,2F,H]`.
    FusedGateUp,
    /// Fused `down_proj [E,H,F]`.
    FusedDown,
}

fn expert_hit(spec: &ExpertSpec, tail: &str) -> Option<ExpertHit> {
    let rest = spec.modules.iter().find_map(|m| tail.strip_prefix(m)?.strip_prefix('.'))?;
    if spec.fused {
        match rest {
            "gate_up_proj" | "gate_up_proj.weight" => return Some(ExpertHit::FusedGateUp),
            "down_proj" | "down_proj.weight" => return Some(ExpertHit::FusedDown),
            _ => {}
        }
    }
    let (e, name) = rest.split_once('.')?;
    if e.is_empty() || (e.len() > 1 && e.starts_with('0')) || !e.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let which = spec.names.iter().position(|n| !n.is_empty() && name.strip_suffix(".weight") == Some(n))?;
    Some(ExpertHit::One { which, expert: e.parse().ok()? })
}

/// Plan every GGUF tensor of `m` from the checkpoint's tensors: names, shapes checked against
/// config.json, q/k permutations and stacked experts as row segments ([`Family::computed_tensors`]
/// come on top).
///
/// Refused (typed errors naming the tensor), before anything is written: a tensor with no GGUF
/// counterpart, a shape that contradicts config.json, a missing required tensor (including one
/// expert's matrix or a router), and a layer that mixes per-expert and fused expert layouts.
pub fn plan_tensors(m: &Model, src: &[SourceTensor<'_>]) -> Result<Vec<PlannedTensor>, FormatError> {
    let (h, v) = (m.hidden as usize, m.vocab as usize);
    let mut out: Vec<PlannedTensor> = Vec::new();
    let mut specs: BTreeMap<u32, LayerSpec> = BTreeMap::new();
    let mut seen: BTreeMap<(u32, String), &str> = BTreeMap::new();
    // (layer, which) → per-expert segments, plus the HF tensor that filled each.
    let mut stacks: BTreeMap<(u32, usize), Vec<Option<Segment>>> = BTreeMap::new();
    let mut layouts: BTreeMap<u32, (bool, &str)> = BTreeMap::new();
    let plain = |name: &str, hf: &str, shape: &[usize]| PlannedTensor {
        name: name.to_owned(),
        shape: shape.to_vec(),
        segments: vec![Segment { hf: hf.to_owned(), row0: 0, rows: rows_of(shape) }],
        perm: None,
        router: false,
        transposed: false,
        transform: None,
        keep_f32: None,
    };
    let prefix = m.family.layer_prefix();
    let [embed_hf, norm_hf] = m.family.global_names();
    for t in src {
        if is_skipped_tensor(t.name) {
            continue;
        }
        let global = match t.name {
            n if n == embed_hf => Some(("token_embd.weight", vec![v, h])),
            "lm_head.weight" => Some(("output.weight", vec![v, h])),
            n if n == norm_hf => Some(("output_norm.weight", vec![h])),
            _ => None,
        };
        if let Some((name, want)) = global {
            if t.shape != want.as_slice() {
                return Err(shape_err(t.name, t.shape, &want));
            }
            if name == "output.weight" && m.tied_embeddings && !m.family.requires_output() {
                // Some tied checkpoints still serialize lm_head: llama.cpp reuses token_embd.
                continue;
            }
            out.push(plain(name, t.name, t.shape));
            continue;
        }
        let no_counterpart = || tensor_err(t.name, format!("has no GGUF counterpart in the `{}` architecture", m.arch));
        let (layer, tail) = split_layer(prefix, t.name).ok_or_else(no_counterpart)?;
        if layer >= m.block_count() && m.family.dropped_layer(m, layer).is_some() {
            continue;
        }
        if layer >= m.block_count() {
            return Err(tensor_err(
                t.name,
                format!("belongs to layer {layer}, but config.json has {} layers", m.block_count()),
            ));
        }
        let spec = specs.entry(layer).or_insert_with(|| m.family.layer(m, layer));
        if let Some(slot) = spec.slots.iter().find(|s| s.hf == tail || s.aliases.iter().any(|a| a == tail)) {
            if let Some(other) = seen.get(&(layer, slot.gguf.clone())) {
                return Err(tensor_err(t.name, format!("and `{other}` are both blk.{layer}.{}", slot.gguf)));
            }
            if t.shape != slot.shape.as_slice() {
                return Err(shape_err(t.name, t.shape, &slot.shape));
            }
            let perm = match slot.permute_heads {
                Some(heads) => Some(permute_qk(heads as usize, t.shape[0]).map_err(|e| retarget(e, t.name))?),
                None => None,
            };
            seen.insert((layer, slot.gguf.clone()), t.name);
            if let Some(k) = slot.split {
                out.extend(split_kv_b(layer, t.name, k));
                continue;
            }
            let shape = slot.out_shape.as_deref().unwrap_or(t.shape);
            if shape.iter().product::<usize>() != t.shape.iter().product::<usize>() {
                return Err(tensor_err(t.name, format!("cannot be written with shape {shape:?}")));
            }
            let mut p = plain(&format!("blk.{layer}.{}", slot.gguf), t.name, shape);
            p.perm = perm;
            p.router = slot.router;
            p.transform = slot.transform;
            p.keep_f32 = slot.keep_f32;
            out.push(p);
            continue;
        }
        let Some(ex) = spec.experts.clone() else { return Err(no_counterpart()) };
        let Some(hit) = expert_hit(&ex, tail) else { return Err(no_counterpart()) };
        let (n, f, hd) = (ex.n, ex.ff, ex.hidden);
        let fused = !matches!(hit, ExpertHit::One { .. });
        match layouts.get(&layer) {
            Some(&(was_fused, other)) if was_fused != fused => {
                return Err(tensor_err(
                    t.name,
                    format!("mixes the fused and per-expert layouts in layer {layer} (also `{other}`)"),
                ))
            }
            _ => {
                layouts.insert(layer, (fused, t.name));
            }
        }
        let mut put = |which: usize, e: usize, seg: Segment| -> Result<(), FormatError> {
            let slots = stacks.entry((layer, which)).or_insert_with(|| vec![None; n]);
            match &slots[e] {
                Some(prev) => Err(tensor_err(t.name, format!("duplicates expert {e} of `{}`", prev.hf))),
                None => {
                    slots[e] = Some(seg);
                    Ok(())
                }
            }
        };
        match hit {
            ExpertHit::One { which, expert } => {
                if expert >= n {
                    return Err(tensor_err(t.name, format!("is expert {expert}, but config.json has {n} experts")));
                }
                let want = if which == 2 { vec![hd, f] } else { vec![f, hd] };
                if t.shape != want.as_slice() {
                    return Err(shape_err(t.name, t.shape, &want));
                }
                put(which, expert, Segment { hf: t.name.to_owned(), row0: 0, rows: want[0] })?;
            }
            ExpertHit::FusedGateUp => {
                let want = [n, 2 * f, hd];
                if t.shape != want {
                    return Err(shape_err(t.name, t.shape, &want));
                }
                for e in 0..n {
                    put(0, e, Segment { hf: t.name.to_owned(), row0: e * 2 * f, rows: f })?;
                    put(1, e, Segment { hf: t.name.to_owned(), row0: e * 2 * f + f, rows: f })?;
                }
            }
            ExpertHit::FusedDown => {
                let want = [n, hd, f];
                if t.shape != want {
                    return Err(shape_err(t.name, t.shape, &want));
                }
                for e in 0..n {
                    put(2, e, Segment { hf: t.name.to_owned(), row0: e * hd, rows: hd })?;
                }
            }
        }
    }

    // Required tensors of every layer, and complete expert stacks.
    for layer in 0..m.block_count() {
        let spec = specs.entry(layer).or_insert_with(|| m.family.layer(m, layer));
        for s in spec.slots.iter().filter(|s| s.required) {
            if !seen.contains_key(&(layer, s.gguf.clone())) {
                return Err(tensor_err(
                    &format!("{prefix}{layer}.{}", s.hf),
                    format!("is missing (needed for blk.{layer}.{})", s.gguf),
                ));
            }
        }
        let Some(ex) = &spec.experts else { continue };
        for (which, gguf) in EXPS.iter().enumerate() {
            if ex.names[which].is_empty() {
                continue; // no such projection (Nemotron-H's ReLU² experts have no gate)
            }
            let slots = stacks.remove(&(layer, which)).unwrap_or_else(|| vec![None; ex.n]);
            let mut segments: Vec<Segment> = Vec::with_capacity(ex.n);
            for (e, s) in slots.into_iter().enumerate() {
                let s = s.ok_or_else(|| {
                    tensor_err(
                        &format!("{prefix}{layer}.{}.{e}.{}.weight", ex.modules[0], ex.names[which]),
                        format!("is missing: expert {e} of {} (needed for blk.{layer}.{gguf})", ex.n),
                    )
                })?;
                // Adjacent rows of one tensor (the fused down_proj) merge into one run.
                match segments.last_mut() {
                    Some(last) if last.hf == s.hf && last.row0 + last.rows == s.row0 => last.rows += s.rows,
                    _ => segments.push(s),
                }
            }
            let (r, c) = if which == 2 { (ex.hidden, ex.ff) } else { (ex.ff, ex.hidden) };
            out.push(PlannedTensor {
                name: format!("blk.{layer}.{gguf}"),
                shape: vec![ex.n, r, c],
                segments,
                perm: None,
                router: false,
                transposed: false,
                transform: None,
                keep_f32: None,
            });
        }
    }
    for (hf, required) in [(embed_hf, "token_embd.weight"), (norm_hf, "output_norm.weight")] {
        if !out.iter().any(|t| t.name == required) {
            return Err(tensor_err(hf, format!("is missing (needed for {required})")));
        }
    }
    if m.family.requires_output() && !out.iter().any(|t| t.name == "output.weight") {
        return Err(tensor_err("lm_head.weight", format!("is missing; the `{}` architecture needs it", m.arch)));
    }
    Ok(out)
}

/// `attn_k_b` (per head, the K rows transposed) and `attn_v_b` (per head, the V rows) of MLA's
/// `kv_b_proj`, as row runs of the one HF tensor.
fn split_kv_b(layer: u32, hf: &str, k: KvbSplit) -> [PlannedTensor; 2] {
    let per_head = k.nope + k.v;
    let runs = |off: usize, rows: usize| -> Vec<Segment> {
        (0..k.heads).map(|h| Segment { hf: hf.to_owned(), row0: h * per_head + off, rows }).collect()
    };
    [
        PlannedTensor {
            name: format!("blk.{layer}.attn_k_b.weight"),
            shape: vec![k.heads, k.kv_lora, k.nope],
            segments: runs(0, k.nope),
            perm: None,
            router: false,
            transposed: true,
            transform: None,
            keep_f32: None,
        },
        PlannedTensor {
            name: format!("blk.{layer}.attn_v_b.weight"),
            shape: vec![k.heads, k.v, k.kv_lora],
            segments: runs(k.nope, k.v),
            perm: None,
            router: false,
            transposed: false,
            transform: None,
            keep_f32: None,
        },
    ]
}

/// The checkpoint tensors the family drops on purpose (MTP layers), each with the reason.
pub fn dropped_tensors<'a>(m: &Model, src: &[SourceTensor<'a>]) -> Vec<(&'a str, &'static str)> {
    src.iter()
        .filter_map(|t| {
            let (layer, _) = split_layer(m.family.layer_prefix(), t.name)?;
            if layer < m.block_count() {
                return None;
            }
            m.family.dropped_layer(m, layer).map(|why| (t.name, why))
        })
        .collect()
}

fn retarget(e: FormatError, hf: &str) -> FormatError {
    match e {
        FormatError::BadTensor { reason, .. } => FormatError::BadTensor { tensor: hf.to_owned(), reason },
        other => other,
    }
}

/// Rows of a tensor: the product of all dimensions but the last (1 for a vector).
pub fn rows_of(shape: &[usize]) -> usize {
    shape.iter().rev().skip(1).product()
}
