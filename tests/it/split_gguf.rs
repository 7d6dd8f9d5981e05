//! Split GGUF on `--target cpu` (`--max-shard-size`): llama.cpp's split format, judged by
//! llama.cpp itself (`llama-perplexity` loads the set from the first part and gives the same
//! perplexity as the single file) and by the PyPI `gguf` reader (every part's split KVs, the
//! metadata only in the first part, the tensors of all parts equal to the single file's, and the
//! cut rule of `llama-gguf-split --split --split-max-size`). `llama-gguf-split` is not among the
//! cached llama.cpp tools, so its `--merge` output is not used; its merge is not canonical anyway
//! (it keeps `split.no`, `split.tensors.count` and a zeroed `split.count` in the merged file).
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

const LIMIT: &str = "40KB";

fn build(out: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["--target", "cpu", "--scheme", "int8", "--no-progress"];
    args.extend(extra);
    common::quantize(&common::fixture("tiny-llama"), out, &args);
    out.to_path_buf()
}

fn parts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    v.sort();
    v
}

/// The `gguf` package's view, checked in Python: argv = limit, single file, parts...
const JUDGE: &str = r#"
import sys, gguf
limit = int(sys.argv[1])
single = gguf.GGUFReader(sys.argv[2])
parts = [gguf.GGUFReader(p) for p in sys.argv[3:]]
n = len(parts)
def kvs(r):
    return [(k, f.types, f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.")]
want_kv = kvs(single)
all_tensors = []
for no, r in enumerate(parts):
    kv = kvs(r)
    split = [(k, t, v) for k, t, v in kv if k.startswith("split.")]
    assert [k for k, _, _ in split] == ["split.no", "split.count", "split.tensors.count"], split
    assert split[0][2] == no and split[0][1] == [gguf.GGUFValueType.UINT16], split
    assert split[1][2] == n and split[1][1] == [gguf.GGUFValueType.UINT16], split
    assert split[2][2] == len(single.tensors) and split[2][1] == [gguf.GGUFValueType.INT32], split
    assert kv[-3:] == split, "split keys come last"
    rest = kv[:-3]
    if no == 0:
        assert rest == want_kv, "first part carries every metadata key of the single file"
    else:
        assert rest == [], f"part {no} has metadata {[k for k, _, _ in rest]}"
    sizes = [((t.n_bytes + 31) // 32) * 32 for t in r.tensors]
    assert sizes, f"part {no} has no tensors"
    # gguf-split's rule: a part's padded data stays within the limit unless it is one tensor,
    # and the next part's first tensor would not have fit.
    assert sum(sizes) <= limit or len(sizes) == 1, (no, sizes)
    if no + 1 < n:
        nxt = parts[no + 1].tensors[0]
        assert sum(sizes) + ((nxt.n_bytes + 31) // 32) * 32 > limit, (no, "cut too early")
    all_tensors += r.tensors
assert len(all_tensors) == len(single.tensors)
for a, b in zip(all_tensors, single.tensors):
    assert a.name == b.name and a.tensor_type == b.tensor_type and list(a.shape) == list(b.shape), a.name
    assert bytes(a.data.tobytes()) == bytes(b.data.tobytes()), f"{a.name}: data differs"
print(n, len(all_tensors))
"#;

#[test]
fn every_part_reads_in_gguf_with_split_keys_and_same_tensors() {
    let Some(py) = common::python() else { return };
    let t = tempfile::tempdir().unwrap();
    let one = build(&t.path().join("one"), &[]);
    let split = build(&t.path().join("split"), &["--max-shard-size", LIMIT]);
    let ps = parts(&split);
    assert!(ps.len() >= 3, "{ps:?}");
    for (i, p) in ps.iter().enumerate() {
        let want = format!("model-{:05}-of-{:05}.gguf", i + 1, ps.len());
        assert_eq!(p.file_name().unwrap().to_str().unwrap(), want);
    }
    assert!(!split.join("model.gguf").exists());
    let mut args: Vec<std::ffi::OsString> = vec!["40000".into(), one.join("model.gguf").into()];
    args.extend(ps.iter().map(|p| p.clone().into_os_string()));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = common::run_python(&py, JUDGE, &args);
    assert_eq!(out.trim(), format!("{} 21", ps.len()));
}

/// llama.cpp loads the whole set from the first part and computes the same perplexity as from
/// the single file: `llama-perplexity --kl-divergence-base FILE` saves the per-token log-probs
/// of every chunk (written with stdio, unlike the log, whose async tail can be lost at exit), and
/// the two files must be byte-identical; a different model (int4) gives a different file, and
/// without one of the parts llama.cpp refuses to load the set.
#[test]
fn llama_perplexity_of_split_equals_single_file() {
    let Some(dir) = common::llama_dir() else { return };
    let exe = dir.join("bin/llama-perplexity");
    assert!(exe.is_file(), "{} missing: run `cargo xtask llama`", exe.display());
    let t = tempfile::tempdir().unwrap();
    let one = build(&t.path().join("one"), &[]);
    let split = build(&t.path().join("split"), &["--max-shard-size", LIMIT]);
    let other = t.path().join("q4");
    common::quantize(
        &common::fixture("tiny-llama"),
        &other,
        &["--target", "cpu", "--scheme", "int4", "--method", "rtn", "--no-progress"],
    );
    let text = t.path().join("text.txt");
    std::fs::write(&text, "the cat sat on the mat and the dog ran to the park . ".repeat(20)).unwrap();
    let n = std::cell::Cell::new(0);
    let logprobs = |m: &Path| -> Option<Vec<u8>> {
        n.set(n.get() + 1);
        let out = t.path().join(format!("{}.kld", n.get()));
        let o = Command::new(&exe)
            .arg("-m")
            .arg(m)
            .arg("-f")
            .arg(&text)
            .args(["-c", "64", "-b", "64", "-t", "2", "--kl-divergence-base"])
            .arg(&out)
            .output()
            .unwrap();
        o.status.success().then(|| std::fs::read(&out).unwrap())
    };
    let a = logprobs(&one.join("model.gguf")).expect("llama-perplexity on the single file");
    let first = parts(&split)[0].clone();
    let b = logprobs(&first).expect("llama-perplexity on the split set");
    assert!(a.len() > 10_000, "{} bytes of log-probs", a.len());
    assert!(a == b, "split and single file give different log-probs");
    let c = logprobs(&other.join("model.gguf")).expect("llama-perplexity on the int4 file");
    assert!(a != c, "the comparison cannot tell models apart");
    std::fs::remove_file(parts(&split)[2].clone()).unwrap();
    assert!(logprobs(&first).is_none(), "llama.cpp loaded a split set with a missing part");
}

#[test]
fn split_output_does_not_depend_on_threads() {
    let t = tempfile::tempdir().unwrap();
    let a = build(&t.path().join("a"), &["--max-shard-size", LIMIT, "--threads", "1"]);
    let b = build(&t.path().join("b"), &["--max-shard-size", LIMIT, "--threads", "2"]);
    let (pa, pb) = (parts(&a), parts(&b));
    assert_eq!(pa.len(), pb.len());
    for (x, y) in pa.iter().zip(&pb) {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{}", x.display());
    }
}

#[test]
fn bad_max_shard_size_is_exit_2_before_output() {
    let t = tempfile::tempdir().unwrap();
    for (size, msg) in [("1KB", "cannot hold the GGUF header"), ("12XB", "bad size"), ("0", "bad size")] {
        let out = t.path().join("pkg");
        let o = common::modelpack()
            .arg("quantize")
            .arg(common::fixture("tiny-llama"))
            .arg("-o")
            .arg(&out)
            .args(["--target", "cpu", "--scheme", "int8", "--max-shard-size", size])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{size}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(msg), "{size}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!out.exists(), "{size}: output left behind");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "{size}: staging left behind");
    }
}

#[test]
fn inspect_sums_the_parts() {
    let t = tempfile::tempdir().unwrap();
    let split = build(&t.path().join("split"), &["--max-shard-size", LIMIT]);
    let o = common::modelpack().arg("inspect").arg(&split).arg("--json").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let g = &doc["gguf"];
    assert_eq!(g["tensor_count"], 21, "{g}");
    let bytes: u64 = parts(&split).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert_eq!(g["file_bytes"], bytes, "{g}");
}
