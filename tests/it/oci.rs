//! `push` / `pull` against real components: Debian's `docker-registry` (CNCF distribution
//! 2.8), `skopeo` 1.9 as the independent OCI client, `model_signing` 1.1.1 and `modelpack
//! verify` as judges of the pulled package, `sha256sum` for digests.
use crate::common;

use common::registry::{tools, Registry};
use common::{fixture, modelpack};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn key() -> PathBuf {
    fixture("keys/p256-pkcs8.pem")
}
pub(crate) fn pubkey() -> PathBuf {
    fixture("keys/p256.pub")
}

/// A signed cpu package of the tiny llama fixture at `dir/name`.
pub(crate) fn package(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let k = key();
    common::quantize(
        &fixture("tiny-llama"),
        &out,
        &["--target", "cpu", "--scheme", "int8", "--sign-key", k.to_str().unwrap(), "--no-metrics"],
    );
    out
}

pub(crate) fn sha256sum(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8(o.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// Run modelpack with args; returns (exit code, stdout JSON when `--json` was given, stderr).
pub(crate) fn mp(args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let mut c = modelpack();
    c.args(args).env_remove("MODELPACK_REGISTRY_USERNAME").env_remove("MODELPACK_REGISTRY_PASSWORD");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let v = if args.contains(&"--json") {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout:?}"))
    } else {
        Value::Null
    };
    (o.status.code().unwrap_or(-1), v, format!("{stdout}{}", String::from_utf8_lossy(&o.stderr)))
}

/// Every file of a tree, relative path -> bytes.
pub(crate) fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(root).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Both verifiers accept the package.
pub(crate) fn assert_verifies(pkg: &Path) {
    let (code, _, text) = mp(&["verify", pkg.to_str().unwrap(), "--key", pubkey().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "modelpack verify: {text}");
    if let Some(py) = common::python() {
        let out = Command::new(py.parent().unwrap().join("model_signing"))
            .args(["verify", "key"])
            .arg(pkg)
            .arg("--signature")
            .arg(pkg.join("model.sig"))
            .arg("--public_key")
            .arg(pubkey())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("Verification succeeded"), "model_signing: {text}");
    }
}

/// Nothing at `dest` and no staging directory beside it.
pub(crate) fn assert_nothing_left(dest: &Path) {
    assert!(!dest.exists(), "{} exists after a failed pull", dest.display());
    let parent = dest.parent().unwrap();
    for e in std::fs::read_dir(parent).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains("modelpack-tmp"), "staging left behind: {n}");
    }
}

pub(crate) fn manifest_of_layout(dir: &Path) -> (String, Value) {
    let idx: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let bytes = std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    (d, serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn layout_and_archive_are_modelpack_deterministic_and_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let pkg = package(t.path(), "tiny-q8");
    // Same package somewhere else: the same bytes in every output.
    let other = t.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let pkg2 = other.join("tiny-q8");
    let cp = Command::new("cp").arg("-a").arg(&pkg).arg(&pkg2).status().unwrap();
    assert!(cp.success());

    let l1 = t.path().join("l1");
    let l2 = t.path().join("l2");
    for (p, l) in [(&pkg, &l1), (&pkg2, &l2)] {
        let (code, v, text) = mp(&["push", p.to_str().unwrap(), &format!("oci:{}:v1", l.display()), "--json"], &[]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(v["status"], "ok");
    }
    assert_eq!(tree(&l1), tree(&l2), "layouts differ");
    let a1 = t.path().join("a1.tar");
    let a2 = t.path().join("a2.tar");
    for (p, a) in [(&pkg, &a1), (&pkg2, &a2)] {
        let (code, _, text) = mp(&["push", p.to_str().unwrap(), &format!("oci-archive:{}:v1", a.display())], &[]);
        assert_eq!(code, 0, "{text}");
    }
    assert_eq!(std::fs::read(&a1).unwrap(), std::fs::read(&a2).unwrap(), "archives differ");

    // The manifest, checked field by field; layer digests are the files' SHA-256 (sha256sum).
    let (digest, m) = manifest_of_layout(&l1);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], "application/vnd.cncf.model.manifest.v1+json");
    assert_eq!(m["config"]["mediaType"], "application/vnd.cncf.model.config.v1+json");
    let layers = m["layers"].as_array().unwrap();
    let files = tree(&pkg);
    assert_eq!(layers.len(), files.len());
    let mut paths = Vec::new();
    for l in layers {
        let path = l["annotations"]["org.cncf.model.filepath"].as_str().unwrap();
        paths.push(path.to_string());
        assert_eq!(l["digest"].as_str().unwrap(), format!("sha256:{}", sha256sum(&pkg.join(path))), "{path}");
        let want = if path.ends_with(".gguf") {
            "application/vnd.cncf.model.weight.v1.raw"
        } else if path == "model.sig" {
            "application/vnd.cncf.model.doc.v1.raw"
        } else {
            "application/vnd.cncf.model.weight.config.v1.raw"
        };
        assert_eq!(l["mediaType"], want, "{path}");
    }
    assert!(paths.contains(&"model.sig".to_string()) && paths.contains(&"modelpack.json".to_string()));
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "layers in path order");
    let cfg_hex = m["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let cfg: Value = serde_json::from_slice(&std::fs::read(l1.join("blobs/sha256").join(&cfg_hex)).unwrap()).unwrap();
    assert_eq!(cfg["config"]["format"], "gguf");
    assert_eq!(cfg["descriptor"]["name"], "tiny-q8");
    assert_eq!(cfg["modelfs"]["diffIds"].as_array().unwrap().len(), layers.len());
    assert!(cfg["descriptor"].get("createdAt").is_none(), "no wall-clock field without SOURCE_DATE_EPOCH");
    // Every blob hashes to its name (sha256sum).
    for e in std::fs::read_dir(l1.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(sha256sum(&p), p.file_name().unwrap().to_string_lossy());
    }

    // skopeo reads both forms (an independent OCI implementation): the raw manifest it sees is ours.
    if let Some((_, skopeo, _)) = tools() {
        for src in [format!("oci:{}:v1", l1.display()), format!("oci-archive:{}:v1", a1.display())] {
            let o = Command::new(&skopeo).args(["inspect", "--raw", &src]).output().unwrap();
            assert!(o.status.success(), "skopeo inspect {src}: {}", String::from_utf8_lossy(&o.stderr));
            let raw: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(raw, m);
        }
        let _ = digest;
    }

    // Pull from both forms: byte-identical packages that both verifiers accept.
    for src in [format!("oci:{}:v1", l1.display()), format!("oci-archive:{}:v1", a1.display())] {
        let out = t.path().join(format!("pulled-{}", src.len()));
        let (code, v, text) = mp(&["pull", &src, "-o", out.to_str().unwrap(), "--json"], &[]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(v["manifest_digest"].as_str().unwrap(), digest);
        assert_eq!(tree(&out), files, "pulled package differs from the original");
        assert_verifies(&out);
    }

    // SOURCE_DATE_EPOCH adds the time, and only then.
    let l3 = t.path().join("l3");
    let (code, _, text) =
        mp(&["push", pkg.to_str().unwrap(), &format!("oci:{}", l3.display())], &[("SOURCE_DATE_EPOCH", "86400")]);
    assert_eq!(code, 0, "{text}");
    let (_, m3) = manifest_of_layout(&l3);
    assert_eq!(m3["annotations"]["org.opencontainers.image.created"], "1970-01-02T00:00:00Z");
}

#[test]
fn truncated_archive_and_tampered_package_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let pkg = package(t.path(), "tiny-q8");
    let a = t.path().join("a.tar");
    assert_eq!(mp(&["push", pkg.to_str().unwrap(), &format!("oci-archive:{}", a.display())], &[]).0, 0);
    let bytes = std::fs::read(&a).unwrap();
    for cut in [bytes.len() / 2, 700, bytes.len() - 2048] {
        let tr = t.path().join(format!("cut-{cut}.tar"));
        std::fs::write(&tr, &bytes[..cut]).unwrap();
        let out = t.path().join(format!("out-{cut}"));
        let (code, v, text) =
            mp(&["pull", &format!("oci-archive:{}", tr.display()), "-o", out.to_str().unwrap(), "--json"], &[]);
        assert_eq!(code, 2, "cut at {cut}: {text}");
        assert_eq!(v["status"], "error");
        assert_nothing_left(&out);
    }
    // A flipped byte inside a blob: the digest check fails (exit 1).
    let mut bad = bytes.clone();
    let gguf_at = bytes.windows(4).position(|w| w == b"GGUF").unwrap();
    bad[gguf_at + 4096] ^= 1;
    let tr = t.path().join("flipped.tar");
    std::fs::write(&tr, &bad).unwrap();
    let out = t.path().join("out-flipped");
    let (code, _, text) = mp(&["pull", &format!("oci-archive:{}", tr.display()), "-o", out.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("digest"), "{text}");
    assert_nothing_left(&out);

    // A package file changed after signing is not published.
    let gguf = pkg.join("model.gguf");
    let mut g = std::fs::read(&gguf).unwrap();
    let n = g.len();
    g[n - 1] ^= 1;
    std::fs::write(&gguf, &g).unwrap();
    let l = t.path().join("tampered-layout");
    let (code, _, text) = mp(&["push", pkg.to_str().unwrap(), &format!("oci:{}", l.display())], &[]);
    assert_eq!(code, 1, "{text}");
    assert_nothing_left(&l);
}

pub(crate) fn skopeo_copy(skopeo: &Path, src: &str, dst: &str) {
    let o = Command::new(skopeo)
        .args(["copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", src, dst])
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo copy {src} {dst}: {}", String::from_utf8_lossy(&o.stderr));
}

pub(crate) fn skopeo_digest(skopeo: &Path, src: &str, creds: Option<&str>) -> String {
    let mut c = Command::new(skopeo);
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(cr) = creds {
        c.args(["--creds", cr]);
    }
    let o = c.arg(src).output().unwrap();
    assert!(o.status.success(), "skopeo inspect {src}: {}", String::from_utf8_lossy(&o.stderr));
    format!("sha256:{}", {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&o.stdout))
    })
}

#[test]
fn registry_push_pull_interoperate_with_skopeo() {
    let Some((reg_bin, skopeo, htpasswd)) = tools() else { return };
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&reg_bin, &htpasswd, &t.path().join("reg"), None);
    let pkg = package(t.path(), "tiny-q8");
    let layout = t.path().join("layout");
    assert_eq!(mp(&["push", pkg.to_str().unwrap(), &format!("oci:{}:v1", layout.display())], &[]).0, 0);
    let (ours, _) = manifest_of_layout(&layout);

    // skopeo: our layout -> registry -> a new layout, digests preserved.
    skopeo_copy(&skopeo, &format!("oci:{}:v1", layout.display()), &format!("docker://{}/skopeo/tiny:v1", reg.addr));
    let back = t.path().join("back");
    skopeo_copy(&skopeo, &format!("docker://{}/skopeo/tiny:v1", reg.addr), &format!("oci:{}:v1", back.display()));
    assert_eq!(manifest_of_layout(&back).0, ours);

    // Our push (small chunks, to exercise PATCH uploads) gives the same manifest digest.
    let dest = format!("{}/ours/tiny:v1", reg.addr);
    let (code, v, text) =
        mp(&["push", pkg.to_str().unwrap(), &dest, "--plain-http", "--chunk-size", "65536", "--json"], &[]);
    assert_eq!(code, 0, "{text}\n{}", reg.log());
    assert_eq!(v["manifest_digest"].as_str().unwrap(), ours);
    assert!(!v["uploaded"].as_array().unwrap().is_empty());
    assert_eq!(skopeo_digest(&skopeo, &format!("docker://{dest}"), None), ours);
    // A second push finds every blob there (HEAD) and uploads nothing.
    let (code, v, text) = mp(&["push", pkg.to_str().unwrap(), &dest, "--plain-http", "--json"], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(v["uploaded"].as_array().unwrap().is_empty(), "{v}");

    // Our pull of what skopeo pushed: the same package, byte for byte; both verifiers accept it.
    let pulled = t.path().join("pulled");
    let (code, v, text) = mp(
        &[
            "pull",
            &format!("docker://{}/skopeo/tiny:v1", reg.addr),
            "-o",
            pulled.to_str().unwrap(),
            "--plain-http",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["manifest_digest"].as_str().unwrap(), ours);
    assert_eq!(tree(&pulled), tree(&pkg));
    assert_verifies(&pulled);
    // By digest too.
    let by_digest = t.path().join("by-digest");
    let (code, _, text) = mp(
        &["pull", &format!("{}/ours/tiny@{ours}", reg.addr), "-o", by_digest.to_str().unwrap(), "--plain-http"],
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(tree(&by_digest), tree(&pkg));

    // Missing tag: exit 2, nothing written.
    let missing = t.path().join("missing");
    let (code, v, _) = mp(
        &["pull", &format!("{}/ours/tiny:nope", reg.addr), "-o", missing.to_str().unwrap(), "--plain-http", "--json"],
        &[],
    );
    assert_eq!(code, 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not found"), "{v}");
    assert_nothing_left(&missing);

    // A corrupted blob in the registry's storage: the pull fails verification (exit 1).
    let gguf_hex = sha256sum(&pkg.join("model.gguf"));
    let data = reg.blob_data(&gguf_hex);
    let mut b = std::fs::read(&data).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&data, &b).unwrap();
    let corrupt = t.path().join("corrupt");
    let (code, v, _) = mp(
        &["pull", &format!("{}/ours/tiny:v1", reg.addr), "-o", corrupt.to_str().unwrap(), "--plain-http", "--json"],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    assert!(v["error"].as_str().unwrap().contains("digest"), "{v}");
    assert_nothing_left(&corrupt);
}

#[test]
fn basic_auth_registry_needs_the_right_credentials() {
    let Some((reg_bin, skopeo, htpasswd)) = tools() else { return };
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&reg_bin, &htpasswd, &t.path().join("reg"), Some(("ci-user", "s3cret-pw")));
    let pkg = package(t.path(), "tiny-q8");
    let dest = format!("{}/team/tiny:v1", reg.addr);
    let p = pkg.to_str().unwrap();
    let no_docker = t.path().join("no-docker");
    std::fs::create_dir(&no_docker).unwrap();
    let nd = no_docker.to_str().unwrap();

    let (code, v, _) = mp(&["push", p, &dest, "--plain-http", "--json"], &[("DOCKER_CONFIG", nd)]);
    assert_eq!(code, 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("authentication"), "{v}");
    let wrong = [
        ("MODELPACK_REGISTRY_USERNAME", "ci-user"),
        ("MODELPACK_REGISTRY_PASSWORD", "wrong-pw"),
        ("DOCKER_CONFIG", nd),
    ];
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--json"], &wrong);
    assert_eq!(code, 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("rejected"), "{v}");
    assert!(!text.contains("wrong-pw"), "password printed: {text}");

    let right = [
        ("MODELPACK_REGISTRY_USERNAME", "ci-user"),
        ("MODELPACK_REGISTRY_PASSWORD", "s3cret-pw"),
        ("DOCKER_CONFIG", nd),
    ];
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--json"], &right);
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["credentials"], "environment");
    assert!(!text.contains("s3cret-pw"), "password printed: {text}");
    assert_eq!(
        skopeo_digest(&skopeo, &format!("docker://{dest}"), Some("ci-user:s3cret-pw")),
        v["manifest_digest"].as_str().unwrap()
    );

    // Pull with credentials from a Docker config file.
    let dc = t.path().join("docker");
    std::fs::create_dir(&dc).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("ci-user:s3cret-pw")
    };
    std::fs::write(dc.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr)).unwrap();
    let out = t.path().join("pulled");
    let (code, _, text) =
        mp(&["pull", &dest, "-o", out.to_str().unwrap(), "--plain-http"], &[("DOCKER_CONFIG", dc.to_str().unwrap())]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(tree(&out), tree(&pkg));
    assert_verifies(&out);
}

#[test]
fn registry_dying_mid_upload_is_an_io_error_and_publishes_nothing() {
    let Some((reg_bin, skopeo, htpasswd)) = tools() else { return };
    let t = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&reg_bin, &htpasswd, &t.path().join("reg"), None);
    let pkg = package(t.path(), "big");
    // A 64 MiB extra file, re-signed, so the upload takes long enough to be interrupted.
    let mut x = 0x9e3779b97f4a7c15u64;
    let big: Vec<u8> = (0..64 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(pkg.join("extra.safetensors"), &big).unwrap();
    let (code, _, text) = mp(&["sign", pkg.to_str().unwrap(), "--key", key().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{text}");

    let dest = format!("{}/team/big:v1", reg.addr);
    let child = Command::new(assert_cmd::cargo::cargo_bin("modelpack"))
        .args(["push", pkg.to_str().unwrap(), &dest, "--plain-http", "--chunk-size", "1048576", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the registry once an upload is under way.
    let uploads = reg.dir.join("storage/docker/registry/v2/repositories/team/big/_uploads");
    let t0 = std::time::Instant::now();
    while !uploads.exists() && t0.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    reg.kill();
    let o = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert_eq!(o.status.code(), Some(3), "{v} {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(v["status"], "error");
    // Restarted on the same storage: the tag does not exist.
    reg.restart();
    let out = t.path().join("pulled");
    let (code, _, text) = mp(&["pull", &dest, "-o", out.to_str().unwrap(), "--plain-http"], &[]);
    assert_eq!(code, 2, "{text}");
    assert_nothing_left(&out);
    let _ = skopeo;
}

/// A Docker credential helper (`credsStore`): a fake `docker-credential-fake` on PATH answers for
/// the registry; push and pull authenticate through it, and its secret is never printed. A
/// `credHelpers` entry naming a helper that has no entry for the host leaves the push without
/// credentials (exit 2), as the Docker CLI does.
#[cfg(unix)]
#[test]
fn docker_credential_helper_on_path_is_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some((reg_bin, _skopeo, htpasswd)) = tools() else { return };
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&reg_bin, &htpasswd, &t.path().join("reg"), Some(("helper-user", "h3lper-pw")));
    let pkg = package(t.path(), "tiny-q8");
    let dest = format!("{}/team/tiny:v1", reg.addr);
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = t.path().join("helper.log");
    for (name, user, pw) in [("fake", "helper-user", "h3lper-pw"), ("empty", "", "")] {
        let helper = bin.join(format!("docker-credential-{name}"));
        let answer = if user.is_empty() {
            "echo 'credentials not found in native keychain'; exit 1".to_string()
        } else {
            format!("printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{pw}\"}}' \"$host\"")
        };
        let script = format!("#!/bin/sh\nread -r host\necho \"$1 $host\" >> {}\n{answer}\n", log.display());
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let dc = t.path().join("docker");
    std::fs::create_dir(&dc).unwrap();
    std::fs::write(dc.join("config.json"), r#"{"credsStore":"fake"}"#).unwrap();
    let env = [("DOCKER_CONFIG", dc.to_str().unwrap()), ("PATH", path.as_str())];
    let p = pkg.to_str().unwrap();
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--json"], &env);
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["credentials"], "docker credential helper", "{v}");
    assert!(!text.contains("h3lper-pw"), "secret printed: {text}");
    assert!(std::fs::read_to_string(&log).unwrap().contains(&format!("get {}", reg.addr)));
    let out = t.path().join("pulled");
    let (code, _, text) = mp(&["pull", &dest, "-o", out.to_str().unwrap(), "--plain-http"], &env);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("h3lper-pw"), "secret printed: {text}");
    assert_eq!(tree(&out), tree(&pkg));

    std::fs::write(
        dc.join("config.json"),
        format!(r#"{{"credsStore":"fake","credHelpers":{{"{}":"empty"}}}}"#, reg.addr),
    )
    .unwrap();
    let (code, v, _) = mp(&["push", p, &format!("{}/team/tiny:v2", reg.addr), "--plain-http", "--json"], &env);
    assert_eq!(code, 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("authentication"), "{v}");
}
