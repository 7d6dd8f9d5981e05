//! `modelpack inspect`: what a checkpoint (or, later, a package or GGUF file) holds.
//!
//! The path is classified first ([`Kind`]); each kind has its own report. Only checkpoints are
//! implemented here; GGUF files are recognised by magic and refused cleanly until their
//! reader is wired in.
use crate::exit::{Classify, CmdError, CmdResult, OK};
use anyhow::Context as _;
use modelpack_checkpoint::{Checkpoint, Dtype, ModelConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
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
}

/// What kind of input a path is, decided before any parser runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A directory or `.safetensors` file read as a Hugging Face checkpoint.
    Checkpoint,
    /// A file starting with the GGUF magic.
    Gguf,
}

fn classify(path: &Path) -> Result<Kind, CmdError> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display())).input()?;
    if meta.is_file() {
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display())).input()?;
        if io::Read::read_exact(&mut f, &mut magic).is_ok() && &magic == b"GGUF" {
            return Ok(Kind::Gguf);
        }
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
        Kind::Gguf => Err(CmdError::usage(format!("{}: GGUF inspection is not yet supported", args.path.display()))),
        Kind::Checkpoint => {
            let ck = Checkpoint::open(&args.path).input()?;
            let report = checkpoint_report(&args.path, &ck, filter.as_ref());
            emit(args.json, &report, |out| write_checkpoint_human(out, &report))
        }
    }
}

/// Print the JSON document or the human text; a closed pipe (`| head`) ends quietly.
fn emit(json: bool, report: &Value, human: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> CmdResult {
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

#[derive(Default)]
struct DtypeStats {
    tensors: u64,
    parameters: u64,
    bytes: u64,
}

fn checkpoint_report(path: &Path, ck: &Checkpoint, filter: Option<&regex::Regex>) -> Value {
    let mut hist: BTreeMap<Dtype, DtypeStats> = BTreeMap::new();
    let mut listed = Vec::new();
    for t in ck.tensors() {
        let s = hist.entry(t.dtype).or_default();
        s.tensors += 1;
        s.parameters += t.numel() as u64;
        s.bytes += t.nbytes() as u64;
        if filter.map_or(true, |re| re.is_match(t.name)) {
            listed.push(json!({
                "name": t.name,
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "bytes": t.nbytes(),
                "shard": t.shard,
            }));
        }
    }
    let dtypes: serde_json::Map<String, Value> = hist
        .iter()
        .map(|(d, s)| {
            (d.name().to_owned(), json!({"tensors": s.tensors, "parameters": s.parameters, "bytes": s.bytes}))
        })
        .collect();
    let shards: Vec<Value> = ck
        .shards()
        .iter()
        .map(|s| json!({"file": file_name(s.path()), "bytes": s.size(), "tensors": s.len()}))
        .collect();
    json!({
        "kind": "checkpoint",
        "path": path.display().to_string(),
        "architecture": ck.config().and_then(ModelConfig::architecture),
        "model_type": ck.config().and_then(|c| c.model_type.as_deref()),
        "config": ck.config().map(config_summary),
        "index": ck.index_path().map(file_name),
        "shards": shards,
        "tensor_count": ck.len(),
        "parameter_count": ck.parameter_count(),
        "total_bytes": ck.tensor_bytes(),
        "file_bytes": ck.shards().iter().map(|s| s.size()).sum::<u64>(),
        "dtypes": dtypes,
        "aux_files": ck.aux_files().iter().map(|p| file_name(p)).collect::<Vec<_>>(),
        "tensors": listed,
    })
}

fn config_summary(c: &ModelConfig) -> Value {
    json!({
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim_or_default(),
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_word_embeddings,
        "torch_dtype": c.torch_dtype,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// `1234567` → `"1,234,567"`.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
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

fn write_checkpoint_human(out: &mut dyn Write, r: &Value) -> io::Result<()> {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let shards = r["shards"].as_array().map_or(0, Vec::len);
    writeln!(out, "path:         {}", r["path"].as_str().unwrap_or(""))?;
    let layout = match r["index"].as_str() {
        Some(ix) => format!("safetensors checkpoint, {shards} shards ({ix})"),
        None if shards == 1 => "safetensors checkpoint, 1 file".to_owned(),
        None => format!("safetensors checkpoint, {shards} files"),
    };
    writeln!(out, "format:       {layout}")?;
    let arch = r["architecture"].as_str().unwrap_or("unknown (no config.json)");
    match r["model_type"].as_str() {
        Some(mt) => writeln!(out, "architecture: {arch} ({mt})")?,
        None => writeln!(out, "architecture: {arch}")?,
    }
    let c = &r["config"];
    if c.is_object() {
        let f = |k: &str| c[k].as_u64().map_or("?".to_owned(), |v| v.to_string());
        writeln!(
            out,
            "config:       hidden {}, layers {}, heads {} (kv {}, dim {}), intermediate {}, vocab {}, context {}",
            f("hidden_size"),
            f("num_hidden_layers"),
            f("num_attention_heads"),
            if c["num_key_value_heads"].is_null() { f("num_attention_heads") } else { f("num_key_value_heads") },
            f("head_dim"),
            f("intermediate_size"),
            f("vocab_size"),
            f("max_position_embeddings"),
        )?;
    }
    writeln!(out, "parameters:   {}", grouped(u(&r["parameter_count"])))?;
    let total = u(&r["total_bytes"]);
    writeln!(out, "tensor bytes: {} ({})", grouped(total), human_bytes(total))?;
    writeln!(out, "dtypes:")?;
    if let Some(m) = r["dtypes"].as_object() {
        for (name, s) in m {
            writeln!(
                out,
                "  {name:<8} {:>6} tensors {:>16} params {:>12}",
                u(&s["tensors"]),
                grouped(u(&s["parameters"])),
                human_bytes(u(&s["bytes"]))
            )?;
        }
    }
    let empty = Vec::new();
    let listed = r["tensors"].as_array().unwrap_or(&empty);
    writeln!(out, "tensors ({} of {}):", listed.len(), u(&r["tensor_count"]))?;
    let width = listed.iter().filter_map(|t| t["name"].as_str()).map(str::len).max().unwrap_or(4).max(4);
    writeln!(out, "  {:<width$}  {:<8} {:<20} {:>12}", "NAME", "DTYPE", "SHAPE", "BYTES")?;
    for t in listed {
        let shape: Vec<String> =
            t["shape"].as_array().unwrap_or(&empty).iter().map(|d| d.as_u64().unwrap_or(0).to_string()).collect();
        writeln!(
            out,
            "  {:<width$}  {:<8} {:<20} {:>12}",
            t["name"].as_str().unwrap_or(""),
            t["dtype"].as_str().unwrap_or(""),
            format!("[{}]", shape.join(", ")),
            grouped(u(&t["bytes"]))
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
