//! `modelpack inspect`: what a checkpoint, a package, a GGUF file or a safetensors file holds.
//!
//! The path is classified first ([`Kind`]), by content rather than by name: a file starting with
//! the GGUF magic is a GGUF file; a directory holding `modelpack.json` is a package (cpu or
//! cuda); anything else is read as a Hugging Face checkpoint (a directory or one `.safetensors`
//! file, compressed-tensors ones included, whose `quantization_config` is shown). Each kind has
//! its own report; `--json` prints it as one document.
//!
//! The reports are the typed structs of [`modelpack::inspect`] (their field order is the JSON
//! key order); this module reads the inputs and writes the human text from the same structs.
use crate::exit::{Classify, CmdError, CmdResult, OK};
use anyhow::Context as _;
use modelpack::format::gguf::{GgufFile, GGUF_MAGIC};
use modelpack::inspect::{
    CheckpointReport, GgufReport, MetaEntry, PackageFile, PackageParts, PackageReport, SignatureDetails, SignatureInfo,
};
use modelpack::sign::manifest::{PackageManifest, MANIFEST_FILE};
use modelpack::sign::SIGNATURE_FILE;
use modelpack_checkpoint::Checkpoint;
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Arguments of `modelpack inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory, package, GGUF or safetensors file.
    pub path: PathBuf,
    /// Only list tensors whose name matches this regex.
    #[arg(long)]
    pub tensors: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub caps: crate::cmd::caps::CapArgs,
}

/// What kind of input a path is, decided before any parser runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A directory or `.safetensors` file read as a Hugging Face checkpoint.
    Checkpoint,
    /// A file starting with the GGUF magic.
    Gguf,
    /// A directory holding a modelpack manifest.
    Package,
}

fn classify(path: &Path) -> Result<Kind, CmdError> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display())).input()?;
    if meta.is_file() {
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display())).input()?;
        if io::Read::read_exact(&mut f, &mut magic).is_ok() && magic == GGUF_MAGIC {
            return Ok(Kind::Gguf);
        }
    } else if path.join(MANIFEST_FILE).is_file() {
        return Ok(Kind::Package);
    }
    Ok(Kind::Checkpoint)
}

/// Run `inspect`.
pub fn run(args: Args) -> CmdResult {
    let filter = match &args.tensors {
        Some(re) => Some(regex::Regex::new(re).with_context(|| format!("--tensors {re:?}")).input()?),
        None => None,
    };
    match classify(&args.path)? {
        Kind::Gguf => {
            let map = map_file(&args.path)?;
            let gguf = GgufFile::parse(&map)
                .with_context(|| format!("{}: not a readable GGUF file", args.path.display()))
                .input()?;
            let report = GgufReport::new(&args.path, map.len() as u64, &gguf, filter.as_ref());
            emit(args.json, &report, |out| write_gguf_human(out, &report))
        }
        Kind::Package => {
            let report = package_report(&args.path, filter.as_ref())?;
            emit(args.json, &report, |out| write_package_human(out, &report))
        }
        Kind::Checkpoint => {
            let ck = Checkpoint::open_with_limits(&args.path, &args.caps.limits())
                .map_err(crate::cmd::caps::explain)
                .input()?;
            let report = CheckpointReport::new(&args.path, &ck, filter.as_ref());
            emit(args.json, &report, |out| write_checkpoint_human(out, &report))
        }
    }
}

/// Map a file read-only: GGUF files run to many gigabytes and only their header is parsed, so
/// the data pages are never read.
fn map_file(path: &Path) -> Result<memmap2::Mmap, CmdError> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display())).input()?;
    // SAFETY: read-only mapping of a file we do not write. Another process truncating it while
    // we read would fault (SIGBUS); inspect holds the map only for the duration of the report.
    unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display())).internal()
}

/// Print the JSON document or the human text; a closed pipe (`| head`) ends quietly.
fn emit(json: bool, report: &impl Serialize, human: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> CmdResult {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let r = if json {
        serde_json::to_writer_pretty(&mut out, report).map_err(io::Error::from).and_then(|()| writeln!(out))
    } else {
        human(&mut out)
    };
    match r.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout").internal(),
        _ => Ok(OK),
    }
}

/// Package report: reads the manifest, lists the directory, reads what `model.sig` says about
/// itself and the GGUF header (cpu) or config.json's `quantization_config` (cuda).
fn package_report(dir: &Path, filter: Option<&regex::Regex>) -> Result<PackageReport, CmdError> {
    let mpath = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&mpath).with_context(|| format!("{}", mpath.display())).input()?;
    let m = PackageManifest::from_json(&bytes).with_context(|| format!("{}", mpath.display())).input()?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display())).input()? {
        let e = e.with_context(|| format!("{}", dir.display())).input()?;
        let meta = std::fs::symlink_metadata(e.path()).with_context(|| format!("{}", e.path().display())).input()?;
        let kind = if meta.is_file() {
            "file"
        } else if meta.is_dir() {
            "dir"
        } else {
            "other"
        };
        files.push(PackageFile { name: e.file_name().to_string_lossy().into_owned(), bytes: meta.len(), kind });
    }

    let sig_path = dir.join(SIGNATURE_FILE);
    let signature = if sig_path.is_file() {
        // Only what the bundle says about itself; checking it needs the key (`modelpack verify`).
        let bundle: Option<Value> = std::fs::read(&sig_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let key_hint = bundle.as_ref().and_then(|b| b.pointer("/verificationMaterial/publicKey/hint")).cloned();
        let media_type = bundle.as_ref().and_then(|b| b.get("mediaType")).cloned();
        SignatureInfo {
            present: true,
            details: Some(SignatureDetails { file: SIGNATURE_FILE, readable: bundle.is_some(), media_type, key_hint }),
        }
    } else {
        SignatureInfo { present: false, details: None }
    };

    // A split GGUF is summed over its parts (metadata from the first, which holds all of it).
    let parts = modelpack::cpu::gguf_files(dir).with_context(|| dir.display().to_string()).input()?;
    let mut gguf: Option<GgufReport> = None;
    for gguf_path in &parts {
        let map = map_file(gguf_path)?;
        let g = GgufFile::parse(&map)
            .with_context(|| format!("{}: not a readable GGUF file", gguf_path.display()))
            .input()?;
        let r = GgufReport::new(gguf_path, map.len() as u64, &g, None);
        match &mut gguf {
            None => gguf = Some(r),
            Some(first) => first.add_part(r),
        }
    }
    let config_path = dir.join(modelpack_checkpoint::CONFIG_FILE);
    let quantization_config = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c.get("quantization_config").cloned());
    Ok(PackageReport::new(dir, &m, PackageParts { files, signature, gguf, quantization_config }, filter))
}

/// `1234567` → `"1,234,567"`.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes in binary units for the human report.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn write_checkpoint_human(out: &mut dyn Write, r: &CheckpointReport) -> io::Result<()> {
    let shards = r.shards.len();
    writeln!(out, "path:         {}", r.path)?;
    let layout = match &r.index {
        Some(ix) => format!("safetensors checkpoint, {shards} shards ({ix})"),
        None if shards == 1 => "safetensors checkpoint, 1 file".to_owned(),
        None => format!("safetensors checkpoint, {shards} files"),
    };
    writeln!(out, "format:       {layout}")?;
    let arch = r.architecture.as_deref().unwrap_or("unknown (no config.json)");
    match &r.model_type {
        Some(mt) => writeln!(out, "architecture: {arch} ({mt})")?,
        None => writeln!(out, "architecture: {arch}")?,
    }
    if let Some(c) = &r.config {
        let f = |v: Option<usize>| v.map_or("?".to_owned(), |v| v.to_string());
        writeln!(
            out,
            "config:       hidden {}, layers {}, heads {} (kv {}, dim {}), intermediate {}, vocab {}, context {}",
            f(c.hidden_size),
            f(c.num_hidden_layers),
            f(c.num_attention_heads),
            f(c.num_key_value_heads.or(c.num_attention_heads)),
            f(c.head_dim),
            f(c.intermediate_size),
            f(c.vocab_size),
            f(c.max_position_embeddings),
        )?;
    }
    writeln!(out, "parameters:   {}", grouped(r.parameter_count))?;
    writeln!(out, "tensor bytes: {} ({})", grouped(r.total_bytes), human_bytes(r.total_bytes))?;
    writeln!(out, "dtypes:")?;
    for (name, s) in &r.dtypes {
        writeln!(
            out,
            "  {name:<8} {:>6} tensors {:>16} params {:>12}",
            s.tensors,
            grouped(s.parameters),
            human_bytes(s.bytes)
        )?;
    }
    if let Some(q) = r.quantization_config.as_ref().and_then(Value::as_object) {
        let groups = q.get("config_groups").and_then(Value::as_object);
        writeln!(out, "quantization: {}", quantization_line(q))?;
        for (name, g) in groups.into_iter().flatten() {
            writeln!(out, "  {name}: targets {} weights {}", g["targets"], g["weights"])?;
        }
    }
    writeln!(out, "tensors ({} of {}):", r.tensors.len(), r.tensor_count)?;
    let width = r.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "  {:<width$}  {:<8} {:<20} {:>12}", "NAME", "DTYPE", "SHAPE", "BYTES")?;
    for t in &r.tensors {
        writeln!(
            out,
            "  {:<width$}  {:<8} {:<20} {:>12}",
            t.name,
            t.dtype,
            shape_text(&t.shape),
            grouped(t.bytes as u64)
        )?;
    }
    Ok(())
}

/// `quant_method format (N config groups, ignore [...])` of a `quantization_config`.
fn quantization_line(q: &serde_json::Map<String, Value>) -> String {
    format!(
        "{} {} ({} config groups, ignore {})",
        q.get("quant_method").and_then(Value::as_str).unwrap_or("?"),
        q.get("format").and_then(Value::as_str).unwrap_or("?"),
        q.get("config_groups").and_then(Value::as_object).map_or(0, serde_json::Map::len),
        q.get("ignore").map_or_else(|| "[]".to_owned(), ToString::to_string)
    )
}

fn shape_text<T: std::fmt::Display>(dims: &[T]) -> String {
    let dims: Vec<String> = dims.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// A metadata value on one line: scalars as they are, arrays as `[TYPE × len] first items…`,
/// long strings cut (chat templates).
fn meta_value_text(e: &MetaEntry) -> String {
    const MAX: usize = 80;
    let cut = |s: String| {
        if s.chars().count() > MAX {
            format!("{}…", s.chars().take(MAX).collect::<String>())
        } else {
            s
        }
    };
    match e.ty {
        "ARRAY" => {
            let items: Vec<String> =
                e.value.as_array().map_or_else(Vec::new, |a| a.iter().take(6).map(|v| cut(v.to_string())).collect());
            let len = e.len.unwrap_or(0);
            let more = if len > items.len() { ", …" } else { "" };
            format!("[{} × {len}] {}{more}", e.elem_type.unwrap_or("?"), items.join(", "))
        }
        "STRING" => cut(e.value.to_string()),
        _ => e.value.to_string(),
    }
}

fn write_gguf_human(out: &mut dyn Write, r: &GgufReport) -> io::Result<()> {
    writeln!(out, "path:         {}", r.path)?;
    writeln!(
        out,
        "format:       GGUF v{}, alignment {}, data at byte {}, {} ({})",
        r.version,
        r.alignment,
        grouped(r.data_offset),
        grouped(r.file_bytes),
        human_bytes(r.file_bytes)
    )?;
    writeln!(out, "architecture: {}", r.architecture.as_deref().unwrap_or("unknown"))?;
    if let Some(t) = &r.tokenizer_model {
        writeln!(out, "tokenizer:    {t}, {} tokens", r.vocab_size.unwrap_or(0))?;
    }
    writeln!(out, "parameters:   {}", grouped(r.parameter_count))?;
    writeln!(out, "types:")?;
    for (name, t) in &r.types {
        writeln!(
            out,
            "  {name:<10} {:>6} tensors {:>16} elements {:>12}",
            t.tensors,
            grouped(t.elements),
            human_bytes(t.bytes)
        )?;
    }
    let md = r.metadata.as_deref().unwrap_or_default();
    writeln!(out, "metadata ({}):", md.len())?;
    let kw = md.iter().map(|e| e.key.len()).max().unwrap_or(3);
    for e in md {
        writeln!(out, "  {:<kw$}  {}", e.key, meta_value_text(e))?;
    }
    let listed = r.tensors.as_deref().unwrap_or_default();
    writeln!(out, "tensors ({} of {}):", listed.len(), r.tensor_count)?;
    let width = listed.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "  {:<width$}  {:<6} {:<20} {:>12} {:>14}", "NAME", "TYPE", "SHAPE (ne)", "BYTES", "OFFSET")?;
    for t in listed {
        writeln!(
            out,
            "  {:<width$}  {:<6} {:<20} {:>12} {:>14}",
            t.name,
            t.ty,
            shape_text(&t.shape),
            grouped(t.bytes as u64),
            grouped(t.offset)
        )?;
    }
    Ok(())
}

fn write_package_human(out: &mut dyn Write, r: &PackageReport) -> io::Result<()> {
    writeln!(out, "path:         {}", r.path)?;
    writeln!(
        out,
        "package:      {} {} ({}), made by {} {}",
        r.target, r.scheme, r.method, r.tool.name, r.tool.version
    )?;
    if !r.tensor_methods.is_empty() {
        let parts: Vec<String> = r.tensor_methods.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "methods:      {} (tensors per method really used)", parts.join(", "))?;
    }
    if r.signature.present {
        match r.signature.details.as_ref().and_then(|d| d.key_hint.as_ref()).and_then(Value::as_str) {
            Some(h) => writeln!(
                out,
                "signature:    {SIGNATURE_FILE} present (key hint {h}); check it with `modelpack verify`"
            )?,
            None => writeln!(out, "signature:    {SIGNATURE_FILE} present; check it with `modelpack verify`")?,
        }
    } else {
        writeln!(out, "signature:    none (unsigned)")?;
    }
    writeln!(out, "source:       {} files, {}", r.source_files.len(), human_bytes(r.source_bytes))?;
    if let Some(m) = r.median_sqnr_db {
        writeln!(out, "median SQNR:  {m:.2} dB")?;
    }
    if let Some(g) = &r.gguf {
        writeln!(
            out,
            "gguf:         {} tensors, {} metadata keys, {}",
            g.tensor_count,
            g.metadata_count,
            human_bytes(g.file_bytes)
        )?;
    }
    if let Some(q) = r.quantization_config.as_ref().and_then(Value::as_object) {
        writeln!(out, "quantization: {}", quantization_line(q))?;
    }
    writeln!(out, "files:")?;
    for f in &r.files {
        writeln!(out, "  {:<40} {:>12}", f.name, human_bytes(f.bytes))?;
    }
    writeln!(out, "types:")?;
    for (name, t) in &r.types {
        writeln!(out, "  {name:<32} {:>6} tensors {:>12}", t.tensors, human_bytes(t.bytes))?;
    }
    writeln!(out, "tensors ({} of {}):", r.tensors.len(), r.tensor_count)?;
    let width = r.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "  {:<width$}  {:<28} {:<6} {:<16} {:>12} {:>9}",
        "NAME", "TYPE", "METHOD", "SHAPE", "BYTES", "SQNR"
    )?;
    for t in &r.tensors {
        writeln!(
            out,
            "  {:<width$}  {:<28} {:<6} {:<16} {:>12} {:>9}",
            t.name,
            t.type_out,
            t.method.as_deref().unwrap_or("-"),
            shape_text(&t.shape),
            grouped(t.bytes_out),
            t.sqnr_db.map_or_else(String::new, |s| format!("{s:.2} dB"))
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
