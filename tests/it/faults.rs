//! Faults with real processes: resource caps, inputs changed mid-run, full disks, concurrent
//! runs on one output, SIGKILL/SIGINT/SIGTERM. Each case asserts the exact message and exit
//! code, and that nothing but what the promise allows is left in the output's parent.
//!
//! The timing-dependent cases hold the child at a named point through the `fault-injection`
//! feature (`crates/modelpack/src/fault.rs`); `cargo xtask test` builds with it. Without the
//! feature those cases skip, unless `MODELPACK_REQUIRE_INTEROP` is set (CI), where they fail.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    common::fixture("tiny-llama")
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn quantize_args(input: &Path, out: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "quantize".into(),
        input.into(),
        "-o".into(),
        out.into(),
        "--target".into(),
        "cpu".into(),
        "--scheme".into(),
        "int8".into(),
    ]
}

/// Run to completion and return the output.
fn run(args: &[std::ffi::OsString], env: &[(&str, &str)]) -> Output {
    let mut c = common::modelpack();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The error line of a failed run (exactly one `error: ` line, no panic).
fn error_line(o: &Output) -> String {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "{e}");
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {e}");
    lines[0].to_string()
}

fn faults_enabled() -> bool {
    if cfg!(feature = "fault-injection") {
        return true;
    }
    assert!(
        std::env::var_os("MODELPACK_REQUIRE_INTEROP").is_none(),
        "fault tests required: build with --features modelpack/fault-injection (cargo xtask test does)"
    );
    eprintln!("skipping: the binary was built without the fault-injection feature");
    false
}

/// A child held at a pause point.
struct Held {
    child: Child,
    go: PathBuf,
}

/// Start `modelpack` with `args`, and wait until it reaches `point`.
fn hold(args: &[std::ffi::OsString], point: &str, ctl: &Path) -> Held {
    let go = ctl.join(format!("go-{point}"));
    let child = Command::new(assert_cmd::cargo::cargo_bin("modelpack"))
        .args(args)
        .env("MODELPACK_FAULT_PAUSE_AT", point)
        .env("MODELPACK_FAULT_PAUSE_FILE", &go)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = Held { child, go };
    let reached = ctl.join(format!("go-{point}.reached"));
    let t0 = Instant::now();
    while !reached.exists() {
        if let Some(status) = held.child.try_wait().unwrap() {
            let out = held.child.wait_with_output().unwrap();
            panic!("child exited ({status}) before reaching {point}: {}", stderr(&out));
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "child never reached {point}");
        std::thread::sleep(Duration::from_millis(10));
    }
    held
}

impl Held {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// Let the child go on and wait for it.
    fn release(self) -> Output {
        std::fs::write(&self.go, b"go").unwrap();
        self.child.wait_with_output().unwrap()
    }
    fn signal(self, sig: i32) -> Output {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
        self.child.wait_with_output().unwrap()
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Header of a safetensors file parsed independently (serde_json keeps key order).
fn header(path: &Path) -> (u64, serde_json::Map<String, serde_json::Value>) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap());
    let v: serde_json::Value = serde_json::from_slice(&b[8..8 + n as usize]).unwrap();
    (n, v.as_object().unwrap().clone())
}

// ---- resource caps ----------------------------------------------------------------------

#[test]
fn caps_refuse_with_the_flag_that_raises_them_and_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let st = tiny().join("model.safetensors");
    let (hlen, h) = header(&st);
    let n_tensors = h.keys().filter(|k| *k != "__metadata__").count();
    let (big_name, big_numel) = h
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.clone(), v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product::<u64>()))
        .find(|(_, n)| *n > 100)
        .unwrap();
    let cfg = tiny().join("config.json");
    let max_t = (n_tensors - 1).to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--max-tensors", &max_t],
            format!(
                "error: {}: more than {} tensors (cap); if this checkpoint is legitimate, raise the cap with --max-tensors",
                st.display(),
                n_tensors - 1
            ),
        ),
        (
            vec!["--max-header-bytes", "100"],
            format!(
                "error: {}: header length {hlen} exceeds the 100-byte limit; if this checkpoint is legitimate, raise \
                 the cap with --max-header-bytes",
                st.display()
            ),
        ),
        (
            vec!["--max-tensor-elements", "100"],
            format!(
                "error: {}: tensor {big_name:?} has {big_numel} elements, over the cap of 100; if this checkpoint is \
                 legitimate, raise the cap with --max-tensor-elements",
                st.display()
            ),
        ),
        (
            vec!["--max-json-bytes", "10"],
            format!(
                "error: {}: JSON file is larger than the 10-byte cap; if this checkpoint is legitimate, raise the cap \
                 with --max-json-bytes",
                cfg.display()
            ),
        ),
    ];
    for (flags, want) in &cases {
        let mut args = quantize_args(&tiny(), &out);
        args.extend(flags.iter().map(Into::into));
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert_eq!(error_line(&o), *want, "{flags:?}");
        assert!(listing(d.path()).is_empty(), "{flags:?}: left {:?}", listing(d.path()));

        let mut args: Vec<std::ffi::OsString> = vec!["inspect".into(), tiny().into()];
        args.extend(flags.iter().map(Into::into));
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "inspect {flags:?}");
        assert_eq!(error_line(&o), *want, "inspect {flags:?}");
    }
    // At the cap exactly, the same checkpoint is fine.
    let mut args = quantize_args(&tiny(), &out);
    args.extend(["--max-tensors".into(), n_tensors.to_string().into()]);
    args.extend(["--max-header-bytes".into(), hlen.to_string().into()]);
    let o = run(&args, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn deeply_nested_and_oversized_json_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    copy_dir(&tiny(), &input);
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
    std::fs::write(input.join("config.json"), &deep).unwrap();
    let o = run(&quantize_args(&input, &d.path().join("out")), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        error_line(&o),
        format!("error: {}: JSON nested deeper than 64 levels", input.join("config.json").display())
    );
    assert_eq!(listing(d.path()), ["in"]);

    // tokenizer.json, read while planning, is under the same caps.
    copy_dir(&tiny(), &input);
    let tok = input.join("tokenizer.json");
    std::fs::write(&tok, &deep).unwrap();
    let o = run(&quantize_args(&input, &d.path().join("out")), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(error_line(&o), format!("error: {}: JSON nested deeper than 64 levels", tok.display()));
    std::fs::copy(tiny().join("tokenizer.json"), &tok).unwrap();
    let mut args = quantize_args(&input, &d.path().join("out"));
    // Above config.json (650 B) and tokenizer_config.json (934 B), below tokenizer.json (7310 B).
    args.extend(["--max-json-bytes".into(), "1000".into()]);
    let o = run(&args, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        error_line(&o),
        format!(
            "error: {}: JSON file is larger than the 1000-byte cap; if this checkpoint is legitimate, raise the cap \
             with --max-json-bytes",
            tok.display()
        )
    );
    assert_eq!(listing(d.path()), ["in"]);
}

#[test]
fn tokenizer_string_arrays_are_capped_before_conversion() {
    use modelpack::format::gguf::tokenizer::{merges, MAX_VOCAB};
    // One entry over the cap; the entries are not even strings: the count is refused first.
    let tj = serde_json::json!({"model": {"type": "BPE", "merges": vec![serde_json::Value::Null; MAX_VOCAB + 1]}});
    let e = merges(&tj).unwrap_err();
    assert_eq!(e.to_string(), format!("tokenizer.json: {} merges (limit {MAX_VOCAB})", MAX_VOCAB + 1));
    assert_eq!(MAX_VOCAB, 4_194_304, "the README states this cap");
}

// ---- input changed during the run -------------------------------------------------------

#[test]
fn an_input_rewritten_during_the_run_gives_no_package() {
    if !faults_enabled() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    copy_dir(&tiny(), &input);
    let out = d.path().join("out");
    let held = hold(&quantize_args(&input, &out), "before-commit", d.path());
    // Rewrite the weights in place with the very same bytes: size and content unchanged.
    let st = input.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&st, &bytes).unwrap();
    let o = held.release();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        error_line(&o),
        format!(
            "error: {}: changed while modelpack was reading it, so no package was written: its modification time \
             changed",
            st.display()
        )
    );
    assert_eq!(listing(d.path()), ["go-before-commit", "go-before-commit.reached", "in"]);

    // A copied side file replaced by another file is caught the same way.
    std::fs::remove_file(d.path().join("go-before-commit")).unwrap();
    std::fs::remove_file(d.path().join("go-before-commit.reached")).unwrap();
    let held = hold(&quantize_args(&input, &out), "before-commit", d.path());
    let tok = input.join("tokenizer_config.json");
    let tmp = input.join("tokenizer_config.json.new");
    std::fs::copy(&tok, &tmp).unwrap();
    std::fs::rename(&tmp, &tok).unwrap();
    let o = held.release();
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).ends_with("tokenizer_config.json: changed while modelpack was reading it, so no package was written: it was replaced by another file"), "{}", error_line(&o));
    assert!(!out.exists());
}

// ---- full disk --------------------------------------------------------------------------

#[test]
fn an_injected_full_disk_is_exit_3_with_nothing_left() {
    if !faults_enabled() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // Fails inside the weights (after 1000 bytes) and later, while copying the side files.
    let ok = run(&[quantize_args(&tiny(), &out), vec!["--json".into()]].concat(), &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let gguf_size = std::fs::metadata(out.join("model.gguf")).unwrap().len();
    std::fs::remove_dir_all(&out).unwrap();
    for (after, file) in [(1000u64, "model.gguf"), (gguf_size + 10, "generation_config.json")] {
        let o = run(&quantize_args(&tiny(), &out), &[("MODELPACK_FAULT_ENOSPC_AFTER_BYTES", &after.to_string())]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let line = error_line(&o);
        let prefix = format!(
            "error: no space left on the output's filesystem: writing {}/.out.modelpack-tmp-",
            d.path().display()
        );
        assert!(line.starts_with(&prefix), "{line}");
        assert!(
            line.ends_with(&format!("/{file}: No space left on device (os error 28); nothing was written")),
            "{line}"
        );
        assert!(listing(d.path()).is_empty(), "left {:?}", listing(d.path()));
    }
}

#[test]
fn a_real_tiny_filesystem_is_exit_3_with_nothing_left() {
    // A private mount namespace with a 64 KiB tmpfs: needs root or user namespaces. Where
    // neither is allowed the injected fault above covers the same path.
    let probe = Command::new("unshare").args(["-m", "--propagation", "private", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: cannot create a mount namespace here");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("modelpack");
    let script = r#"mount -t tmpfs -o size=64k modelpack-test "$1" || exit 97
"$2" quantize "$3" -o "$1/out" --target cpu --scheme int8 2>"$1.err"; echo "exit=$?"
echo "left=$(ls -A "$1" | tr '\n' ' ')""#;
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&mnt)
        .arg(&bin)
        .arg(tiny())
        .output()
        .unwrap();
    if o.status.code() == Some(97) {
        eprintln!("skipping: mounting tmpfs is not allowed here");
        return;
    }
    let report = String::from_utf8_lossy(&o.stdout);
    let err = std::fs::read_to_string(d.path().join("small.err")).unwrap();
    assert!(report.contains("exit=3\n"), "{report} {err}");
    assert!(report.contains("left=\n"), "the filesystem is empty again: {report}");
    assert!(
        err.starts_with(&format!(
            "error: no space left on the output's filesystem: reserving space for {}/.out.modelpack-tmp-",
            mnt.display()
        )),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with("/model.gguf: No space left on device (os error 28); nothing was written"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !err.contains("SIGBUS"), "{err}");
}

// ---- concurrent runs --------------------------------------------------------------------

#[test]
fn a_second_run_on_the_same_output_fails_fast_and_the_first_completes() {
    if !faults_enabled() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let key = common::fixture("keys/p256-pkcs8.pem");
    let mut args = quantize_args(&tiny(), &out);
    args.extend(["--sign-key".into(), key.into()]);
    let first = hold(&args, "staged", d.path());

    let t0 = Instant::now();
    let second = run(&args, &[]);
    assert!(t0.elapsed() < Duration::from_secs(20), "fails fast");
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert_eq!(
        error_line(&second),
        format!(
            "error: another modelpack run is writing {} (lock {} is held)",
            out.display(),
            d.path().join(".out.modelpack.lock").display()
        )
    );
    // The first run's staging directory was not touched by the second.
    let o = first.release();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(listing(d.path()), ["go-staged", "go-staged.reached", "out"]);
    let v = run(&["verify".into(), out.clone().into(), "--key".into(), common::fixture("keys/p256.pub").into()], &[]);
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
}

// ---- kills and interrupts ---------------------------------------------------------------

#[test]
fn sigkill_leaves_only_a_named_staging_dir_that_never_verifies_and_is_cleaned_next_time() {
    if !faults_enabled() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut args = quantize_args(&tiny(), &out);
    args.extend(["--sign-key".into(), common::fixture("keys/p256-pkcs8.pem").into()]);
    // Killed at the worst moment: the package is complete and signed, not yet renamed.
    let held = hold(&args, "before-commit", d.path());
    let pid = held.pid();
    let o = held.signal(libc::SIGKILL);
    assert_eq!(o.status.code(), None, "killed");
    let staging = format!(".out.modelpack-tmp-{pid}");
    // The lock file stays (its lock died with the process); the staging directory is clearly named.
    assert_eq!(listing(d.path()), [&staging, ".out.modelpack.lock", "go-before-commit.reached"]);
    let staging = d.path().join(staging);
    assert!(staging.join("model.sig").exists() && staging.join("model.gguf").exists());

    let pubkey = common::fixture("keys/p256.pub");
    let v = run(&["verify".into(), staging.clone().into(), "--key".into(), pubkey.clone().into()], &[]);
    assert_eq!(v.status.code(), Some(1), "{}", stderr(&v));
    assert_eq!(
        error_line(&v),
        format!(
            "error: {} is the staging directory of an unfinished modelpack run writing \"out\", not a package; the \
             next run into \"out\" removes it",
            staging.display()
        )
    );

    let o = run(&[args.clone(), vec!["--json".into()]].concat(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["cleaned"], serde_json::json!([staging.display().to_string()]));
    assert_eq!(listing(d.path()), ["go-before-commit.reached", "out"]);
    let v = run(&["verify".into(), out.into(), "--key".into(), pubkey.into()], &[]);
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
}

#[test]
fn sigint_and_sigterm_remove_the_staging_dir_and_exit_non_zero() {
    if !faults_enabled() {
        return;
    }
    for (sig, code, point) in [(libc::SIGINT, 130, "staged"), (libc::SIGTERM, 143, "before-commit")] {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let held = hold(&quantize_args(&tiny(), &out), point, d.path());
        let o = held.signal(sig);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(stderr(&o).contains("modelpack: interrupted; removed 1 unfinished output(s)"), "{}", stderr(&o));
        assert_eq!(listing(d.path()), [format!("go-{point}.reached")], "staging dir and lock file removed");
    }
}

/// A pull interrupted by SIGINT or SIGTERM (held once its staging directory exists, with a file
/// already in it) removes the staging directory and exits 130/143; nothing is at the destination.
#[test]
fn interrupted_pull_leaves_no_staging_dir() {
    if !faults_enabled() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let pkg = src.path().join("pkg");
    common::quantize(&tiny(), &pkg, &["--target", "cpu", "--scheme", "int8", "--no-metrics"]);
    let layout = src.path().join("layout");
    let o = Command::new(assert_cmd::cargo::cargo_bin("modelpack"))
        .arg("push")
        .arg(&pkg)
        .arg(format!("oci:{}:v1", layout.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let args: Vec<std::ffi::OsString> =
            vec!["pull".into(), format!("oci:{}:v1", layout.display()).into(), "-o".into(), out.clone().into()];
        let held = hold(&args, "pull-staged", d.path());
        let staging: Vec<String> = listing(d.path()).into_iter().filter(|n| n.contains("modelpack-tmp")).collect();
        assert_eq!(staging.len(), 1, "{:?}", listing(d.path()));
        std::fs::write(d.path().join(&staging[0]).join("partial.bin"), b"x").unwrap();
        let o = held.signal(sig);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(stderr(&o).contains("removed 1 unfinished output(s)"), "{}", stderr(&o));
        assert_eq!(listing(d.path()), ["go-pull-staged.reached".to_string()], "staging dir removed");
    }
}
