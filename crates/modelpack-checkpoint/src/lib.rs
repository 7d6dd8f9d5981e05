//! Reading Hugging Face checkpoints (config.json and single or sharded safetensors) via mmap.
