//! compressed-tensors pack-quantized schemes (int4 group-wise, int8 per-channel).
