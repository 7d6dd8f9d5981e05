//! SentencePiece checkpoints on the cpu target: `tokenizer.model` becomes the GGUF `llama`
//! tokenizer (tokens, scores, token types), as llama.cpp's converter does.
//!
//! Judges: the `sentencepiece` package (the tokenizer's own implementation) reads
//! `fixtures/tiny-llama-spm/tokenizer.model`; the `gguf` package reads our GGUF; llama.cpp's
//! `llama-tokenize` must split text into the same ids as `sentencepiece`, and `llama-simple`
//! must load and run the package.
//!
//! Needs the venv (`MODELPACK_PYTHON`) and, for the llama.cpp tests, `MODELPACK_LLAMA_DIR`;
//! without them the tests skip unless `MODELPACK_REQUIRE_INTEROP` is set (CI).
use crate::common;

use std::path::Path;
use std::process::Command;

/// Texts that exercise merges, competing merges, byte fallback (upper case, digits,
/// punctuation, newline, multi-byte UTF-8) and repeated spaces.
const TEXTS: &[&str] = &[
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "Hello, World! 123",
    "llama  model\nnew line",
    "h\u{e9}llo \u{1f999} llamas",
    "over and over, the dog",
];

/// Quantize `input` for the cpu target into `out` (int8).
fn quantize(input: &Path, out: &Path) {
    common::modelpack()
        .arg("quantize")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--target", "cpu", "--scheme", "int8", "--no-progress"])
        .assert()
        .success();
}

/// Expected vocabulary from `sentencepiece` plus the converter's documented rules
/// (llama.cpp `_create_vocab_sentencepiece`): piece types map 1:1 to GGUF token types;
/// tokenizer_config.json `added_tokens_decoder` entries get score -1000 and CONTROL when special.
/// Compared with what the `gguf` reader finds in our file.
const VOCAB_JUDGE: &str = r#"
import json, sys
import sentencepiece as spm
import gguf
model, gg, tc_path = sys.argv[1], sys.argv[2], sys.argv[3]
sp = spm.SentencePieceProcessor(model_file=model)
tc = json.load(open(tc_path))
n = sp.get_piece_size()
tokens = [sp.id_to_piece(i) for i in range(n)]
scores = [sp.get_score(i) for i in range(n)]
types = []
for i in range(n):
    if sp.is_unknown(i): t = 2
    elif sp.is_control(i): t = 3
    elif sp.is_unused(i): t = 5
    elif sp.is_byte(i): t = 6
    else: t = 1
    types.append(t)
for tid, d in tc.get("added_tokens_decoder", {}).items():
    tid = int(tid)
    tokens[tid] = d["content"]
    scores[tid] = -1000.0
    types[tid] = 3 if d.get("special") else 4
r = gguf.GGUFReader(gg)
def arr(key):
    f = r.fields[key]
    return [f.parts[i] for i in f.data]
def scalar(key):
    f = r.fields[key]
    return f.parts[-1][0] if key in r.fields else None
def string(key):
    return bytes(r.fields[key].parts[-1]).decode()
got_tokens = [bytes(p).decode() for p in arr("tokenizer.ggml.tokens")]
got_scores = [float(p[0]) for p in arr("tokenizer.ggml.scores")]
got_types = [int(p[0]) for p in arr("tokenizer.ggml.token_type")]
assert string("tokenizer.ggml.model") == "llama", string("tokenizer.ggml.model")
assert "tokenizer.ggml.merges" not in r.fields
assert got_tokens == tokens, [(i, a, b) for i, (a, b) in enumerate(zip(got_tokens, tokens)) if a != b][:5]
assert got_scores == scores, [(i, a, b) for i, (a, b) in enumerate(zip(got_scores, scores)) if a != b][:5]
assert got_types == types, [(i, a, b) for i, (a, b) in enumerate(zip(got_types, types)) if a != b][:5]
assert int(scalar("tokenizer.ggml.bos_token_id")) == sp.bos_id()
assert int(scalar("tokenizer.ggml.eos_token_id")) == sp.eos_id()
assert bool(scalar("tokenizer.ggml.add_bos_token")) == tc["add_bos_token"]
print(json.dumps({"n": n, "bytes": types.count(6), "normal": types.count(1)}))
"#;

/// `sentencepiece`'s ids for each text, one JSON list per line.
const ENCODE: &str = r#"
import json, sys
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
for t in json.loads(sys.argv[2]):
    print(json.dumps(sp.encode(t)))
"#;

#[test]
fn sentencepiece_vocab_matches_the_model_file() {
    let Some(py) = common::python() else { return };
    let input = common::fixture("tiny-llama-spm");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    quantize(&input, &out);
    let res = common::run_python(
        &py,
        VOCAB_JUDGE,
        &[
            input.join("tokenizer.model").as_os_str(),
            out.join("model.gguf").as_os_str(),
            input.join("tokenizer_config.json").as_os_str(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(res.trim()).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(input.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["n"], config["vocab_size"], "{res}");
    assert_eq!(v["bytes"], 256, "{res}");
    assert!(v["normal"].as_u64().unwrap() > 20, "{res}");
    // The package carries the model file unchanged, like every tokenizer file.
    assert_eq!(
        std::fs::read(out.join("tokenizer.model")).unwrap(),
        std::fs::read(input.join("tokenizer.model")).unwrap()
    );
}

/// llama.cpp's converter prefers tokenizer.model over tokenizer.json for the llama family: a
/// byte-level tokenizer.json beside it must not win.
#[test]
fn tokenizer_model_takes_precedence_over_tokenizer_json() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for e in std::fs::read_dir(common::fixture("tiny-llama-spm")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), input.join(e.file_name())).unwrap();
    }
    // A byte-level BPE tokenizer.json from another fixture (its ids differ).
    std::fs::copy(common::fixture("tiny-llama/tokenizer.json"), input.join("tokenizer.json")).unwrap();
    let out = tmp.path().join("pkg");
    quantize(&input, &out);
    let res = common::run_python(
        &py,
        "import gguf,sys; r=gguf.GGUFReader(sys.argv[1]); \
         print(bytes(r.fields['tokenizer.ggml.model'].parts[-1]).decode(), len(r.fields['tokenizer.ggml.tokens'].data))",
        &[out.join("model.gguf").as_os_str()],
    );
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(input.join("config.json")).unwrap()).unwrap();
    assert_eq!(res.trim(), format!("llama {}", config["vocab_size"]));
}

/// Run a command; panics with its output unless it exits 0. Returns (stdout, stderr).
fn output_of(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (so, se) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{cmd:?} failed: {}\nstdout:\n{so}\nstderr:\n{se}", out.status);
    (so, se)
}

fn parse_ids(s: &str) -> Vec<u32> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    if s.trim().is_empty() {
        return Vec::new();
    }
    s.split(',').map(|x| x.trim().parse().unwrap_or_else(|_| panic!("not an id list: {s:?}"))).collect()
}

#[test]
fn llama_cpp_tokenizes_like_sentencepiece_and_runs() {
    let Some(dir) = common::llama_dir() else { return };
    let Some(py) = common::python() else { return };
    let input = common::fixture("tiny-llama-spm");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    quantize(&input, &out);
    let gguf = out.join("model.gguf");
    let texts = serde_json::to_string(TEXTS).unwrap();
    let want = common::run_python(&py, ENCODE, &[input.join("tokenizer.model").as_os_str(), texts.as_ref()]);
    let want: Vec<Vec<u32>> = want.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(want.len(), TEXTS.len());
    let bin = dir.join("bin");
    let mut byte_fallbacks = 0;
    for (text, want) in TEXTS.iter().zip(&want) {
        let (ids, _) = output_of(Command::new(bin.join("llama-tokenize")).arg("-m").arg(&gguf).args([
            "-p",
            text,
            "--ids",
            "--no-bos",
            "--log-disable",
        ]));
        assert_eq!(&parse_ids(&ids), want, "llama-tokenize vs sentencepiece for {text:?}");
        // Byte pieces are ids 3..=258 in the fixture: make sure the texts reach them.
        byte_fallbacks += want.iter().filter(|&&id| (3..259).contains(&id)).count();
    }
    assert!(byte_fallbacks > 10, "the texts should exercise byte fallback ({byte_fallbacks})");

    // The package loads as an SPM vocabulary and generates.
    let (text, log) =
        output_of(Command::new(bin.join("llama-simple")).arg("-m").arg(&gguf).args(["-n", "6", "the quick brown fox"]));
    let info = |k: &str| {
        log.lines()
            .filter_map(|l| l.split("print_info: ").nth(1))
            .find_map(|r| r.split_once('=').filter(|(a, _)| a.trim() == k).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| panic!("llama.cpp did not report {k}:\n{log}"))
    };
    assert_eq!(info("vocab type"), "SPM");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(input.join("config.json")).unwrap()).unwrap();
    assert_eq!(info("n_vocab"), config["vocab_size"].to_string());
    assert!(text.contains("the quick brown fox"), "llama-simple did not echo the prompt: {text:?}");
    let n: usize = log
        .lines()
        .find_map(|l| l.split("decoded ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'decoded N tokens' line:\n{log}"));
    assert!((1..=6).contains(&n), "{n} tokens generated");
}
