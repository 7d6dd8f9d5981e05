//! `cargo xtask bench [--size 2GB[,4GB...]] [--quick] [--runs N] [--moe] [--only verify|TASK,...] [--profile P]`: benchmarks of
//! modelpack, end to end, side by side with the tools users would otherwise pick, in one invocation on the
//! same data (the machine is shared and noisy, so ratios come only from runs taken together).
//!
//! Every row is a whole process measured by [`measure::run`]: wall and CPU time, peak RSS and
//! peak RssAnon; the median of `--runs` runs after one warm-up run, page cache warm. Input is a
//! generated llama-shaped bf16 checkpoint ([`synth`]) and its FP8 E4M3 twin (rows `…, FP8 E4M3 in`,
//! GB/s of the FP8 bytes, compared with the bf16 rows in a second table). Outputs go to tmpfs (`/dev/shm`) unless
//! `--disk`, so the table measures the tools, not this VM's disk; one extra row per tool writes
//! Q8_0 to disk (modelpack fsyncs before its rename, llama-quantize does not). Results go to stdout as a markdown table
//! and to `target/bench/` as markdown and JSON. `--quick` (a small model, one run, the `ci`
//! profile binary) proves the harness in CI; its numbers mean nothing. `--only verify` runs just
//! the hashing rows (sign, verify, `model_signing`, `sha256sum`, `openssl`), after making the two
//! signed packages they read without timing it: a quick, quiet re-run of issue 17's figures.
//!
//! Every row records the 1-minute load average when it started (the machine is shared); the
//! hashing rows also record the package's shape (files and sizes), the page cache state, the
//! threads and which SHA-256 implementation modelpack ran (from `verify --json`), so figures
//! from different machines can be compared.

pub mod measure;
pub mod synth;

use crate::util::{cache_dir, root, run as run_cmd};
use anyhow::{bail, Context};
use measure::Sample;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Opts {
    sizes: Vec<u64>,
    quick: bool,
    /// Benchmark a synthetic Qwen3-MoE of the same size instead of the dense llama.
    moe: bool,
    runs: usize,
    peers: bool,
    disk: bool,
    /// Only the hashing rows (`--only verify`).
    only_hashing: bool,
    /// Cargo profile of the measured binary (`--profile`; default `release`).
    profile: Option<String>,
    /// `--only A,B`: keep only the rows whose task contains one of these substrings (ours and
    /// the peers'), so a kernel change can be measured against llama-quantize without the
    /// whole table.
    only: Vec<String>,
}

impl Opts {
    /// Whether a row of `task` is measured in this run.
    fn wants(&self, task: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| task.contains(p.as_str()))
    }
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_uppercase();
    for (suf, mul) in [("GB", 1e9), ("MB", 1e6)] {
        if let Some(n) = t.strip_suffix(suf) {
            let v: f64 = n.trim().parse().with_context(|| format!("bad size `{s}`"))?;
            return Ok((v * mul) as u64);
        }
    }
    bail!("bad size `{s}` (e.g. 2GB, 500MB)")
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        sizes: vec![2_000_000_000],
        quick: false,
        runs: 3,
        peers: true,
        disk: false,
        moe: false,
        only_hashing: false,
        profile: None,
        only: vec![],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--moe" => o.moe = true,
            "--no-peers" => o.peers = false,
            "--disk" => o.disk = true,
            "--size" => {
                let v = it.next().context("--size needs a value")?;
                o.sizes = v.split(',').map(parse_size).collect::<anyhow::Result<_>>()?;
            }
            "--runs" => o.runs = it.next().context("--runs needs a value")?.parse()?,
            "--profile" => o.profile = Some(it.next().context("--profile needs a value")?.clone()),
            "--only" => {
                let v = it.next().context("--only needs a value")?;
                if v == "verify" {
                    o.only_hashing = true;
                } else {
                    o.only = v.split(',').filter(|p| !p.is_empty()).map(String::from).collect();
                }
            }
            _ => {
                bail!(
                    "usage: cargo xtask bench [--size 2GB[,4GB]] [--quick] [--runs N] [--no-peers] [--disk] [--moe] \
                     [--only verify | --only TASK,...] [--profile P]"
                )
            }
        }
    }
    if o.quick {
        o.runs = 1;
        o.sizes = vec![0];
    }
    anyhow::ensure!(o.runs >= 1, "--runs must be at least 1");
    Ok(o)
}

/// One benchmark row: a task done by a tool.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    task: String,
    tool: String,
    /// Bytes the GB/s figure is relative to (bf16 tensor bytes for quantization).
    bytes: u64,
    median: Sample,
    runs: Vec<Sample>,
    gb_per_s: f64,
    /// GB/s divided by the best peer's GB/s for the same task (peers are the non-modelpack rows).
    ratio_to_best_peer: Option<f64>,
    command: String,
    /// 1-minute load average just before the first measured run (`/proc/loadavg`).
    load1: f64,
    /// For hashing rows: package shape, cache state, threads, SHA-256 implementation.
    conditions: Option<Conditions>,
}

/// What a hashing figure depends on besides the code: recorded with the row.
#[derive(Debug, Clone, serde::Serialize)]
struct Conditions {
    /// Sizes of the hashed files in bytes, biggest first.
    files: Vec<u64>,
    /// Page cache: "warm" (every file read just before) or "cold".
    cache: &'static str,
    /// Hashing threads of the tool (modelpack: its rayon pool, as it reports it).
    threads: String,
    /// SHA-256 code that ran, as the tool reports it.
    sha256: String,
}

impl Conditions {
    /// Short form for the markdown table: "5 files (0.57+0.57 GB + 3 small; largest 26%), warm, threads 2, sha-ni x2".
    fn short(&self) -> String {
        let total: u64 = self.files.iter().sum();
        let big: Vec<u64> = self.files.iter().copied().filter(|&b| b >= 1_000_000).collect();
        let small = self.files.len() - big.len();
        let mut shape = big.iter().map(|b| format!("{:.2}", *b as f64 / 1e9)).collect::<Vec<_>>().join("+");
        if shape.is_empty() {
            shape.push('0');
        }
        if small > 0 {
            shape.push_str(&format!(" GB + {small} small"));
        } else {
            shape.push_str(" GB");
        }
        let largest = self.files.first().copied().unwrap_or(0) as f64 / total.max(1) as f64 * 100.0;
        format!(
            "{} files ({shape}; largest {largest:.0}%), {}, threads {}, {}",
            self.files.len(),
            self.cache,
            self.threads,
            self.sha256
        )
    }
}

/// Everything a case needs to be run again: how to reset, and the command.
struct Case {
    task: String,
    tool: String,
    bytes: u64,
    reset: Vec<PathBuf>,
    cmd: Vec<String>,
    /// A peer is measured without a warm-up run when it is slow (≥ 20 s): the inputs are warm.
    slow: bool,
    conditions: Option<Conditions>,
}

impl Case {
    /// A timed command with nothing to reset between runs (the sign/verify/hash rows).
    fn plain(task: impl Into<String>, tool: impl Into<String>, bytes: u64, cmd: Vec<String>) -> Case {
        Case { task: task.into(), tool: tool.into(), bytes, reset: vec![], cmd, slow: false, conditions: None }
    }
}

fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

fn reset(paths: &[PathBuf]) -> anyhow::Result<()> {
    for p in paths {
        if p.is_dir() {
            std::fs::remove_dir_all(p)?;
        } else if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

fn measure_case(c: &Case, runs: usize, warm_up: bool) -> anyhow::Result<Row> {
    let mut samples = Vec::new();
    let load1 = load_average();
    let total = runs + usize::from(warm_up && !c.slow);
    for i in 0..total {
        reset(&c.reset)?;
        let s = measure::run(&mut command(&c.cmd)).with_context(|| format!("{} / {}", c.task, c.tool))?;
        if i + runs >= total {
            samples.push(s);
        }
    }
    let m = measure::median(&samples);
    eprintln!(
        "  {:<34} {:<28} {:>7.3} GB/s {:>7.2} s {:>6.2} CPU-s  RssAnon {:>6.0} MB  load {load1:.1}",
        c.task,
        c.tool,
        c.bytes as f64 / m.wall_s / 1e9,
        m.wall_s,
        m.cpu_s,
        m.max_rss_anon_kib as f64 / 1024.0
    );
    Ok(Row {
        task: c.task.clone(),
        tool: c.tool.clone(),
        bytes: c.bytes,
        median: m,
        runs: samples,
        gb_per_s: c.bytes as f64 / m.wall_s / 1e9,
        ratio_to_best_peer: None,
        command: c.cmd.join(" "),
        load1,
        conditions: c.conditions.clone(),
    })
}

/// The 1-minute load average (0 when unreadable).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

/// Sizes of the files a signature covers (everything but `model.sig`), biggest first.
fn package_files(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name() != "model.sig")
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// Which SHA-256 code and how many threads this modelpack build hashes with, as its own
/// `verify --json` reports them (`hashing`); "unknown" for builds that do not say.
fn modelpack_hashing(mp: &Path, pkg: &Path, pubkey: &Path) -> (String, String) {
    let out = Command::new(mp).arg("verify").arg(pkg).arg("--key").arg(pubkey).arg("--json").output();
    let doc: serde_json::Value =
        out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or(serde_json::Value::Null);
    let h = &doc["hashing"];
    (
        h["sha256"].as_str().unwrap_or("unknown").to_string(),
        h["threads"].as_u64().map_or_else(|| "unknown".to_string(), |t| t.to_string()),
    )
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

pub(crate) fn build_modelpack(profile: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(Command::new(cargo).current_dir(root()).args(["build", "-q", "--profile", profile, "-p", "modelpack"]))?;
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(target_dir().join(dir).join("modelpack"))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn shard_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    v.sort();
    Ok(v)
}

/// Read every file once so that all tools start from a warm page cache.
fn warm(files: &[PathBuf]) -> anyhow::Result<()> {
    for f in files {
        let mut r = std::fs::File::open(f)?;
        std::io::copy(&mut r, &mut std::io::sink())?;
    }
    Ok(())
}

/// Whether this modelpack build accepts an option combination (probed on the tiny fixture),
/// so the table covers features as they land without the harness changing.
fn supports(mp: &Path, work: &Path, extra: &[&str]) -> bool {
    let out = work.join("probe");
    let _ = std::fs::remove_dir_all(&out);
    let ok = Command::new(mp)
        .arg("quantize")
        .arg(root().join("fixtures/tiny-llama"))
        .arg("-o")
        .arg(&out)
        .args(["--no-progress", "--force"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = std::fs::remove_dir_all(&out);
    ok
}

/// The numpy peer: `gguf.quants.quantize` over every quantizable tensor of an F16 GGUF, as the
/// `gguf` package's converters do, writing the blocks to one file.
const NUMPY_PEER: &str = r#"
import sys, numpy as np, gguf
src, dst, ty = sys.argv[1], sys.argv[2], getattr(gguf.GGMLQuantizationType, sys.argv[3])
r = gguf.GGUFReader(src)
with open(dst, "wb") as f:
    for t in r.tensors:
        a = np.asarray(t.data)
        if a.ndim == 2 and t.name.endswith(".weight") and "norm" not in t.name:
            f.write(gguf.quants.quantize(a.astype(np.float32), ty).tobytes())
        else:
            f.write(a.tobytes())
"#;

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// Hold `~/.cache/modelpack/bench/.lock` (exclusive `flock`) for the whole run: two benches on one
/// machine share the synthetic models and the output directories, and their figures would be
/// each other's load anyway, so a second one waits instead of failing halfway (seen: a
/// concurrent run held the disk row's output lock). Released when the returned file is dropped.
fn bench_lock() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let dir = cache_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    // SAFETY: a valid open descriptor; flock has no memory effects.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("bench: another `cargo xtask bench` holds {}; waiting for it", path.display());
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(f)
}

/// `cargo xtask bench ...`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let _lock = bench_lock()?;
    // --quick shares `cargo xtask test`'s build (its figures mean nothing anyway).
    // --profile picks another build (e.g. `ci-test`, already built by `cargo xtask test`) when
    // a fat-LTO release build is too slow to wait for; the table names the profile.
    let profile = o.profile.as_deref().unwrap_or(if o.quick { "ci-test" } else { "release" });
    eprintln!("bench: building modelpack ({profile} profile)");
    let mp = build_modelpack(profile)?;
    // Outputs go to tmpfs when there is one: the performance budget (docs/performance.md) is
    // measured with the page cache warm, and the
    // peers never fsync while modelpack does (a no-op on tmpfs). A separate row writes to disk.
    let disk_work = cache_dir().join("bench").join("work");
    let shm = Path::new("/dev/shm");
    let work = if shm.is_dir() && !o.disk { shm.join("modelpack-bench") } else { disk_work.clone() };
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&disk_work)?;
    eprintln!("bench: outputs in {}", work.display());
    let (py, llama) = match (o.peers, o.only_hashing) {
        (true, false) => (Some(crate::venv::ensure()?), Some(crate::llama::ensure()?)),
        // The hashing rows' only Python peer is model_signing: no llama.cpp needed.
        (true, true) => (Some(crate::venv::ensure()?), None),
        (false, _) => (None, None),
    };
    let key = root().join("fixtures/keys/p256-pkcs8.pem");
    let pubkey = root().join("fixtures/keys/p256.pub");
    let mut all = Vec::new();
    for &size in &o.sizes {
        let shape = match (o.quick, o.moe) {
            (true, false) => synth::Shape::quick(),
            (true, true) => synth::Shape::quick_moe(),
            (false, false) => synth::Shape::llama_of_size(size),
            (false, true) => synth::Shape::moe_of_size(size),
        };
        let shard = if o.quick { 40_000_000 } else { 1_000_000_000 };
        let input = synth::ensure(&shape, shard)?;
        let shards = shard_files(&input)?;
        let in_bytes = shape.bytes();
        warm(&shards)?;
        eprintln!(
            "bench: {} layers, {:.2} GB bf16 in {} shards; {} run(s) each",
            shape.layers,
            in_bytes as f64 / 1e9,
            shards.len(),
            o.runs
        );
        let mut cases = Vec::new();
        let quant = |task: &str, tool: &str, out: &Path, extra: &[&str]| {
            let mut cmd = vec![s(&mp), "quantize".into(), s(&input), "-o".into(), s(out)];
            cmd.extend(["--no-progress", "--threads", "2"].map(String::from));
            cmd.extend(extra.iter().map(|x| x.to_string()));
            Case {
                task: task.into(),
                tool: tool.into(),
                bytes: in_bytes,
                reset: vec![out.to_path_buf()],
                cmd,
                slow: false,
                conditions: None,
            }
        };
        // (task, options, output name); rows appear only for what this build supports.
        let mut ours: Vec<(&str, Vec<&str>, &str)> = vec![
            ("cpu int8 (Q8_0)", vec!["--target", "cpu", "--scheme", "int8", "--method", "rtn"], "cpu-q8_0"),
            ("cpu int4 (Q4_0 rtn)", vec!["--target", "cpu", "--scheme", "int4", "--method", "rtn"], "cpu-q4_0"),
            ("cpu int4 (Q4_0 mse)", vec!["--target", "cpu", "--scheme", "int4", "--method", "mse"], "cpu-q4_0-mse"),
            (
                "cpu int4 (Q4_0 mse-fast)",
                vec!["--target", "cpu", "--scheme", "int4", "--method", "mse-fast"],
                "cpu-q4_0-mse-fast",
            ),
            ("cpu int4 (Q4_K_M)", vec!["--target", "cpu", "--scheme", "int4", "--gguf-type", "q4_k_m"], "cpu-q4_k_m"),
            ("cuda int4 g128 (rtn)", vec!["--target", "cuda", "--scheme", "int4", "--method", "rtn"], "cuda-int4"),
            ("cuda int4 g128 (mse)", vec!["--target", "cuda", "--scheme", "int4", "--method", "mse"], "cuda-int4-mse"),
            (
                "cuda int8 (1 GB shards)",
                vec!["--target", "cuda", "--scheme", "int8", "--method", "rtn", "--max-shard-size", "1GB"],
                "cuda-int8",
            ),
        ];
        ours.retain(|(task, extra, _)| {
            let ok = supports(&mp, &work, extra);
            if !ok {
                eprintln!("  (skipping `{task}`: this build does not support {})", extra.join(" "));
            }
            ok
        });
        let fast_flag = supports(&mp, &work, &["--target", "cpu", "--scheme", "int8", "--no-source-digests"]);
        for (task, extra, name) in &ours {
            let out = work.join(name);
            if o.only_hashing {
                // Only the package the sign/verify rows read (made below, untimed).
                if *name == "cpu-q8_0" {
                    let mut e = extra.clone();
                    let k = s(&key);
                    e.extend(["--sign-key", k.as_str()]);
                    cases.push(quant(&format!("{task} + sign"), "modelpack", &work.join(format!("{name}-signed")), &e));
                }
                continue;
            }
            // The searching methods are 10-30x slower: one timed case each, no warm-up, no
            // variants (the variants' cost is the same as for the rtn rows).
            if task.contains("mse") || task.contains("Q4_K_M") {
                let mut c = quant(task, "modelpack", &out, extra);
                c.slow = !o.quick;
                cases.push(c);
                continue;
            }
            cases.push(quant(task, "modelpack", &out, extra));
            if fast_flag {
                let mut e = extra.clone();
                e.push("--no-source-digests");
                cases.push(quant(task, "modelpack --no-source-digests", &work.join(format!("{name}-nsd")), &e));
            }
            let signed = work.join(format!("{name}-signed"));
            let mut e = extra.clone();
            let k = s(&key);
            e.extend(["--sign-key", k.as_str()]);
            cases.push(quant(&format!("{task} + sign"), "modelpack", &signed, &e));
        }
        // The FP8 E4M3 twin (issue 15): the same weights as DeepSeek-V3 ships them. GB/s is of
        // its input bytes (half the bf16 bytes for the FP8 Linears), next to the bf16 rows above.
        let fp8_input = synth::ensure_fp8(&shape, shard)?;
        let fp8_bytes = shape.fp8_bytes();
        warm(&shard_files(&fp8_input)?)?;
        let fp8_quant = |task: &str, tool: &str, out: &Path, extra: &[&str]| {
            let mut c = quant(task, tool, out, extra);
            c.cmd[2] = s(&fp8_input);
            c.bytes = fp8_bytes;
            c
        };
        for (task, extra, name) in FP8_ROWS {
            if !supports(&mp, &work, extra) {
                eprintln!("  (skipping `{task}`: this build does not support {})", extra.join(" "));
                continue;
            }
            cases.push(fp8_quant(task, "modelpack", &work.join(name), extra));
            if fast_flag {
                let mut e = extra.to_vec();
                e.push("--no-source-digests");
                cases.push(fp8_quant(task, "modelpack --no-source-digests", &work.join(format!("{name}-nsd")), &e));
            }
        }
        // A multi-file cpu package (split GGUF, about four parts): `verify` hashes its files in
        // parallel, which is what the verify-throughput goal (issue 17) is about.
        let split_name = "cpu-q8_0-split";
        let split_size = format!("{}B", (in_bytes / 8).max(1_000_000));
        let split_extra = ["--target", "cpu", "--scheme", "int8", "--method", "rtn", "--max-shard-size", &split_size];
        let split_ok = supports(&mp, &work, &split_extra);
        if split_ok {
            let mut e = split_extra.to_vec();
            let k = s(&key);
            e.extend(["--sign-key", k.as_str()]);
            cases.push(quant(
                "cpu int8 (Q8_0, split GGUF) + sign",
                "modelpack",
                &work.join(format!("{split_name}-signed")),
                &e,
            ));
        }
        if work != disk_work && !o.only_hashing {
            // The same job into the disk-backed cache, fsync included: what a user sees.
            let out = disk_work.join("cpu-q8_0-disk");
            let extra = ["--target", "cpu", "--scheme", "int8", "--method", "rtn"];
            cases.push(quant("cpu int8 (Q8_0), output on disk", "modelpack (fsync)", &out, &extra));
        }
        cases.retain(|c| o.wants(&c.task));
        let mut rows = Vec::new();
        for c in &cases {
            if o.only_hashing {
                eprintln!("  making {} (not timed)", c.cmd[4]);
                reset(&c.reset)?;
                run_cmd(&mut command(&c.cmd))?;
                continue;
            }
            rows.push(measure_case(c, o.runs, !o.quick)?);
            if !c.task.ends_with("+ sign") {
                reset(&c.reset)?; // tmpfs is RAM: keep only the signed outputs (verified below)
            }
        }
        // Verify every signed output (the outputs of the last signed runs are still there).
        let mut post = Vec::new();
        for (task, _, name) in &ours {
            let pkg = work.join(format!("{name}-signed"));
            if !pkg.exists() || (o.only_hashing && *name != "cpu-q8_0") {
                continue;
            }
            let bytes = dir_bytes(&pkg);
            let cmd = vec![s(&mp), "verify".into(), s(&pkg), "--key".into(), s(&pubkey)];
            post.push(Case::plain(format!("verify {task}"), "modelpack", bytes, cmd));
        }
        // Sign / verify / hash side by side with model_signing and the hashing floor.
        let pkg = work.join("cpu-q8_0-signed");
        let pkg_bytes = dir_bytes(&pkg);
        let sig = pkg.join("model.sig");
        post.push(Case::plain(
            "sign package (cpu int8)",
            "modelpack",
            pkg_bytes,
            vec![s(&mp), "sign".into(), s(&pkg), "--key".into(), s(&key)],
        ));
        if let Some(py) = &py {
            let ms = s(py.parent().expect("venv bin").join("model_signing"));
            post.push(Case {
                task: "sign package (cpu int8)".into(),
                tool: "model_signing 1.1.1".into(),
                bytes: pkg_bytes,
                reset: vec![],
                cmd: vec![
                    ms.clone(),
                    "sign".into(),
                    "key".into(),
                    s(&pkg),
                    "--private_key".into(),
                    s(&key),
                    "--signature".into(),
                    s(&sig),
                ],
                slow: false,
                conditions: None,
            });
            post.push(Case {
                task: "verify package (cpu int8)".into(),
                tool: "model_signing 1.1.1".into(),
                bytes: pkg_bytes,
                reset: vec![],
                cmd: vec![
                    ms,
                    "verify".into(),
                    "key".into(),
                    s(&pkg),
                    "--signature".into(),
                    s(&sig),
                    "--public_key".into(),
                    s(&pubkey),
                ],
                slow: false,
                conditions: None,
            });
        }
        post.push(Case::plain(
            "verify package (cpu int8)",
            "modelpack",
            pkg_bytes,
            vec![s(&mp), "verify".into(), s(&pkg), "--key".into(), s(&pubkey)],
        ));
        // The multi-file package: ours against model_signing and sha256sum over the same files.
        let split_pkg = work.join(format!("{split_name}-signed"));
        if split_ok && split_pkg.exists() {
            let bytes = dir_bytes(&split_pkg);
            let task = "verify multi-file package (split GGUF)";
            post.push(Case::plain(
                task,
                "modelpack",
                bytes,
                vec![s(&mp), "verify".into(), s(&split_pkg), "--key".into(), s(&pubkey)],
            ));
            if let Some(py) = &py {
                let ms = s(py.parent().expect("venv bin").join("model_signing"));
                post.push(Case {
                    task: task.into(),
                    tool: "model_signing 1.1.1".into(),
                    bytes,
                    reset: vec![],
                    cmd: vec![
                        ms,
                        "verify".into(),
                        "key".into(),
                        s(&split_pkg),
                        "--signature".into(),
                        s(split_pkg.join("model.sig")),
                        "--public_key".into(),
                        s(&pubkey),
                    ],
                    slow: false,
                    conditions: None,
                });
            }
            let mut files: Vec<String> = std::fs::read_dir(&split_pkg)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n != "model.sig"))
                .map(s)
                .collect();
            files.sort();
            let mut cmd = vec!["sha256sum".to_string()];
            cmd.extend(files);
            post.push(Case::plain(task, "sha256sum (one process)", bytes, cmd));
        }
        let shard_args: Vec<String> = shards.iter().map(s).collect();
        let hash_bytes: u64 = shards.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
        for (tool, head) in
            [("sha256sum", vec!["sha256sum"]), ("openssl dgst -sha256", vec!["openssl", "dgst", "-sha256"])]
        {
            let mut cmd: Vec<String> = head.into_iter().map(String::from).collect();
            cmd.extend(shard_args.iter().cloned());
            post.push(Case::plain("SHA-256 of the input shards", tool, hash_bytes, cmd));
        }
        // Sign again, now the multi-file package: ours, then model_signing into a side file
        // (the package's own model.sig stays modelpack's, which is deterministic).
        if split_ok && split_pkg.exists() {
            let bytes = dir_bytes(&split_pkg);
            let task = "sign multi-file package (split GGUF)";
            post.push(Case::plain(
                task,
                "modelpack",
                bytes,
                vec![s(&mp), "sign".into(), s(&split_pkg), "--key".into(), s(&key)],
            ));
            if let Some(py) = &py {
                let ms = s(py.parent().expect("venv bin").join("model_signing"));
                post.push(Case {
                    task: task.into(),
                    tool: "model_signing 1.1.1".into(),
                    bytes,
                    reset: vec![],
                    cmd: vec![
                        ms,
                        "sign".into(),
                        "key".into(),
                        s(&split_pkg),
                        "--private_key".into(),
                        s(&key),
                        "--signature".into(),
                        s(work.join("split-model_signing.sig")),
                    ],
                    slow: false,
                    conditions: None,
                });
            }
        }
        // What each hashing figure depends on: the files, cache, threads and SHA-256 code.
        let (mp_sha, mp_threads) = modelpack_hashing(&mp, &pkg, &pubkey);
        let sha_ni = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" sha_ni"));
        for c in &mut post {
            let args = &c.cmd[1..];
            let files = match args.iter().map(Path::new).find(|p| p.is_dir()) {
                Some(dir) => package_files(dir),
                None => {
                    let mut v: Vec<u64> = args
                        .iter()
                        .filter_map(|a| std::fs::metadata(a).ok())
                        .filter(|m| m.is_file())
                        .map(|m| m.len())
                        .collect();
                    v.sort_unstable_by(|a, b| b.cmp(a));
                    v
                }
            };
            let (threads, sha256) = match c.tool.as_str() {
                t if t.starts_with("modelpack") => (mp_threads.clone(), mp_sha.clone()),
                t if t.starts_with("model_signing") => {
                    ("pool".to_string(), format!("hashlib/OpenSSL{}", if sha_ni { ", CPU has SHA-NI" } else { "" }))
                }
                t if t.starts_with("openssl") => {
                    ("1".to_string(), format!("OpenSSL{}", if sha_ni { ", CPU has SHA-NI" } else { "" }))
                }
                _ => ("1".to_string(), "coreutils".to_string()),
            };
            c.conditions = Some(Conditions { files, cache: "warm", threads, sha256 });
        }
        post.retain(|c| o.wants(&c.task));
        for c in &post {
            rows.push(measure_case(c, o.runs, !o.quick)?);
        }

        // Peers that quantize: llama.cpp from an F16 GGUF of the same weights, and gguf-py numpy.
        let any_peer = [
            "cpu int8 (Q8_0)",
            "cpu int4 (Q4_0 rtn)",
            "cpu int4 (Q4_0 mse)",
            "cpu int4 (Q4_0 mse-fast)",
            "cpu int4 (Q4_K_M)",
        ]
        .iter()
        .any(|t| o.wants(t));
        if let (Some(py), Some(llama), true) = (&py, &llama, any_peer) {
            let f16 = work.join("f16");
            reset(std::slice::from_ref(&f16))?;
            run_cmd(Command::new(&mp).arg("quantize").arg(&input).arg("-o").arg(&f16).args([
                "--target",
                "cpu",
                "--scheme",
                "int8",
                "--gguf-type",
                "f16",
                "--method",
                "rtn",
                "--no-progress",
                "--no-metrics",
                // llama-quantize refuses to requantize: every tensor must be F16, output too.
                "--tensor-type",
                r"^output\.weight$=f16",
            ]))?;
            let f16_gguf = f16.join("model.gguf");
            warm(std::slice::from_ref(&f16_gguf))?;
            let lq = s(llama.join("bin/llama-quantize"));
            let np_script = work.join("numpy_quantize.py");
            std::fs::write(&np_script, NUMPY_PEER)?;
            let mut peers = Vec::new();
            for (task, ty) in
                [("cpu int8 (Q8_0)", "Q8_0"), ("cpu int4 (Q4_0 rtn)", "Q4_0"), ("cpu int4 (Q4_K_M)", "Q4_K_M")]
            {
                let out = work.join(format!("llama-{ty}.gguf"));
                let slow = ty == "Q4_K_M" && !o.quick;
                peers.push(Case {
                    task: task.into(),
                    tool: "llama-quantize (F16 GGUF in)".into(),
                    bytes: in_bytes,
                    reset: vec![out.clone()],
                    cmd: vec![lq.clone(), s(&f16_gguf), s(&out), ty.into(), "2".into()],
                    slow,
                    conditions: None,
                });
            }
            for (task, ty) in [("cpu int8 (Q8_0)", "Q8_0"), ("cpu int4 (Q4_0 rtn)", "Q4_0")] {
                let out = work.join(format!("numpy-{ty}.bin"));
                peers.push(Case {
                    task: task.into(),
                    tool: "gguf 0.19.0 numpy (1 core)".into(),
                    bytes: in_bytes,
                    reset: vec![out.clone()],
                    cmd: vec![s(py), s(&np_script), s(&f16_gguf), s(&out), ty.into()],
                    slow: !o.quick,
                    conditions: None,
                });
            }
            if work != disk_work {
                let out = disk_work.join("llama-Q8_0-disk.gguf");
                peers.push(Case {
                    task: "cpu int8 (Q8_0), output on disk".into(),
                    tool: "llama-quantize (no fsync)".into(),
                    bytes: in_bytes,
                    reset: vec![out.clone()],
                    cmd: vec![lq.clone(), s(&f16_gguf), s(&out), "Q8_0".into(), "2".into()],
                    slow: false,
                    conditions: None,
                });
            }
            // llama-quantize Q4_0 is also the peer of our default int4 path (mse, and its
            // mse-fast candidate): issue 16 asks for that ratio. Same command, measured again
            // under each row's name (so every ratio comes from runs taken together).
            for (task, b) in [("cpu int4 (Q4_0 mse)", "b"), ("cpu int4 (Q4_0 mse-fast)", "c")] {
                if o.wants(task) && ours.iter().any(|r| r.0 == task) {
                    let out = work.join(format!("llama-Q4_0-{b}.gguf"));
                    peers.push(Case {
                        task: task.into(),
                        tool: "llama-quantize Q4_0 (F16 GGUF in)".into(),
                        bytes: in_bytes,
                        reset: vec![out.clone()],
                        cmd: vec![lq.clone(), s(&f16_gguf), s(&out), "Q4_0".into(), "2".into()],
                        slow: !o.quick,
                        conditions: None,
                    });
                }
            }
            peers.retain(|c| o.wants(&c.task));
            for c in &peers {
                rows.push(measure_case(c, o.runs, !o.quick)?);
            }
        }
        // What llama.cpp needs for the FP8 twin: convert_hf_to_gguf.py dequantizes FP8 in torch
        // (straight to Q8_0; to F16 and then llama-quantize for Q4_0). Only with the torch venv
        // of `cargo xtask hf-check` already built (2.9 GB of wheels: never built by the bench).
        let hf_py = cache_dir().join("hf-venv/bin/python");
        let mut notes = Vec::new();
        let fp8_wanted = !o.only_hashing && FP8_ROWS.iter().any(|r| o.wants(r.0));
        match (&llama, hf_py.exists()) {
            _ if !fp8_wanted => {}
            (Some(llama), true) => {
                let script = work.join("convert_fp8.py");
                std::fs::write(&script, CONVERT_PEER)?;
                let lq = s(llama.join("bin/llama-quantize"));
                let src = s(llama.join("src"));
                let mut peers = Vec::new();
                for (task, _, _) in FP8_ROWS.iter().filter(|r| r.0.starts_with("cpu")) {
                    let ty = if task.contains("Q8_0") { "Q8_0" } else { "Q4_0" };
                    let out = work.join(format!("convert-fp8-{ty}.gguf"));
                    let mid = work.join("convert-fp8-f16.gguf");
                    peers.push(Case {
                        task: task.to_string(),
                        tool: if ty == "Q8_0" {
                            "convert_hf_to_gguf.py --outtype q8_0 (torch)".into()
                        } else {
                            "convert_hf_to_gguf.py f16 + llama-quantize".into()
                        },
                        bytes: fp8_bytes,
                        reset: vec![out.clone(), mid.clone()],
                        cmd: vec![
                            s(&hf_py),
                            s(&script),
                            src.clone(),
                            s(&fp8_input),
                            ty.into(),
                            s(&out),
                            s(&mid),
                            lq.clone(),
                        ],
                        slow: !o.quick,
                        conditions: None,
                    });
                }
                peers.retain(|c| o.wants(&c.task));
                for c in &peers {
                    rows.push(measure_case(c, o.runs, !o.quick)?);
                    reset(&c.reset)?;
                }
            }
            _ => notes.push(format!(
                "FP8 rows: the llama.cpp reference (convert_hf_to_gguf.py, which dequantizes FP8 in torch) \
                 was not run: it needs the torch venv {} (`cargo xtask hf-check` builds it) and llama.cpp",
                hf_py.display()
            )),
        }
        ratios(&mut rows);
        let tag = match (o.quick, o.only_hashing) {
            (true, _) => "quick".to_string(),
            (false, false) => format!("{:.1}GB", in_bytes as f64 / 1e9),
            (false, true) => format!("{:.1}GB-verify", in_bytes as f64 / 1e9),
        };
        let mut md = markdown(&rows, &shape, in_bytes, o.runs, profile);
        md.push_str(&fp8_summary(&rows, &notes));
        println!("{md}");
        let out_dir = target_dir().join("bench");
        std::fs::create_dir_all(&out_dir)?;
        std::fs::write(out_dir.join(format!("bench-{tag}.md")), &md)?;
        let doc = serde_json::json!({
            "machine": machine(), "size_bytes": in_bytes, "layers": shape.layers, "runs": o.runs, "profile": profile,
            "quick": o.quick, "rows": rows,
        });
        std::fs::write(out_dir.join(format!("bench-{tag}.json")), serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("bench: wrote {}", out_dir.join(format!("bench-{tag}.{{md,json}}")).display());
        all.push((in_bytes, rows));
    }
    if all.len() > 1 {
        println!("{}", scaling(&all));
    }
    Ok(())
}

/// FP8 rows: (task, options, output name). Same options as the bf16 rows of the same kind.
const FP8_ROWS: &[(&str, &[&str], &str)] = &[
    ("cpu int8 (Q8_0), FP8 E4M3 in", &["--target", "cpu", "--scheme", "int8", "--method", "rtn"], "fp8-cpu-q8_0"),
    ("cpu int4 (Q4_0 rtn), FP8 E4M3 in", &["--target", "cpu", "--scheme", "int4", "--method", "rtn"], "fp8-cpu-q4_0"),
    (
        "cuda int4 g128 (rtn), FP8 E4M3 in",
        &["--target", "cuda", "--scheme", "int4", "--method", "rtn"],
        "fp8-cuda-int4",
    ),
];

/// The llama.cpp reference for an FP8 checkpoint: `convert_hf_to_gguf.py` (its `dequant_model`
/// multiplies each FP8 block by its scale in torch) to Q8_0 directly, or to F16 and then
/// `llama-quantize`. argv: llama.cpp src, model dir, Q8_0|Q4_0, output, F16 temp, llama-quantize.
const CONVERT_PEER: &str = r#"
import os, subprocess, sys
src, model, ty, out, mid, lq = sys.argv[1:7]
# The synthetic model's tokenizer is the tiny fixture's: name its pre-tokenizer instead of hashing.
code = f"""
import sys
sys.path.insert(0, {src!r}); sys.path.insert(1, {src + '/gguf-py'!r})
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'llama-bpe'
import runpy
sys.argv = ['convert_hf_to_gguf.py', {model!r}, '--outtype', {('q8_0' if ty == 'Q8_0' else 'f16')!r}, '--outfile', {(out if ty == 'Q8_0' else mid)!r}]
runpy.run_path({src + '/convert_hf_to_gguf.py'!r}, run_name='__main__')
"""
env = dict(os.environ, NO_LOCAL_GGUF="1")
subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL)
if ty != "Q8_0":
    subprocess.run([lq, mid, out, ty, "2"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"#;

/// Each FP8 row's GB/s of input bytes over the bf16 row of the same job and tool (issue 15 asks
/// for ≥ 1: FP8 → Q8_0/Q4_0 at least as many input bytes per second as from bf16), and notes.
fn fp8_summary(rows: &[Row], notes: &[String]) -> String {
    let mut m = String::new();
    for r in rows.iter().filter(|r| r.task.ends_with(", FP8 E4M3 in")) {
        let bf16 = r.task.trim_end_matches(", FP8 E4M3 in");
        if let Some(b) = rows.iter().find(|b| b.task == bf16 && b.tool == r.tool) {
            if m.is_empty() {
                m.push_str("\n| FP8 E4M3 in: task | tool | FP8 GB/s (input bytes) | bf16 GB/s | FP8 / bf16 | FP8 / bf16 elements per s |\n|---|---|---:|---:|---:|---:|\n");
            }
            m.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.2}× | {:.2}× |\n",
                bf16,
                r.tool,
                r.gb_per_s,
                b.gb_per_s,
                r.gb_per_s / b.gb_per_s,
                b.median.wall_s / r.median.wall_s
            ));
        }
    }
    for n in notes {
        m.push_str(&format!("\n{n}\n"));
    }
    m
}

fn ratios(rows: &mut [Row]) {
    let tasks: Vec<String> = rows.iter().map(|r| r.task.clone()).collect();
    for t in tasks {
        let best = rows
            .iter()
            .filter(|r| r.task == t && !r.tool.starts_with("modelpack"))
            .map(|r| r.gb_per_s)
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
        if let Some(best) = best {
            for r in rows.iter_mut().filter(|r| r.task == t) {
                r.ratio_to_best_peer = Some(r.gb_per_s / best);
            }
        }
    }
}

fn markdown(rows: &[Row], shape: &synth::Shape, bytes: u64, runs: usize, profile: &str) -> String {
    let mut m = format!(
        "### {:.2} GB bf16 llama-shaped checkpoint ({} layers, hidden {}, vocab {}), 2 threads, median of {runs}, \
         `{profile}` build\n\n",
        bytes as f64 / 1e9,
        shape.layers,
        shape.hidden,
        shape.vocab
    );
    m.push_str(
        "| task | tool | GB/s | seconds | CPU s | peak RSS MB | peak RssAnon MB | × best peer | load | conditions |\n",
    );
    m.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        m.push_str(&format!(
            "| {} | {} | {:.3} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {:.1} | {} |\n",
            r.task,
            r.tool,
            r.gb_per_s,
            r.median.wall_s,
            r.median.cpu_s,
            r.median.max_rss_kib as f64 / 1024.0,
            r.median.max_rss_anon_kib as f64 / 1024.0,
            r.ratio_to_best_peer.map_or("–".to_string(), |x| format!("{x:.2}×")),
            r.load1,
            r.conditions.as_ref().map_or(String::new(), Conditions::short),
        ));
    }
    m
}

/// Seconds per GB and RssAnon of modelpack's quantize rows at each size: should be flat.
fn scaling(all: &[(u64, Vec<Row>)]) -> String {
    let mut m = String::from("### Scaling (modelpack quantize): seconds per GB of input, peak RssAnon MB\n\n| task |");
    for (b, _) in all {
        m.push_str(&format!(" {:.1} GB s/GB | RssAnon MB |", *b as f64 / 1e9));
    }
    m.push('\n');
    m.push_str(&format!("|---|{}\n", "---:|---:|".repeat(all.len())));
    for r in all[0].1.iter().filter(|r| {
        r.tool == "modelpack"
            && !r.task.starts_with("verify")
            && !r.task.starts_with("sign")
            && !r.task.starts_with("SHA")
    }) {
        m.push_str(&format!("| {} |", r.task));
        for (b, rows) in all {
            match rows.iter().find(|x| x.task == r.task && x.tool == r.tool) {
                Some(x) => m.push_str(&format!(
                    " {:.3} | {:.0} |",
                    x.median.wall_s / (*b as f64 / 1e9),
                    x.median.max_rss_anon_kib as f64 / 1024.0
                )),
                None => m.push_str(" – | – |"),
            }
        }
        m.push('\n');
    }
    m
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "threads": std::thread::available_parallelism().map_or(0, |n| n.get()),
    })
}
