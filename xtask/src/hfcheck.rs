//! `cargo xtask hf-check [FIXTURE...]`: a local check, not part of CI, that HF transformers with
//! the compressed-tensors library loads our cuda packages on CPU, decompresses every quantized
//! Linear to what numpy's dequantization of the packed words says (bit for bit), and computes the
//! same logits as the dense model holding those dequantized weights
//! (`xtask/py/hf_load_check.py`), for each scheme and both loading paths.
//!
//! Not in CI because of its weight: PyPI's only torch wheel for Linux bundles CUDA (the CPU-only
//! index is not reachable here), so the venv pulls about 2.9 GB of wheels (torch 2.15 with its
//! nvidia-* and triton dependencies) into `~/.cache/modelpack/hf-venv`. It is built once and
//! reused while the pinned versions below stay the same.
use crate::util::{cache_dir, root, run};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the check venv holds; a change rebuilds it.
/// sentencepiece, protobuf, pyyaml and tqdm are what llama.cpp's `convert_hf_to_gguf.py` imports
/// besides torch (`cargo xtask family-fixtures` runs it in this venv).
const PINS: &[&str] = &[
    "torch==2.15.0",
    "transformers==5.23.0",
    "compressed-tensors==0.20.0",
    "numpy",
    "sentencepiece",
    "protobuf",
    "pyyaml",
    "tqdm",
];

/// Package variants checked, per fixture.
const SCHEMES: &[&[&str]] = &[
    &["--scheme", "int4", "--method", "rtn"],
    &["--scheme", "int4", "--group-size", "32", "--method", "rtn"],
    &["--scheme", "int4", "--group-size", "32", "--asymmetric", "--method", "rtn"],
    &["--scheme", "int8", "--method", "rtn"],
    &["--scheme", "int4", "--group-size", "64", "--method", "mse"],
];

/// Loading paths of `hf_load_check.py`: as a user loads (compressed-tensors matches modules to
/// config groups and decompresses), and transformers' dequantize-at-load option.
const MODES: &[&str] = &["default", "dequantize"];

/// Upstream limitations measured with transformers 5.24 and compressed-tensors 0.20: these
/// combinations fail inside the libraries for any checkpoint of that shape, compressed-tensors'
/// own output included, so they are reported, not failed.
fn known_limitation(scheme: &[&str], mode: &str, fixture_has_fallback: bool) -> Option<&'static str> {
    let asym = scheme.contains(&"--asymmetric");
    if asym && mode == "default" {
        return Some(
            "default load allocates unpacked zero points [out, groups] but pack-quantized stores them \
             packed along dim 0 (the library's own compressor does too): size mismatch",
        );
    }
    if fixture_has_fallback && mode == "dequantize" {
        return Some(
            "dequantize-at-load applies the first config group to every dense module, ignoring a \
             fallback module's own group (per-channel when in_features % group != 0)",
        );
    }
    None
}

/// Whether a package has more than one config group (some module fell back to per-channel).
fn has_fallback(pkg: &Path) -> anyhow::Result<bool> {
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(pkg.join("config.json"))?)?;
    Ok(c["quantization_config"]["config_groups"].as_object().map_or(0, serde_json::Map::len) > 1)
}

/// Create (or reuse) the torch venv; returns its python.
pub fn ensure_venv() -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("hf-venv");
    let py = dir.join("bin/python");
    let marker = dir.join(".modelpack-pins");
    let want = PINS.join("\n");
    if py.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(py);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("xtask hf-check: creating {} (downloads ~2.9 GB of torch/CUDA wheels from PyPI)", dir.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    run(Command::new(&py).args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]).args(PINS))?;
    std::fs::write(&marker, want)?;
    Ok(py)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn modelpack() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(root()).args(["build", "-q", "--profile", "ci", "-p", "modelpack"]))?;
    Ok(target_dir().join("ci").join("modelpack"))
}

/// The shared numpy compressed-tensors reference: `MODELPACK_CT_REFERENCE` (as the test kit
/// reads it; a git worktree has no `../shared` beside it), else `../shared/reference/`.
fn ct_reference() -> PathBuf {
    std::env::var_os("MODELPACK_CT_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/reference/compressed_tensors_ref.py"))
}

/// Family fixtures (`fixtures/families/`) and the per-expert twin a fused one is judged against.
const FAMILIES: &[(&str, &str)] = &[
    ("qwen3", "qwen3"),
    ("qwen3-moe", "qwen3-moe"),
    ("qwen3-moe-fused", "qwen3-moe"),
    ("glm4", "glm4"),
    ("glm4-moe", "glm4-moe"),
    ("glm4-moe-fused", "glm4-moe"),
    ("minimax-m2", "minimax-m2"),
    ("minimax-m2-fused", "minimax-m2"),
    // Nemotron-H (Mamba2 hybrid): Mamba in_proj/out_proj, attention, ReLU² MLP, non-gated routed
    // experts and the shared expert packed; conv1d, A_log/D/dt_bias and norms copied.
    ("nemotron-h", "nemotron-h"),
    ("nemotron-h-moe", "nemotron-h-moe"),
];

// ---- issue 15: DeepSeek-V3 / Kimi K2 sources (kept apart from FAMILIES to ease merges) ----

/// `quantize` arguments and the logits cosine the package must reach against its source.
type CheckedScheme = (&'static [&'static str], f64);

/// DeepSeek-V3-shaped sources, as directories under `fixtures/`: the bf16 model, its FP8 twin
/// (F8_E4M3 + 128x128 `weight_scale_inv`), Kimi K2 (`model_type` kimi_k2, remote-code config;
/// loaded as DeepseekV3) and the compressed-tensors pack-quantized int4 source. A quantized
/// source is judged against the dense twin the check script decodes from it (`--write-twin`).
/// Schemes: int8, int4 g128 (the default group: modules of 96 or 192 inputs fall back to
/// per-channel, a second config group) and int4 g32 (no fallback, so transformers'
/// dequantize-at-load path is checked too; for the packed source it is its own scheme, passed
/// through unchanged), each with its logits cosine bound against the source.
///
/// Why 0.85, not 0.9, for DeepSeek-V3's int4: its routing (sigmoid, `n_group` 2 / `topk_group` 1
/// of 4 experts) flips on small input changes. compressed-tensors' own int4 g32 of the same
/// weights (`fixtures/packed/deepseek-v3-int4`, which even keeps the dense MLP and shared experts
/// bf16) reaches only 0.906 against it; ours are bit-identical to compressed-tensors' math (the
/// numpy judge) and load exactly as their numpy dequantization (`vs_numpy_dequant`). The packed
/// source re-quantized to int4 g128 rounds twice (its g32 codes, then ours): 0.8 (measured 0.844).
const DEEPSEEK_SOURCES: &[(&str, &[CheckedScheme])] = &[
    ("families/deepseek-v3", &[(INT8, 0.99), (INT4_G128, 0.85), (INT4_G32, 0.85)]),
    ("families/deepseek-v3-fp8", &[(INT8, 0.99), (INT4_G128, 0.85), (INT4_G32, 0.85)]),
    ("families/kimi-k2", &[(INT8, 0.99), (INT4_G128, 0.9), (INT4_G32, 0.9)]),
    ("packed/deepseek-v3-int4", &[(INT8, 0.99), (INT4_G128, 0.8), (INT4_G32, 0.9)]),
];
const INT8: &[&str] = &["--scheme", "int8", "--method", "rtn"];
const INT4_G128: &[&str] = &["--scheme", "int4", "--method", "rtn"];
const INT4_G32: &[&str] = &["--scheme", "int4", "--group-size", "32", "--method", "rtn"];

// ---- end of issue 15's block ----

/// Schemes of the family check and the logits cosine each must reach against the source.
const FAMILY_SCHEMES: &[(&[&str], f64)] =
    &[(&["--scheme", "int8", "--method", "rtn"], 0.99), (&["--scheme", "int4", "--method", "rtn"], 0.9)];

/// Whether a checkpoint's config.json already has a `quantization_config` (FP8 or packed).
fn is_quantized(dir: &Path) -> anyhow::Result<bool> {
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    Ok(c.get("quantization_config").is_some())
}

/// Whether any module of the package is a pass-through of the source's packed tensors.
fn has_pass_through(pkg: &Path) -> anyhow::Result<bool> {
    let m = std::fs::read_to_string(pkg.join("modelpack.json"))?;
    Ok(m.contains("passed through unchanged"))
}

/// `cargo xtask hf-check families [FAMILY...]`: every family fixture, int8 and int4, both loading
/// paths: no missing or unexpected weights (beyond the source's own MTP layer), logits cosine
/// against the source (`xtask/py/hf_family_check.py`); then the numpy judge: the shared
/// reference against the bf16 source, or `ct_scale_dtype_check.py` against the dense twin of a
/// quantized (FP8, pack-quantized) source.
fn run_families(args: &[String]) -> anyhow::Result<()> {
    let reference = ct_reference();
    let py = ensure_venv()?;
    let judge_py = crate::venv::ensure()?;
    let mp = modelpack()?;
    let script = root().join("xtask/py/hf_family_check.py");
    let twin_judge = root().join("xtask/py/ct_scale_dtype_check.py");
    let work = cache_dir().join("hf-check-families");
    // (name on the command line, source dir, bf16 twin for the numpy judge or None: decoded)
    let mut sources: Vec<(String, PathBuf, Option<PathBuf>, Vec<CheckedScheme>)> = FAMILIES
        .iter()
        .map(|(f, t)| {
            let dir = root().join("fixtures/families");
            (f.to_string(), dir.join(f), Some(dir.join(t)), FAMILY_SCHEMES.to_vec())
        })
        .collect();
    for (s, schemes) in DEEPSEEK_SOURCES {
        let dir = root().join("fixtures").join(s);
        let name = s.rsplit('/').next().unwrap_or(s).to_string();
        let twin = if is_quantized(&dir)? { None } else { Some(dir.clone()) };
        sources.push((name, dir, twin, schemes.to_vec()));
    }
    let mut failed = Vec::new();
    for (fixture, dense, twin, schemes) in sources.iter().filter(|s| args.is_empty() || args.contains(&s.0)) {
        for (i, (scheme, min_cos)) in schemes.iter().enumerate() {
            let out = work.join(format!("{fixture}-{i}"));
            let twin_out = work.join(format!("{fixture}-twin"));
            quantize(&mp, dense, &out, scheme)?;
            let what = format!("{fixture} [{}]", scheme.join(" "));
            for mode in MODES {
                let mut cmd = Command::new(&py);
                cmd.arg(&script).arg(dense).arg(&out).arg(min_cos.to_string()).arg(mode);
                if twin.is_none() {
                    cmd.arg("--write-twin").arg(&twin_out);
                }
                let o = cmd.output().with_context(|| format!("running {}", script.display()))?;
                let line = String::from_utf8_lossy(&o.stdout);
                if o.status.success() {
                    println!("ok      {what} {mode}: {}", line.trim());
                    continue;
                }
                if let Some(why) = scheme_loss_known(fixture, scheme, &line) {
                    // Only the cosine against the source failed: pass only if the package equals
                    // the source with the numpy reference's dequantized weights.
                    let fq = Command::new(&py)
                        .arg(root().join("xtask/py/hf_fakequant_check.py"))
                        .arg(&reference)
                        .arg(dense)
                        .arg(&out)
                        .arg(mode)
                        .output()?;
                    let fq_line = String::from_utf8_lossy(&fq.stdout);
                    if fq.status.success() {
                        println!("known   {what} {mode}: {} ({why}) fake-quant: {}", line.trim(), fq_line.trim());
                    } else {
                        println!("FAILED  {what} {mode}: {} fake-quant: {}", line.trim(), fq_line.trim());
                        failed.push(format!("{what} {mode}"));
                    }
                    continue;
                }
                let err = String::from_utf8_lossy(&o.stderr);
                let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
                match known_limitation(scheme, mode, has_fallback(&out)?) {
                    Some(why) if line.trim().is_empty() => println!("known   {what} {mode}: {why} ({last})"),
                    _ => {
                        println!("FAILED  {what} {mode}: {} {last}", line.trim());
                        failed.push(format!("{what} {mode}"));
                    }
                }
            }
            let mut judge = Command::new(&judge_py);
            match twin {
                _ if !reference.exists() => {
                    println!("skipped {what} numpy judge: {} is missing", reference.display());
                    continue;
                }
                _ if has_pass_through(&out)? => {
                    println!(
                        "skipped {what} numpy judge: modules passed through from the packed source (byte identity \
                         is tests/it/packed.rs's cuda_same_scheme_passes_through_unchanged)"
                    );
                    continue;
                }
                Some(t) => judge.arg(&reference).arg("check").arg(t).arg(&out),
                None if twin_out.join("model.safetensors").exists() => {
                    judge.arg(&twin_judge).arg(&reference).arg(&twin_out).arg(&out).arg("BF16")
                }
                None => {
                    println!("FAILED  {what} numpy judge: the check script wrote no dense twin");
                    failed.push(format!("{what} numpy judge"));
                    continue;
                }
            };
            let o = judge.output()?;
            let line = String::from_utf8_lossy(&o.stdout);
            let last = line.lines().last().unwrap_or("").trim().to_owned();
            if o.status.success() {
                println!("ok      {what} numpy judge: {last}");
            } else {
                println!("FAILED  {what} numpy judge: {last}");
                failed.push(format!("{what} numpy judge"));
            }
        }
    }
    if !failed.is_empty() {
        bail!("HF transformers disagreed on: {}", failed.join("; "));
    }
    Ok(())
}

/// Fixture and scheme whose logits cosine against the bf16 source is below the family threshold
/// because of the scheme itself (measured 2026-12-03): Nemotron-H MoE int4 g128 RTN reaches 0.836
/// on the random-weight fixture, and so does the source holding the numpy reference's dequantized
/// weights (top-2-of-4 sigmoid routing with near-tied random router logits flips experts under
/// int4 noise; g64 0.861, `--method mse` 0.889). Such a failure passes only through
/// `hf_fakequant_check.py` (package == fake-quant model, weights bit for bit); `line` must show
/// no problem but the cosine.
fn scheme_loss_known(fixture: &str, scheme: &[&str], line: &str) -> Option<&'static str> {
    let doc: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let only_cosine =
        doc["problems"].as_array()?.iter().all(|p| p.as_str().is_some_and(|p| p.starts_with("logits cosine")));
    (only_cosine && fixture == "nemotron-h-moe" && scheme.contains(&"int4"))
        .then_some("int4's own loss on this random-weight MoE: the fake-quant source scores the same")
}

/// `cargo xtask hf-check [FIXTURE...]` (default: tiny-llama and tiny-llama-f32), or
/// `cargo xtask hf-check families [FAMILY...]`.
pub fn run_cmd(args: &[String]) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "families") {
        return run_families(&args[1..]);
    }
    let reference = ct_reference();
    if !reference.exists() {
        bail!("{} is missing: the check dequantizes with it", reference.display());
    }
    let fixtures: Vec<String> =
        if args.is_empty() { vec!["tiny-llama".into(), "tiny-llama-f32".into()] } else { args.to_vec() };
    let py = ensure_venv()?;
    let mp = modelpack()?;
    let script = root().join("xtask/py/hf_load_check.py");
    let work = cache_dir().join("hf-check");
    let mut failed = Vec::new();
    for fixture in &fixtures {
        let dense = root().join("fixtures").join(fixture);
        for (i, scheme) in SCHEMES.iter().enumerate() {
            let out = work.join(format!("{fixture}-{i}"));
            quantize(&mp, &dense, &out, scheme)?;
            let fallback = has_fallback(&out)?;
            for mode in MODES {
                let o = Command::new(&py)
                    .arg(&script)
                    .arg(&reference)
                    .arg(&dense)
                    .arg(&out)
                    .arg(mode)
                    .output()
                    .with_context(|| format!("running {}", script.display()))?;
                let what = format!("{fixture} [{}] {mode}", scheme.join(" "));
                let line = String::from_utf8_lossy(&o.stdout);
                if o.status.success() {
                    println!("ok      {what}: {}", line.trim());
                    continue;
                }
                let err = String::from_utf8_lossy(&o.stderr);
                let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
                match known_limitation(scheme, mode, fallback) {
                    Some(why) => println!("known   {what}: {why} ({last})"),
                    None => {
                        println!("FAILED  {what}: {} {last}", line.trim());
                        failed.push(what);
                    }
                }
            }
        }
    }
    if !failed.is_empty() {
        bail!("HF transformers disagreed on: {}", failed.join("; "));
    }
    Ok(())
}

fn quantize(mp: &Path, dense: &Path, out: &Path, scheme: &[&str]) -> anyhow::Result<()> {
    run(Command::new(mp)
        .arg("quantize")
        .arg(dense)
        .arg("-o")
        .arg(out)
        .args(["--target", "cuda", "--force", "--no-progress"])
        .args(scheme)
        .stderr(std::process::Stdio::null()))
}
