//! `config.json`: the typed llama-family fields plus the raw JSON, so nothing is ever lost.

use crate::CheckpointError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// The fields of a Hugging Face `config.json` that planning and the GGUF metadata need.
///
/// Every field is optional because HF allows absence (and older configs omit newer fields);
/// [`ModelConfig::raw`] keeps the whole document in file order for fields not typed here and
/// for writing an edited copy (e.g. adding `quantization_config`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Model classes, e.g. `["LlamaForCausalLM"]`.
    pub architectures: Option<Vec<String>>,
    /// Family name, e.g. `"llama"`, `"qwen2"`.
    pub model_type: Option<String>,
    /// Embedding width.
    pub hidden_size: Option<usize>,
    /// MLP inner width.
    pub intermediate_size: Option<usize>,
    /// Transformer blocks.
    pub num_hidden_layers: Option<usize>,
    /// Query heads.
    pub num_attention_heads: Option<usize>,
    /// Key/value heads (GQA); absent means equal to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// RoPE base frequency.
    pub rope_theta: Option<f64>,
    /// Vocabulary rows of the embedding.
    pub vocab_size: Option<usize>,
    /// Trained context length.
    pub max_position_embeddings: Option<usize>,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: Option<bool>,
    /// Weight dtype as HF names it (`"bfloat16"`); newer transformers write `dtype` instead,
    /// which is read here too.
    pub torch_dtype: Option<String>,
    /// Per-head width when it is not `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// The whole document, key order preserved.
    pub raw: serde_json::Value,
}

impl ModelConfig {
    /// Parse `config.json` text; `path` is for messages only.
    pub fn parse(path: &Path, text: &str) -> Result<ModelConfig, CheckpointError> {
        let bad = |message: String| CheckpointError::BadConfig { path: path.to_path_buf(), message };
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !raw.is_object() {
            return Err(bad("top level is not a JSON object".into()));
        }
        let cfg = ModelConfig {
            architectures: field(&raw, "architectures").map_err(bad)?,
            model_type: field(&raw, "model_type").map_err(bad)?,
            hidden_size: field(&raw, "hidden_size").map_err(bad)?,
            intermediate_size: field(&raw, "intermediate_size").map_err(bad)?,
            num_hidden_layers: field(&raw, "num_hidden_layers").map_err(bad)?,
            num_attention_heads: field(&raw, "num_attention_heads").map_err(bad)?,
            num_key_value_heads: field(&raw, "num_key_value_heads").map_err(bad)?,
            rms_norm_eps: field(&raw, "rms_norm_eps").map_err(bad)?,
            rope_theta: field(&raw, "rope_theta").map_err(bad)?,
            vocab_size: field(&raw, "vocab_size").map_err(bad)?,
            max_position_embeddings: field(&raw, "max_position_embeddings").map_err(bad)?,
            tie_word_embeddings: field(&raw, "tie_word_embeddings").map_err(bad)?,
            torch_dtype: match field(&raw, "torch_dtype").map_err(bad)? {
                Some(d) => Some(d),
                None => field(&raw, "dtype").map_err(bad)?,
            },
            head_dim: field(&raw, "head_dim").map_err(bad)?,
            raw: serde_json::Value::Null,
        };
        let mut cfg = cfg;
        cfg.raw = raw;
        Ok(cfg)
    }

    /// Read and parse `config.json` from a file.
    pub fn read(path: &Path) -> Result<ModelConfig, CheckpointError> {
        ModelConfig::read_with_limits(path, &crate::Limits::default())
    }

    /// [`ModelConfig::read`] with explicit caps on the file's size and JSON nesting.
    pub fn read_with_limits(path: &Path, limits: &crate::Limits) -> Result<ModelConfig, CheckpointError> {
        let bytes = crate::limits::read_json_bytes(path, limits)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| CheckpointError::BadConfig { path: path.to_path_buf(), message: e.to_string() })?;
        ModelConfig::parse(path, text)
    }

    /// The first listed architecture class.
    pub fn architecture(&self) -> Option<&str> {
        self.architectures.as_ref()?.first().map(String::as_str)
    }

    /// Key/value heads, defaulting to the attention head count as HF does.
    pub fn kv_heads(&self) -> Option<usize> {
        self.num_key_value_heads.or(self.num_attention_heads)
    }

    /// Per-head width: `head_dim` if given, else `hidden_size / num_attention_heads`.
    pub fn head_dim_or_default(&self) -> Option<usize> {
        self.head_dim.or_else(|| self.hidden_size?.checked_div(self.num_attention_heads?))
    }
}

/// One typed field: absent or `null` is `None`; a wrong type is an error naming the field.
fn field<T: DeserializeOwned>(raw: &serde_json::Value, name: &str) -> Result<Option<T>, String> {
    match raw.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| format!("field {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_fields_and_raw_kept() {
        let text = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,
            "head_dim":null,"rms_norm_eps":1e-05,"custom_field":{"a":1},"dtype":"bfloat16"}"#;
        let c = ModelConfig::parse(Path::new("config.json"), text).unwrap();
        assert_eq!(c.architecture(), Some("LlamaForCausalLM"));
        assert_eq!(c.hidden_size, Some(64));
        assert_eq!(c.kv_heads(), Some(4));
        assert_eq!(c.head_dim_or_default(), Some(16));
        assert_eq!(c.rms_norm_eps, Some(1e-5));
        assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
        assert_eq!(c.raw["custom_field"]["a"], 1);
        let keys: Vec<_> = c.raw.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys[0], "architectures");
        assert_eq!(keys.last().unwrap(), "dtype");
    }

    #[test]
    fn wrong_types_are_errors_naming_the_field() {
        let e = ModelConfig::parse(Path::new("x/config.json"), r#"{"hidden_size":"64"}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("x/config.json") && msg.contains("\"hidden_size\""), "{msg}");
        assert!(ModelConfig::parse(Path::new("c"), "[1]").is_err());
        assert!(ModelConfig::parse(Path::new("c"), "{").is_err());
    }
}
