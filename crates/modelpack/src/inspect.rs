//! Typed reports of `modelpack inspect`: what a checkpoint, a GGUF file or a package holds.
//!
//! Each report is one `Serialize` struct whose field order is the `--json` document's key order,
//! so the machine-readable form is defined here, once, and checked by the compiler; the CLI's
//! human writers (`cmd/inspect.rs`) read the same structs (ripgrep's typed `--json` messages
//! beside its human printers). Builders here are pure: the CLI does the file I/O.

use crate::checkpoint::{Checkpoint, Dtype, ModelConfig};
use crate::format::gguf::{ggml_type_info, GgufFile, MetaValue};
use crate::sign::manifest::{PackageManifest, TensorRecord};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Array items shown per GGUF metadata value (token lists run to 100k+ entries); `len` gives
/// the full count.
pub const META_ITEMS: usize = 16;

/// Per-dtype totals of a checkpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DtypeTotals {
    /// Tensors of this dtype.
    pub tensors: u64,
    /// Their elements.
    pub parameters: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One safetensors file of a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// File name.
    pub file: String,
    /// File size.
    pub bytes: u64,
    /// Tensors in it.
    pub tensors: usize,
    /// Its `__metadata__` strings, in file order.
    #[serde(serialize_with = "pairs_as_map")]
    pub metadata: Vec<(String, String)>,
}

/// One listed checkpoint tensor.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointTensor {
    /// Tensor name.
    pub name: String,
    /// safetensors dtype name.
    pub dtype: &'static str,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Data bytes.
    pub bytes: usize,
    /// Index of the shard holding it.
    pub shard: usize,
}

/// The `config.json` facts a reader of the report wants first.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigSummary {
    /// Hidden size.
    pub hidden_size: Option<usize>,
    /// MLP intermediate size.
    pub intermediate_size: Option<usize>,
    /// Transformer layers.
    pub num_hidden_layers: Option<usize>,
    /// Attention heads.
    pub num_attention_heads: Option<usize>,
    /// Key/value heads (GQA); `None` means as many as attention heads.
    pub num_key_value_heads: Option<usize>,
    /// Head dimension, given or derived (hidden / heads).
    pub head_dim: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// Context length.
    pub max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// RoPE base.
    pub rope_theta: Option<f64>,
    /// Whether the output projection is the embedding.
    pub tie_word_embeddings: Option<bool>,
    /// The checkpoint's declared dtype.
    pub torch_dtype: Option<String>,
}

impl ConfigSummary {
    /// The summary of a parsed config.
    pub fn of(c: &ModelConfig) -> Self {
        ConfigSummary {
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads,
            head_dim: c.head_dim_or_default(),
            vocab_size: c.vocab_size,
            max_position_embeddings: c.max_position_embeddings,
            rms_norm_eps: c.rms_norm_eps,
            rope_theta: c.rope_theta,
            tie_word_embeddings: c.tie_word_embeddings,
            torch_dtype: c.torch_dtype.clone(),
        }
    }
}

/// What a Hugging Face checkpoint holds.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// Always `"checkpoint"`.
    pub kind: &'static str,
    /// The inspected path.
    pub path: String,
    /// `architectures[0]` of config.json.
    pub architecture: Option<String>,
    /// `model_type` of config.json.
    pub model_type: Option<String>,
    /// Config summary, when there is a config.json.
    pub config: Option<ConfigSummary>,
    /// The index file name of a sharded checkpoint.
    pub index: Option<String>,
    /// The safetensors files.
    pub shards: Vec<ShardInfo>,
    /// Tensors in the checkpoint.
    pub tensor_count: usize,
    /// Elements in all tensors.
    pub parameter_count: u64,
    /// Tensor data bytes.
    pub total_bytes: u64,
    /// Bytes of the safetensors files.
    pub file_bytes: u64,
    /// Totals per dtype, in dtype order (a JSON object keyed by dtype name).
    #[serde(serialize_with = "pairs_as_map")]
    pub dtypes: Vec<(&'static str, DtypeTotals)>,
    /// Other files beside the weights (tokenizer, generation config).
    pub aux_files: Vec<String>,
    /// config.json's `quantization_config`, verbatim (compressed-tensors checkpoints).
    pub quantization_config: Option<Value>,
    /// The tensors matching the filter, in checkpoint order.
    pub tensors: Vec<CheckpointTensor>,
}

impl CheckpointReport {
    /// The report of an opened checkpoint; `filter` selects the listed tensors (totals count all).
    pub fn new(path: &Path, ck: &Checkpoint, filter: Option<&regex::Regex>) -> Self {
        let mut hist: BTreeMap<Dtype, DtypeTotals> = BTreeMap::new();
        let mut tensors = Vec::new();
        for t in ck.tensors() {
            let s = hist.entry(t.dtype).or_default();
            s.tensors += 1;
            s.parameters += t.numel() as u64;
            s.bytes += t.nbytes() as u64;
            if filter.is_none_or(|re| re.is_match(t.name)) {
                tensors.push(CheckpointTensor {
                    name: t.name.to_owned(),
                    dtype: t.dtype.name(),
                    shape: t.shape.to_vec(),
                    bytes: t.nbytes(),
                    shard: t.shard,
                });
            }
        }
        let shards = ck
            .shards()
            .iter()
            .map(|s| ShardInfo {
                file: file_name(s.path()),
                bytes: s.size(),
                tensors: s.len(),
                metadata: s.metadata().to_vec(),
            })
            .collect();
        CheckpointReport {
            kind: "checkpoint",
            path: path.display().to_string(),
            architecture: ck.config().and_then(ModelConfig::architecture).map(str::to_owned),
            model_type: ck.config().and_then(|c| c.model_type.clone()),
            config: ck.config().map(ConfigSummary::of),
            index: ck.index_path().map(file_name),
            shards,
            tensor_count: ck.len(),
            parameter_count: ck.parameter_count(),
            total_bytes: ck.tensor_bytes(),
            file_bytes: ck.shards().iter().map(|s| s.size()).sum(),
            dtypes: hist.into_iter().map(|(d, s)| (d.name(), s)).collect(),
            aux_files: ck.aux_files().iter().map(|p| file_name(p)).collect(),
            quantization_config: ck.config().and_then(|c| c.raw.get("quantization_config")).cloned(),
            tensors,
        }
    }
}

/// One GGUF metadata entry.
#[derive(Debug, Clone, Serialize)]
pub struct MetaEntry {
    /// Key.
    pub key: String,
    /// gguf-py's type name.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Element type of an array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elem_type: Option<&'static str>,
    /// Length of an array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
    /// The value (arrays cut to [`META_ITEMS`]).
    pub value: Value,
}

impl MetaEntry {
    /// The entry for `key` = `v`.
    pub fn new(key: &str, v: &MetaValue) -> Self {
        let (elem_type, len) = match v {
            MetaValue::Array(items) => {
                (Some(items.first().map_or("UINT8", |i| i.meta_type().name())), Some(items.len()))
            }
            MetaValue::EmptyArray(t) => (Some(t.name()), Some(0)),
            _ => (None, None),
        };
        MetaEntry { key: key.to_owned(), ty: v.meta_type().name(), elem_type, len, value: v.to_json(META_ITEMS) }
    }
}

/// Per-type totals of a GGUF file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GgufTypeTotals {
    /// Tensors of this type.
    pub tensors: u64,
    /// Their elements.
    pub elements: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One listed GGUF tensor.
#[derive(Debug, Clone, Serialize)]
pub struct GgufTensorEntry {
    /// Name.
    pub name: String,
    /// ggml type name (`typeN` for an id this build does not know).
    #[serde(rename = "type")]
    pub ty: String,
    /// ggml shape (`ne`, innermost dimension first, as GGUF stores it).
    pub shape: Vec<u64>,
    /// Elements.
    pub elements: u64,
    /// Data bytes.
    pub bytes: usize,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Absolute file offset.
    pub file_offset: u64,
}

/// What a GGUF file holds: header facts, every metadata KV in file order, per-type totals and
/// the tensors in file order. Inside a package report the per-file parts (`kind`, `metadata`,
/// `tensors`) are left out ([`GgufReport::summary`]).
#[derive(Debug, Clone, Serialize)]
pub struct GgufReport {
    /// `"gguf"`; absent in a package's summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The inspected path.
    pub path: String,
    /// GGUF version.
    pub version: u32,
    /// Data alignment.
    pub alignment: u32,
    /// Start of the data section.
    pub data_offset: u64,
    /// File size.
    pub file_bytes: u64,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.file_type`.
    pub file_type: Option<u64>,
    /// `tokenizer.ggml.model`.
    pub tokenizer_model: Option<String>,
    /// Entries of `tokenizer.ggml.tokens`.
    pub vocab_size: Option<usize>,
    /// Metadata KVs.
    pub metadata_count: usize,
    /// Every metadata KV, in file order; absent in a package's summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<MetaEntry>>,
    /// Tensors in the file.
    pub tensor_count: usize,
    /// Elements in all tensors.
    pub parameter_count: u64,
    /// Tensor data bytes.
    pub tensor_bytes: u64,
    /// Totals per ggml type name.
    pub types: BTreeMap<String, GgufTypeTotals>,
    /// The tensors matching the filter, in file order; absent in a package's summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<GgufTensorEntry>>,
}

/// A ggml type's name from the format crate's table, `typeN` for an unknown id.
pub fn ggml_type_name(id: u32) -> String {
    ggml_type_info(id).map_or_else(|| format!("type{id}"), |t| t.name.to_owned())
}

impl GgufReport {
    /// Fold a later part of a split GGUF into the first part's report: file bytes, tensor
    /// counts and per-type totals add up; metadata stays the first file's (the only full set).
    pub fn add_part(&mut self, part: GgufReport) {
        self.file_bytes += part.file_bytes;
        self.tensor_count += part.tensor_count;
        self.parameter_count += part.parameter_count;
        self.tensor_bytes += part.tensor_bytes;
        for (ty, t) in part.types {
            let e = self.types.entry(ty).or_default();
            e.tensors += t.tensors;
            e.elements += t.elements;
            e.bytes += t.bytes;
        }
        if let (Some(a), Some(b)) = (&mut self.tensors, part.tensors) {
            a.extend(b);
        }
    }

    /// The report of a parsed GGUF file of `file_bytes` bytes; `filter` selects listed tensors.
    pub fn new(path: &Path, file_bytes: u64, g: &GgufFile<'_>, filter: Option<&regex::Regex>) -> Self {
        let mut types: BTreeMap<String, GgufTypeTotals> = BTreeMap::new();
        let mut tensors = Vec::new();
        for t in &g.tensors {
            let ty = ggml_type_name(t.info.ggml_type);
            let elements: u64 = t.info.ne.iter().product();
            let e = types.entry(ty.clone()).or_default();
            e.tensors += 1;
            e.elements += elements;
            e.bytes += t.data.len() as u64;
            if filter.is_none_or(|re| re.is_match(&t.info.name)) {
                tensors.push(GgufTensorEntry {
                    name: t.info.name.clone(),
                    ty,
                    shape: t.info.ne.to_vec(),
                    elements,
                    bytes: t.data.len(),
                    offset: t.offset,
                    file_offset: t.file_offset,
                });
            }
        }
        let s = |k: &str| g.get(k).and_then(MetaValue::as_str).map(str::to_owned);
        GgufReport {
            kind: Some("gguf"),
            path: path.display().to_string(),
            version: g.version,
            alignment: g.alignment,
            data_offset: g.data_offset,
            file_bytes,
            architecture: s("general.architecture"),
            name: s("general.name"),
            file_type: g.get("general.file_type").and_then(MetaValue::as_u64),
            tokenizer_model: s("tokenizer.ggml.model"),
            vocab_size: g.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).map(<[MetaValue]>::len),
            metadata_count: g.metadata.len(),
            metadata: Some(g.metadata.iter().map(|(k, v)| MetaEntry::new(k, v)).collect()),
            tensor_count: g.tensors.len(),
            parameter_count: g.tensors.iter().map(|t| t.info.ne.iter().product::<u64>()).sum(),
            tensor_bytes: g.tensors.iter().map(|t| t.data.len() as u64).sum(),
            types,
            tensors: Some(tensors),
        }
    }

    /// The header summary shown inside a package report (the package's tensor list comes from
    /// its manifest).
    pub fn summary(mut self) -> Self {
        self.kind = None;
        self.metadata = None;
        self.tensors = None;
        self
    }
}

/// What `model.sig` says about itself; checking it needs the key (`modelpack verify`).
#[derive(Debug, Clone, Serialize)]
pub struct SignatureInfo {
    /// Whether the package has a signature file.
    pub present: bool,
    /// Details when present.
    #[serde(flatten)]
    pub details: Option<SignatureDetails>,
}

/// The signature file's self-description.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureDetails {
    /// The signature file name.
    pub file: &'static str,
    /// Whether it parses as JSON.
    pub readable: bool,
    /// Its `mediaType`.
    pub media_type: Option<Value>,
    /// The public key hint it names.
    pub key_hint: Option<Value>,
}

/// One entry of a package directory.
#[derive(Debug, Clone, Serialize)]
pub struct PackageFile {
    /// File name.
    pub name: String,
    /// Size.
    pub bytes: u64,
    /// `file`, `dir` or `other`.
    pub kind: &'static str,
}

/// Per-type totals of a package.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackageTypeTotals {
    /// Tensors of this output type.
    pub tensors: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The manifest's tool.
#[derive(Debug, Clone, Serialize)]
pub struct ToolSummary {
    /// Tool name.
    pub name: String,
    /// Tool version.
    pub version: String,
}

/// What a package holds: the manifest's summary, the signature's self-description, the files,
/// per-type totals and per-tensor records; the GGUF header summary (cpu) or config.json's
/// `quantization_config` (cuda).
#[derive(Debug, Clone, Serialize)]
pub struct PackageReport {
    /// Always `"package"`.
    pub kind: &'static str,
    /// The package directory.
    pub path: String,
    /// Manifest format version.
    pub format_version: u32,
    /// The tool that made it.
    pub tool: ToolSummary,
    /// `cpu` or `cuda`.
    pub target: String,
    /// `int8` or `int4`.
    pub scheme: String,
    /// Requested method.
    pub method: String,
    /// Tensors per method really used (a K-quant in an `mse` package got llama.cpp's rounding).
    pub tensor_methods: BTreeMap<String, u64>,
    /// The options recorded in the manifest.
    pub options: Value,
    /// Source files.
    pub source_files: Vec<crate::sign::manifest::SourceFile>,
    /// Their total size.
    pub source_bytes: u64,
    /// The signature's self-description.
    pub signature: SignatureInfo,
    /// Directory entries, by name.
    pub files: Vec<PackageFile>,
    /// Tensors in the manifest.
    pub tensor_count: usize,
    /// Totals per output type.
    pub types: BTreeMap<String, PackageTypeTotals>,
    /// Median SQNR of the tensors with one ([`crate::stats::median`]).
    pub median_sqnr_db: Option<f64>,
    /// The GGUF header summary of a cpu package.
    pub gguf: Option<GgufReport>,
    /// config.json's `quantization_config` of a cuda package.
    pub quantization_config: Option<Value>,
    /// The manifest's records of the tensors matching the filter.
    pub tensors: Vec<TensorRecord>,
}

/// What a package report is built from besides its manifest (the CLI reads these).
#[derive(Debug, Clone)]
pub struct PackageParts {
    /// Directory entries (sorted here).
    pub files: Vec<PackageFile>,
    /// The signature's self-description.
    pub signature: SignatureInfo,
    /// The GGUF file's report, if the package has one (summarised here).
    pub gguf: Option<GgufReport>,
    /// config.json's `quantization_config`, if any.
    pub quantization_config: Option<Value>,
}

impl PackageReport {
    /// The report of the package in `dir` with manifest `m`; `filter` selects listed tensors.
    pub fn new(dir: &Path, m: &PackageManifest, parts: PackageParts, filter: Option<&regex::Regex>) -> Self {
        let mut types: BTreeMap<String, PackageTypeTotals> = BTreeMap::new();
        let mut methods: BTreeMap<String, u64> = BTreeMap::new();
        let mut sqnr: Vec<f64> = Vec::new();
        let mut tensors = Vec::new();
        for t in &m.tensors {
            if let Some(method) = &t.method {
                *methods.entry(method.clone()).or_default() += 1;
            }
            let e = types.entry(t.type_out.clone()).or_default();
            e.tensors += 1;
            e.bytes += t.bytes_out;
            sqnr.extend(t.sqnr_db);
            if filter.is_none_or(|re| re.is_match(&t.name)) {
                tensors.push(t.clone());
            }
        }
        let mut files = parts.files;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        PackageReport {
            kind: "package",
            path: dir.display().to_string(),
            format_version: m.format_version,
            tool: ToolSummary { name: m.tool.name.clone(), version: m.tool.version.clone() },
            target: m.target.clone(),
            scheme: m.scheme.clone(),
            method: m.method.clone(),
            tensor_methods: methods,
            options: m.options.clone(),
            source_files: m.source.files.clone(),
            source_bytes: m.source.files.iter().map(|f| f.size).sum(),
            signature: parts.signature,
            files,
            tensor_count: m.tensors.len(),
            types,
            median_sqnr_db: crate::stats::median(&sqnr),
            gguf: parts.gguf.map(GgufReport::summary),
            quantization_config: parts.quantization_config,
            tensors,
        }
    }
}

/// Serialize ordered pairs as a JSON object in their order (a map type would re-sort them).
fn pairs_as_map<K: Serialize, V: Serialize, S: serde::Serializer>(pairs: &[(K, V)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}
