//! Unit tests: the reader against the `safetensors` crate as an independent writer, and one
//! hand-built file per validation rule.

use super::*;
use std::io::Write;

/// A safetensors file from a literal header and data area (header padded like the reference).
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

fn open_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "model.safetensors", bytes);
    // The mapping stays valid after the tempdir removes the file (Unix unlink semantics).
    Checkpoint::open(&p)
}

fn err(bytes: &[u8]) -> String {
    open_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn matches_the_safetensors_crate() {
    use safetensors::tensor::TensorView as StView;
    let odd: Vec<u8> = (0..7u8).collect();
    let bf: Vec<u8> = (0..24u8).map(|i| i.wrapping_mul(37)).collect();
    let f: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(11).wrapping_add(3)).collect();
    let tensors = vec![
        ("a_odd", StView::new(safetensors::Dtype::U8, vec![7], &odd).unwrap()),
        ("b_bf16", StView::new(safetensors::Dtype::BF16, vec![3, 4], &bf).unwrap()),
        ("c_f32", StView::new(safetensors::Dtype::F32, vec![2, 5], &f).unwrap()),
        ("d_empty", StView::new(safetensors::Dtype::I64, vec![0, 3], &[]).unwrap()),
    ];
    let bytes = safetensors::serialize(tensors, None).unwrap();
    let ck = open_bytes(&bytes).unwrap();
    let names: Vec<&str> = ck.tensors().map(|t| t.name).collect();
    assert_eq!(names, ["a_odd", "b_bf16", "c_f32", "d_empty"]);
    same_as_reference(&ck, &bytes);
    assert_eq!(ck.tensor("c_f32").unwrap().data, &f[..]);
    assert_eq!(ck.parameter_count(), 7 + 12 + 10);
    assert_eq!(ck.tensor_bytes(), 7 + 24 + 40);
    assert!(ck.tensor("zzz").is_none());
}

/// Every tensor we expose equals what the reference reader exposes for the same bytes.
fn same_as_reference(ck: &Checkpoint, bytes: &[u8]) {
    let reference = safetensors::SafeTensors::deserialize(bytes).unwrap();
    assert_eq!(reference.len(), ck.len());
    for t in ck.tensors() {
        let r = reference.tensor(t.name).unwrap();
        assert_eq!(t.shape, r.shape(), "{}", t.name);
        assert_eq!(t.dtype.name(), format!("{:?}", r.dtype()), "{}", t.name);
        assert_eq!(t.data, r.data(), "{}", t.name);
    }
}

#[test]
fn odd_offsets_as_other_writers_make_them() {
    // The reference writer sorts by alignment, so build the unaligned layout by hand and let
    // the reference reader confirm it is a valid file.
    let data: Vec<u8> = (0..(3 + 8 + 12) as u8).map(|i| i.wrapping_mul(29)).collect();
    let b = raw_file(
        r#"{"a":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]},"c":{"dtype":"BF16","shape":[2,3],"data_offsets":[11,23]}}"#,
        &data,
    );
    let ck = open_bytes(&b).unwrap();
    same_as_reference(&ck, &b);
    let t = ck.tensor("b").unwrap();
    assert_eq!(t.offset % 2, 1, "F32 data at an odd file offset");
    assert_eq!(t.data, &data[3..11]);
    assert_eq!(t.data.as_ptr() as usize % 2, 1);
}

#[test]
fn metadata_is_kept() {
    let b = raw_file(
        r#"{"__metadata__":{"format":"pt"},"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
        &[1, 2, 3, 4],
    );
    let ck = open_bytes(&b).unwrap();
    assert_eq!(ck.shards()[0].metadata(), &[("format".to_string(), "pt".to_string())]);
    assert_eq!(ck.tensor("x").unwrap().data, &[1, 2, 3, 4]);
}

#[test]
fn each_violation_has_its_own_error() {
    let t = |h: &str, d: &[u8]| err(&raw_file(h, d));
    // Too short for the length prefix.
    assert!(err(&[1, 0, 0]).contains("truncated"));
    // Not safetensors at all.
    let gguf = [b"GGUF".as_slice(), &[3, 0, 0, 0], &[0; 16]].concat();
    assert!(err(&gguf).contains("not a safetensors file (it is a GGUF file)"));
    // Header length 2^63.
    let mut b = (1u64 << 63).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}      ");
    assert!(err(&b).contains("exceeds the 100000000-byte limit"), "{}", err(&b));
    // Header longer than the file.
    let mut b = 1000u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}      ");
    assert!(err(&b).contains("longer than the file"));
    // Invalid UTF-8.
    let mut b = raw_file(r#"{"x":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#, &[]);
    b[10] = 0xff;
    assert!(err(&b).contains("not valid UTF-8"));
    assert!(t(r#"{"x": nope}"#, &[]).contains("invalid header JSON"));
    assert!(t(r#"{"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}"#, &[]).contains("invalid header JSON"));
    assert!(t(
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
        &[0; 6]
    )
    .contains("overlap"));
    assert!(t(r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[100,104]}}"#, &[0; 8])
        .contains("out of bounds"));
    assert!(t(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 4]).contains("size mismatch"));
    assert!(t(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, &[0; 4])
        .contains("overflows"));
    assert!(t(
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
        &[0; 4]
    )
    .contains("duplicate tensor name \"a\""));
    assert!(t(r#"{"a":{"dtype":"Q4_0","shape":[2],"data_offsets":[0,2]}}"#, &[0; 2]).contains("unknown dtype \"Q4_0\""));
    assert!(t(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,0]}}"#, &[0; 2]).contains("reversed"));
    assert!(t(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#, &[0; 4]).contains("gap before tensor \"a\""));
    assert!(t(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, &[0; 4]).contains("trailing bytes"));
    assert!(t(r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#, &[0; 4]).contains("truncated"));
    assert!(t(r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, &[0; 2]).contains("whole bytes"));
    assert!(t(r#"{"__metadata__":{"x":1}}"#, &[]).contains("__metadata__"));
    assert!(t(r#"[1]"#, &[]).contains("not a safetensors file"));
}

#[test]
fn leading_whitespace_in_header_is_json() {
    let b = raw_file(r#"  {"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, &[5]);
    safetensors::SafeTensors::deserialize(&b).unwrap();
    assert_eq!(open_bytes(&b).unwrap().tensor("x").unwrap().data, &[5]);
}

#[test]
fn every_offset_check_names_the_tensor() {
    let m = err(&raw_file(r#"{"w.q":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}}"#, &[0; 4]));
    assert!(m.contains("\"w.q\"") && m.contains("model.safetensors"), "{m}");
}

fn shard(tensors: &[(&str, usize)]) -> Vec<u8> {
    let mut h = String::from("{");
    let mut off = 0;
    for (i, (n, len)) in tensors.iter().enumerate() {
        if i > 0 {
            h.push(',');
        }
        h += &format!(r#""{n}":{{"dtype":"U8","shape":[{len}],"data_offsets":[{off},{}]}}"#, off + len);
        off += len;
    }
    h.push('}');
    raw_file(&h, &vec![7u8; off])
}

fn sharded_dir(index: &str, shards: &[(&str, &[(&str, usize)])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), INDEX_FILE, index.as_bytes());
    for (name, t) in shards {
        write(dir.path(), name, &shard(t));
    }
    dir
}

const INDEX: &str =
    r#"{"metadata":{"total_size":6},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s1.safetensors"}}"#;

#[test]
fn sharded_checkpoint() {
    let d = sharded_dir(INDEX, &[("s1.safetensors", &[("c", 1), ("a", 2)]), ("s2.safetensors", &[("b", 3)])]);
    write(d.path(), "config.json", br#"{"model_type":"llama","hidden_size":8}"#);
    let ck = Checkpoint::open(d.path()).unwrap();
    let v: Vec<(&str, usize, usize)> = ck.tensors().map(|t| (t.name, t.shard, t.nbytes())).collect();
    assert_eq!(v, [("a", 0, 2), ("b", 1, 3), ("c", 0, 1)]);
    assert_eq!(ck.config().unwrap().hidden_size, Some(8));
    assert_eq!(ck.index_path(), Some(d.path().join(INDEX_FILE).as_path()));
    assert_eq!(ck.source_files().len(), 4);
}

#[test]
fn sharded_errors() {
    let e = |d: &tempfile::TempDir| Checkpoint::open(d.path()).unwrap_err().to_string();
    let d = sharded_dir(INDEX, &[("s1.safetensors", &[("c", 1), ("a", 2)])]);
    assert!(e(&d).contains("missing shard \"s2.safetensors\""), "{}", e(&d));
    let d = sharded_dir(INDEX, &[("s1.safetensors", &[("a", 2)]), ("s2.safetensors", &[("b", 3)])]);
    assert!(e(&d).contains("tensor \"c\" is mapped to \"s1.safetensors\" but that shard does not contain it"));
    let d = sharded_dir(INDEX, &[("s1.safetensors", &[("c", 1), ("a", 2)]), ("s2.safetensors", &[("b", 3), ("x", 1)])]);
    assert!(e(&d).contains("tensor \"x\" is not listed"), "{}", e(&d));
    let d = sharded_dir(INDEX, &[("s1.safetensors", &[("c", 1), ("a", 2)]), ("s2.safetensors", &[("b", 3), ("a", 1)])]);
    assert!(e(&d).contains("present in two shards"), "{}", e(&d));
    let dup = r#"{"weight_map":{"a":"s1.safetensors","a":"s1.safetensors"}}"#;
    let d = sharded_dir(dup, &[("s1.safetensors", &[("a", 2)])]);
    assert!(e(&d).contains("listed twice"), "{}", e(&d));
    let evil = r#"{"weight_map":{"a":"../s1.safetensors"}}"#;
    let d = sharded_dir(evil, &[]);
    assert!(e(&d).contains("not a plain file name"), "{}", e(&d));
    let d = sharded_dir("{", &[]);
    assert!(e(&d).contains("bad shard index"), "{}", e(&d));
}

#[test]
fn directory_discovery_and_aux_files() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "pytorch_model.bin", b"PK");
    let m = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(m.contains("no weights found") && m.contains("pytorch_model.bin"), "{m}");
    write(d.path(), "model.safetensors", &shard(&[("w", 4)]));
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "README.md",
        "LICENSE",
        "chat_template.jinja",
    ] {
        write(d.path(), f, b"{}");
    }
    write(d.path(), "config.json", b"{}");
    // HF cache snapshots link every file into a blob store: a link to a regular file counts,
    // a dangling link or a link to a directory does not.
    std::os::unix::fs::symlink(d.path().join("tokenizer.json"), d.path().join("vocab.json")).unwrap();
    std::os::unix::fs::symlink(d.path().join("missing"), d.path().join("merges.txt")).unwrap();
    std::fs::create_dir(d.path().join("blobdir")).unwrap();
    std::os::unix::fs::symlink(d.path().join("blobdir"), d.path().join("tokenizer.model")).unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    let aux: Vec<String> =
        ck.aux_files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        aux,
        [
            "LICENSE",
            "chat_template.jinja",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json"
        ]
    );
    write(d.path(), "config.json", b"{\"vocab_size\": true}");
    let m = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(m.contains("bad config.json") && m.contains("vocab_size"), "{m}");
}

/// Kimi K2's layout: config.json and tokenizer_config.json name remote code in `auto_map`; the
/// named modules present in the checkpoint are carried, references elsewhere are not files here.
#[test]
fn remote_code_named_by_auto_map_is_an_aux_file() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "model.safetensors", &shard(&[("w", 4)]));
    write(
        d.path(),
        "config.json",
        br#"{"auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
            "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
            "AutoModel": "other/repo--modeling_x.X"}}"#,
    );
    write(
        d.path(),
        "tokenizer_config.json",
        br#"{"auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", null]}}"#,
    );
    for f in ["configuration_deepseek.py", "tokenization_kimi.py", "modeling_x.py", "unrelated.py", "tiktoken.model"] {
        write(d.path(), f, b"#");
    }
    let ck = Checkpoint::open(d.path()).unwrap();
    let aux: Vec<String> =
        ck.aux_files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    // modeling_deepseek.py is named but absent; modeling_x.py lives in another repository.
    assert_eq!(aux, ["configuration_deepseek.py", "tiktoken.model", "tokenization_kimi.py", "tokenizer_config.json"]);
}

#[test]
fn no_panic_on_any_truncation_or_byte_flip() {
    let good = raw_file(
        r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}"#,
        &[9; 11],
    );
    let p = Path::new("x.safetensors");
    let mut accepted = 0;
    assert!(header::parse(p, &good, &Limits::default()).is_ok());
    for len in 0..good.len() {
        assert!(header::parse(p, &good[..len], &Limits::default()).is_err(), "prefix of {len} bytes accepted");
    }
    // Every single-byte change: either a clean error or a file the reference reader also accepts.
    for i in 0..good.len() {
        for v in [0u8, b'"', b'}', b'9', 0xff, good[i] ^ 1] {
            let mut b = good.clone();
            b[i] = v;
            let ours = header::parse(p, &b, &Limits::default());
            let reference = safetensors::SafeTensors::deserialize(&b);
            match (&ours, &reference) {
                (Ok(_), Ok(_)) => accepted += 1,
                (Ok(_), Err(e)) => panic!("we accept what the reference refuses ({e}): byte {i} = {v:#x}"),
                // Only a duplicate name is ours alone to refuse (the reference keeps one silently).
                (Err(e), Ok(_)) => {
                    assert!(matches!(e, CheckpointError::DuplicateTensor { .. }), "byte {i} = {v:#x}: {e}")
                }
                (Err(_), Err(_)) => {}
            }
        }
    }
    assert!(accepted > 0, "flips inside tensor data keep the file valid");
}

#[test]
fn checkpoint_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Checkpoint>();
    send_sync::<TensorView<'static>>();
}

#[test]
fn every_cap_is_enforced_exactly_at_its_limit() {
    let d = sharded_dir(INDEX, &[("s1.safetensors", &[("c", 1), ("a", 2)]), ("s2.safetensors", &[("b", 3)])]);
    let open = |l: Limits| Checkpoint::open_with_limits(d.path(), &l);
    // Three tensors in all, two in the largest shard.
    open(Limits { max_tensors: 3, ..Limits::default() }).unwrap();
    let e = open(Limits { max_tensors: 2, ..Limits::default() }).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: more than 2 tensors (cap)", d.path().join(INDEX_FILE).display()));
    assert_eq!(e.exceeded_cap(), Some("max_tensors"));
    // Without an index, the total over the shards is capped, then each file's header.
    let plain = tempfile::tempdir().unwrap();
    write(plain.path(), "s1.safetensors", &shard(&[("c", 1), ("a", 2)]));
    write(plain.path(), "s2.safetensors", &shard(&[("b", 3)]));
    let e = Checkpoint::open_with_limits(plain.path(), &Limits { max_tensors: 2, ..Limits::default() }).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: more than 2 tensors (cap)", plain.path().display()));
    let e = Checkpoint::open_with_limits(plain.path(), &Limits { max_tensors: 1, ..Limits::default() }).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: more than 1 tensors (cap)", plain.path().join("s1.safetensors").display()));

    // Element count and rank of one tensor: "b" has 3 elements and rank 1.
    open(Limits { max_tensor_elements: 3, ..Limits::default() }).unwrap();
    let e = open(Limits { max_tensor_elements: 2, ..Limits::default() }).unwrap_err();
    assert!(e.to_string().ends_with("tensor \"b\" has 3 elements, over the cap of 2"), "{e}");
    assert_eq!(e.exceeded_cap(), Some("max_tensor_elements"));
    let e = open(Limits { max_rank: 0, ..Limits::default() }).unwrap_err();
    assert!(e.to_string().contains("has 1 dimensions, over the cap of 0"), "{e}");
    assert_eq!(e.exceeded_cap(), None);

    // The header length cap, exactly at the header's own length.
    let bytes = shard(&[("a", 2)]);
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let p = write(d.path(), "single.safetensors", &bytes);
    Shard::open_with_limits(&p, &Limits { max_header_bytes: hlen, ..Limits::default() }).unwrap();
    let e = Shard::open_with_limits(&p, &Limits { max_header_bytes: hlen - 1, ..Limits::default() }).unwrap_err();
    assert!(e.to_string().ends_with(&format!("header length {hlen} exceeds the {}-byte limit", hlen - 1)), "{e}");
    assert_eq!(e.exceeded_cap(), Some("max_header_bytes"));

    // The index and config.json are JSON side files under the size cap.
    let e = open(Limits { max_json_bytes: 10, ..Limits::default() }).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: JSON file is larger than the 10-byte cap", d.path().join(INDEX_FILE).display())
    );
}

#[test]
fn deep_json_in_header_metadata_and_config_is_refused_by_name() {
    let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    let m = err(&raw_file(&format!(r#"{{"__metadata__":{{"x":{deep}}}}}"#), &[]));
    assert!(m.ends_with("model.safetensors: JSON nested deeper than 64 levels"), "{m}");

    let d = tempfile::tempdir().unwrap();
    write(d.path(), "model.safetensors", &shard(&[("a", 1)]));
    write(d.path(), "config.json", format!(r#"{{"a":{deep}}}"#).as_bytes());
    let m = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert_eq!(m, format!("{}: JSON nested deeper than 64 levels", d.path().join("config.json").display()));
}

#[test]
fn the_snapshot_covers_shards_index_config_and_aux_files() {
    let d = sharded_dir(INDEX, &[("s1.safetensors", &[("c", 1), ("a", 2)]), ("s2.safetensors", &[("b", 3)])]);
    write(d.path(), "config.json", br#"{"model_type":"llama"}"#);
    write(d.path(), "tokenizer.json", b"{}");
    let ck = Checkpoint::open(d.path()).unwrap();
    let mut names: Vec<String> =
        ck.snapshot().files().iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["config.json", INDEX_FILE, "s1.safetensors", "s2.safetensors", "tokenizer.json"]);
    ck.snapshot().verify_unchanged().unwrap();
    std::fs::OpenOptions::new().append(true).open(d.path().join("tokenizer.json")).unwrap().write_all(b" ").unwrap();
    let e = ck.snapshot().verify_unchanged().unwrap_err().to_string();
    assert!(e.contains("tokenizer.json: changed while modelpack was reading it"), "{e}");
}
