//! Helpers for the interop tests: the pinned venv's Python (the external judges, found by
//! `modelpack-testkit`'s judge lookup) and the helper scripts in `xtask/py/`.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

#[allow(unused_imports)]
pub use modelpack_testkit::judge::python;

/// A script in `xtask/py/`.
#[allow(unused_imports)] // not every test binary that includes this module runs a script
pub use modelpack_testkit::script;

/// Run `py args...`, panic with its output on failure, return stdout parsed as JSON.
pub fn run_json(py: &Path, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(py).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
