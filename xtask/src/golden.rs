//! Golden vectors from the reference tools (the `gguf` package, compressed-tensors fixtures).
use crate::util::{root, run};
use anyhow::Context;
use std::path::Path;
use std::process::Command;

/// Write (or check) `fixtures/golden/`.
pub fn generate(check: bool) -> anyhow::Result<()> {
    gguf_golden(check)?;
    ct_golden(check)?;
    Ok(())
}

/// `fixtures/golden/gguf/`: `xtask/py/golden_gguf.py` run with the venv's pinned `gguf` package.
pub fn gguf_golden(check: bool) -> anyhow::Result<()> {
    py_golden("golden_gguf.py", "gguf", check)
}

/// `fixtures/golden/ct/`: `xtask/py/golden_ct.py` (our own numpy implementation of the
/// compressed-tensors 0.20 math, cross-checked against the library-written fixtures) for the
/// schemes those fixtures do not cover.
pub fn ct_golden(check: bool) -> anyhow::Result<()> {
    py_golden("golden_ct.py", "ct", check)
}

/// Run `xtask/py/SCRIPT OUTDIR` in the venv into `fixtures/golden/NAME`; with `check`, generate
/// into a scratch directory instead and fail on any difference from the checked-in files.
fn py_golden(script: &str, name: &str, check: bool) -> anyhow::Result<()> {
    let py = crate::venv::ensure()?;
    let script = root().join("xtask/py").join(script);
    let dest = root().join("fixtures/golden").join(name);
    if !check {
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        run(Command::new(&py).arg(&script).arg(&dest))?;
        eprintln!("xtask: wrote {}", dest.display());
        return Ok(());
    }
    let scratch = std::env::temp_dir().join(format!("modelpack-golden-{name}-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    run(Command::new(&py).arg(&script).arg(&scratch))?;
    let result = compare_dirs(&scratch, &dest);
    std::fs::remove_dir_all(&scratch).ok();
    result
}

/// Fail unless the two directories hold the same file names with the same bytes.
fn compare_dirs(fresh: &Path, checked_in: &Path) -> anyhow::Result<()> {
    let names = |d: &Path| -> anyhow::Result<Vec<String>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            v.push(e?.file_name().to_string_lossy().into_owned());
        }
        v.sort();
        Ok(v)
    };
    let (a, b) = (names(fresh)?, names(checked_in)?);
    anyhow::ensure!(a == b, "{}: files differ from a fresh generation: {a:?} vs {b:?}", checked_in.display());
    let mut differ = Vec::new();
    for n in &a {
        if std::fs::read(fresh.join(n))? != std::fs::read(checked_in.join(n))? {
            differ.push(n.clone());
        }
    }
    anyhow::ensure!(
        differ.is_empty(),
        "{}: stale golden files {differ:?}; run `cargo xtask fixtures`",
        checked_in.display()
    );
    eprintln!("xtask: {} matches a fresh generation", checked_in.display());
    Ok(())
}
