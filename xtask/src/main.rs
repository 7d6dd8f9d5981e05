//! Project tasks, run as `cargo xtask <task>`:
//! - `venv`: create the pinned Python venv of external judges (~/.cache/modelpack/venv).
//! - `fixtures [--check]`: regenerate the checked-in fixtures, or fail if they differ.
//! - `fuzz [--smoke | --seconds N] [TARGET...]`: run the cargo-fuzz targets of `fuzz/` (see `fuzz.rs`).
//! - `test`: the full test suite (venv + `cargo test --workspace` with interop required).
//! - `llama [--print-dir]`: build (or reuse) llama.cpp and the quant harness; print its directory.
//! - `hf-check [FIXTURE...]`: local check (not CI) that HF transformers + compressed-tensors load
//!   our cuda packages on CPU with the weights and logits of our dequantization (see `hfcheck.rs`);
//!   `hf-check families [FAMILY...]` does it for the family fixtures (every weight loaded, logits
//!   cosine against the source).
//! - `family-fixtures [FAMILY...]`: local (torch) regeneration of `fixtures/families/` with
//!   transformers' classes and llama.cpp's converter (see `families.rs`).
//! - `packed-fixtures`: local (torch + compressed-tensors) regeneration of `fixtures/packed/`, the
//!   pack-quantized int4 DeepSeek-V3 source fixture and its converter references (see `families.rs`).
//! - `bench [--size 2GB[,4GB]] [--quick] [--runs N]`: end-to-end benchmarks side by side with the
//!   reference tools (see `bench/mod.rs`).
//! - `quality [--model DIR] [--no-embed]`: weight SQNR and embedding quality of every format ×
//!   method on all-MiniLM-L6-v2 (see `quality.rs`); `quality --e2e [--smoke]`: llama-perplexity
//!   and KL-divergence of every GGUF type × method on SmolLM2-135M variants (see `quality_e2e.rs`).

mod bench;
mod families;
mod fixture_gen;
mod fixtures;
mod fuzz;
mod golden;
mod hfcheck;
mod llama;
mod quality;
mod quality_e2e;
mod util;
mod venv;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = if args.is_empty() { &[][..] } else { &args[1..] };
    match args.first().map(String::as_str) {
        Some("venv") => {
            let py = venv::ensure()?;
            println!("{}", py.display());
            Ok(())
        }
        Some("fixtures") => fixtures::run(rest),
        Some("fuzz") => fuzz::run_cmd(rest),
        Some("test") => venv::test(rest),
        Some("llama") => llama::run(rest),
        Some("hf-check") => hfcheck::run_cmd(rest),
        Some("family-fixtures") => families::regenerate(rest),
        Some("packed-fixtures") => families::regenerate_packed(),
        Some("quality") => quality::run(rest),
        Some("bench") => bench::run(rest),
        _ => anyhow::bail!(
            "usage: cargo xtask <venv|fixtures [--check]|llama [--print-dir]|test|bench [--size 2GB] [--quick]> [...]"
        ),
    }
}
