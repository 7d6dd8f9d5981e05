//! `modelpack inspect`: what a checkpoint, a package, a GGUF file or a safetensors file holds.
//!
//! The path is classified first ([`Kind`]), by content rather than by name: a file starting with
//! the GGUF magic is a GGUF file; a directory holding `modelpack.json` is a package (cpu or
//! cuda); anything else is read as a Hugging Face checkpoint (a directory or one `.safetensors`
//! file, compressed-tensors ones included, whose `quantization_config` is shown). Each kind has
//! its own report; `--json` prints it as one document.
use crate::exit::{Classify, CmdError, CmdResult, OK};
use anyhow::Context as _;
use modelpack::format::gguf::{ggml_type_info, GgufFile, MetaType, MetaValue};
use modelpack::sign::manifest::{PackageManifest, MANIFEST_FILE};
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
        if io::Read::read_exact(&mut f, &mut magic).is_ok() && &magic == b"GGUF" {
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
            let report = gguf_report(&args.path, map.len() as u64, &gguf, filter.as_ref());
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
            let report = checkpoint_report(&args.path, &ck, filter.as_ref());
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
        .map(|s| {
            let md: serde_json::Map<String, Value> =
                s.metadata().iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            json!({"file": file_name(s.path()), "bytes": s.size(), "tensors": s.len(), "metadata": md})
        })
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
        "quantization_config": ck.config().and_then(|c| c.raw.get("quantization_config")),
        "tensors": listed,
    })
}

/// Array items shown per metadata value (token lists run to 100k+ entries); `len` gives the
/// full count.
const META_ITEMS: usize = 16;

/// gguf-py's names of GGUF value types (`GGUFValueType`), so reports read like its dumps.
fn meta_type_name(t: MetaType) -> &'static str {
    match t {
        MetaType::U8 => "UINT8",
        MetaType::I8 => "INT8",
        MetaType::U16 => "UINT16",
        MetaType::I16 => "INT16",
        MetaType::U32 => "UINT32",
        MetaType::I32 => "INT32",
        MetaType::F32 => "FLOAT32",
        MetaType::Bool => "BOOL",
        MetaType::String => "STRING",
        MetaType::Array => "ARRAY",
        MetaType::U64 => "UINT64",
        MetaType::I64 => "INT64",
        MetaType::F64 => "FLOAT64",
    }
}

/// One metadata entry: key, type, element type and length for arrays, the value (arrays cut to
/// [`META_ITEMS`]).
fn meta_entry(key: &str, v: &MetaValue) -> Value {
    let mut e = json!({"key": key, "type": meta_type_name(v.meta_type())});
    match v {
        MetaValue::Array(items) => {
            e["elem_type"] = json!(items.first().map_or("UINT8", |i| meta_type_name(i.meta_type())));
            e["len"] = json!(items.len());
        }
        MetaValue::EmptyArray(t) => {
            e["elem_type"] = json!(meta_type_name(*t));
            e["len"] = json!(0);
        }
        _ => {}
    }
    e["value"] = v.to_json(META_ITEMS);
    e
}

fn ggml_type_name(id: u32) -> String {
    ggml_type_info(id).map_or_else(|| format!("type{id}"), |t| t.name.to_owned())
}

/// GGUF report: header facts, every metadata KV in file order, per-type totals, and tensors in
/// file order with ggml shape (`ne`, innermost dimension first, as GGUF stores it), type,
/// offset relative to the data section and absolute file offset.
fn gguf_report(path: &Path, file_bytes: u64, g: &GgufFile<'_>, filter: Option<&regex::Regex>) -> Value {
    let mut types: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut listed = Vec::new();
    for t in &g.tensors {
        let ty = ggml_type_name(t.info.ggml_type);
        let elements: u64 = t.info.ne.iter().product();
        let e = types.entry(ty.clone()).or_default();
        e.0 += 1;
        e.1 += elements;
        e.2 += t.data.len() as u64;
        if filter.map_or(true, |re| re.is_match(&t.info.name)) {
            listed.push(json!({
                "name": t.info.name,
                "type": ty,
                "shape": t.info.ne,
                "elements": elements,
                "bytes": t.data.len(),
                "offset": t.offset,
                "file_offset": t.file_offset,
            }));
        }
    }
    let types: serde_json::Map<String, Value> =
        types.into_iter().map(|(k, (n, el, b))| (k, json!({"tensors": n, "elements": el, "bytes": b}))).collect();
    let s = |k: &str| g.get(k).and_then(MetaValue::as_str);
    let arch = s("general.architecture");
    let u = |k: &str| g.get(k).and_then(MetaValue::as_u64);
    json!({
        "kind": "gguf",
        "path": path.display().to_string(),
        "version": g.version,
        "alignment": g.alignment,
        "data_offset": g.data_offset,
        "file_bytes": file_bytes,
        "architecture": arch,
        "name": s("general.name"),
        "file_type": u("general.file_type"),
        "tokenizer_model": s("tokenizer.ggml.model"),
        "vocab_size": g.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).map(<[MetaValue]>::len),
        "metadata_count": g.metadata.len(),
        "metadata": g.metadata.iter().map(|(k, v)| meta_entry(k, v)).collect::<Vec<_>>(),
        "tensor_count": g.tensors.len(),
        "parameter_count": g.tensors.iter().map(|t| t.info.ne.iter().product::<u64>()).sum::<u64>(),
        "tensor_bytes": g.tensors.iter().map(|t| t.data.len() as u64).sum::<u64>(),
        "types": types,
        "tensors": listed,
    })
}

/// Package report: the manifest's summary, whether a signature is present (and which key it
/// names), the files, per-type totals and the per-tensor records; for a cpu package the GGUF
/// header summary, for a cuda package the `quantization_config` of its config.json.
fn package_report(dir: &Path, filter: Option<&regex::Regex>) -> Result<Value, CmdError> {
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
        files.push(json!({"name": e.file_name().to_string_lossy(), "bytes": meta.len(), "kind": kind}));
    }
    files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));

    let sig_path = dir.join("model.sig");
    let signature = if sig_path.is_file() {
        // Only what the bundle says about itself; checking it needs the key (`modelpack verify`).
        let bundle: Option<Value> = std::fs::read(&sig_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let hint = bundle.as_ref().and_then(|b| b.pointer("/verificationMaterial/publicKey/hint")).cloned();
        let media = bundle.as_ref().and_then(|b| b.get("mediaType")).cloned();
        json!({"present": true, "file": "model.sig", "readable": bundle.is_some(), "media_type": media,
               "key_hint": hint})
    } else {
        json!({"present": false})
    };

    let mut types: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    // Tensors per method really used (a K-quant in an `mse` package got llama.cpp's rounding).
    let mut methods: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sqnr: Vec<f64> = Vec::new();
    let mut listed = Vec::new();
    for t in &m.tensors {
        if let Some(method) = &t.method {
            *methods.entry(method.as_str()).or_default() += 1;
        }
        let e = types.entry(t.type_out.as_str()).or_default();
        e.0 += 1;
        e.1 += t.bytes_out;
        sqnr.extend(t.sqnr_db);
        if filter.map_or(true, |re| re.is_match(&t.name)) {
            listed.push(serde_json::to_value(t).unwrap_or(Value::Null));
        }
    }
    sqnr.sort_by(f64::total_cmp);
    let median = (!sqnr.is_empty()).then(|| {
        let n = sqnr.len();
        if n % 2 == 1 {
            sqnr[n / 2]
        } else {
            (sqnr[n / 2 - 1] + sqnr[n / 2]) / 2.0
        }
    });
    let types: serde_json::Map<String, Value> =
        types.into_iter().map(|(k, (n, b))| (k.to_owned(), json!({"tensors": n, "bytes": b}))).collect();

    let gguf_path = dir.join(modelpack::cpu::GGUF_NAME);
    let gguf = if gguf_path.is_file() {
        let map = map_file(&gguf_path)?;
        let g = GgufFile::parse(&map)
            .with_context(|| format!("{}: not a readable GGUF file", gguf_path.display()))
            .input()?;
        let mut r = gguf_report(&gguf_path, map.len() as u64, &g, None);
        // The package's tensor list already comes from the manifest; keep the header summary.
        if let Some(o) = r.as_object_mut() {
            o.remove("tensors");
            o.remove("metadata");
            o.remove("kind");
        }
        r
    } else {
        Value::Null
    };
    let config_path = dir.join("config.json");
    let quantization_config = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c.get("quantization_config").cloned());

    Ok(json!({
        "kind": "package",
        "path": dir.display().to_string(),
        "format_version": m.format_version,
        "tool": {"name": m.tool.name, "version": m.tool.version},
        "target": m.target,
        "scheme": m.scheme,
        "method": m.method,
        "tensor_methods": methods,
        "options": m.options,
        "source_files": m.source.files,
        "source_bytes": m.source.files.iter().map(|f| f.size).sum::<u64>(),
        "signature": signature,
        "files": files,
        "tensor_count": m.tensors.len(),
        "types": types,
        "median_sqnr_db": median,
        "gguf": gguf,
        "quantization_config": quantization_config,
        "tensors": listed,
    }))
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
    if let Some(q) = r["quantization_config"].as_object() {
        let groups = q.get("config_groups").and_then(Value::as_object);
        writeln!(
            out,
            "quantization: {} {} ({} config groups, ignore {})",
            q.get("quant_method").and_then(Value::as_str).unwrap_or("?"),
            q.get("format").and_then(Value::as_str).unwrap_or("?"),
            groups.map_or(0, serde_json::Map::len),
            q.get("ignore").map_or_else(|| "[]".to_owned(), ToString::to_string)
        )?;
        for (name, g) in groups.into_iter().flatten() {
            writeln!(out, "  {name}: targets {} weights {}", g["targets"], g["weights"])?;
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

fn shape_text(v: &Value) -> String {
    let dims: Vec<String> = v.as_array().map_or_else(Vec::new, |a| a.iter().map(|d| d.to_string()).collect());
    format!("[{}]", dims.join(", "))
}

/// A metadata value on one line: scalars as they are, arrays as `[TYPE × len] first items…`,
/// long strings cut (chat templates).
fn meta_value_text(e: &Value) -> String {
    const MAX: usize = 80;
    let cut = |s: String| {
        if s.chars().count() > MAX {
            format!("{}…", s.chars().take(MAX).collect::<String>())
        } else {
            s
        }
    };
    match e["type"].as_str() {
        Some("ARRAY") => {
            let items: Vec<String> =
                e["value"].as_array().map_or_else(Vec::new, |a| a.iter().take(6).map(|v| cut(v.to_string())).collect());
            let len = e["len"].as_u64().unwrap_or(0);
            let more = if len > items.len() as u64 { ", …" } else { "" };
            format!("[{} × {len}] {}{more}", e["elem_type"].as_str().unwrap_or("?"), items.join(", "))
        }
        Some("STRING") => cut(e["value"].to_string()),
        _ => e["value"].to_string(),
    }
}

fn write_types_human(out: &mut dyn Write, types: &Value, with_elements: bool) -> io::Result<()> {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    if let Some(m) = types.as_object() {
        for (name, t) in m {
            if with_elements {
                writeln!(
                    out,
                    "  {name:<10} {:>6} tensors {:>16} elements {:>12}",
                    u(&t["tensors"]),
                    grouped(u(&t["elements"])),
                    human_bytes(u(&t["bytes"]))
                )?;
            } else {
                writeln!(out, "  {name:<32} {:>6} tensors {:>12}", u(&t["tensors"]), human_bytes(u(&t["bytes"])))?;
            }
        }
    }
    Ok(())
}

fn write_gguf_human(out: &mut dyn Write, r: &Value) -> io::Result<()> {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    writeln!(out, "path:         {}", r["path"].as_str().unwrap_or(""))?;
    writeln!(
        out,
        "format:       GGUF v{}, alignment {}, data at byte {}, {} ({})",
        u(&r["version"]),
        u(&r["alignment"]),
        grouped(u(&r["data_offset"])),
        grouped(u(&r["file_bytes"])),
        human_bytes(u(&r["file_bytes"]))
    )?;
    writeln!(out, "architecture: {}", r["architecture"].as_str().unwrap_or("unknown"))?;
    if let Some(t) = r["tokenizer_model"].as_str() {
        writeln!(out, "tokenizer:    {t}, {} tokens", u(&r["vocab_size"]))?;
    }
    writeln!(out, "parameters:   {}", grouped(u(&r["parameter_count"])))?;
    writeln!(out, "types:")?;
    write_types_human(out, &r["types"], true)?;
    let empty = Vec::new();
    let md = r["metadata"].as_array().unwrap_or(&empty);
    writeln!(out, "metadata ({}):", md.len())?;
    let kw = md.iter().filter_map(|e| e["key"].as_str()).map(str::len).max().unwrap_or(3);
    for e in md {
        writeln!(out, "  {:<kw$}  {}", e["key"].as_str().unwrap_or(""), meta_value_text(e))?;
    }
    let listed = r["tensors"].as_array().unwrap_or(&empty);
    writeln!(out, "tensors ({} of {}):", listed.len(), u(&r["tensor_count"]))?;
    let width = listed.iter().filter_map(|t| t["name"].as_str()).map(str::len).max().unwrap_or(4).max(4);
    writeln!(out, "  {:<width$}  {:<6} {:<20} {:>12} {:>14}", "NAME", "TYPE", "SHAPE (ne)", "BYTES", "OFFSET")?;
    for t in listed {
        writeln!(
            out,
            "  {:<width$}  {:<6} {:<20} {:>12} {:>14}",
            t["name"].as_str().unwrap_or(""),
            t["type"].as_str().unwrap_or(""),
            shape_text(&t["shape"]),
            grouped(u(&t["bytes"])),
            grouped(u(&t["offset"]))
        )?;
    }
    Ok(())
}

fn write_package_human(out: &mut dyn Write, r: &Value) -> io::Result<()> {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    writeln!(out, "path:         {}", r["path"].as_str().unwrap_or(""))?;
    writeln!(
        out,
        "package:      {} {} ({}), made by {} {}",
        r["target"].as_str().unwrap_or("?"),
        r["scheme"].as_str().unwrap_or("?"),
        r["method"].as_str().unwrap_or("?"),
        r["tool"]["name"].as_str().unwrap_or("?"),
        r["tool"]["version"].as_str().unwrap_or("?")
    )?;
    if let Some(methods) = r["tensor_methods"].as_object().filter(|o| !o.is_empty()) {
        let parts: Vec<String> = methods.iter().map(|(k, v)| format!("{k} {}", u(v))).collect();
        writeln!(out, "methods:      {} (tensors per method really used)", parts.join(", "))?;
    }
    let sig = &r["signature"];
    if sig["present"] == true {
        match sig["key_hint"].as_str() {
            Some(h) => {
                writeln!(out, "signature:    model.sig present (key hint {h}); check it with `modelpack verify`")?
            }
            None => writeln!(out, "signature:    model.sig present; check it with `modelpack verify`")?,
        }
    } else {
        writeln!(out, "signature:    none (unsigned)")?;
    }
    let empty = Vec::new();
    let sources = r["source_files"].as_array().unwrap_or(&empty);
    writeln!(out, "source:       {} files, {}", sources.len(), human_bytes(u(&r["source_bytes"])))?;
    if let Some(m) = r["median_sqnr_db"].as_f64() {
        writeln!(out, "median SQNR:  {m:.2} dB")?;
    }
    if r["gguf"].is_object() {
        let g = &r["gguf"];
        writeln!(
            out,
            "gguf:         {} tensors, {} metadata keys, {}",
            u(&g["tensor_count"]),
            u(&g["metadata_count"]),
            human_bytes(u(&g["file_bytes"]))
        )?;
    }
    if let Some(q) = r["quantization_config"].as_object() {
        writeln!(
            out,
            "quantization: {} {} ({} config groups, ignore {})",
            q.get("quant_method").and_then(Value::as_str).unwrap_or("?"),
            q.get("format").and_then(Value::as_str).unwrap_or("?"),
            q.get("config_groups").and_then(Value::as_object).map_or(0, serde_json::Map::len),
            q.get("ignore").map_or_else(|| "[]".to_owned(), ToString::to_string)
        )?;
    }
    writeln!(out, "files:")?;
    for f in r["files"].as_array().unwrap_or(&empty) {
        writeln!(out, "  {:<40} {:>12}", f["name"].as_str().unwrap_or(""), human_bytes(u(&f["bytes"])))?;
    }
    writeln!(out, "types:")?;
    write_types_human(out, &r["types"], false)?;
    let listed = r["tensors"].as_array().unwrap_or(&empty);
    writeln!(out, "tensors ({} of {}):", listed.len(), u(&r["tensor_count"]))?;
    let width = listed.iter().filter_map(|t| t["name"].as_str()).map(str::len).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "  {:<width$}  {:<28} {:<6} {:<16} {:>12} {:>9}",
        "NAME", "TYPE", "METHOD", "SHAPE", "BYTES", "SQNR"
    )?;
    for t in listed {
        writeln!(
            out,
            "  {:<width$}  {:<28} {:<6} {:<16} {:>12} {:>9}",
            t["name"].as_str().unwrap_or(""),
            t["type_out"].as_str().unwrap_or(""),
            t["method"].as_str().unwrap_or("-"),
            shape_text(&t["shape"]),
            grouped(u(&t["bytes_out"])),
            t["sqnr_db"].as_f64().map_or_else(String::new, |s| format!("{s:.2} dB"))
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
