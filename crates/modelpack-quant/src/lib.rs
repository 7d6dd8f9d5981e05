//! Pure quantization compute: block formats, SIMD kernels with scalar twins, error metrics.
//! This crate never touches a file.
