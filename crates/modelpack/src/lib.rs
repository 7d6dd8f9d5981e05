//! modelpack as a library: plan a quantization job, run it streaming and in parallel, and seal
//! the result as a signed package. The `modelpack` binary is a thin clap layer over this crate.

pub mod bpw;
pub mod compare;
pub mod cpu;
pub mod cuda;
pub mod exec;
pub mod fault;
pub mod imatrix;
pub mod inspect;
pub mod linears;
pub mod package;
pub mod plan;
pub mod rebuild;
pub mod run;
pub mod signals;
pub mod stats;

pub use modelpack_checkpoint as checkpoint;
pub use modelpack_format as format;
pub use modelpack_quant as quant;
pub use modelpack_sign as sign;
