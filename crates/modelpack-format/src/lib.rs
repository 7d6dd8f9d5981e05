//! Target file formats: GGUF v3 (cpu) and compressed-tensors safetensors (cuda).
