//! Options of a quantization job and the errors of planning it. No CLI types here: the binary
//! maps its clap arguments onto these (`cmd/quantize.rs`), and [`QuantizeOptions::validate`]
//! refuses contradictory options for every caller, not only the CLI.

use crate::quant::ct::ScaleDtype;
use crate::quant::gguf::GgmlType;
use regex::Regex;

/// The runtime a package is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// GGUF for llama.cpp / Ollama.
    Cpu,
    /// compressed-tensors safetensors for vLLM / HF transformers.
    Cuda,
}

/// Bits per weight of the quantized tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// 8-bit weights (Q8_0 on cpu, W8A16 per-channel on cuda).
    Int8,
    /// 4-bit weights (Q4_0/Q4_1 on cpu, W4A16 group-wise on cuda).
    Int4,
}

/// How codes and scales are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest: byte-identical to the reference tools.
    Rtn,
    /// Error-minimising scale search per block/group (same on-disk format, smaller error).
    Mse,
    /// `mse` with a short search for the symmetric GGUF types (Q4_0, Q5_0, Q8_0): 6 grid
    /// candidates and a closed-form least-squares re-fit instead of 32 and two refinement
    /// rounds of 16, about a sixth of the work. cpu target only; Q4_1 gets the full search.
    MseFast,
}

impl Method {
    /// The name on the command line and in the manifest (`rtn`, `mse`, `mse-fast`).
    pub const fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Mse => "mse",
            Method::MseFast => "mse-fast",
        }
    }

    /// The cuda target's method when `--method` is not given: `mse` for int4 (the quality
    /// gain is largest there), `rtn` for int8 (byte-identical to the reference tools, and mse
    /// gains little at 8 bits).
    pub const fn default_for(scheme: Scheme) -> Method {
        match scheme {
            Scheme::Int4 => Method::Mse,
            Scheme::Int8 => Method::Rtn,
        }
    }

    /// The cpu target's method when `--method` is not given, per GGUF type of the ordinary
    /// weights, as chosen by the end-to-end harness (`cargo xtask quality --e2e`, figures in
    /// docs/quality.md): a search only where its llama-perplexity KL-divergence was not worse than
    /// rtn's beyond noise on every harness model and text. Q4_0: `mse-fast` (the full `mse` lost to
    /// rtn on rot2·readme by ≈ 4σ with 16 chunks; `mse-fast` stayed within noise there and is
    /// better or equal elsewhere). Q4_1: `mse`. Q5_0 — and so Q4_K, whose rows that are not whole
    /// 256-blocks fall back to Q5_0 — lost to rtn on the shipped SmolLM2 weights; Q8_0 gains
    /// nothing measurable; Q6_K has no search.
    pub const fn default_for_gguf(ty: GgmlType) -> Method {
        match ty {
            GgmlType::Q4_0 => Method::MseFast,
            GgmlType::Q4_1 => Method::Mse,
            _ => Method::Rtn,
        }
    }

    /// The method of a job without `--method`: [`Method::default_for`] on cuda; on cpu
    /// [`Method::default_for_gguf`] of the ordinary weights' type (`gguf_type`, else the
    /// scheme's Q8_0 / Q4_0), and `rtn` for a mixture (`q4_k_m`, `--bpw`), whose Q5_0 / Q8_0
    /// tensors are where `mse` lost. With an importance matrix (`imatrix`), `mse-fast` becomes
    /// `mse`, whose search is weighted by it.
    pub const fn default_for_job(
        target: Target,
        scheme: Scheme,
        gguf_type: Option<GgmlType>,
        gguf_mix: Option<GgufMix>,
        imatrix: bool,
    ) -> Method {
        let m = match (target, gguf_mix, gguf_type) {
            (Target::Cuda, ..) => Method::default_for(scheme),
            (Target::Cpu, Some(_), _) => Method::Rtn,
            (Target::Cpu, None, Some(t)) => Method::default_for_gguf(t),
            (Target::Cpu, None, None) => Method::default_for_gguf(match scheme {
                Scheme::Int8 => GgmlType::Q8_0,
                Scheme::Int4 => GgmlType::Q4_0,
            }),
        };
        // `mse-fast` has no importance-weighted form: an `--imatrix` job searches with `mse`.
        if imatrix && matches!(m, Method::MseFast) {
            Method::Mse
        } else {
            m
        }
    }
}

/// A llama.cpp type mixture for the cpu target: per-tensor types chosen by `llama-quantize`'s
/// rules rather than one type for every weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufMix {
    /// `Q4_K_M`: Q4_K weights; `attn_v` and `ffn_down` of the layers llama-quantize's
    /// `use_more_bits` picks, and the output projection, in Q6_K.
    Q4KM,
    /// `--bpw BITS`: per tensor, the GGUF type that minimises the estimated model error under a
    /// total size of `millibits / 1000` bits per weight ([`crate::bpw`]). Stored in thousandths
    /// so the options stay `Eq` and the manifest value is exact.
    Budget {
        /// Bits per weight × 1000.
        millibits: u32,
    },
}

impl GgufMix {
    /// The `--bpw` budget in bits per weight, if this is one.
    pub fn bpw(self) -> Option<f64> {
        match self {
            GgufMix::Budget { millibits } => Some(f64::from(millibits) / 1000.0),
            GgufMix::Q4KM => None,
        }
    }
}

/// Everything that influences the bytes of a package.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Target runtime.
    pub target: Target,
    /// Bits.
    pub scheme: Scheme,
    /// Rounding method.
    pub method: Method,
    /// cpu: explicit GGUF type for ordinary weights (`q4_1`).
    pub gguf_type: Option<GgmlType>,
    /// cpu: a type mixture (`--gguf-type q4_k_m`); overrides `gguf_type`.
    pub gguf_mix: Option<GgufMix>,
    /// cpu: per-tensor type overrides, first match wins.
    pub tensor_types: Vec<(Regex, GgmlType)>,
    /// Tensors kept in source precision (cpu) or left unquantized and ignored (cuda).
    pub keep: Vec<Regex>,
    /// cuda: group size for int4.
    pub group_size: usize,
    /// cuda: asymmetric (zero points).
    pub asymmetric: bool,
    /// cuda: dtype of `weight_scale`; `None` is the default policy
    /// ([`crate::cuda::default_scale_dtype`]: the source dtype, bf16 for f32 sources).
    pub scale_dtype: Option<ScaleDtype>,
    /// Shard size limit in bytes. cuda: safetensors shards. cpu: llama.cpp's split GGUF (the
    /// limit counts tensor data, as `llama-gguf-split --split-max-size`); `u64::MAX` is one file.
    pub max_shard_size: u64,
    /// cuda: re-quantize a checkpoint that already has a quantization_config.
    pub force_requantize: bool,
    /// cuda: write a package even when most Linear bytes inside the layer stack stay dense
    /// (`--keep` patterns, routers, MTP layers); without it that is an input error, because such a
    /// package is mostly unquantized while its config says it is quantized.
    pub allow_dense: bool,
    /// Compute per-tensor error metrics (costs a dequantize pass).
    pub metrics: bool,
    /// llama.cpp importance matrix (`--imatrix`): per-column weights for the quantizers.
    pub imatrix: Option<std::sync::Arc<crate::imatrix::ImatrixInput>>,
}

/// The largest cuda int4 group size accepted (compressed-tensors stores it as an int; a group
/// wider than any real row is a typo).
pub const MAX_GROUP_SIZE: usize = 1_000_000;

impl QuantizeOptions {
    /// Refuse options that contradict each other or would be silently ignored. Planning
    /// ([`crate::cpu::plan`], [`crate::cuda::plan`], so [`crate::run::quantize`]) calls it, so a
    /// library caller gets the same refusals as the CLI:
    /// - `scale_dtype` on the cpu target (GGUF block scales are always f16);
    /// - a cuda group size outside 1..=[`MAX_GROUP_SIZE`] (0 would otherwise fall through to
    ///   per-channel scales);
    /// - an importance matrix on the cuda target with `rtn`, which writes compressed-tensors'
    ///   own, unweighted bytes (only `mse` uses the weights there).
    pub fn validate(&self) -> Result<(), PlanError> {
        let refuse = |m: &str| Err(PlanError::Input(m.to_owned()));
        if self.target == Target::Cpu && self.scale_dtype.is_some() {
            return refuse("--scale-dtype applies to --target cuda (GGUF block scales are always f16)");
        }
        if self.target == Target::Cuda && !(1..=MAX_GROUP_SIZE).contains(&self.group_size) {
            return refuse("--group-size must be positive");
        }
        if let Some(GgufMix::Budget { millibits }) = self.gguf_mix {
            if self.target != Target::Cpu {
                return refuse(
                    "--bpw applies to --target cpu (compressed-tensors has no per-tensor type choice here yet)",
                );
            }
            if self.gguf_type.is_some() {
                return refuse("--bpw chooses every tensor's type: it cannot be combined with --gguf-type");
            }
            if millibits > 16_000 {
                return refuse("--bpw above 16 (F16) is not a quantization budget");
            }
        }
        if self.method == Method::MseFast && self.target != Target::Cpu {
            return refuse("--method mse-fast applies to --target cpu (use --method mse for compressed-tensors)");
        }
        if self.method == Method::MseFast && self.imatrix.is_some() {
            return refuse("--method mse-fast has no importance-weighted search: use --method mse with --imatrix");
        }
        if self.imatrix.is_some() && self.target == Target::Cuda && self.method != Method::Mse {
            return refuse(
                "--imatrix with --target cuda needs --method mse (rtn writes compressed-tensors' own bytes, which have no importance weighting)",
            );
        }
        Ok(())
    }

    /// The options as recorded in the manifest (everything that changes the bytes).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "gguf_type": if self.gguf_mix == Some(GgufMix::Q4KM) { Some("Q4_K_M") } else { self.gguf_type.map(|t| t.name()) },
            "tensor_types": self.tensor_types.iter().map(|(r, t)| format!("{}={}", r.as_str(), t.name())).collect::<Vec<_>>(),
            "keep": self.keep.iter().map(|r| r.as_str().to_string()).collect::<Vec<_>>(),
            "group_size": if self.target == Target::Cuda && self.scheme == Scheme::Int4 { Some(self.group_size) } else { None },
            "asymmetric": self.asymmetric,
            "scale_dtype": if self.target == Target::Cuda {
                Some(self.scale_dtype.map_or("default", ScaleDtype::safetensors_name))
            } else {
                None
            },
            // cpu: recorded only when splitting, so manifests of single-file packages are unchanged.
            "max_shard_size": if self.target == Target::Cuda || self.max_shard_size != u64::MAX { Some(self.max_shard_size) } else { None },
        });
        // Only when given, so manifests of jobs without a budget are unchanged.
        if let Some(GgufMix::Budget { millibits }) = self.gguf_mix {
            v["bpw_millibits"] = millibits.into();
        }
        // Only when given, so manifests of jobs without a matrix are unchanged.
        if let Some(m) = &self.imatrix {
            v["imatrix"] = m.to_json();
        }
        v
    }
}

/// Why a job cannot be planned: always the input's or the options' fault (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A problem with the checkpoint or the options, explained.
    #[error("{0}")]
    Input(String),
    /// The target format refused the checkpoint (unknown architecture, bad config, ...).
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// A kernel refused a shape.
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's table (docs/quality.md): a change here must come with new figures there.
    #[test]
    fn default_methods_per_target_and_type() {
        use GgmlType as T;
        let cpu = |t, m| Method::default_for_job(Target::Cpu, Scheme::Int4, t, m, false);
        assert_eq!(cpu(None, None), Method::MseFast);
        assert_eq!(Method::default_for_job(Target::Cpu, Scheme::Int4, None, None, true), Method::Mse);
        assert_eq!(Method::default_for_job(Target::Cpu, Scheme::Int8, None, None, false), Method::Rtn);
        for (t, m) in
            [(T::Q4_0, Method::MseFast), (T::Q4_1, Method::Mse), (T::Q5_0, Method::Rtn), (T::Q8_0, Method::Rtn)]
        {
            assert_eq!(cpu(Some(t), None), m, "{t}");
        }
        for t in [T::Q4_K, T::Q6_K, T::F16, T::F32, T::BF16] {
            assert_eq!(cpu(Some(t), None), Method::Rtn, "{t}");
        }
        assert_eq!(cpu(None, Some(GgufMix::Q4KM)), Method::Rtn);
        assert_eq!(cpu(None, Some(GgufMix::Budget { millibits: 4500 })), Method::Rtn);
        assert_eq!(Method::default_for_job(Target::Cuda, Scheme::Int4, None, None, false), Method::Mse);
        assert_eq!(Method::default_for_job(Target::Cuda, Scheme::Int4, None, None, true), Method::Mse);
        assert_eq!(Method::default_for_job(Target::Cuda, Scheme::Int8, None, None, false), Method::Rtn);
    }
}
