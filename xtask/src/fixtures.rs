//! `cargo xtask fixtures [--check]`: deterministic generation of the small checked-in inputs.

/// Regenerate fixtures, or with `--check` fail when the checked-in files differ.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let check = args.iter().any(|a| a == "--check");
    crate::golden::generate(check)?;
    Ok(())
}
