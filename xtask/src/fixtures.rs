//! `cargo xtask fixtures [--check]`: deterministic generation of the small checked-in inputs.
//!
//! The tiny checkpoints and the hostile corpus come from [`crate::fixture_gen`]; golden
//! vectors from the reference tools come from [`crate::golden`]. `--check` regenerates into a
//! temporary directory and lists every file that differs, is missing or is extra.

use crate::fixture_gen::{generate_all, OWNED};
use crate::util::root;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Regenerate fixtures, or with `--check` fail when the checked-in files differ.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let check = args.iter().any(|a| a == "--check");
    let fixtures = root().join("fixtures");
    if check {
        let tmp = std::env::temp_dir().join(format!("modelpack-fixtures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = generate_all(&tmp).and_then(|()| compare(&tmp, &fixtures));
        let _ = std::fs::remove_dir_all(&tmp);
        result?;
    } else {
        for d in OWNED {
            let p = fixtures.join(d);
            if p.exists() {
                std::fs::remove_dir_all(&p)?;
            }
        }
        generate_all(&fixtures)?;
        let total: u64 = OWNED.iter().flat_map(|d| files(&fixtures.join(d))).map(|f| size(&f)).sum();
        eprintln!("xtask: wrote {} ({} bytes)", OWNED.join(", "), total);
    }
    crate::golden::generate(check)?;
    // Made with torch (`cargo xtask family-fixtures`), so only checked here.
    crate::families::check()?;
    Ok(())
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Regular files under `dir`, recursively, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Compare the owned directories of `fresh` with `fixtures`; error lists every difference.
fn compare(fresh: &Path, fixtures: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for d in OWNED {
        let rel = |base: &Path| -> BTreeSet<PathBuf> {
            files(&base.join(d)).into_iter().filter_map(|p| p.strip_prefix(base).ok().map(Path::to_path_buf)).collect()
        };
        let want = rel(fresh);
        let have = rel(fixtures);
        for f in want.difference(&have) {
            problems.push(format!("missing: fixtures/{}", f.display()));
        }
        for f in have.difference(&want) {
            problems.push(format!("extra:   fixtures/{}", f.display()));
        }
        for f in want.intersection(&have) {
            if std::fs::read(fresh.join(f))? != std::fs::read(fixtures.join(f))? {
                problems.push(format!("differs: fixtures/{}", f.display()));
            }
        }
    }
    anyhow::ensure!(
        problems.is_empty(),
        "fixtures are out of date (run `cargo xtask fixtures`):\n  {}",
        problems.join("\n  ")
    );
    eprintln!("xtask: fixtures up to date");
    Ok(())
}
