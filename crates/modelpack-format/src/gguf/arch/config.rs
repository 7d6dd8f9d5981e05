//! Reading config.json the way every family needs it: typed fields with clear errors, the two
//! RoPE spellings (4.x top-level `rope_theta`/`rope_scaling`/`partial_rotary_factor`, and
//! transformers-5 `rope_parameters`), and `text_config` merged over the top level.

use crate::FormatError;
use serde_json::{Map, Value};

/// A config.json error naming the key.
pub fn bad(key: &str, reason: impl Into<String>) -> FormatError {
    FormatError::BadConfig { key: key.into(), reason: reason.into() }
}

/// config.json as the converter sees it: `text_config` keys merged over the top level, so
/// multimodal wrappers read like their text model.
#[derive(Debug, Clone)]
pub struct HfConfig {
    raw: Value,
}

impl HfConfig {
    /// Wrap a parsed config.json (a JSON object; anything else reads as empty).
    pub fn new(config: &Value) -> Self {
        let mut raw = config.clone();
        if let (Some(obj), Some(text)) =
            (raw.as_object_mut(), config.get("text_config").and_then(Value::as_object).cloned())
        {
            for (k, v) in text {
                obj.insert(k, v);
            }
        }
        HfConfig { raw }
    }

    /// The merged JSON.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// A field, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }

    /// A positive integer that fits GGUF's u32 fields.
    pub fn u32(&self, key: &str) -> Result<Option<u32>, FormatError> {
        positive_u32(self.get(key), key)
    }

    /// A required positive u32.
    pub fn req_u32(&self, key: &str) -> Result<u32, FormatError> {
        self.u32(key)?.ok_or_else(|| bad(key, "is missing"))
    }

    /// The first present of `keys` (the converter's `find_hparam` order).
    pub fn u32_any(&self, keys: &[&str]) -> Result<Option<u32>, FormatError> {
        for k in keys {
            if let Some(v) = self.u32(k)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// A non-negative integer (zero allowed: e.g. `first_k_dense_replace`, `n_shared_experts`).
    pub fn u32_or_zero(&self, key: &str) -> Result<Option<u32>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad(key, format!("must be a non-negative 32-bit integer, found {v}"))),
        }
    }

    /// A finite number.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, FormatError> {
        finite(self.get(key), key)
    }

    /// A bool (absent → `None`).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(bad(key, format!("is not a bool: {v}"))),
        }
    }

    /// A string (absent → `None`).
    pub fn str(&self, key: &str) -> Result<Option<&str>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(bad(key, format!("is not a string: {v}"))),
        }
    }

    /// The RoPE parameter object: transformers ≥ 5 nests everything in `rope_parameters`, older
    /// configs have a `rope_scaling` object (both absent → `None`).
    pub fn rope_params(&self) -> Option<&Map<String, Value>> {
        self.get("rope_parameters")
            .and_then(Value::as_object)
            .or_else(|| self.get("rope_scaling").and_then(Value::as_object))
    }

    /// `rope_theta`: top level first, then `rope_parameters.rope_theta`, else 10000 (the
    /// transformers and llama.cpp default).
    pub fn rope_theta(&self) -> Result<f64, FormatError> {
        if let Some(t) = self.f64("rope_theta")? {
            return Ok(t);
        }
        if let Some(p) = self.get("rope_parameters").and_then(Value::as_object) {
            if let Some(t) = finite(p.get("rope_theta"), "rope_parameters.rope_theta")? {
                return Ok(t);
            }
        }
        Ok(10000.0)
    }

    /// `partial_rotary_factor`: top level, then inside the RoPE parameters.
    pub fn partial_rotary_factor(&self) -> Result<Option<f64>, FormatError> {
        if let Some(f) = self.f64("partial_rotary_factor")? {
            return Ok(Some(f));
        }
        match self.rope_params() {
            Some(p) => finite(p.get("partial_rotary_factor"), "rope_parameters.partial_rotary_factor"),
            None => Ok(None),
        }
    }

    /// The RoPE type (`rope_type`, or the legacy `type`), `None` for default RoPE.
    pub fn rope_type(&self) -> Option<&str> {
        let p = self.rope_params()?;
        p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).filter(|t| *t != "default")
    }

    /// `tie_word_embeddings`, `default` when absent (the family's transformers class default).
    pub fn tied_embeddings(&self, default: bool) -> Result<bool, FormatError> {
        Ok(self.bool("tie_word_embeddings")?.unwrap_or(default))
    }
}

/// A positive integer that fits u32.
pub fn positive_u32(v: Option<&Value>, key: &str) -> Result<Option<u32>, FormatError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(key, format!("must be a positive 32-bit integer, found {v}"))),
    }
}

/// A finite number.
pub fn finite(v: Option<&Value>, key: &str) -> Result<Option<f64>, FormatError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| bad(key, format!("must be a finite number, found {x}"))),
    }
}
