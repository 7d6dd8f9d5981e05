//! The one lookup of the external judges (the pinned Python venv, the llama.cpp build, the
//! compressed-tensors numpy reference). A test that cannot find its judge skips with a message
//! on a developer's machine, but under `MODELPACK_REQUIRE_INTEROP` (set by `cargo xtask test` and
//! so by CI) it fails: a judge that did not run must never look like a check that passed.

use std::path::PathBuf;

/// Whether a missing judge fails the test: `MODELPACK_REQUIRE_INTEROP` is set (to anything).
pub fn required() -> bool {
    std::env::var_os("MODELPACK_REQUIRE_INTEROP").is_some()
}

/// The decision for a judge that may be missing: `found`, or a skip (`None`, with a message
/// naming `what` and `how` to get it), or — when `required` — a panic with the same message.
pub fn decide(found: Option<PathBuf>, required: bool, what: &str, how: &str) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    assert!(!required, "interop required (MODELPACK_REQUIRE_INTEROP) but {what} is missing: {how}");
    eprintln!("skipping: {what} is missing ({how}); under MODELPACK_REQUIRE_INTEROP=1 this fails");
    None
}

/// [`decide`] with [`required`] from the environment, for judges other than the ones below
/// (e.g. a cached model, or a binary built without a feature).
pub fn missing_or(found: Option<PathBuf>, what: &str, how: &str) -> Option<PathBuf> {
    decide(found, required(), what, how)
}

/// A path from the environment variable `var`, which must exist when set (a set variable that
/// points nowhere is a broken setup, never a skip).
fn from_env(var: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(var)?);
    assert!(p.exists(), "{var}={} does not exist", p.display());
    Some(p)
}

/// The pinned venv's Python (`gguf`, `safetensors`, `model_signing`, `numpy`, `sentencepiece`):
/// `MODELPACK_PYTHON`, else `~/.cache/modelpack/venv/bin/python`.
pub fn python() -> Option<PathBuf> {
    let found = from_env("MODELPACK_PYTHON").or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cache/modelpack/venv/bin/python");
        p.exists().then_some(p)
    });
    missing_or(found, "the Python venv", "run `cargo xtask venv`, or `cargo xtask test` which sets MODELPACK_PYTHON")
}

/// The llama.cpp build (`bin/`, `lib/`, the source tree with `convert_hf_to_gguf.py`):
/// `MODELPACK_LLAMA_DIR`.
pub fn llama_dir() -> Option<PathBuf> {
    missing_or(
        from_env("MODELPACK_LLAMA_DIR"),
        "the llama.cpp build (MODELPACK_LLAMA_DIR)",
        "set MODELPACK_LLAMA_DIR=$(cargo xtask llama --print-dir), or run `cargo xtask test`",
    )
}

/// A program of the llama.cpp build, `bin/NAME`; it must exist when the build is found.
pub fn llama_tool(name: &str) -> Option<PathBuf> {
    let exe = llama_dir()?.join("bin").join(name);
    assert!(exe.is_file(), "{} missing: run `cargo xtask llama`", exe.display());
    Some(exe)
}

/// The independent compressed-tensors numpy reference (`compressed_tensors_ref.py`, the design
/// notes' judge; run, never copied into the repository): `MODELPACK_CT_REFERENCE`, else
/// `../shared/reference/compressed_tensors_ref.py` beside the repository.
pub fn ct_reference() -> Option<PathBuf> {
    let found = from_env("MODELPACK_CT_REFERENCE").or_else(|| {
        let p = crate::root().join("../shared/reference/compressed_tensors_ref.py");
        p.exists().then_some(p)
    });
    missing_or(
        found,
        "the compressed-tensors reference (compressed_tensors_ref.py)",
        "set MODELPACK_CT_REFERENCE, or check out the design notes as ../shared beside the repository",
    )
}

#[cfg(test)]
mod tests {
    use super::decide;
    use std::path::PathBuf;

    #[test]
    fn a_found_judge_is_returned_either_way() {
        let p = PathBuf::from("/x");
        assert_eq!(decide(Some(p.clone()), true, "j", "h"), Some(p.clone()));
        assert_eq!(decide(Some(p.clone()), false, "j", "h"), Some(p));
    }

    #[test]
    fn a_missing_judge_skips_when_not_required() {
        assert_eq!(decide(None, false, "j", "h"), None);
    }

    #[test]
    #[should_panic(expected = "interop required (MODELPACK_REQUIRE_INTEROP) but the judge is missing: get it")]
    fn a_missing_judge_fails_when_required() {
        decide(None, true, "the judge", "get it");
    }
}
