//! `MODELPACK_SIMD` holding anything but scalar/avx2/avx512 is a usage error of every command
//! (exit 2, one JSON error document with `--json`), and nothing is written.
use crate::common;

#[test]
fn unknown_simd_level_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pkg");
    let o = common::modelpack()
        .env("MODELPACK_SIMD", "avx-512")
        .arg("quantize")
        .arg(common::fixture("tiny-llama"))
        .arg("-o")
        .arg(&out_dir)
        .args(["--target", "cpu", "--scheme", "int8", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document on stdout");
    assert_eq!(doc["status"], "error");
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"].as_str().unwrap().contains("MODELPACK_SIMD=\"avx-512\""), "{doc}");
    assert!(!out_dir.exists(), "nothing may be written");

    let o = common::modelpack()
        .env("MODELPACK_SIMD", "sse4")
        .arg("inspect")
        .arg(common::fixture("tiny-llama"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("MODELPACK_SIMD"));
}

#[test]
fn known_simd_levels_are_accepted() {
    // Above what the CPU has is not an error: the level is clamped (and reported by the library).
    for level in ["scalar", "AVX2", "avx512", ""] {
        let o = common::modelpack()
            .env("MODELPACK_SIMD", level)
            .arg("inspect")
            .arg(common::fixture("tiny-llama"))
            .arg("--json")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{level}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
