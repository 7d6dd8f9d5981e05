//! `--scale-dtype` on the cuda target (issue 5): bf16/f16 models keep their dtype for scales, an
//! f32 model gets bf16 scales by default, and `--scale-dtype f32|f16|bf16` chooses explicitly.
//!
//! Judges: `xtask/py/ct_scale_dtype_check.py`, which re-derives every packed module with numpy
//! from the dense checkpoint, reusing the shared compressed-tensors reference
//! (`../shared/reference/compressed_tensors_ref.py`: reader, packer, bf16 rounding) and extending
//! its math to other model and scale dtypes; and the shared reference's own `check` for the
//! bf16-scale cases it covers. Needs the venv and the reference (`common::python`,
//! `common::ct_reference`); skips without them unless `MODELPACK_REQUIRE_INTEROP` is set, then fails.
use crate::common;

use serde_json::Value;
use std::path::Path;

fn quantize(input: &Path, out: &Path, args: &[&str]) -> Value {
    let o = common::modelpack()
        .arg("quantize")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--target", "cuda", "--method", "rtn", "--json", "--no-progress"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The safetensors dtype of every `*.weight_scale`, read from the header with plain JSON.
fn scale_dtypes(pkg: &Path) -> Vec<String> {
    let b = std::fs::read(pkg.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.ends_with(".weight_scale"))
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_owned())
        .collect()
}

fn judge(py: &Path, reference: &Path, dense: &Path, pkg: &Path, want: &str) {
    let script = common::root().join("xtask/py/ct_scale_dtype_check.py");
    let o = std::process::Command::new(py).arg(script).arg(reference).arg(dense).arg(pkg).arg(want).output().unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "judge failed ({want}): {so}{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(so.trim()).unwrap();
    assert!(v["modules"].as_u64().unwrap() >= 14, "{so}");
}

const SCHEMES: &[&[&str]] = &[
    &["--scheme", "int4", "--group-size", "32"],
    &["--scheme", "int4", "--group-size", "64", "--asymmetric"],
    &["--scheme", "int4"],
    &["--scheme", "int8"],
];

#[test]
fn f32_model_gets_bf16_scales_by_default_and_each_explicit_dtype() {
    let Some(py) = common::python() else { return };
    let Some(reference) = common::ct_reference() else { return };
    let dense = common::fixture("tiny-llama-f32");
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for scheme in SCHEMES {
        for (flag, want) in [(None, "BF16"), (Some("f32"), "F32"), (Some("f16"), "F16"), (Some("bf16"), "BF16")] {
            let out = tmp.path().join(format!("p{n}"));
            n += 1;
            let mut args = scheme.to_vec();
            if let Some(f) = flag {
                args.extend(["--scale-dtype", f]);
            }
            let report = quantize(&dense, &out, &args);
            assert_eq!(report["status"], "ok");
            let dts = scale_dtypes(&out);
            assert!(!dts.is_empty() && dts.iter().all(|d| d == want), "{args:?}: {dts:?}");
            judge(&py, &reference, &dense, &out, want);
            // The manifest records the choice.
            let m: Value = serde_json::from_slice(&std::fs::read(out.join("modelpack.json")).unwrap()).unwrap();
            assert_eq!(m["options"]["scale_dtype"], flag.map_or("default".to_owned(), str::to_uppercase));
        }
    }
}

#[test]
fn half_models_keep_their_dtype_unless_told() {
    let Some(py) = common::python() else { return };
    let Some(reference) = common::ct_reference() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, flag, want) in [
        ("tiny-llama", None, "BF16"),
        ("tiny-llama-f16", None, "F16"),
        ("tiny-llama-f16", Some("bf16"), "BF16"),
        ("tiny-llama", Some("f32"), "F32"),
    ] {
        for scheme in [&["--scheme", "int4", "--group-size", "32"][..], &["--scheme", "int4", "--asymmetric"][..]] {
            let out = tmp.path().join(format!("{fixture}-{}-{}", flag.unwrap_or("default"), scheme.len()));
            let mut args = scheme.to_vec();
            if let Some(f) = flag {
                args.extend(["--scale-dtype", f]);
            }
            quantize(&common::fixture(fixture), &out, &args);
            let dts = scale_dtypes(&out);
            assert!(dts.iter().all(|d| d == want), "{fixture} {args:?}: {dts:?}");
            judge(&py, &reference, &common::fixture(fixture), &out, want);
        }
    }
}

/// The shared reference itself (bf16 arithmetic throughout) agrees with the default for a bf16
/// model; for the f32 model it is the judge of the scale bytes whenever its bf16 element
/// rounding cannot change a code, which the generalised check above covers exactly.
#[test]
fn shared_reference_passes_on_bf16_scales() {
    let Some(py) = common::python() else { return };
    let Some(reference) = common::ct_reference() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dense = common::fixture("tiny-llama");
    let out = tmp.path().join("pkg");
    quantize(&dense, &out, &["--scheme", "int4", "--group-size", "32"]);
    let o = std::process::Command::new(&py).arg(&reference).arg("check").arg(&dense).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn scale_dtype_is_refused_for_the_cpu_target() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    let o = common::modelpack()
        .arg("quantize")
        .arg(common::fixture("tiny-llama-f32"))
        .arg("-o")
        .arg(&out)
        .args(["--target", "cpu", "--scheme", "int8", "--scale-dtype", "bf16"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--scale-dtype"));
    assert!(!out.exists());
}
