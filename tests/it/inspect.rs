//! `modelpack inspect` on the tiny fixtures (numbers checked against values derived from the
//! fixture's config.json, not from the code under test) and on files written by Python's
//! `safetensors`, including data at odd offsets.
use crate::common;

use modelpack::checkpoint::Checkpoint;
use serde_json::Value;
use std::path::Path;

fn inspect_json(path: &Path, extra: &[&str]) -> Value {
    let out = common::modelpack().arg("inspect").arg(path).arg("--json").args(extra).output().unwrap();
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("exactly one JSON document on stdout")
}

/// Parameter count of a llama model from its config: embeddings, untied lm_head, per layer
/// q/k/v/o, gate/up/down and two norms, final norm.
fn expected_params(cfg: &Value) -> u64 {
    let g = |k: &str| cfg[k].as_u64().unwrap();
    let (h, i, l, v) = (g("hidden_size"), g("intermediate_size"), g("num_hidden_layers"), g("vocab_size"));
    let kv = g("num_key_value_heads") * (h / g("num_attention_heads"));
    let per_layer = h * h * 2 + 2 * kv * h + 3 * h * i + 2 * h;
    v * h * 2 + l * per_layer + h
}

fn read_config(dir: &str) -> Value {
    serde_json::from_slice(&std::fs::read(common::fixture(dir).join("config.json")).unwrap()).unwrap()
}

#[test]
fn fixtures_report_config_numbers() {
    for (dir, dtype, size, shards) in [
        ("tiny-llama", "BF16", 2, 1),
        ("tiny-llama-sharded", "BF16", 2, 2),
        ("tiny-llama-f16", "F16", 2, 1),
        ("tiny-llama-f32", "F32", 4, 1),
    ] {
        let cfg = read_config(dir);
        let params = expected_params(&cfg);
        let r = inspect_json(&common::fixture(dir), &[]);
        assert_eq!(r["kind"], "checkpoint", "{dir}");
        assert_eq!(r["architecture"], "LlamaForCausalLM", "{dir}");
        assert_eq!(r["model_type"], "llama", "{dir}");
        assert_eq!(r["parameter_count"].as_u64(), Some(params), "{dir}");
        assert_eq!(r["total_bytes"].as_u64(), Some(params * size), "{dir}");
        let layers = cfg["num_hidden_layers"].as_u64().unwrap();
        assert_eq!(r["tensor_count"].as_u64(), Some(9 * layers + 3), "{dir}");
        assert_eq!(r["shards"].as_array().unwrap().len(), shards, "{dir}");
        let hist = r["dtypes"].as_object().unwrap();
        assert_eq!(hist.len(), 1, "{dir}");
        assert_eq!(hist[dtype]["parameters"].as_u64(), Some(params), "{dir}");
        assert_eq!(r["config"]["num_key_value_heads"], cfg["num_key_value_heads"]);
        assert_eq!(r["config"]["vocab_size"], cfg["vocab_size"]);
        let tensors = r["tensors"].as_array().unwrap();
        let kv_rows = cfg["num_key_value_heads"].as_u64().unwrap() * cfg["head_dim"].as_u64().unwrap();
        let k = tensors.iter().find(|t| t["name"] == "model.layers.1.self_attn.k_proj.weight").unwrap();
        assert_eq!(k["shape"], serde_json::json!([kv_rows, cfg["hidden_size"]]));
        assert_eq!(k["dtype"], dtype);
        let names: Vec<&str> = tensors.iter().map(|t| t["name"].as_str().unwrap()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "tensors listed in name order");
        assert!(names.contains(&"lm_head.weight"), "untied lm_head expected");
        let aux: Vec<&str> = r["aux_files"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(aux, ["generation_config.json", "tokenizer.json", "tokenizer_config.json"], "{dir}");
    }
}

#[test]
fn vocab_size_matches_tokenizer() {
    let cfg = read_config("tiny-llama");
    let tj: Value =
        serde_json::from_slice(&std::fs::read(common::fixture("tiny-llama/tokenizer.json")).unwrap()).unwrap();
    let n = tj["model"]["vocab"].as_object().unwrap().len() + tj["added_tokens"].as_array().unwrap().len();
    assert_eq!(cfg["vocab_size"].as_u64(), Some(n as u64));
    let emb = inspect_json(&common::fixture("tiny-llama"), &["--tensors", "embed_tokens"]);
    assert_eq!(emb["tensors"][0]["shape"][0].as_u64(), Some(n as u64));
}

#[test]
fn variants_hold_the_same_model() {
    let bf = Checkpoint::open(&common::fixture("tiny-llama")).unwrap();
    let sh = Checkpoint::open(&common::fixture("tiny-llama-sharded")).unwrap();
    let f32 = Checkpoint::open(&common::fixture("tiny-llama-f32")).unwrap();
    let f16 = Checkpoint::open(&common::fixture("tiny-llama-f16")).unwrap();
    assert_eq!(sh.shards().len(), 2);
    for t in bf.tensors() {
        assert_eq!(sh.tensor(t.name).unwrap().data, t.data, "{}", t.name);
        let wide = f32.tensor(t.name).unwrap();
        let half = f16.tensor(t.name).unwrap();
        for (k, pair) in t.data.chunks_exact(2).enumerate() {
            let v = f32::from_bits(u32::from(u16::from_le_bytes([pair[0], pair[1]])) << 16);
            let w = f32::from_le_bytes(wide.data[4 * k..4 * k + 4].try_into().unwrap());
            assert_eq!(v.to_bits(), w.to_bits(), "{}[{k}]: f32 variant holds the bf16 values exactly", t.name);
            let h = f16_to_f32(u16::from_le_bytes([half.data[2 * k], half.data[2 * k + 1]]));
            assert!((h - v).abs() <= v.abs() * 1e-3 + 1e-7, "{}[{k}]: {h} vs {v}", t.name);
        }
    }
}

/// IEEE half → f32 for finite values (the fixtures hold no inf/NaN).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f32::from(h & 0x3ff);
    assert_ne!(exp, 31, "inf/NaN in a fixture");
    if exp == 0 {
        sign * mant * 2f32.powi(-24)
    } else {
        sign * (1.0 + mant / 1024.0) * 2f32.powi(exp - 15)
    }
}

#[test]
fn weights_look_trained() {
    let ck = Checkpoint::open(&common::fixture("tiny-llama")).unwrap();
    let vals = |name: &str| -> Vec<f32> {
        ck.tensor(name)
            .unwrap()
            .data
            .chunks_exact(2)
            .map(|p| f32::from_bits(u32::from(u16::from_le_bytes([p[0], p[1]])) << 16))
            .collect()
    };
    let q = vals("model.layers.0.mlp.up_proj.weight");
    let rms = (q.iter().map(|x| x * x).sum::<f32>() / q.len() as f32).sqrt();
    assert!((0.01..0.05).contains(&rms), "std {rms}");
    let max = q.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(max > 8.0 * rms, "heavy tail / outlier column expected: max {max}, rms {rms}");
    let norm = vals("model.norm.weight");
    let mean = norm.iter().sum::<f32>() / norm.len() as f32;
    assert!((0.9..1.1).contains(&mean), "{mean}");
}

#[test]
fn human_output_and_filter() {
    let out = common::modelpack().arg("inspect").arg(common::fixture("tiny-llama-sharded")).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let params = expected_params(&read_config("tiny-llama-sharded"));
    let grouped = {
        let s = params.to_string();
        let mut g = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                g.push(',');
            }
            g.push(c);
        }
        g
    };
    assert!(text.contains("LlamaForCausalLM (llama)"), "{text}");
    assert!(text.contains(&format!("parameters:   {grouped}")), "{text}");
    assert!(text.contains("2 shards (model.safetensors.index.json)"), "{text}");
    let row = text.lines().find(|l| l.trim_start().starts_with("model.layers.0.mlp.down_proj.weight")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["model.layers.0.mlp.down_proj.weight", "BF16", "[64,", "192]", "24,576"], "{row}");

    let r = inspect_json(&common::fixture("tiny-llama"), &["--tensors", r"k_proj\.weight$"]);
    let names: Vec<&str> = r["tensors"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.k_proj.weight"]);
    assert_eq!(r["tensor_count"].as_u64(), Some(21), "totals cover every tensor");
}

#[test]
fn bad_regex_and_broken_gguf_are_input_errors() {
    let out =
        common::modelpack().args(["inspect", "--tensors", "("]).arg(common::fixture("tiny-llama")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tensors"));

    // GGUF magic and version, then a truncated tensor count: a clean input error, no panic.
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("m.gguf");
    std::fs::write(&g, b"GGUF\x03\x00\x00\x00\x01\x00\x00").unwrap();
    let out = common::modelpack().arg("inspect").arg(&g).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["error"].as_str().unwrap().contains("not a readable GGUF file"), "{doc}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    // A package whose manifest is not a manifest.
    let pkg = dir.path().join("pkg");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(pkg.join("modelpack.json"), b"{\"format_version\": 1}").unwrap();
    let out = common::modelpack().arg("inspect").arg(&pkg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("modelpack.json"));
}

/// Quantize a fixture into `out` with extra arguments.
fn quantize(input: &Path, out: &Path, args: &[&str]) {
    common::modelpack()
        .arg("quantize")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--no-progress"])
        .args(args)
        .assert()
        .success();
}

fn gguf_dump(py: &Path, gguf: &Path) -> Value {
    let script = common::root().join("xtask/py/gguf_dump.py");
    let out = std::process::Command::new(py).arg(&script).arg(gguf).output().unwrap();
    assert!(out.status.success(), "gguf_dump: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every metadata key (type, array element type and length, value or its first items) and every
/// tensor (type, ne shape, absolute offset, size) as `gguf.GGUFReader` reads them.
fn assert_gguf_report_matches_reader(r: &Value, want: &Value) {
    assert_eq!(r["kind"], "gguf");
    assert_eq!(r["version"], want["version"]);
    assert_eq!(r["alignment"], want["alignment"]);
    let fields = want["fields"].as_object().unwrap();
    let md = r["metadata"].as_array().unwrap();
    assert_eq!(md.len(), fields.len(), "metadata count");
    assert_eq!(r["metadata_count"].as_u64(), Some(fields.len() as u64));
    let keys: Vec<&str> = md.iter().map(|e| e["key"].as_str().unwrap()).collect();
    let want_keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    let mut want_sorted = want_keys.clone();
    want_sorted.sort_unstable();
    assert_eq!(sorted, want_sorted);
    for e in md {
        let k = e["key"].as_str().unwrap();
        let f = &fields[k];
        let types: Vec<&str> = f["types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(e["type"], types[0], "{k}");
        if types[0] == "ARRAY" {
            let all = f["value"].as_array().unwrap();
            assert_eq!(e["len"].as_u64(), Some(all.len() as u64), "{k}");
            if let Some(elem) = types.get(1) {
                assert_eq!(e["elem_type"], *elem, "{k}");
            }
            let shown = e["value"].as_array().unwrap();
            assert_eq!(shown.len(), all.len().min(16), "{k}");
            assert_eq!(shown.as_slice(), &all[..shown.len()], "{k}");
        } else {
            assert_eq!(e["value"], f["value"], "{k}");
        }
    }
    let tensors = r["tensors"].as_array().unwrap();
    let want_t = want["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), want_t.len());
    assert_eq!(r["tensor_count"].as_u64(), Some(want_t.len() as u64));
    for (t, w) in tensors.iter().zip(want_t) {
        assert_eq!(t["name"], w["name"]);
        assert_eq!(t["type"], w["type"], "{}", w["name"]);
        assert_eq!(t["shape"], w["shape"], "{}", w["name"]);
        assert_eq!(t["bytes"], w["n_bytes"], "{}", w["name"]);
        assert_eq!(t["file_offset"], w["offset"], "{}", w["name"]);
        assert_eq!(
            t["offset"].as_u64().unwrap() + r["data_offset"].as_u64().unwrap(),
            w["offset"].as_u64().unwrap(),
            "{}",
            w["name"]
        );
    }
}

#[test]
fn gguf_file_matches_the_python_reader() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, scheme) in [("tiny-llama", "int4"), ("tiny-llama-spm", "int8")] {
        let out = tmp.path().join(fixture);
        quantize(&common::fixture(fixture), &out, &["--target", "cpu", "--scheme", scheme]);
        let gguf = out.join("model.gguf");
        let r = inspect_json(&gguf, &[]);
        let want = gguf_dump(&py, &gguf);
        assert_gguf_report_matches_reader(&r, &want);
        assert_eq!(r["file_bytes"].as_u64(), Some(std::fs::metadata(&gguf).unwrap().len()));
        assert_eq!(r["architecture"], want["fields"]["general.architecture"]["value"]);
        assert_eq!(r["tokenizer_model"], want["fields"]["tokenizer.ggml.model"]["value"]);
        // The filter lists a subset, totals still cover every tensor.
        let f = inspect_json(&gguf, &["--tensors", "^blk\\.0\\.attn_q"]);
        let names: Vec<&str> = f["tensors"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["blk.0.attn_q.weight"]);
        assert_eq!(f["tensor_count"], r["tensor_count"]);
    }
}

#[test]
fn gguf_human_output_names_types_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    quantize(&common::fixture("tiny-llama"), &out, &["--target", "cpu", "--scheme", "int8"]);
    let o = common::modelpack().arg("inspect").arg(out.join("model.gguf")).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("GGUF v3"), "{text}");
    assert!(text.contains("general.architecture"), "{text}");
    assert!(text.contains("[STRING × 272]"), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("blk.1.ffn_down.weight") && l.contains("Q8_0")), "{text}");
}

/// Sizes of the regular files of a directory, by name.
fn dir_files(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())
        })
        .collect()
}

#[test]
fn cpu_package_reports_manifest_signature_and_types() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let signed = tmp.path().join("signed");
    let key = common::fixture("keys/p256-pkcs8.pem");
    let input = common::fixture("tiny-llama");
    quantize(&input, &signed, &["--target", "cpu", "--scheme", "int4", "--sign-key", key.to_str().unwrap()]);
    let r = inspect_json(&signed, &[]);
    assert_eq!(r["kind"], "package");
    assert_eq!(r["target"], "cpu");
    assert_eq!(r["scheme"], "int4");
    assert_eq!(r["signature"]["present"], true);
    // The bundle's key hint is the SHA-256 of the public key's PEM text (as `model_signing` 1.1.1 computes it).
    let pem = std::fs::read(common::fixture("keys/p256.pub")).unwrap();
    let hint = common::run_python(
        &py,
        "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
        &[common::fixture("keys/p256.pub").as_os_str()],
    );
    assert!(!pem.is_empty());
    assert_eq!(r["signature"]["key_hint"].as_str(), Some(hint.trim()));
    // Files as the directory holds them.
    let files: std::collections::BTreeMap<String, u64> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(files, dir_files(&signed));
    // Source files: the checkpoint's weights and config, with their sizes.
    let in_files = dir_files(&input);
    let src = r["source_files"].as_array().unwrap();
    assert!(src.iter().any(|f| f["name"] == "model.safetensors"), "{src:?}");
    for f in src {
        assert_eq!(in_files.get(f["name"].as_str().unwrap()).copied(), f["size"].as_u64(), "{f}");
    }
    // Per-tensor types agree with gguf's reader of model.gguf.
    let want = gguf_dump(&py, &signed.join("model.gguf"));
    let by_name: std::collections::BTreeMap<&str, &str> = want["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["type"].as_str().unwrap()))
        .collect();
    let tensors = r["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), by_name.len());
    for t in tensors {
        assert_eq!(t["type_out"].as_str(), by_name.get(t["name"].as_str().unwrap()).copied(), "{t}");
    }
    let q4 = by_name.values().filter(|&&t| t == "Q4_0").count() as u64;
    assert_eq!(r["types"]["Q4_0"]["tensors"].as_u64(), Some(q4));
    assert_eq!(r["gguf"]["tensor_count"].as_u64(), Some(by_name.len() as u64));
    assert!(r["median_sqnr_db"].as_f64().unwrap() > 10.0, "{}", r["median_sqnr_db"]);

    // Unsigned: no signature.
    let unsigned = tmp.path().join("unsigned");
    quantize(&input, &unsigned, &["--target", "cpu", "--scheme", "int8"]);
    let r = inspect_json(&unsigned, &[]);
    assert_eq!(r["signature"]["present"], false);
    let o = common::modelpack().arg("inspect").arg(&unsigned).output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("signature:    none"), "{text}");
    assert!(text.contains("cpu int8"), "{text}");
}

#[test]
fn cuda_package_and_its_safetensors_show_the_quantization_config() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    quantize(&common::fixture("tiny-llama"), &out, &["--target", "cuda", "--scheme", "int4", "--group-size", "32"]);
    let config: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let qc = &config["quantization_config"];
    assert_eq!(qc["format"], "pack-quantized");
    let r = inspect_json(&out, &[]);
    assert_eq!(r["kind"], "package");
    assert_eq!(r["target"], "cuda");
    assert_eq!(&r["quantization_config"], qc);
    assert!(r["gguf"].is_null());
    // The weights file inspected on its own: a checkpoint with the same quantization_config,
    // names, dtypes and shapes as Python's safetensors reader sees them.
    let st = out.join("model.safetensors");
    let r = inspect_json(&st, &[]);
    assert_eq!(r["kind"], "checkpoint");
    assert_eq!(&r["quantization_config"], qc);
    let script = common::root().join("xtask/py/safetensors_dump.py");
    let o = std::process::Command::new(&py).arg(&script).arg(&st).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want: Value = serde_json::from_slice(&o.stdout).unwrap();
    let want_t = want["tensors"].as_array().unwrap();
    assert_eq!(r["tensor_count"].as_u64(), Some(want_t.len() as u64));
    let ours: std::collections::BTreeMap<&str, &Value> =
        r["tensors"].as_array().unwrap().iter().map(|t| (t["name"].as_str().unwrap(), t)).collect();
    for w in want_t {
        let t = ours[w["name"].as_str().unwrap()];
        assert_eq!(t["dtype"], w["dtype"], "{}", w["name"]);
        assert_eq!(t["shape"], w["shape"], "{}", w["name"]);
    }
    assert!(want_t.iter().any(|w| w["dtype"] == "I32"), "packed weights expected");
    assert_eq!(r["shards"][0]["metadata"], want["metadata"]);
    let o = common::modelpack().arg("inspect").arg(&st).output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("quantization: compressed-tensors pack-quantized"), "{text}");
}

#[test]
fn closed_stdout_is_not_an_error() {
    let bin = assert_cmd::cargo::cargo_bin("modelpack");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' inspect '{}' | head -c 1 >/dev/null; echo done",
            bin.display(),
            common::fixture("tiny-llama").display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
}

#[test]
fn reads_what_python_safetensors_writes() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = common::root().join("xtask/py/write_safetensors.py");
    let out = std::process::Command::new(&py).arg(&script).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut odd_offsets = 0;
    for (file, tensors) in report.as_object().unwrap() {
        let path = dir.path().join(file);
        let ck = Checkpoint::open(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let tensors = tensors.as_object().unwrap();
        assert_eq!(ck.len(), tensors.len(), "{file}");
        for (name, want) in tensors {
            let t = ck.tensor(name).unwrap_or_else(|| panic!("{file}: {name} missing"));
            assert_eq!(t.dtype.name(), want["dtype"], "{file}/{name}");
            let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
            assert_eq!(serde_json::json!(shape), want["shape"], "{file}/{name}");
            assert_eq!(hex::encode(t.data), want["hex"].as_str().unwrap(), "{file}/{name}");
            if t.dtype.size() > 1 && t.offset % 2 == 1 {
                odd_offsets += 1;
            }
        }
        // The CLI reports the same names, dtypes and shapes.
        let r = inspect_json(&path, &[]);
        for t in r["tensors"].as_array().unwrap() {
            let want = &tensors[t["name"].as_str().unwrap()];
            assert_eq!(t["dtype"], want["dtype"]);
            assert_eq!(t["shape"], want["shape"]);
        }
        assert_eq!(r["tensor_count"].as_u64(), Some(tensors.len() as u64));
    }
    assert_eq!(odd_offsets, 2, "unaligned.safetensors must put F32 and BF16 data at odd offsets");
}

#[test]
fn qwen2_fixture_has_biases_and_tied_embeddings() {
    let cfg = read_config("tiny-qwen2");
    let r = inspect_json(&common::fixture("tiny-qwen2"), &[]);
    assert_eq!(r["architecture"], "Qwen2ForCausalLM");
    assert_eq!(r["config"]["tie_word_embeddings"], true);
    let tensors = r["tensors"].as_array().unwrap();
    let find = |n: &str| tensors.iter().find(|t| t["name"] == n);
    assert!(find("lm_head.weight").is_none(), "tied: no lm_head");
    let kv_rows = cfg["num_key_value_heads"].as_u64().unwrap()
        * (cfg["hidden_size"].as_u64().unwrap() / cfg["num_attention_heads"].as_u64().unwrap());
    assert_eq!(find("model.layers.0.self_attn.k_proj.bias").unwrap()["shape"], serde_json::json!([kv_rows]));
    assert_eq!(find("model.layers.1.self_attn.q_proj.bias").unwrap()["shape"], serde_json::json!([cfg["hidden_size"]]));
    // Llama count minus lm_head, plus q/k/v biases per layer.
    let h = cfg["hidden_size"].as_u64().unwrap();
    let l = cfg["num_hidden_layers"].as_u64().unwrap();
    let params = expected_params(&cfg) - cfg["vocab_size"].as_u64().unwrap() * h + l * (h + 2 * kv_rows);
    assert_eq!(r["parameter_count"].as_u64(), Some(params));
}

/// The reference reader accepts every generated fixture file and sees exactly the tensors,
/// dtypes and shapes we report (our xtask writer is checked by an outside judge too).
#[test]
fn python_reads_the_generated_fixtures() {
    let Some(py) = common::python() else { return };
    let script = r#"
import json, sys
from safetensors import safe_open
out = {}
for path in sys.argv[1:]:
    with safe_open(path, "numpy") as f:
        out[path] = {"metadata": f.metadata(),
                     "tensors": {k: [f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())] for k in f.keys()}}
print(json.dumps(out))
"#;
    let mut files = Vec::new();
    for dir in ["tiny-llama", "tiny-llama-sharded", "tiny-llama-f16", "tiny-llama-f32", "tiny-qwen2"] {
        for e in std::fs::read_dir(common::fixture(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                files.push(p);
            }
        }
    }
    assert_eq!(files.len(), 6);
    let args: Vec<&std::ffi::OsStr> = files.iter().map(|p| p.as_os_str()).collect();
    let report: Value = serde_json::from_str(&common::run_python(&py, script, &args)).unwrap();
    for f in &files {
        let want = &report[f.to_str().unwrap()];
        assert_eq!(want["metadata"], serde_json::json!({"format": "pt"}));
        let ck = Checkpoint::open(f).unwrap();
        let want = want["tensors"].as_object().unwrap();
        assert_eq!(ck.len(), want.len(), "{}", f.display());
        for t in ck.tensors() {
            let w = &want[t.name];
            assert_eq!(w[0], t.dtype.name(), "{}", t.name);
            assert_eq!(w[1], serde_json::json!(t.shape), "{}", t.name);
        }
    }
}
