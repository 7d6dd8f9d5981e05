//! Our safetensors layout judged by the reference package: `safe_open` reads names, dtypes,
//! shapes, data and metadata back, and `safetensors.numpy.save` of the same tensors produces
//! a byte-identical file (so header JSON, key order and padding all match).

mod common;

use modelpack_format::safetensors::{canonical_order, safetensors_layout};

fn bytes_for(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|j| (j * 31 + i * 7) as u8).collect()
}

#[test]
fn reference_reader_and_writer_agree_with_our_layout() {
    let Some(py) = common::python() else { return };
    // A compressed-tensors-like mix; the shapes make the JSON length not a multiple of 8 for at
    // least one of the two metadata variants below.
    let mut tensors: Vec<(String, &str, Vec<usize>)> = vec![
        ("model.layers.0.mlp.down_proj.weight_packed".into(), "I32", vec![8, 4]),
        ("model.layers.0.mlp.down_proj.weight_scale".into(), "F16", vec![8, 1]),
        ("model.layers.0.mlp.down_proj.weight_shape".into(), "I64", vec![2]),
        ("model.norm.weight".into(), "F32", vec![5]),
        ("lm_head.weight".into(), "U8", vec![3, 3]),
        ("z.bool".into(), "BOOL", vec![1]),
        ("a.scalar".into(), "F64", vec![]),
    ];
    canonical_order(&mut tensors, |t| (t.0.as_str(), t.1));
    let order: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        order,
        [
            "model.layers.0.mlp.down_proj.weight_shape",  // I64
            "a.scalar",                                   // F64
            "model.norm.weight",                          // F32
            "model.layers.0.mlp.down_proj.weight_packed", // I32
            "model.layers.0.mlp.down_proj.weight_scale",  // F16
            "lm_head.weight",                             // U8
            "z.bool",                                     // BOOL
        ]
    );
    for metadata in [vec![("format".to_string(), "pt".to_string())], vec![]] {
        let l = safetensors_layout(&tensors, &metadata).unwrap();
        assert_eq!(l.header.len() % 8, 0);
        let mut buf = vec![0u8; l.file_size as usize];
        buf[..l.header.len()].copy_from_slice(&l.header);
        let mut datas = Vec::new();
        for (i, (name, _, _)) in tensors.iter().enumerate() {
            let mut d = bytes_for(i, l.sizes[i] as usize);
            if name == "z.bool" {
                d = vec![1];
            }
            let o = l.offsets[i] as usize;
            buf[o..o + d.len()].copy_from_slice(&d);
            datas.push(d);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, &buf).unwrap();
        let dump = common::run_json(&py, &[common::script("safetensors_dump.py").as_os_str(), path.as_os_str()]);
        if metadata.is_empty() {
            assert!(dump["metadata"].is_null(), "{}", dump["metadata"]);
        } else {
            assert_eq!(dump["metadata"], serde_json::json!({"format": "pt"}));
        }
        let ts = dump["tensors"].as_array().unwrap();
        assert_eq!(ts.len(), tensors.len());
        for (i, t) in ts.iter().enumerate() {
            assert_eq!(t["name"], tensors[i].0.as_str());
            assert_eq!(t["dtype"], tensors[i].1);
            assert_eq!(t["shape"], serde_json::json!(tensors[i].2));
            assert_eq!(t["hex"], common::hex(&datas[i]), "{}", tensors[i].0);
        }
        assert_eq!(dump["reference_equal"], true, "reference writer bytes differ");
    }
}

/// The header of compressed-tensors' own output, rebuilt from its tensor list, is byte-equal.
#[test]
fn fixture_header_is_reproduced_exactly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/compressed-tensors/w4a16_g128_sym");
    let file = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let mut tensors: Vec<(String, String, Vec<usize>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let shape = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize);
            (k.clone(), v["dtype"].as_str().unwrap().to_owned(), shape.collect())
        })
        .collect();
    // Start from name order (as a pipeline would have it) and let canonical_order sort.
    tensors.sort();
    canonical_order(&mut tensors, |t| (t.0.as_str(), t.1.as_str()));
    let input: Vec<(String, &str, Vec<usize>)> =
        tensors.iter().map(|(n, d, s)| (n.clone(), d.as_str(), s.clone())).collect();
    let l = safetensors_layout(&input, &[("format".into(), "pt".into())]).unwrap();
    assert_eq!(l.header, file[..8 + n]);
    assert_eq!(l.file_size, file.len() as u64);
}

#[test]
fn layout_errors() {
    use modelpack_format::FormatError;
    let e = safetensors_layout(&[("x".into(), "Q4", vec![2])], &[]).unwrap_err();
    assert!(matches!(e, FormatError::UnknownDtype { ref tensor, .. } if tensor == "x"), "{e}");
    let dup = vec![("x".to_string(), "F32", vec![1]), ("x".to_string(), "F16", vec![1])];
    assert!(matches!(safetensors_layout(&dup, &[]), Err(FormatError::Duplicate { .. })));
    let big = vec![("x".to_string(), "F64", vec![usize::MAX, 2])];
    assert!(matches!(safetensors_layout(&big, &[]), Err(FormatError::Overflow(_))));
    let meta = vec![("__metadata__".to_string(), "F32", vec![1])];
    assert!(matches!(safetensors_layout(&meta, &[]), Err(FormatError::BadTensor { .. })));
}
