//! Our GGUF writer judged by the reference reader (`gguf.GGUFReader`, gguf==0.19.0), and our
//! reader judged on a file written by the reference writer (`gguf.GGUFWriter`).

mod common;

use modelpack_format::gguf::{
    layout, GgufFile, GgufTensorInfo, MetaType, MetaValue, GGML_BF16, GGML_F16, GGML_F32, GGML_Q4_0, GGML_Q8_0,
};
use serde_json::Value;
use std::ffi::OsStr;

fn every_type_metadata() -> Vec<(String, MetaValue)> {
    vec![
        ("general.architecture".into(), MetaValue::string("llama")),
        ("t.u8".into(), MetaValue::U8(250)),
        ("t.i8".into(), MetaValue::I8(-120)),
        ("t.u16".into(), MetaValue::U16(65_000)),
        ("t.i16".into(), MetaValue::I16(-32_000)),
        ("t.u32".into(), MetaValue::U32(4_000_000_000)),
        ("t.i32".into(), MetaValue::I32(-2_000_000_000)),
        ("t.f32".into(), MetaValue::F32(1e-5)),
        ("t.bool".into(), MetaValue::Bool(true)),
        ("t.string".into(), MetaValue::string("héllo ✓ {{ chat }}")),
        ("t.u64".into(), MetaValue::U64(u64::MAX - 1)),
        ("t.i64".into(), MetaValue::I64(i64::MIN + 1)),
        ("t.f64".into(), MetaValue::F64(-1.0 / 3.0)),
        ("t.arr_str".into(), MetaValue::string_array(["a b", "Ġthe", "", "<|x|>"])),
        ("t.arr_i32".into(), MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-3)])),
        ("t.arr_f32".into(), MetaValue::Array(vec![MetaValue::F32(0.5), MetaValue::F32(-2.25)])),
        ("t.arr_u8".into(), MetaValue::Array(vec![MetaValue::U8(0), MetaValue::U8(255)])),
        ("t.arr_bool".into(), MetaValue::Array(vec![MetaValue::Bool(false), MetaValue::Bool(true)])),
        ("t.arr_empty".into(), MetaValue::EmptyArray(MetaType::String)),
    ]
}

fn type_name(v: &MetaValue) -> &'static str {
    match v.meta_type() {
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

/// Compare a value as Python decoded it with the value we wrote.
fn same(py: &Value, ours: &MetaValue) -> bool {
    match ours {
        MetaValue::F32(x) => py.as_f64().map(|p| p as f32) == Some(*x),
        MetaValue::F64(x) => py.as_f64() == Some(*x),
        MetaValue::Bool(b) => py.as_bool() == Some(*b),
        MetaValue::String(s) => py.as_str() == Some(s),
        MetaValue::Array(items) => {
            py.as_array().is_some_and(|a| a.len() == items.len() && a.iter().zip(items).all(|(p, o)| same(p, o)))
        }
        MetaValue::EmptyArray(_) => py.as_array().is_some_and(Vec::is_empty),
        MetaValue::I8(_) | MetaValue::I16(_) | MetaValue::I32(_) | MetaValue::I64(_) => {
            let v = match *ours {
                MetaValue::I8(v) => i64::from(v),
                MetaValue::I16(v) => i64::from(v),
                MetaValue::I32(v) => i64::from(v),
                MetaValue::I64(v) => v,
                _ => unreachable!(),
            };
            py.as_i64() == Some(v)
        }
        other => py.as_u64() == other.as_u64(),
    }
}

struct Case {
    tensors: Vec<GgufTensorInfo>,
    data: Vec<Vec<u8>>,
}

fn tensors() -> Case {
    let f32s: Vec<u8> = [1.0f32, -2.5, 3.25, 0.0, 1e-3, -7.0, 8.0, 9.5, -0.125, 10.0, 11.0, 12.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = (0u16..8).flat_map(|i| (0x3c00u16 + i).to_le_bytes()).collect();
    let bf16s: Vec<u8> = (0u16..16).flat_map(|i| (0x3f80u16 ^ (i << 3)).to_le_bytes()).collect();
    // Q8_0: per block f16 d then 32 i8; two rows of 64 = 4 blocks.
    let mut q8 = Vec::new();
    for b in 0..4u8 {
        q8.extend_from_slice(&(0x2000u16 + u16::from(b)).to_le_bytes());
        q8.extend((0..32).map(|j| (j as u8).wrapping_mul(7).wrapping_add(b)));
    }
    // Q4_0: f16 d then 16 nibble bytes.
    let mut q4 = 0x1c00u16.to_le_bytes().to_vec();
    q4.extend((0..16u8).map(|j| j * 17));
    Case {
        tensors: vec![
            GgufTensorInfo { name: "token_embd.weight".into(), ne: vec![4, 3], ggml_type: GGML_F32 },
            GgufTensorInfo { name: "blk.0.attn_norm.weight".into(), ne: vec![8], ggml_type: GGML_F16 },
            GgufTensorInfo { name: "blk.0.attn_q.weight".into(), ne: vec![64, 2], ggml_type: GGML_Q8_0 },
            GgufTensorInfo { name: "blk.0.bf".into(), ne: vec![4, 2, 2], ggml_type: GGML_BF16 },
            GgufTensorInfo { name: "output.weight".into(), ne: vec![32, 1], ggml_type: GGML_Q4_0 },
        ],
        data: vec![f32s, f16s, q8, bf16s, q4],
    }
}

fn check_with_reference_reader(metadata: &[(String, MetaValue)], alignment: u32) {
    let Some(py) = common::python() else { return };
    let case = tensors();
    let l = layout(metadata, &case.tensors, alignment).unwrap();
    // Write it as the pipeline does: preallocate, header at 0, each tensor at its offset.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let mut buf = vec![0u8; l.file_size as usize];
    buf[..l.header.len()].copy_from_slice(&l.header);
    for (i, d) in case.data.iter().enumerate() {
        assert_eq!(d.len() as u64, l.tensor_sizes[i], "{}", case.tensors[i].name);
        let o = l.tensor_offsets[i] as usize;
        buf[o..o + d.len()].copy_from_slice(d);
    }
    std::fs::write(&path, &buf).unwrap();

    let dump = common::run_json(&py, &[common::script("gguf_dump.py").as_os_str(), path.as_os_str()]);
    assert_eq!(dump["version"], 3);
    assert_eq!(dump["alignment"], alignment);
    let fields = dump["fields"].as_object().unwrap();
    let keys: Vec<&String> = fields.keys().collect();
    let want_keys: Vec<&String> = metadata.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, want_keys, "key set and order");
    for (k, v) in metadata {
        let f = &fields[k.as_str()];
        assert_eq!(f["types"][0], type_name(v), "type of {k}");
        if let Some(items) = v.as_array().filter(|a| !a.is_empty()) {
            assert_eq!(f["types"][1], type_name(&items[0]), "element type of {k}");
        }
        // gguf-py records no element type for an empty array (our reader does: unit tests).
        assert!(same(&f["value"], v), "value of {k}: python {} vs ours {v:?}", f["value"]);
    }
    let want_types = ["F32", "F16", "Q8_0", "BF16", "Q4_0"];
    let ts = dump["tensors"].as_array().unwrap();
    assert_eq!(ts.len(), case.tensors.len());
    for (i, t) in ts.iter().enumerate() {
        let ours = &case.tensors[i];
        assert_eq!(t["name"], ours.name.as_str());
        assert_eq!(t["type"], want_types[i], "{}", ours.name);
        let shape: Vec<u64> = t["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(shape, ours.ne, "{}", ours.name);
        assert_eq!(t["n_bytes"], case.data[i].len(), "{}", ours.name);
        assert_eq!(t["offset"], l.tensor_offsets[i], "{}", ours.name);
        assert_eq!(t["offset"].as_u64().unwrap() % u64::from(alignment), 0);
        assert_eq!(t["hex"], common::hex(&case.data[i]), "{}", ours.name);
    }
}

#[test]
fn reference_reader_reads_every_value_type_and_tensor() {
    check_with_reference_reader(&every_type_metadata(), 32);
}

#[test]
fn reference_reader_honours_custom_alignment() {
    let mut md = every_type_metadata();
    md.push(("general.alignment".into(), MetaValue::U32(128)));
    check_with_reference_reader(&md, 128);
}

/// The reference writer's file, parsed by our reader, gives back what the script put in.
#[test]
fn our_reader_reads_the_reference_writer() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.gguf");
    let script = r#"
import sys, numpy as np, gguf
w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_name("ref")
w.add_uint32("llama.block_count", 3)
w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6)
w.add_bool("tokenizer.ggml.add_bos_token", True)
w.add_token_list(["<s>", "a", "Ġb"])
w.add_token_types([3, 1, 1])
w.add_int64("x.i64", -5)
w.add_float64("x.f64", 0.1)
w.add_tensor("a.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
w.add_tensor("b.weight", np.arange(5, dtype=np.float16))
q = np.arange(68, dtype=np.uint8).reshape(2, 34)
w.add_tensor("c.weight", q, raw_shape=(2, 34), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"#;
    let out = std::process::Command::new(&py)
        .args([OsStr::new("-c"), OsStr::new(script), path.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&path).unwrap();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.get("general.architecture"), Some(&MetaValue::string("llama")));
    assert_eq!(f.get("general.name"), Some(&MetaValue::string("ref")));
    assert_eq!(f.get("llama.block_count"), Some(&MetaValue::U32(3)));
    assert_eq!(f.get("llama.attention.layer_norm_rms_epsilon"), Some(&MetaValue::F32(1e-6)));
    assert_eq!(f.get("tokenizer.ggml.add_bos_token"), Some(&MetaValue::Bool(true)));
    assert_eq!(f.get("tokenizer.ggml.tokens"), Some(&MetaValue::string_array(["<s>", "a", "Ġb"])));
    assert_eq!(
        f.get("tokenizer.ggml.token_type"),
        Some(&MetaValue::Array(vec![MetaValue::I32(3), MetaValue::I32(1), MetaValue::I32(1)]))
    );
    assert_eq!(f.get("x.i64"), Some(&MetaValue::I64(-5)));
    assert_eq!(f.get("x.f64"), Some(&MetaValue::F64(0.1)));
    let a = f.tensor("a.weight").unwrap();
    assert_eq!((a.info.ne.clone(), a.info.ggml_type), (vec![4, 3], GGML_F32));
    let want: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    assert_eq!(a.data, &want[..]);
    let b = f.tensor("b.weight").unwrap();
    assert_eq!((b.info.ne.clone(), b.info.ggml_type), (vec![5], GGML_F16));
    let c = f.tensor("c.weight").unwrap();
    assert_eq!((c.info.ne.clone(), c.info.ggml_type), (vec![32, 2], GGML_Q8_0));
    assert_eq!(c.data, &(0..68u8).collect::<Vec<_>>()[..]);
}

fn sub_type_name(v: &MetaValue) -> Value {
    match v.as_array().and_then(|a| a.first()) {
        Some(first) => Value::from(type_name(first)),
        None => Value::Null,
    }
}

fn value_json(v: &MetaValue) -> Value {
    match v {
        MetaValue::F32(x) => serde_json::json!(f64::from(*x)),
        other => other.to_json(usize::MAX),
    }
}

/// Our whole file is byte-identical to the reference writer's for the same content.
#[test]
fn file_is_byte_identical_to_reference_writer() {
    let Some(py) = common::python() else { return };
    // GGUFWriter writes general.architecture first; empty arrays need an element type, which
    // gguf-py cannot express, so they are left out here.
    let md: Vec<(String, MetaValue)> =
        every_type_metadata().into_iter().filter(|(_, v)| !matches!(v, MetaValue::EmptyArray(_))).collect();
    assert_eq!(md[0].0, "general.architecture");
    let case = tensors();
    let want_types = ["F32", "F16", "Q8_0", "BF16", "Q4_0"];
    let spec = serde_json::json!({
        "arch": "llama",
        "metadata": md[1..].iter().map(|(k, v)| serde_json::json!([k, type_name(v), value_json(v), sub_type_name(v)])).collect::<Vec<_>>(),
        "tensors": case.tensors.iter().zip(&case.data).zip(want_types).map(|((t, d), ty)| serde_json::json!([t.name, t.ne, ty, common::hex(d)])).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let ref_path = dir.path().join("ref.gguf");
    let out = std::process::Command::new(&py)
        .args([common::script("gguf_write_ref.py").as_os_str(), spec_path.as_os_str(), ref_path.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference = std::fs::read(&ref_path).unwrap();
    let data: Vec<&[u8]> = case.data.iter().map(Vec::as_slice).collect();
    let ours = modelpack_format::gguf::write_to_vec(&md, &case.tensors, &data, 32).unwrap();
    assert_eq!(ours.len(), reference.len(), "file size");
    let first_diff = ours.iter().zip(&reference).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "first differing byte");
}
