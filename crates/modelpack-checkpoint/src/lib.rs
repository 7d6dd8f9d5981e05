//! Reading Hugging Face checkpoints (config.json and single or sharded safetensors) via mmap.
//!
//! [`Checkpoint::open`] validates every header against its file before anything reads tensor
//! data (header length, UTF-8 JSON, dtypes, shapes, in-bounds non-overlapping offsets, shard
//! index), so later stages can slice the mapped bytes without re-checking. Tensor
//! data is exposed as borrowed bytes; files written by other tools may put it at odd offsets,
//! so nothing here casts it to wider types.

mod config;
mod dtype;
mod error;
pub mod fp8;
mod header;
pub mod limits;
pub mod packed;
mod snapshot;

pub use config::ModelConfig;
pub use dtype::Dtype;
pub use error::CheckpointError;
pub use limits::{Limits, MAX_HEADER_LEN, MAX_TENSORS};
pub use snapshot::{FileStamp, SourceSnapshot};

use header::Entry;
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// File name of the shard index of sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// File name of the model configuration.
pub const CONFIG_FILE: &str = "config.json";

/// One validated safetensors file, memory-mapped.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    mmap: Option<Mmap>,
    entries: Vec<Entry>,
    metadata: Vec<(String, String)>,
    data_start: usize,
    stamp: FileStamp,
}

impl Shard {
    /// Map and validate one safetensors file.
    ///
    /// The mapping assumes nobody truncates the file while we hold it (the same contract as
    /// every mmap-based reader): checkpoints are inputs we only read.
    pub fn open(path: &Path) -> Result<Shard, CheckpointError> {
        Shard::open_with_limits(path, &Limits::default())
    }

    /// [`Shard::open`] with explicit resource caps.
    pub fn open_with_limits(path: &Path, limits: &Limits) -> Result<Shard, CheckpointError> {
        let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        let meta = file.metadata().map_err(|e| CheckpointError::io(path, e))?;
        if !meta.is_file() {
            return Err(CheckpointError::NotAFile { path: path.to_path_buf() });
        }
        // Mapping an empty file fails on Linux; an empty file is simply too short.
        let mmap = if meta.len() == 0 {
            None
        } else {
            // SAFETY: read-only private mapping of a regular file; see the contract above.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?)
        };
        let bytes: &[u8] = mmap.as_deref().unwrap_or(&[]);
        let header = header::parse(path, bytes, limits)?;
        Ok(Shard {
            stamp: FileStamp::of(&meta),
            path: path.to_path_buf(),
            entries: header.entries,
            metadata: header.metadata,
            data_start: header.data_start,
            mmap,
        })
    }

    /// Path of the file as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// The whole file's bytes (header included).
    pub fn bytes(&self) -> &[u8] {
        self.mmap.as_deref().unwrap_or(&[])
    }

    /// Offset of the data area (8 + header length): tensor offsets are relative to it on disk.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// Identity and version of the file when it was mapped (from the same descriptor).
    pub fn stamp(&self) -> FileStamp {
        self.stamp
    }

    /// `__metadata__` entries in file order (e.g. `format: pt`).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// Number of tensors in this file.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Tensors of this file, sorted by name; `shard` is filled with `index`.
    pub fn tensors(&self, index: usize) -> impl Iterator<Item = TensorView<'_>> {
        self.entries.iter().map(move |e| self.view(e, index))
    }

    fn view<'a>(&'a self, e: &'a Entry, shard: usize) -> TensorView<'a> {
        TensorView {
            name: &e.name,
            dtype: e.dtype,
            shape: &e.shape,
            // Bounds were validated against the file when the header was parsed.
            data: &self.bytes()[e.start..e.end],
            shard,
            offset: e.start as u64,
        }
    }

    fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.name.as_str().cmp(name)).ok().map(|i| &self.entries[i])
    }
}

/// Validate a whole safetensors file held in memory, as [`Shard::open`] does after mapping it;
/// returns each tensor's name and absolute byte range, sorted by name. For callers that have
/// bytes rather than a file (fuzzing, network streams); `path` only names it in errors.
#[allow(clippy::type_complexity)]
pub fn validate_safetensors(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Vec<(String, std::ops::Range<usize>)>, CheckpointError> {
    let h = header::parse(path, bytes, limits)?;
    Ok(h.entries.into_iter().map(|e| (e.name, e.start..e.end)).collect())
}

/// A borrowed tensor: metadata and its raw little-endian bytes, straight from the mapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    /// Tensor name as in the file (`model.layers.0.self_attn.q_proj.weight`).
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first (HF order: `[out, in]` for Linear weights).
    pub shape: &'a [usize],
    /// Exactly `numel × dtype size` bytes; may start at any alignment.
    pub data: &'a [u8],
    /// Index into [`Checkpoint::shards`].
    pub shard: usize,
    /// Absolute byte offset of `data` in its shard file.
    pub offset: u64,
}

impl TensorView<'_> {
    /// Number of elements (validated not to overflow when the header was read).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the data in bytes.
    pub fn nbytes(&self) -> usize {
        self.data.len()
    }
}

/// An opened, validated Hugging Face checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    root: PathBuf,
    index: Option<PathBuf>,
    config_path: Option<PathBuf>,
    config: Option<ModelConfig>,
    shards: Vec<Shard>,
    /// (shard, entry) of every tensor, sorted by tensor name.
    order: Vec<(usize, usize)>,
    /// Stamps of every input file, taken as it was opened.
    snapshot: SourceSnapshot,
    /// The caps it was opened with, for the side files read later (tokenizer.json).
    limits: Limits,
}

impl Checkpoint {
    /// Open a checkpoint directory or a single `.safetensors` file.
    ///
    /// A directory uses `model.safetensors.index.json` when present (every listed shard must
    /// exist and hold exactly the tensors mapped to it), else `model.safetensors`, else every
    /// `*.safetensors` file in it. A single file's directory is the root for `config.json`
    /// and the auxiliary files. Uses the default [`Limits`].
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::open_with_limits(path, &Limits::default())
    }

    /// [`Checkpoint::open`] with explicit resource caps (headers, tensor counts, JSON files).
    pub fn open_with_limits(path: &Path, limits: &Limits) -> Result<Checkpoint, CheckpointError> {
        let meta = std::fs::metadata(path).map_err(|e| CheckpointError::io(path, e))?;
        let mut snapshot = SourceSnapshot::default();
        let (root, index, shard_paths) = if meta.is_dir() {
            let index = path.join(INDEX_FILE);
            if index.exists() {
                // Stamped before reading, so a change during the read shows at the end.
                snapshot = SourceSnapshot::capture(&[&index])?;
                let files = read_index(&index, limits)?;
                (path.to_path_buf(), Some((index, files.1)), files.0)
            } else {
                (path.to_path_buf(), None, find_shards(path)?)
            }
        } else if meta.is_file() {
            let root = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (root, None, vec![path.to_path_buf()])
        } else {
            return Err(CheckpointError::NotAFile { path: path.to_path_buf() });
        };

        let mut shards = Vec::with_capacity(shard_paths.len());
        let mut total = 0usize;
        for p in &shard_paths {
            let s = Shard::open_with_limits(p, limits)?;
            total = total.saturating_add(s.len());
            if total > limits.max_tensors {
                return Err(CheckpointError::TooManyTensors { path: root.clone(), limit: limits.max_tensors });
            }
            snapshot.push(s.path.clone(), s.stamp);
            shards.push(s);
        }

        // Name → (shard, entry), refusing a tensor held by two files.
        let mut all: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (si, shard) in shards.iter().enumerate() {
            for (ei, e) in shard.entries.iter().enumerate() {
                if let Some(&(other, _)) = all.get(e.name.as_str()) {
                    return Err(CheckpointError::DuplicateAcrossShards {
                        tensor: e.name.clone(),
                        first: shards[other].path.clone(),
                        second: shard.path.clone(),
                    });
                }
                all.insert(&e.name, (si, ei));
            }
        }
        let index_path = match index {
            Some((index_path, weight_map)) => {
                check_index(&index_path, &weight_map, &shard_paths, &shards, &all)?;
                Some(index_path)
            }
            None => None,
        };
        let order: Vec<(usize, usize)> = all.into_values().collect();

        let config_file = root.join(CONFIG_FILE);
        let (config_path, config) = if config_file.is_file() {
            let stamp = std::fs::metadata(&config_file).map_err(|e| CheckpointError::io(&config_file, e))?;
            snapshot.push(config_file.clone(), FileStamp::of(&stamp));
            let c = ModelConfig::read_with_limits(&config_file, limits)?;
            (Some(config_file), Some(c))
        } else {
            (None, None)
        };
        let mut ck =
            Checkpoint { root, index: index_path, config_path, config, shards, order, snapshot, limits: *limits };
        // The files a package copies are inputs too.
        for aux in ck.aux_files() {
            if let Ok(m) = std::fs::metadata(&aux) {
                ck.snapshot.push(aux, FileStamp::of(&m));
            }
        }
        Ok(ck)
    }

    /// Stamps of every input file (shards, index, config.json, auxiliary files) taken when
    /// they were opened: call [`SourceSnapshot::verify_unchanged`] before publishing anything
    /// derived from them.
    pub fn snapshot(&self) -> &SourceSnapshot {
        &self.snapshot
    }

    /// The caps this checkpoint was opened with; apply them to any side file read later.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The directory containing the weights.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Parsed `config.json`, when the directory has one.
    pub fn config(&self) -> Option<&ModelConfig> {
        self.config.as_ref()
    }

    /// Path of `config.json`, when present.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Path of the shard index, for sharded checkpoints.
    pub fn index_path(&self) -> Option<&Path> {
        self.index.as_deref()
    }

    /// The weight files, in index order (sorted file names).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Every tensor, sorted by name (byte order): a deterministic order for plans and output.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.order.iter().map(|&(s, e)| self.shards[s].view(&self.shards[s].entries[e], s))
    }

    /// One tensor by exact name.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let i = self.order.binary_search_by(|&(s, e)| self.shards[s].entries[e].name.as_str().cmp(name)).ok()?;
        let (s, e) = self.order[i];
        Some(self.shards[s].view(&self.shards[s].entries[e], s))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the checkpoint has no tensors.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Total elements over all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors().map(|t| t.numel() as u64).sum()
    }

    /// Total tensor data bytes (headers excluded).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors().map(|t| t.nbytes() as u64).sum()
    }

    /// Every input file the weights came from (shards, index, config.json), for provenance.
    pub fn source_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.shards.iter().map(|s| s.path.clone()).collect();
        v.extend(self.index.clone());
        v.extend(self.config_path.clone());
        v
    }

    /// Non-weight files a package should carry unchanged: tokenizer files, generation config,
    /// chat templates, vocab/merges, licence and notice files: top-level entries that are, or
    /// link to, regular files, sorted by name. Links are followed because a Hugging Face cache
    /// snapshot is made of symlinks into its blob store; the package always receives a real copy
    /// of the content. Dangling links, links to directories, weights, the index and
    /// `config.json` (which the package writer regenerates) are left out.
    ///
    /// Remote code is carried too: the `X.py` of every `auto_map` entry `X.Class` of config.json
    /// and tokenizer_config.json that the checkpoint holds (Kimi K2's `configuration_deepseek.py`,
    /// `tokenization_kimi.py`). The copied config.json keeps its `auto_map`, and the runtimes load
    /// such models with `trust_remote_code`, which fails on a package without those files.
    pub fn aux_files(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = dir
            .filter_map(Result::ok)
            .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
            .filter(|e| e.file_name().to_str().is_some_and(is_aux_name))
            .map(|e| e.path())
            .collect();
        out.extend(self.remote_code_files());
        out.sort();
        out.dedup();
        out
    }

    /// The top-level `X.py` files named by `auto_map` (`"X.Class"`, or a list of them for
    /// tokenizers) in config.json and tokenizer_config.json. References into another repository
    /// (`"repo--X.Class"`) and names that are not plain module names are not files here.
    fn remote_code_files(&self) -> Vec<PathBuf> {
        let tok = limits::read_json_bytes(&self.root.join("tokenizer_config.json"), &self.limits)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let maps = [self.config.as_ref().map(|c| &c.raw), tok.as_ref()];
        let mut refs: Vec<&str> = Vec::new();
        for map in maps.into_iter().flatten().filter_map(|v| v.get("auto_map")?.as_object()) {
            for v in map.values() {
                match v {
                    serde_json::Value::String(s) => refs.push(s),
                    serde_json::Value::Array(a) => refs.extend(a.iter().filter_map(|x| x.as_str())),
                    _ => {}
                }
            }
        }
        refs.iter()
            .filter(|r| !r.contains("--"))
            .filter_map(|r| r.split_once('.').map(|(m, _)| m))
            .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .map(|m| self.root.join(format!("{m}.py")))
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
            .collect()
    }
}

/// Whether a top-level file name is one of the auxiliary files a runtime needs beside weights.
pub fn is_aux_name(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "tiktoken.model",
        "special_tokens_map.json",
        "added_tokens.json",
        "generation_config.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "preprocessor_config.json",
        "processor_config.json",
    ];
    let lower = name.to_ascii_lowercase();
    EXACT.contains(&name)
        || name.starts_with("chat_template.")
        || lower.starts_with("license")
        || lower.starts_with("licence")
        || lower.starts_with("notice")
        || lower == "use_policy.md"
}

/// Parse the index: sorted unique shard file names and the (tensor, file) pairs.
#[allow(clippy::type_complexity)]
fn read_index(index: &Path, limits: &Limits) -> Result<(Vec<PathBuf>, Vec<(String, String)>), CheckpointError> {
    let bad = |reason: String| CheckpointError::BadIndex { index: index.to_path_buf(), reason };
    let text = limits::read_json_bytes(index, limits)?;
    #[derive(serde::Deserialize)]
    struct IndexDoc {
        weight_map: Option<header::DupMap<String>>,
    }
    let doc: IndexDoc = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let Some(header::DupMap(pairs)) = doc.weight_map else {
        return Err(bad("no \"weight_map\"".into()));
    };
    if pairs.len() > limits.max_tensors {
        return Err(CheckpointError::TooManyTensors { path: index.to_path_buf(), limit: limits.max_tensors });
    }
    let mut seen = std::collections::HashSet::new();
    for (t, _) in &pairs {
        if !seen.insert(t.as_str()) {
            return Err(bad(format!("tensor {t:?} listed twice in weight_map")));
        }
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<&str> = pairs.iter().map(|(_, f)| f.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    let mut paths = Vec::with_capacity(files.len());
    for f in files {
        let plain = Path::new(f).file_name().and_then(|n| n.to_str()) == Some(f);
        if !plain || f == ".." || f == "." {
            return Err(bad(format!("shard name {f:?} is not a plain file name")));
        }
        let p = dir.join(f);
        if !p.exists() {
            let tensor = pairs.iter().find(|(_, g)| g == f).map(|(t, _)| t.clone()).unwrap_or_default();
            return Err(CheckpointError::MissingShard { index: index.to_path_buf(), shard: f.to_owned(), tensor });
        }
        paths.push(p);
    }
    if paths.is_empty() {
        return Err(bad("\"weight_map\" is empty".into()));
    }
    Ok((paths, pairs))
}

fn check_index(
    index: &Path,
    weight_map: &[(String, String)],
    shard_paths: &[PathBuf],
    shards: &[Shard],
    all: &BTreeMap<&str, (usize, usize)>,
) -> Result<(), CheckpointError> {
    let by_file: HashMap<&str, usize> =
        shard_paths.iter().enumerate().filter_map(|(i, p)| Some((p.file_name()?.to_str()?, i))).collect();
    let mut mapped: HashMap<&str, usize> = HashMap::with_capacity(weight_map.len());
    for (tensor, file) in weight_map {
        // Every weight_map file became a shard path in `read_index`; a miss is reported, not assumed.
        let found = by_file.get(file.as_str()).copied().filter(|&si| shards[si].find(tensor).is_some());
        let Some(si) = found else {
            return Err(CheckpointError::TensorNotInShard {
                index: index.to_path_buf(),
                tensor: tensor.clone(),
                shard: file.clone(),
            });
        };
        mapped.insert(tensor, si);
    }
    for (&name, &(si, _)) in all {
        if mapped.get(name) != Some(&si) {
            return Err(CheckpointError::UnindexedTensor {
                shard: shards[si].path.clone(),
                index: index.to_path_buf(),
                tensor: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// Weight files of a directory without an index: `model.safetensors` if present, else all
/// `*.safetensors` (sorted). None is an error that says what was found instead.
fn find_shards(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))?;
    let mut found = Vec::new();
    let mut others = Vec::new();
    for e in rd {
        let e = e.map_err(|e| CheckpointError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && e.path().is_file() {
            found.push(e.path());
        } else if name.ends_with(".bin") || name.ends_with(".pth") || name.ends_with(".pt") || name.ends_with(".gguf") {
            others.push(name);
        }
    }
    if found.is_empty() {
        others.sort();
        let hint = if others.is_empty() {
            String::new()
        } else {
            format!("; found {} (only safetensors checkpoints are read)", others.join(", "))
        };
        return Err(CheckpointError::NoWeights { dir: dir.to_path_buf(), hint });
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests;
