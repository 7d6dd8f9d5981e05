//! The GGUF reader on hostile input: every malformed file is a typed error, never a panic or a
//! huge allocation.

use modelpack_format::gguf::{write_to_vec, GgufFile, GgufTensorInfo, MetaValue, ReaderLimits, GGML_F32, GGML_Q8_0};
use modelpack_format::FormatError;
use proptest::prelude::*;

fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// Header with the given counts, then `rest`.
fn file(n_tensors: u64, n_kv: u64, rest: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&le64(n_tensors));
    b.extend_from_slice(&le64(n_kv));
    b.extend_from_slice(rest);
    b
}

fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = le64(key.len() as u64).to_vec();
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(value);
    b
}

fn tensor_info(name: &str, ne: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = le64(name.len() as u64).to_vec();
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(ne.len() as u32).to_le_bytes());
    for n in ne {
        b.extend_from_slice(&le64(*n));
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&le64(offset));
    b
}

fn valid() -> Vec<u8> {
    let md = vec![
        ("general.architecture".to_string(), MetaValue::string("llama")),
        ("tokenizer.ggml.tokens".to_string(), MetaValue::string_array(["a", "b", "c"])),
        ("x".to_string(), MetaValue::Array(vec![MetaValue::F32(1.0), MetaValue::F32(2.0)])),
    ];
    let ts = vec![
        GgufTensorInfo { name: "a".into(), ne: vec![4, 2], ggml_type: GGML_F32 },
        GgufTensorInfo { name: "b".into(), ne: vec![32], ggml_type: GGML_Q8_0 },
    ];
    write_to_vec(&md, &ts, &[&[1u8; 32], &[2u8; 34]], 32).unwrap()
}

#[test]
fn valid_file_parses() {
    let v = valid();
    let f = GgufFile::parse(&v).unwrap();
    assert_eq!(f.tensors.len(), 2);
    assert_eq!(f.tensors[1].data, &[2u8; 34][..]);
}

#[test]
fn every_truncation_is_an_error() {
    let v = valid();
    // Cutting anywhere inside the header or the last tensor's data must fail (the trailing
    // padding after the last tensor is optional).
    let last_end = {
        let f = GgufFile::parse(&v).unwrap();
        (f.tensors[1].file_offset + 34) as usize
    };
    for cut in 0..last_end {
        let r = GgufFile::parse(&v[..cut]);
        assert!(r.is_err(), "prefix of {cut} bytes parsed");
    }
    GgufFile::parse(&v[..last_end]).unwrap();
}

#[test]
fn bad_magic_and_version() {
    let mut v = valid();
    v[0] = b'X';
    assert!(matches!(GgufFile::parse(&v), Err(FormatError::BadMagic(_))));
    let mut v = valid();
    v[4] = 1;
    assert!(matches!(GgufFile::parse(&v), Err(FormatError::UnsupportedVersion(1))));
}

#[test]
fn huge_counts_fail_before_allocating() {
    for (t, k) in [(u64::MAX, 0), (0, u64::MAX), (1 << 19, 0), (0, 1 << 15)] {
        let e = GgufFile::parse(&file(t, k, &[])).unwrap_err();
        assert!(matches!(e, FormatError::TooMany { .. } | FormatError::Truncated { .. }), "{t} {k}: {e}");
    }
    // Array claiming 2^24 u64s in a tiny file.
    let mut arr = 10u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&le64(1 << 24));
    let e = GgufFile::parse(&file(0, 1, &kv("a", 9, &arr))).unwrap_err();
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
    // Array length over the cap.
    let mut arr = 0u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&le64(u64::MAX));
    let e = GgufFile::parse(&file(0, 1, &kv("a", 9, &arr))).unwrap_err();
    assert!(matches!(e, FormatError::TooMany { .. }), "{e}");
    // String length u64::MAX.
    let e = GgufFile::parse(&file(0, 1, &kv("s", 8, &le64(u64::MAX)))).unwrap_err();
    assert!(matches!(e, FormatError::TooMany { .. } | FormatError::Truncated { .. }), "{e}");
    // Key length past the end.
    let e = GgufFile::parse(&file(0, 1, &le64(1000))).unwrap_err();
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
}

#[test]
fn total_array_budget_is_enforced() {
    let limits = ReaderLimits { max_array_elements: 5, ..ReaderLimits::default() };
    let mut arr = 0u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&le64(3));
    arr.extend_from_slice(&[1, 2, 3]);
    let mut rest = kv("a", 9, &arr);
    rest.extend(kv("b", 9, &arr));
    let e = GgufFile::parse_with_limits(&file(0, 2, &rest), &limits).unwrap_err();
    assert!(matches!(e, FormatError::TooMany { .. }), "{e}");
}

#[test]
fn bad_value_types_and_values() {
    let e = GgufFile::parse(&file(0, 1, &kv("k", 13, &[0; 8]))).unwrap_err();
    assert!(matches!(e, FormatError::BadValueType { type_id: 13, ref key } if key == "k"), "{e}");
    let mut arr = 99u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&le64(1));
    let e = GgufFile::parse(&file(0, 1, &kv("k", 9, &arr))).unwrap_err();
    assert!(matches!(e, FormatError::BadValueType { type_id: 99, .. }), "{e}");
    let e = GgufFile::parse(&file(0, 1, &kv("k", 7, &[2]))).unwrap_err();
    assert!(matches!(e, FormatError::BadMetadata { .. }), "{e}");
    let e = GgufFile::parse(&file(0, 1, &kv("k\u{0}", 7, &[1]))).map(|_| ());
    assert!(e.is_ok(), "NUL in a key is legal UTF-8");
    let mut bad_utf8 = le64(2).to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(&7u32.to_le_bytes());
    bad_utf8.push(1);
    let e = GgufFile::parse(&file(0, 1, &bad_utf8)).unwrap_err();
    assert!(matches!(e, FormatError::InvalidUtf8 { .. }), "{e}");
    // Nesting deeper than the limit: array of arrays of arrays.
    let mut inner = 0u32.to_le_bytes().to_vec();
    inner.extend_from_slice(&le64(0));
    let mut mid = 9u32.to_le_bytes().to_vec();
    mid.extend_from_slice(&le64(1));
    mid.extend_from_slice(&inner);
    let mut outer = 9u32.to_le_bytes().to_vec();
    outer.extend_from_slice(&le64(1));
    outer.extend_from_slice(&9u32.to_le_bytes());
    outer.extend_from_slice(&le64(1));
    outer.extend_from_slice(&mid);
    let e = GgufFile::parse(&file(0, 1, &kv("n", 9, &outer))).unwrap_err();
    assert!(matches!(e, FormatError::TooMany { .. }), "{e}");
    // Duplicate keys.
    let mut rest = kv("k", 0, &[1]);
    rest.extend(kv("k", 0, &[2]));
    let e = GgufFile::parse(&file(0, 2, &rest)).unwrap_err();
    assert!(matches!(e, FormatError::Duplicate { .. }), "{e}");
    // general.alignment not a power of two, or of the wrong type.
    let f = file(0, 1, &kv("general.alignment", 4, &48u32.to_le_bytes()));
    assert!(matches!(GgufFile::parse(&f), Err(FormatError::BadMetadata { .. })));
    let f = file(0, 1, &kv("general.alignment", 0, &[32]));
    assert!(matches!(GgufFile::parse(&f), Err(FormatError::BadMetadata { .. })));
}

/// A file with one tensor info and `data_len` bytes of data after the 32-aligned header.
fn one_tensor(ne: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut v = file(1, 0, &tensor_info("t", ne, ty, offset));
    v.resize(v.len().div_ceil(32) * 32 + data_len, 0);
    v
}

#[test]
fn bad_tensors() {
    assert!(GgufFile::parse(&one_tensor(&[4], GGML_F32, 0, 16)).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (one_tensor(&[4], GGML_F32, 0, 15), "data past end"),
        (one_tensor(&[4], GGML_F32, 32, 40), "offset past end"),
        (one_tensor(&[4], GGML_F32, u64::MAX - 7, 16), "offset overflow"),
        (one_tensor(&[4], GGML_F32, 8, 64), "misaligned"),
        (one_tensor(&[4], 4, 0, 16), "removed type 4"),
        (one_tensor(&[4], 1000, 0, 16), "unknown type"),
        (one_tensor(&[33], GGML_Q8_0, 0, 64), "row not a block multiple"),
        (one_tensor(&[1, 1, 1, 1, 1], GGML_F32, 0, 4), "5 dims"),
        (one_tensor(&[], GGML_F32, 0, 4), "0 dims"),
        (one_tensor(&[u64::MAX, 2], GGML_F32, 0, 4), "element overflow"),
        (one_tensor(&[1 << 40, 1 << 40], GGML_F32, 0, 4), "size overflow"),
    ];
    for (bytes, what) in cases {
        assert!(GgufFile::parse(&bytes).is_err(), "{what} parsed");
    }
    // n_dims huge.
    let mut ti = le64(1).to_vec();
    ti.push(b't');
    ti.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(GgufFile::parse(&file(1, 0, &ti)).is_err());
    // Overlapping tensors and duplicate names.
    let mut infos = tensor_info("a", &[8], GGML_F32, 0);
    infos.extend(tensor_info("b", &[8], GGML_F32, 0));
    let mut v = file(2, 0, &infos);
    v.resize(v.len().div_ceil(32) * 32 + 64, 0);
    let e = GgufFile::parse(&v).unwrap_err();
    assert!(matches!(e, FormatError::TensorOutOfBounds { .. }), "{e}");
    // An overlap hidden behind a zero-sized tensor between the two.
    let mut infos = tensor_info("a", &[16], GGML_F32, 0);
    infos.extend(tensor_info("z", &[0], GGML_F32, 32));
    infos.extend(tensor_info("b", &[8], GGML_F32, 32));
    let mut v = file(3, 0, &infos);
    v.resize(v.len().div_ceil(32) * 32 + 128, 0);
    let e = GgufFile::parse(&v).unwrap_err();
    assert!(matches!(e, FormatError::TensorOutOfBounds { ref tensor, .. } if tensor == "b"), "{e}");
    let mut infos = tensor_info("a", &[8], GGML_F32, 0);
    infos.extend(tensor_info("a", &[8], GGML_F32, 32));
    let mut v = file(2, 0, &infos);
    v.resize(v.len().div_ceil(32) * 32 + 64, 0);
    assert!(matches!(GgufFile::parse(&v), Err(FormatError::Duplicate { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Random byte mutations of a valid file never panic.
    #[test]
    fn mutations_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut v = valid();
        for (i, b) in edits {
            let i = i.index(v.len());
            v[i] = b;
        }
        if truncate {
            v.truncate(cut.index(v.len()));
        }
        let _ = GgufFile::parse(&v);
    }

    /// Random bytes behind a valid magic and version never panic.
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut v = b"GGUF\x03\0\0\0".to_vec();
        v.extend_from_slice(&body);
        let _ = GgufFile::parse(&v);
    }
}
