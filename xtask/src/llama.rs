//! llama.cpp as an external judge: a pinned, cached CPU build of its tools plus our C harness
//! around ggml's reference quantizers (`xtask/c/quant_harness.c`).
//!
//! llama.cpp comes from the PyPI sdist of `llama-cpp-python`, which vendors it: PyPI is the only
//! source CI can reach. The build lives outside the repository in
//! `~/.cache/modelpack/llama.cpp-<version>/` and is reused while its `.complete` stamp matches
//! the build configuration:
//! ```text
//! bin/      llama-completion llama-simple llama-tokenize llama-quantize llama-gguf
//!           llama-eval-callback llama-imatrix quant_harness
//! lib/      libggml-base.a (what the harness links against)
//! src/      the vendored llama.cpp sources (headers for the harness; ggml-quants.c to read)
//! ```
//! `cargo xtask llama [--print-dir]` builds when needed and prints that directory on stdout.
//! Scripts should generate with `llama-simple`: `llama-completion` prints through an async
//! logger that is not flushed at exit and loses the tail of its output (see tests/it/llama_run.rs).
use crate::util::{cache_dir, root, run as run_cmd};
use anyhow::{bail, ensure, Context};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The pinned `llama-cpp-python` release whose `vendor/llama.cpp` we build.
pub const VERSION: &str = "0.3.36";
/// SHA-256 of `llama_cpp_python-0.3.36.tar.gz` as served by PyPI: a changed file is an error.
const SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
/// The CMake targets we need; everything else in llama.cpp is never compiled.
const TARGETS: &[&str] = &[
    "llama-completion",
    "llama-simple",
    "llama-tokenize",
    "llama-quantize",
    "llama-gguf",
    "llama-eval-callback",
    "llama-imatrix",
    "llama-perplexity",
];
/// Parts of the sdist the build never reads (vocab test files, docs, CI config, the web UI).
const EXCLUDES: &[&str] = &["models", "docs", ".github", ".git", "tools/ui", "media"];

/// `cargo xtask llama [--print-dir]`: build if needed, print the directory (stdout) and, without
/// `--print-dir`, the binaries it holds (stderr).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quiet = match args {
        [] => false,
        [a] if a == "--print-dir" => true,
        _ => bail!("usage: cargo xtask llama [--print-dir]"),
    };
    let dir = ensure()?;
    if !quiet {
        for t in TARGETS.iter().chain(["quant_harness"].iter()) {
            eprintln!("  {}", dir.join("bin").join(t).display());
        }
    }
    println!("{}", dir.display());
    Ok(())
}

/// The build configuration; stored in `.complete`, so changing any of it rebuilds.
fn config_key(native: bool) -> String {
    format!("llama-cpp-python {VERSION} sha256 {SDIST_SHA256}\ntargets {}\nnative {native}\n", TARGETS.join(" "))
}

/// Build (or reuse) llama.cpp and the harness; returns the cache directory.
///
/// The default is a portable AVX2/FMA/F16C build, not `-march=native`: on this machine's CPU
/// (AMX-capable) a native build enables ggml's AMX matmul, which crashes (SIGSEGV in
/// `ggml_backend_amx_mul_mat`) on a Q8_0 model. `MODELPACK_LLAMA_NATIVE=1` opts in anyway;
/// `MODELPACK_LLAMA_JOBS` overrides the parallel build jobs (default: all cores).
pub fn ensure() -> anyhow::Result<PathBuf> {
    let native = std::env::var("MODELPACK_LLAMA_NATIVE").is_ok_and(|v| v == "1");
    let key = config_key(native);
    // The directory is named by the configuration too, so branches (or checkouts) that need
    // different target lists keep separate builds instead of rebuilding each other's.
    let tag = &sha256_hex(key.as_bytes())[..8];
    let dir = cache_dir().join(format!("llama.cpp-{VERSION}-{tag}"));
    let stamp = dir.join(".complete");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(key.as_str()) {
        build(&dir, &key, native)?;
    }
    ensure_harness(&dir)?;
    Ok(dir)
}

/// Download (or reuse) the sdist and check its digest; returns the tarball path.
pub(crate) fn sdist() -> anyhow::Result<PathBuf> {
    let downloads = cache_dir().join("downloads");
    std::fs::create_dir_all(&downloads)?;
    let name = format!("llama_cpp_python-{VERSION}.tar.gz");
    let path = downloads.join(&name);
    if path.exists() && sha256_file(&path)? == SDIST_SHA256 {
        return Ok(path);
    }
    let tmp = downloads.join(format!("pip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("xtask llama: downloading the llama-cpp-python {VERSION} sdist from PyPI");
    run_cmd(
        Command::new("python3")
            .args(["-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps"])
            // Only llama-cpp-python itself as source: `:all:` would also build its build
            // dependencies (cmake, ninja) from source while pip prepares metadata (~30 min).
            .args(["--no-binary", "llama-cpp-python", &format!("llama-cpp-python=={VERSION}"), "-d"])
            .arg(&tmp),
    )?;
    let got = tmp.join(&name);
    let digest = sha256_file(&got).with_context(|| format!("pip did not produce {}", got.display()))?;
    ensure!(digest == SDIST_SHA256, "{}: sha256 {digest}, expected {SDIST_SHA256}", got.display());
    std::fs::rename(&got, &path)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(path)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Extract, configure and build in a staging directory, then move it into place: an
/// interrupted build never looks complete.
fn build(dir: &Path, key: &str, native: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let tarball = sdist()?;
    let stage = dir.with_file_name(format!(
        "{}.tmp-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&stage);
    let src = stage.join("src");
    let build = stage.join("build");
    std::fs::create_dir_all(&src)?;

    let top = format!("llama_cpp_python-{VERSION}/vendor/llama.cpp");
    let mut tar = Command::new("tar");
    tar.arg("xzf").arg(&tarball).arg("-C").arg(&src).arg("--strip-components=3");
    for ex in EXCLUDES {
        tar.arg(format!("--exclude={top}/{ex}"));
    }
    run_cmd(tar.arg(&top))?;

    let jobs = std::env::var("MODELPACK_LLAMA_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    eprintln!("xtask llama: building llama.cpp ({VERSION}) with {jobs} jobs in {}", stage.display());
    let on_off = |b: bool| if b { "ON" } else { "OFF" };
    run_cmd(
        Command::new("cmake")
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(&build)
            .args([
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_SERVER=OFF",
                "-DLLAMA_BUILD_APP=OFF",
                "-DLLAMA_BUILD_TOOLS=ON",
                "-DLLAMA_BUILD_EXAMPLES=ON",
                "-DLLAMA_OPENSSL=OFF",
                "-DGGML_CCACHE=OFF",
                "-DCMAKE_RULE_MESSAGES=OFF",
            ])
            .arg(format!("-DGGML_NATIVE={}", on_off(native)))
            // Without native, ggml's x86 defaults apply: AVX, AVX2, BMI2, FMA, F16C; no AVX-512/AMX.
            // libggml-base (the harness's reference quantizers) never gets these flags, so FMA
            // contraction cannot change its bytes.
            .stdout(std::process::Stdio::null()),
    )
    .context("configuring llama.cpp (is cmake installed? `apt-get install -y cmake g++`)")?;
    run_cmd(
        Command::new("cmake")
            .arg("--build")
            .arg(&build)
            .args(["-j", &jobs.to_string(), "--target"])
            .args(TARGETS)
            .stdout(std::process::Stdio::null()),
    )
    .context("building llama.cpp")?;

    let bin = stage.join("bin");
    let lib = stage.join("lib");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&lib)?;
    for t in TARGETS {
        std::fs::copy(build.join("bin").join(t), bin.join(t)).with_context(|| format!("{t} was not built"))?;
    }
    std::fs::copy(build.join("ggml/src/libggml-base.a"), lib.join("libggml-base.a"))?;
    std::fs::remove_dir_all(&build)?;
    std::fs::write(stage.join(".complete"), key)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    if let Err(e) = std::fs::rename(&stage, dir) {
        // Another process may have finished the same build first: use it if it is complete.
        if std::fs::read_to_string(dir.join(".complete")).ok().as_deref() == Some(key) {
            std::fs::remove_dir_all(&stage)?;
        } else {
            return Err(e).with_context(|| format!("moving {} into place", stage.display()));
        }
    }
    eprintln!("xtask llama: built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Compile `xtask/c/quant_harness.c` against the cached libggml-base when it or the library
/// changed (a hash stamp beside the binary); takes about a second.
fn ensure_harness(dir: &Path) -> anyhow::Result<()> {
    let source = root().join("xtask/c/quant_harness.c");
    let lib = dir.join("lib/libggml-base.a");
    let mut hasher = sha2::Sha256::new();
    hasher.update(std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?);
    hasher.update(std::fs::read(dir.join(".complete"))?);
    let digest = hex::encode(hasher.finalize());
    let exe = dir.join("bin/quant_harness");
    let stamp = dir.join("bin/quant_harness.sha256");
    if exe.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str()) {
        return Ok(());
    }
    let tmp = dir.join(format!("bin/quant_harness.tmp-{}", std::process::id()));
    run_cmd(
        Command::new("cc")
            .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(dir.join("src/ggml/include"))
            .arg(&source)
            .arg(&lib)
            .args(["-lstdc++", "-lm", "-lpthread", "-fopenmp", "-o"])
            .arg(&tmp),
    )
    .context("compiling the quant harness")?;
    std::fs::rename(&tmp, &exe)?;
    std::fs::write(stamp, digest)?;
    Ok(())
}
