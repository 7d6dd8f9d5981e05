//! tokenizer conversion (placeholder).
