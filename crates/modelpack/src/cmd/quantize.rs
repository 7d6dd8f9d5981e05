//! `modelpack quantize`.
use crate::cmd::sign::{load_cert_material, load_private_key, PasswordArgs};
use crate::exit::{CmdError, CmdResult, INTERNAL, OK, USAGE};
use modelpack::plan::{GgufMix, Method, QuantizeOptions, Scheme, Target};
use modelpack::quant::ct::ScaleDtype;
use modelpack::quant::gguf::GgmlType;
use modelpack::run::{quantize, QuantizeJob};
use regex::Regex;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Arguments of `modelpack quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// Input checkpoint directory or safetensors file (never modified).
    pub input: PathBuf,
    /// Output package directory (created beside a temporary twin and renamed when complete).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Runtime to package for: cpu (GGUF for llama.cpp/Ollama) or cuda (compressed-tensors for vLLM).
    #[arg(long, value_enum)]
    pub target: TargetArg,
    /// Weight precision.
    #[arg(long, value_enum)]
    pub scheme: SchemeArg,
    /// Rounding method: rtn is byte-identical to the reference tools, mse searches each block's
    /// scale for a smaller error in the same format, mse-fast (cpu) searches Q4_0/Q5_0/Q8_0
    /// blocks with a shorter grid and a least-squares re-fit (about 6x less work). Default: cuda mse for int4, rtn for int8;
    /// cpu per GGUF type as the end-to-end harness chose (mse for Q4_0/Q4_1, rtn otherwise and
    /// for mixtures; docs/quality.md).
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// cpu: GGUF type of ordinary weights (q8_0, q4_0, q4_1, q4_k, q6_k) or the llama.cpp mix
    /// q4_k_m; defaults from --scheme.
    #[arg(long, value_name = "TYPE")]
    pub gguf_type: Option<String>,
    /// cpu: size budget in bits per weight (e.g. 4.5): each weight's GGUF type (Q4_0 … Q8_0,
    /// K-quants) is chosen to minimise the estimated error within that total size; the choices
    /// and their reasons go to the manifest and the --json report.
    #[arg(long, value_name = "BITS", conflicts_with = "gguf_type")]
    pub bpw: Option<f64>,
    /// cpu: per-tensor type, REGEX=TYPE (first match wins; matched on GGUF and HF names).
    #[arg(long, value_name = "REGEX=TYPE")]
    pub tensor_type: Vec<String>,
    /// Keep tensors matching REGEX unquantized (cuda: also listed in `ignore`).
    #[arg(long, value_name = "REGEX")]
    pub keep: Vec<String>,
    /// cuda int4: group size.
    #[arg(long, default_value_t = 128)]
    pub group_size: usize,
    /// cuda int4: asymmetric quantization with zero points.
    #[arg(long)]
    pub asymmetric: bool,
    /// cuda: dtype of the stored scales; default: the model dtype for bf16/f16 models, bf16 for
    /// f32 models (the scale is rounded to it before the codes are chosen).
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub scale_dtype: Option<ScaleDtypeArg>,
    /// Largest weight shard, e.g. 5GB, 500MB. cuda: safetensors shards (default 5GB). cpu:
    /// llama.cpp's split GGUF (`model-00001-of-0000N.gguf`, the limit counting tensor data as
    /// `llama-gguf-split --split-max-size` does); default: one `model.gguf`.
    #[arg(long, value_name = "SIZE")]
    pub max_shard_size: Option<String>,
    /// cuda: re-quantize a checkpoint whose config.json already has a quantization_config.
    #[arg(long)]
    pub force_requantize: bool,
    /// cuda: write the package even if most Linear weight bytes inside the layer stack stay dense
    /// (by --keep, routers, MTP layers); otherwise that is refused (exit 2).
    #[arg(long)]
    pub allow_dense: bool,
    /// llama.cpp importance matrix (llama-imatrix's GGUF or legacy .dat) weighting each column's
    /// error by its mean squared activation, as `llama-quantize --imatrix` does (cuda: with
    /// --method mse only).
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Skip per-tensor error metrics (faster).
    #[arg(long)]
    pub no_metrics: bool,
    /// Do not record the input files' SHA-256 in modelpack.json (names and sizes only). Hashing
    /// the input costs about 0.7 CPU-seconds per GB, as much as the rest of the job on 2 cores.
    #[arg(long)]
    pub no_source_digests: bool,
    /// Sign the package with this private key (PEM).
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
    /// X.509 certificate of --sign-key (PEM), carried in the bundle like `model_signing sign
    /// certificate`; verify with `verify --cert-chain ROOTS.pem`.
    #[arg(long, value_name = "LEAF.pem", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Intermediate CA certificates (PEM, repeatable) to carry after --sign-cert.
    #[arg(long, value_name = "INTERMEDIATES.pem", requires = "sign_cert")]
    pub sign_cert_chain: Vec<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing non-empty output directory.
    #[arg(long)]
    pub force: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub caps: crate::cmd::caps::CapArgs,
}

/// `--target` values (the library's [`Target`] has no CLI derive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// GGUF for llama.cpp / Ollama.
    Cpu,
    /// compressed-tensors safetensors for vLLM / HF transformers.
    Cuda,
}

impl From<TargetArg> for Target {
    fn from(a: TargetArg) -> Self {
        match a {
            TargetArg::Cpu => Target::Cpu,
            TargetArg::Cuda => Target::Cuda,
        }
    }
}

/// `--scheme` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemeArg {
    /// 8-bit weights (Q8_0 on cpu, W8A16 per-channel on cuda).
    Int8,
    /// 4-bit weights (Q4_0/Q4_1 on cpu, W4A16 group-wise on cuda).
    Int4,
}

impl From<SchemeArg> for Scheme {
    fn from(a: SchemeArg) -> Self {
        match a {
            SchemeArg::Int8 => Scheme::Int8,
            SchemeArg::Int4 => Scheme::Int4,
        }
    }
}

/// `--method` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Round to nearest: byte-identical to the reference tools.
    Rtn,
    /// Error-minimising scale search per block/group (same on-disk format, smaller error).
    Mse,
    /// `mse` with a short search (6 grid candidates + a closed-form least-squares re-fit) for
    /// Q4_0/Q5_0/Q8_0: about 6x less search work; cpu only.
    #[value(name = "mse-fast")]
    MseFast,
}

impl From<MethodArg> for Method {
    fn from(a: MethodArg) -> Self {
        match a {
            MethodArg::Rtn => Method::Rtn,
            MethodArg::Mse => Method::Mse,
            MethodArg::MseFast => Method::MseFast,
        }
    }
}

/// `--scale-dtype` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleDtypeArg {
    /// 32-bit float scales (compressed-tensors' own choice for f32 models).
    F32,
    /// IEEE half scales.
    F16,
    /// bfloat16 scales.
    Bf16,
}

impl From<ScaleDtypeArg> for ScaleDtype {
    fn from(a: ScaleDtypeArg) -> Self {
        match a {
            ScaleDtypeArg::F32 => ScaleDtype::F32,
            ScaleDtypeArg::F16 => ScaleDtype::F16,
            ScaleDtypeArg::Bf16 => ScaleDtype::BF16,
        }
    }
}

fn parse_type(s: &str) -> Result<GgmlType, CmdError> {
    GgmlType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s) && t.can_quantize()).ok_or_else(|| {
        CmdError::usage(format!(
            "unknown or unsupported GGUF type `{s}` (q8_0, q4_0, q4_1, q4_k, q6_k, q4_k_m, f16, bf16, f32)"
        ))
    })
}

/// `--gguf-type q4_k_m`: a mixture, not a single GGUF type.
fn is_q4_k_m(s: &str) -> bool {
    s.eq_ignore_ascii_case("q4_k_m")
}

fn parse_size(s: &str) -> Result<u64, CmdError> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mul) = [
        ("GIB", 1u64 << 30),
        ("MIB", 1 << 20),
        ("KIB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((t.clone(), 1));
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0)
        .ok_or_else(|| CmdError::usage(format!("bad size `{s}` (e.g. 5GB, 500MB)")))
}

/// The exit code and message of a failed run: a hit cap names the flag that raises it, and a
/// full disk says so first, whatever the operation that met it.
fn describe(e: modelpack::run::RunError) -> CmdError {
    let code = if e.is_input() { USAGE } else { INTERNAL };
    let enospc = {
        let err: &(dyn std::error::Error + 'static) = &e;
        std::iter::successors(Some(err), |e| e.source())
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC)))
    };
    let error = match e {
        modelpack::run::RunError::Checkpoint(c) => crate::cmd::caps::explain(c),
        e if enospc => anyhow::anyhow!("no space left on the output's filesystem: {e}; nothing was written"),
        e => e.into(),
    };
    CmdError { code, error }
}

fn regex(s: &str) -> Result<Regex, CmdError> {
    Regex::new(s).map_err(|e| CmdError::usage(format!("bad regex `{s}`: {e}")))
}

/// Run `quantize`.
pub fn run(a: Args) -> CmdResult {
    let tensor_types = a
        .tensor_type
        .iter()
        .map(|s| {
            let (re, ty) =
                s.rsplit_once('=').ok_or_else(|| CmdError::usage(format!("--tensor-type `{s}` is not REGEX=TYPE")))?;
            Ok((regex(re)?, parse_type(ty)?))
        })
        .collect::<Result<Vec<_>, CmdError>>()?;
    let (target, scheme) = (Target::from(a.target), Scheme::from(a.scheme));
    let gguf_type = a.gguf_type.as_deref().filter(|s| !is_q4_k_m(s)).map(parse_type).transpose()?;
    let gguf_mix = match (a.bpw, a.gguf_type.as_deref().is_some_and(is_q4_k_m)) {
        (Some(b), _) => {
            if !(b.is_finite() && b > 0.0 && b <= 16.0) {
                return Err(CmdError::usage(format!("--bpw {b}: must be above 0 and at most 16 (F16)")));
            }
            Some(GgufMix::Budget { millibits: (b * 1000.0).round() as u32 })
        }
        (None, true) => Some(GgufMix::Q4KM),
        (None, false) => None,
    };
    let method = a
        .method
        .map_or(Method::default_for_job(target, scheme, gguf_type, gguf_mix, a.imatrix.is_some()), Method::from);
    // Refused before the matrix is read (`QuantizeOptions::validate` says the same).
    if method == Method::MseFast && a.imatrix.is_some() {
        return Err(CmdError::usage(
            "--method mse-fast has no importance-weighted search: use --method mse with --imatrix",
        ));
    }
    let imatrix = a
        .imatrix
        .as_deref()
        .map(modelpack::imatrix::ImatrixInput::load)
        .transpose()
        .map_err(|e| CmdError::usage(e.to_string()))?
        .map(std::sync::Arc::new);
    let options = QuantizeOptions {
        target,
        scheme,
        method,
        gguf_type,
        gguf_mix,
        tensor_types,
        keep: a.keep.iter().map(|s| regex(s)).collect::<Result<_, _>>()?,
        group_size: a.group_size,
        asymmetric: a.asymmetric,
        scale_dtype: a.scale_dtype.map(ScaleDtype::from),
        max_shard_size: match (&a.max_shard_size, target) {
            (Some(s), _) => parse_size(s)?,
            (None, Target::Cuda) => 5_000_000_000,
            (None, Target::Cpu) => u64::MAX,
        },
        force_requantize: a.force_requantize,
        allow_dense: a.allow_dense,
        metrics: !a.no_metrics,
        imatrix,
    };
    // The library checks again when planning; checking here refuses before a key is loaded.
    options.validate().map_err(|e| CmdError::usage(e.to_string()))?;
    let sign_key = a.sign_key.as_deref().map(|p| load_private_key(p, &a.password)).transpose()?;
    let sign_certs = match (&sign_key, &a.sign_cert) {
        (Some(k), Some(c)) => Some(load_cert_material(k, c, &a.sign_cert_chain)?),
        _ => None,
    };
    let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok());
    let job = QuantizeJob {
        input: a.input,
        output: a.output,
        options,
        force: a.force,
        sign_key,
        sign_certs,
        source_date_epoch,
        source_digests: !a.no_source_digests,
        limits: a.caps.limits(),
    };

    let show = !a.no_progress && !a.json && std::io::stderr().is_terminal();
    let bar = show.then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template"),
        );
        b
    });
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()
        .map_err(|e| CmdError { code: INTERNAL, error: e.into() })?;
    let result = pool.install(|| quantize(&job, &progress));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = result.map_err(describe)?;
    if a.json {
        println!("{}", serde_json::to_string(&report).expect("report serializes"));
    } else {
        eprintln!(
            "wrote {} ({} files, {:.1} MB weights) in {:.2} s, {:.2} GB/s of input{}",
            report.package.display(),
            report.files.len(),
            report.output_bytes as f64 / 1e6,
            report.seconds,
            report.input_gb_per_s,
            if report.signed { ", signed" } else { "" }
        );
        if let Some(m) = report.median_sqnr_db {
            eprintln!("median SQNR of quantized tensors: {m:.2} dB");
        }
        for d in &report.dropped {
            eprintln!("  dropped {}: {}", d.tensor, d.reason);
        }
        for t in &report.tensors {
            eprintln!(
                "  {:<40} {:<28} {:<4} {:>10} B  {}  {}",
                t.name,
                t.type_out,
                t.method.as_deref().unwrap_or("-"),
                t.bytes_out,
                t.sqnr_db.map(|s| format!("{s:6.2} dB")).unwrap_or_else(|| "        ".into()),
                t.note.as_deref().unwrap_or("")
            );
        }
    }
    Ok(OK)
}
