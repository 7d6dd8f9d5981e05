//! llama-family conversion (placeholder).
