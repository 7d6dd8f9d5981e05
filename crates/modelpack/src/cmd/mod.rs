//! One module per command group; each exposes clap `Args` and a `run` returning [`crate::exit::CmdResult`].

pub mod caps;
pub mod compare;
pub mod inspect;
pub mod oci;
pub mod quantize;
pub mod sign;
