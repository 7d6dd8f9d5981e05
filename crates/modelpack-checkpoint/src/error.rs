//! The one error type of this crate: every variant names the file, and the tensor when there is one.

use std::path::PathBuf;
use thiserror::Error;

/// Why a checkpoint could not be opened. Messages are meant for the person who handed us the
/// file: they name the file and tensor and say what is wrong in the format's own terms.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The operating system refused to open, stat, read or map a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A directory without any `*.safetensors` file.
    #[error("{}: no weights found (no *.safetensors file){hint}", dir.display())]
    NoWeights {
        /// The directory searched.
        dir: PathBuf,
        /// Extra advice, e.g. that PyTorch `.bin` files were found instead (may be empty).
        hint: String,
    },
    /// The path is neither a directory nor a regular file.
    #[error("{}: not a checkpoint directory or safetensors file", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The index names a shard file that does not exist.
    #[error("{}: missing shard {shard:?} (named in the index for tensor {tensor:?})", index.display())]
    MissingShard {
        /// The `model.safetensors.index.json` file.
        index: PathBuf,
        /// The missing file name as written in `weight_map`.
        shard: String,
        /// One tensor mapped to it.
        tensor: String,
    },
    /// The index file is malformed (not JSON, no `weight_map`, unsafe shard file name, ...).
    #[error("{}: bad shard index: {reason}", index.display())]
    BadIndex {
        /// The index file.
        index: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index maps a tensor to a shard that does not contain it.
    #[error("{}: tensor {tensor:?} is mapped to {shard:?} but that shard does not contain it", index.display())]
    TensorNotInShard {
        /// The index file.
        index: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shard named for it.
        shard: String,
    },
    /// A shard holds a tensor the index does not list (or maps elsewhere).
    #[error("{}: tensor {tensor:?} is not listed for this shard in {}", shard.display(), index.display())]
    UnindexedTensor {
        /// The shard file.
        shard: PathBuf,
        /// The index file.
        index: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// The same tensor name appears in two shards.
    #[error("tensor {tensor:?} is present in two shards: {} and {}", first.display(), second.display())]
    DuplicateAcrossShards {
        /// The tensor.
        tensor: String,
        /// First shard holding it.
        first: PathBuf,
        /// Second shard holding it.
        second: PathBuf,
    },
    /// The bytes are not a safetensors file at all (wrong kind of file).
    #[error("{}: not a safetensors file ({reason})", path.display())]
    NotSafetensors {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        reason: String,
    },
    /// The file ends before the data its header describes.
    #[error("{}: truncated file: {size} bytes, but at least {needed} are needed", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Actual file size.
        size: u64,
        /// Size the header implies.
        needed: u64,
    },
    /// The 8-byte header length exceeds [`crate::Limits::max_header_bytes`] (by default the
    /// format's 100 MB).
    #[error("{}: header length {len} exceeds the {limit}-byte limit", path.display())]
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// Declared header length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The declared header runs past the end of the file.
    #[error("{}: header length {len} is longer than the file ({available} bytes after the length prefix)", path.display())]
    HeaderPastEnd {
        /// The file.
        path: PathBuf,
        /// Declared header length.
        len: u64,
        /// Bytes available after the 8-byte prefix.
        available: u64,
    },
    /// The header is not valid UTF-8.
    #[error("{}: header is not valid UTF-8 (invalid byte at header offset {offset})", path.display())]
    HeaderUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first invalid byte within the header.
        offset: usize,
    },
    /// The header is not valid JSON, or not the JSON the format prescribes.
    #[error("{}: invalid header JSON: {message}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// `__metadata__` is not an object of strings.
    #[error("{}: invalid __metadata__: {reason}", path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// More tensors than the cap ([`crate::Limits::max_tensors`]) in one file or in the whole
    /// checkpoint: refused before they cost memory.
    #[error("{}: more than {limit} tensors (cap)", path.display())]
    TooManyTensors {
        /// The file, or the checkpoint directory for the total over all shards.
        path: PathBuf,
        /// The cap.
        limit: usize,
    },
    /// The same tensor name twice in one header (JSON parsers would silently keep one).
    #[error("{}: duplicate tensor name {tensor:?} in header", path.display())]
    DuplicateTensor {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        tensor: String,
    },
    /// A dtype name the safetensors format does not define.
    #[error("{}: tensor {tensor:?} has unknown dtype {dtype:?}", path.display())]
    UnknownDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype as written.
        dtype: String,
    },
    /// The element count or byte size of a shape does not fit in 64 bits.
    #[error("{}: tensor {tensor:?} shape {shape:?} overflows: element count or byte size exceeds 64 bits", path.display())]
    ShapeOverflow {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape as written.
        shape: Vec<u64>,
    },
    /// `data_offsets` with end before start.
    #[error("{}: tensor {tensor:?} has reversed data_offsets [{start}, {end}]", path.display())]
    ReversedOffsets {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Start offset.
        start: u64,
        /// End offset.
        end: u64,
    },
    /// Byte span does not equal element count times dtype size.
    #[error("{}: tensor {tensor:?} size mismatch: {dtype} {shape:?} needs {expected} bytes but data_offsets span {actual}", path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: crate::Dtype,
        /// Its shape.
        shape: Vec<usize>,
        /// product(shape) × dtype size.
        expected: u64,
        /// end − start.
        actual: u64,
    },
    /// Offsets reach beyond the data area.
    #[error("{}: tensor {tensor:?} data_offsets [{start}, {end}] out of bounds of the {data_len}-byte data area", path.display())]
    OutOfBounds {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Start offset (relative to the data area).
        start: u64,
        /// End offset.
        end: u64,
        /// Data area length.
        data_len: u64,
    },
    /// Two tensors share bytes.
    #[error("{}: tensors {first:?} and {second:?} overlap: {second:?} starts at {start}, before {first:?} ends at {end}", path.display())]
    Overlap {
        /// The file.
        path: PathBuf,
        /// Tensor that starts first.
        first: String,
        /// Tensor starting inside it.
        second: String,
        /// Start of `second`.
        start: u64,
        /// End of `first`.
        end: u64,
    },
    /// Unindexed bytes between tensors or after the last one. The format forbids them (no
    /// room for polyglot files) and the reference reader refuses them.
    #[error("{}: {what}: bytes [{start}, {end}) of the data area belong to no tensor", path.display())]
    Hole {
        /// The file.
        path: PathBuf,
        /// Where the hole is (`"gap before tensor \"x\""`, `"trailing bytes"`).
        what: String,
        /// Start of the hole.
        start: u64,
        /// End of the hole.
        end: u64,
    },
    /// A packed sub-byte tensor whose bit count is not a whole number of bytes.
    #[error("{}: tensor {tensor:?} of packed dtype {dtype} does not fill whole bytes", path.display())]
    PartialByte {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: crate::Dtype,
    },
    /// A tensor with more elements than [`crate::Limits::max_tensor_elements`].
    #[error("{}: tensor {tensor:?} has {numel} elements, over the cap of {limit}", path.display())]
    TooManyElements {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// product(shape).
        numel: u64,
        /// The cap.
        limit: u64,
    },
    /// A tensor with more dimensions than [`crate::Limits::max_rank`].
    #[error("{}: tensor {tensor:?} has {rank} dimensions, over the cap of {limit}", path.display())]
    TooManyDims {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Number of dimensions.
        rank: usize,
        /// The cap.
        limit: usize,
    },
    /// JSON nested deeper than [`crate::Limits::max_json_depth`] (a stack-exhaustion attempt;
    /// no real file comes close).
    #[error("{}: JSON nested deeper than {limit} levels", path.display())]
    JsonTooDeep {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: usize,
    },
    /// A JSON side file larger than [`crate::Limits::max_json_bytes`].
    #[error("{}: JSON file is larger than the {limit}-byte cap", path.display())]
    JsonTooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// A JSON side file (e.g. tokenizer.json) that does not parse.
    #[error("{}: invalid JSON: {message}", path.display())]
    BadJsonFile {
        /// The file.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// An input file changed between being opened and the end of the job (see
    /// [`crate::SourceSnapshot`]): the package would not describe what was read.
    #[error("{}: changed while modelpack was reading it, so no package was written: {what}", path.display())]
    SourceChanged {
        /// The file.
        path: PathBuf,
        /// What differs (size, times, identity).
        what: String,
    },
    /// An FP8 (or other pre-quantized) weight that cannot be decoded as its
    /// `quantization_config` describes: missing or misshapen scale, unknown format, no config.
    #[error("tensor `{tensor}`: {message}")]
    Quantized {
        /// The weight (or scale) tensor at fault.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// `config.json` is unreadable, not JSON, or has a field of the wrong type.
    #[error("{}: bad config.json: {message}", path.display())]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl CheckpointError {
    /// The [`crate::Limits`] field whose cap this error reports, when a legitimate model could
    /// exceed it and the caller may raise it (the CLI maps it to a `--max-*` flag). `None` for
    /// every other error, including caps no real file comes near (JSON depth, rank).
    pub fn exceeded_cap(&self) -> Option<&'static str> {
        match self {
            CheckpointError::TooManyTensors { .. } => Some("max_tensors"),
            CheckpointError::HeaderTooLarge { .. } => Some("max_header_bytes"),
            CheckpointError::JsonTooLarge { .. } => Some("max_json_bytes"),
            CheckpointError::TooManyElements { .. } => Some("max_tensor_elements"),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io { path: path.into(), source }
    }
}
