//! llama.cpp as the judge of our GGUF: it must load the file, report the hyperparameters of the
//! source config, tokenize, and generate tokens greedily.
//!
//! Needs the cached llama.cpp build: `MODELPACK_LLAMA_DIR` = the directory printed by
//! `cargo xtask llama --print-dir` (its `bin/` holds `llama-completion`, `llama-tokenize`).
//! Unset: every test here skips, unless `MODELPACK_REQUIRE_INTEROP` is set (CI), then it fails.
//! Python checks also need the venv (`common::python()`).
//!
//! - `modelpack_package_runs_*`: the main proof, on `modelpack quantize fixtures/tiny-llama
//!   --target cpu --scheme int8|int4` output.
//! - `python_gguf_*`: a permanent, cheap cross-check on a tiny random llama written by the
//!   `gguf` package itself (`xtask/py/tiny_llama_gguf.py`), including a top-1 comparison of
//!   llama.cpp's greedy generation with a float64 numpy forward pass of the dequantized weights.
//!
//! Generation uses `llama-simple` (see `run_llama` for why not `llama-completion`).
use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROMPT: &str = "the cat";
const N_PREDICT: usize = 8;
/// Reference top-1/top-2 logit gap below which a greedy step is too close to call for a model
/// with quantized weights (measured: a 0.088 gap flipped in Q4_0, gaps >= 0.24 never did).
const MIN_MARGIN: f64 = 0.25;

/// The llama.cpp build directory (`common::llama_dir`), which must hold `bin/llama-completion`.
fn llama_dir() -> Option<PathBuf> {
    let d = common::llama_dir()?;
    assert!(
        d.join("bin/llama-completion").is_file(),
        "MODELPACK_LLAMA_DIR={} has no bin/llama-completion: run `cargo xtask llama`",
        d.display()
    );
    Some(d)
}

/// What one llama.cpp run reported.
#[derive(Debug)]
struct LlamaRun {
    /// `print_info: key = value` lines of the model loader (n_vocab, n_embd, n_layer, ...).
    info: BTreeMap<String, String>,
    /// llama-simple's stdout: the prompt's token pieces, the generated pieces, then `\n`.
    text: Vec<u8>,
    /// Tokens generated, from llama-simple's `decoded N tokens` line.
    n_generated: usize,
    /// The prompt's token ids from `llama-tokenize --ids`.
    prompt_ids: Vec<u32>,
}

/// Run a command; panics with its output unless it exits 0. Returns (stdout bytes, stderr).
fn output_of(cmd: &mut Command) -> (Vec<u8>, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{se}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    (out.stdout, se)
}

/// Tokenize `PROMPT`, then generate up to `N_PREDICT` tokens greedily with `llama-simple`
/// (greedy sampler, so no seed or temperature; it stops early if the model picks EOS).
///
/// Not `llama-completion`: it prints generated text through an asynchronous logger that is not
/// flushed at exit, and measured here 6 of 10 runs with `-t 2` lost the tail of the output
/// while exiting 0. llama-simple uses printf and plain stderr logging; it has no thread option
/// (llama.cpp's default context threads apply).
fn run_llama(dir: &Path, gguf: &Path) -> LlamaRun {
    let bin = dir.join("bin");
    let (ids, _) = output_of(Command::new(bin.join("llama-tokenize")).arg("-m").arg(gguf).args([
        "-p",
        PROMPT,
        "--ids",
        "--log-disable",
    ]));
    let ids = String::from_utf8_lossy(&ids);
    let prompt_ids = ids
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().parse::<u32>().unwrap_or_else(|_| panic!("llama-tokenize printed {ids:?}")))
        .collect();

    let (text, log) = output_of(Command::new(bin.join("llama-simple")).arg("-m").arg(gguf).args([
        "-n",
        &N_PREDICT.to_string(),
        PROMPT,
    ]));
    let mut info = BTreeMap::new();
    for line in log.lines() {
        // "print_info: n_embd                = 64"
        if let Some(rest) = line.split("print_info: ").nth(1) {
            if let Some((k, v)) = rest.split_once('=') {
                info.entry(k.trim().to_string()).or_insert_with(|| v.trim().to_string());
            }
        }
    }
    // "main: decoded 8 tokens in 0.02 s, speed: ..."
    let n_generated = log
        .lines()
        .find_map(|l| l.split("decoded ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'decoded N tokens' line in llama-simple's log:\n{log}"));
    LlamaRun { info, text, n_generated, prompt_ids }
}

/// Hyperparameters that llama.cpp must report for a model.
struct Expect {
    n_vocab: u64,
    n_embd: u64,
    n_layer: u64,
    n_head: u64,
    n_head_kv: u64,
    /// llama.cpp's `llama_ftype_name`, e.g. `Q8_0`.
    file_type: &'static str,
}

fn check_run(run: &LlamaRun, want: &Expect) {
    let get = |k: &str| {
        run.info.get(k).unwrap_or_else(|| panic!("llama.cpp did not report {k}; it said {:#?}", run.info)).as_str()
    };
    let num = |k: &str| get(k).parse::<u64>().unwrap_or_else(|_| panic!("{k} = {:?}", get(k)));
    assert_eq!(get("arch"), "llama");
    assert_eq!(num("n_vocab"), want.n_vocab, "n_vocab");
    assert_eq!(num("n_embd"), want.n_embd, "n_embd");
    assert_eq!(num("n_layer"), want.n_layer, "n_layer");
    assert_eq!(num("n_head"), want.n_head, "n_head");
    assert_eq!(num("n_head_kv"), want.n_head_kv, "n_head_kv");
    let ft = get("file type");
    assert!(
        ft == want.file_type || ft.starts_with(&format!("{} ", want.file_type)),
        "file type {ft:?}, expected {}",
        want.file_type
    );
    let text = String::from_utf8_lossy(&run.text);
    assert!((1..=N_PREDICT).contains(&run.n_generated), "{} tokens generated; output {text:?}", run.n_generated);
    assert!(text.contains(PROMPT), "llama-simple did not echo the prompt: {text:?}");
    assert!(!run.prompt_ids.is_empty() && run.prompt_ids.iter().all(|&id| u64::from(id) < want.n_vocab));
}

// ---------------------------------------------------------------------------------------------
// The main proof: modelpack's own package of fixtures/tiny-llama runs in llama.cpp.
// ---------------------------------------------------------------------------------------------

fn modelpack_package_runs(scheme: &str, file_type: &'static str) {
    let Some(dir) = llama_dir() else { return };
    let input = common::fixture("tiny-llama");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    common::modelpack()
        .arg("quantize")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["--target", "cpu", "--scheme", scheme, "--no-progress"])
        .assert()
        .success();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(input.join("config.json")).unwrap()).unwrap();
    let c = |k: &str| config[k].as_u64().unwrap_or_else(|| panic!("config.json has no integer {k}"));
    let want = Expect {
        n_vocab: c("vocab_size"),
        n_embd: c("hidden_size"),
        n_layer: c("num_hidden_layers"),
        n_head: c("num_attention_heads"),
        n_head_kv: config["num_key_value_heads"].as_u64().unwrap_or_else(|| c("num_attention_heads")),
        file_type,
    };
    let run = run_llama(&dir, &out.join("model.gguf"));
    check_run(&run, &want);
}

#[test]
fn modelpack_package_runs_int8() {
    modelpack_package_runs("int8", "Q8_0");
}

#[test]
fn modelpack_package_runs_int4() {
    modelpack_package_runs("int4", "Q4_0");
}

// ---------------------------------------------------------------------------------------------
// Cross-check: a GGUF written by the `gguf` package, and a numpy forward pass as the reference.
// ---------------------------------------------------------------------------------------------

/// Runs the script file given as the first argument (`common::run_python` takes inline source).
const RUN_SCRIPT: &str = "import runpy,sys; sys.argv=sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')";

fn script() -> PathBuf {
    common::root().join("xtask/py/tiny_llama_gguf.py")
}

fn python_gguf_runs(qtype: &str, file_type: &'static str) {
    let Some(dir) = llama_dir() else { return };
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    let hp = common::run_python(
        &py,
        RUN_SCRIPT,
        &[script().as_os_str(), "write".as_ref(), gguf.as_os_str(), "--type".as_ref(), qtype.as_ref()],
    );
    // The generator's hyperparameters (xtask/py/tiny_llama_gguf.py: HP, 256 bytes + 6 merges + 2
    // control tokens), written out here rather than read back from the script.
    let want = Expect { n_vocab: 264, n_embd: 64, n_layer: 2, n_head: 4, n_head_kv: 2, file_type };
    assert!(hp.contains("\"n_vocab\": 264"), "generator changed: {hp}");
    let bos = 262;
    let run = run_llama(&dir, &gguf);
    check_run(&run, &want);
    // Byte-level BPE by hand: BOS, 't', merge "he" (id 256 + 1), byte ' ' (GPT-2 'Ġ' = 32), c a t.
    assert_eq!(run.prompt_ids, [bos, 116, 257, 32, 99, 97, 116]);

    // The same greedy steps in float64 numpy on the gguf-dequantized weights.
    let mut args: Vec<std::ffi::OsString> =
        vec![script().into(), "greedy".into(), gguf.clone().into(), N_PREDICT.to_string().into()];
    args.extend(run.prompt_ids.iter().map(|id| id.to_string().into()));
    let argrefs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let reference = common::run_python(&py, RUN_SCRIPT, &argrefs);
    let reference: serde_json::Value = serde_json::from_str(&reference).unwrap();
    let margins: Vec<f64> = reference["margins"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect();
    let pieces: Vec<&str> = reference["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    // Steps are compared up to the first one whose reference margin is below MIN_MARGIN: there
    // llama.cpp's quantized-activation arithmetic may pick the runner-up, and everything after
    // a legitimate flip is a different continuation. (The last margin may be the EOS step.)
    let confident = margins.iter().position(|&m| m < MIN_MARGIN).unwrap_or(margins.len());
    assert!(confident >= 3, "only {confident} confident reference steps (margins {margins:?}): pick another seed");
    let echo = hex::encode(format!("<|bos|>{PROMPT}"));
    let ours = hex::encode(&run.text);
    let want = format!("{echo}{}", pieces[..confident.min(pieces.len())].concat());
    assert!(
        ours.starts_with(&want),
        "llama.cpp's output {ours} differs from the numpy reference {want} in the first \
         {confident} steps (ids {}, margins {margins:?})",
        reference["ids"]
    );
    if confident == margins.len() {
        // Every step confident: the whole output, EOS stop included, must agree.
        assert_eq!(ours, format!("{echo}{}0a", pieces.concat()));
        assert_eq!(run.n_generated, pieces.len());
    }
    eprintln!(
        "{qtype}: llama.cpp agrees with numpy on {confident}/{} greedy steps (EOS stop: {})",
        margins.len(),
        reference["eos"]
    );
}

#[test]
fn python_gguf_q8_0_runs_and_matches_numpy() {
    python_gguf_runs("q8_0", "Q8_0");
}

#[test]
fn python_gguf_q4_0_runs_and_matches_numpy() {
    python_gguf_runs("q4_0", "Q4_0");
}

// ---------------------------------------------------------------------------------------------
// The quant harness (xtask/c/quant_harness.c): the byte-exact judge for K-quants must itself
// agree with the external `gguf` package where both exist.
// ---------------------------------------------------------------------------------------------

/// Checks, in the venv: for Q8_0/Q4_0/Q4_1 the harness's `quantize_row_*_ref` bytes equal
/// `gguf.quants.quantize`; for all five types `--mode chunk` (ggml_quantize_chunk) equals `ref`,
/// and `gguf.quants.dequantize` of the harness's bytes equals ggml's own `--mode dequant`.
const HARNESS_CHECK: &str = r#"
import subprocess, sys
import numpy as np, gguf
from gguf import GGMLQuantizationType as T
exe = sys.argv[1]
rng = np.random.default_rng(11)
x = (rng.standard_normal((16, 512)) * rng.uniform(0.01, 4, (16, 1))).astype(np.float32)
x[2, :64] = 0.0
x[3, 7] = 100.0
x[4] = -x[4] ** 2
def run(*args, data):
    return subprocess.run([exe, *args], input=data, capture_output=True, check=True).stdout
for name, t in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q4_k", T.Q4_K), ("q6_k", T.Q6_K)]:
    ref = run(name, "512", data=x.tobytes())
    assert run(name, "512", "--mode", "chunk", data=x.tobytes()) == ref, name + ": chunk != ref"
    if t in (T.Q8_0, T.Q4_0, T.Q4_1):
        assert gguf.quants.quantize(x, t).tobytes() == ref, name + ": harness != gguf.quants.quantize"
    ours = np.frombuffer(run(name, "512", "--mode", "dequant", data=ref), np.float32).reshape(x.shape)
    theirs = gguf.quants.dequantize(np.frombuffer(ref, np.uint8).reshape(16, -1), t)
    assert np.array_equal(ours, theirs), name + ": dequantize differs"
    sqnr = 10 * np.log10((x.astype(np.float64) ** 2).sum() / ((x - ours).astype(np.float64) ** 2).sum())
    print(name, len(ref), round(float(sqnr), 2))
"#;

#[test]
fn quant_harness_agrees_with_gguf() {
    let Some(dir) = llama_dir() else { return };
    let Some(py) = common::python() else { return };
    let exe = dir.join("bin/quant_harness");
    let out = common::run_python(&py, HARNESS_CHECK, &[exe.as_os_str()]);
    // Sizes from ggml's block layouts (Q8_0: 34 bytes per 32 values, Q4_0: 18 per 32): 16 rows
    // x 512 values.
    let sizes: Vec<(&str, usize)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0], f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("q8_0", 16 * 16 * 34),
            ("q4_0", 16 * 16 * 18),
            ("q4_1", 16 * 16 * 20),
            ("q4_k", 16 * 2 * 144),
            ("q6_k", 16 * 2 * 210)
        ]
    );
    eprintln!("quant harness (type, bytes, SQNR dB):\n{out}");
}

#[test]
fn quant_harness_rejects_bad_input() {
    let Some(dir) = llama_dir() else { return };
    let exe = dir.join("bin/quant_harness");
    let run = |args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The harness may reject its arguments before reading stdin: a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    };
    // 33 floats are not a whole number of 32-value rows; 48 is not a multiple of Q8_0's block.
    for (args, input) in [
        (vec!["q8_0", "32"], vec![0u8; 33 * 4]),
        (vec!["q8_0", "48"], vec![0u8; 48 * 4]),
        (vec!["q5_1", "32"], vec![0u8; 32 * 4]),
        (vec!["q8_0", "32", "--mode", "nope"], vec![0u8; 32 * 4]),
    ] {
        let out = run(&args, &input);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} wrote output");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("quant_harness: "), "{args:?}");
    }
}
