//! Bearer-token auth against a real registry in token mode: Debian's `docker-registry` (CNCF
//! distribution 2.8.2) with `auth: token:` trusting the test token server of
//! `common/token_server.rs` (ES256 JWTs with the signing certificate in `x5c`), `skopeo` 1.9 as
//! the independent client, `modelpack verify` and `model_signing` as judges of pulled packages.
//!
//! Policy of every test here: alice may pull and push `alice/tiny` and `public/tiny`; bob may only
//! pull `alice/tiny`; everyone, anonymous included, may pull `public/tiny`.
use crate::common;
use crate::oci::{assert_nothing_left, assert_verifies, manifest_of_layout, mp, package, skopeo_digest, tree};

use common::registry::{tools, Registry};
use common::token_server::{have_openssl, Grant, TokenServer};
use std::path::{Path, PathBuf};
use std::process::Command;

const ALICE_PW: &str = "alice-Tok3n-pw";
const BOB_PW: &str = "bob-Tok3n-pw";

struct Setup {
    ts: TokenServer,
    reg: Registry,
    skopeo: PathBuf,
    /// A `DOCKER_CONFIG` directory without a config file: no credentials from `~/.docker`.
    no_docker: PathBuf,
}

fn setup(t: &Path) -> Option<Setup> {
    let (reg_bin, skopeo, _) = tools()?;
    if !have_openssl() {
        return None;
    }
    let g = |user: Option<&str>, repo: &str, actions: &[&str]| Grant {
        user: user.map(str::to_string),
        repo: repo.into(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    };
    let ts = TokenServer::start(
        &t.join("token"),
        &[("alice", ALICE_PW), ("bob", BOB_PW)],
        vec![
            g(Some("alice"), "alice/tiny", &["pull", "push"]),
            g(Some("alice"), "public/tiny", &["pull", "push"]),
            g(Some("bob"), "alice/tiny", &["pull"]),
            g(None, "public/tiny", &["pull"]),
        ],
    );
    let reg = Registry::start_token(&reg_bin, &t.join("reg"), &ts);
    let no_docker = t.join("no-docker");
    std::fs::create_dir_all(&no_docker).unwrap();
    Some(Setup { ts, reg, skopeo, no_docker })
}

/// Nothing in the output that is a secret: passwords, or a token (JWTs start `eyJ`).
fn assert_no_secrets(text: &str) {
    for s in [ALICE_PW, BOB_PW, "eyJ"] {
        assert!(!text.contains(s), "secret {s:?} printed: {text}");
    }
}

fn env_creds<'a>(user: &'a str, pw: &'a str, no_docker: &'a Path) -> [(&'a str, &'a str); 3] {
    [
        ("MODELPACK_REGISTRY_USERNAME", user),
        ("MODELPACK_REGISTRY_PASSWORD", pw),
        ("DOCKER_CONFIG", no_docker.to_str().unwrap()),
    ]
}

/// `$dir/config.json` with an inline `auths` entry for `host`.
fn docker_config(dir: &Path, host: &str, user: &str, pw: &str) -> PathBuf {
    use base64::Engine as _;
    std::fs::create_dir_all(dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    std::fs::write(dir.join("config.json"), format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    dir.to_path_buf()
}

/// The registry's storage has no repository `repo` (nothing was written there).
fn assert_no_repo(reg: &Registry, repo: &str) {
    let d = reg.dir.join("storage/docker/registry/v2/repositories").join(repo);
    assert!(!d.exists(), "{} exists after a refused push", d.display());
}

#[test]
fn token_push_pull_with_env_and_docker_config_match_skopeo() {
    let t = tempfile::tempdir().unwrap();
    let Some(s) = setup(t.path()) else { return };
    let pkg = package(t.path(), "tiny-q8");
    let p = pkg.to_str().unwrap();
    let layout = t.path().join("layout");
    assert_eq!(mp(&["push", p, &format!("oci:{}:v1", layout.display())], &[]).0, 0);
    let (ours, _) = manifest_of_layout(&layout);

    // Push with credentials from the environment (PATCH chunks too).
    let dest = format!("{}/alice/tiny:v1", s.reg.addr);
    let env = env_creds("alice", ALICE_PW, &s.no_docker);
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--chunk-size", "65536", "--json"], &env);
    assert_eq!(code, 0, "{text}\n{}", s.reg.log());
    assert_eq!(v["credentials"], "environment");
    assert_eq!(v["manifest_digest"].as_str().unwrap(), ours);
    assert!(!v["uploaded"].as_array().unwrap().is_empty(), "{v}");
    assert_no_secrets(&text);
    let issued = s.ts.issued();
    assert!(
        issued.iter().any(|i| i.user.as_deref() == Some("alice")
            && i.requested == ["repository:alice/tiny:pull,push"]
            && i.granted == [("alice/tiny".to_string(), vec!["pull".to_string(), "push".to_string()])]),
        "{issued:?}"
    );

    // skopeo, through the same token dance, sees our manifest digest; and its own push of our
    // layout (another tag) stores the same digest.
    let creds = format!("alice:{ALICE_PW}");
    assert_eq!(skopeo_digest(&s.skopeo, &format!("docker://{dest}"), Some(&creds)), ours);
    let sk_dest = format!("docker://{}/alice/tiny:skopeo", s.reg.addr);
    let o = Command::new(&s.skopeo)
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &creds])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&sk_dest)
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(skopeo_digest(&s.skopeo, &sk_dest, Some(&creds)), ours);

    // A second push: every blob found by HEAD under the token, nothing uploaded.
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--json"], &env);
    assert_eq!(code, 0, "{text}");
    assert!(v["uploaded"].as_array().unwrap().is_empty(), "{v}");

    // Pull what skopeo pushed with credentials from a Docker config file: byte-identical, and
    // both verifiers accept it.
    let dc = docker_config(&t.path().join("docker-alice"), &s.reg.addr, "alice", ALICE_PW);
    let out = t.path().join("pulled");
    let (code, v, text) = mp(
        &["pull", &sk_dest, "-o", out.to_str().unwrap(), "--plain-http", "--json"],
        &[("DOCKER_CONFIG", dc.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["manifest_digest"].as_str().unwrap(), ours);
    assert_no_secrets(&text);
    assert_eq!(tree(&out), tree(&pkg));
    assert_verifies(&out);

    // bob may pull alice/tiny (pull-only grant), by digest.
    let dc = docker_config(&t.path().join("docker-bob"), &s.reg.addr, "bob", BOB_PW);
    let out = t.path().join("pulled-bob");
    let (code, _, text) = mp(
        &["pull", &format!("{}/alice/tiny@{ours}", s.reg.addr), "-o", out.to_str().unwrap(), "--plain-http"],
        &[("DOCKER_CONFIG", dc.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{text}");
    assert_no_secrets(&text);
    assert_eq!(tree(&out), tree(&pkg));
}

#[test]
fn token_wrong_password_missing_push_scope_and_anonymous_push_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let Some(s) = setup(t.path()) else { return };
    let pkg = package(t.path(), "tiny-q8");
    let p = pkg.to_str().unwrap();
    let dest = format!("{}/alice/tiny:v1", s.reg.addr);

    // Wrong password: the token endpoint refuses it; exit 2, a clear message, nothing stored.
    let env = env_creds("alice", "not-the-Tok3n-pw", &s.no_docker);
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--json"], &env);
    assert_eq!(code, 2, "{text}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("authentication failed") && err.contains("rejected the credentials"), "{err}");
    assert!(!text.contains("not-the-Tok3n-pw"), "password printed: {text}");
    assert_no_secrets(&text);
    assert!(s.ts.rejected() >= 1);
    assert_no_repo(&s.reg, "alice/tiny");
    let out = t.path().join("wrong-pw-pull");
    let (code, _, text) = mp(&["pull", &dest, "-o", out.to_str().unwrap(), "--plain-http"], &env);
    assert_eq!(code, 2, "{text}");
    assert_nothing_left(&out);

    // bob's token has pull but not push on alice/tiny: the push fails on its first upload with a
    // message naming the missing scope; nothing is stored.
    let env = env_creds("bob", BOB_PW, &s.no_docker);
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--json"], &env);
    assert_eq!(code, 2, "{text}\n{}", s.reg.log());
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("insufficient_scope") && err.contains("push"), "{err}");
    assert_no_secrets(&text);
    assert_no_repo(&s.reg, "alice/tiny");
    let bob = s.ts.issued().into_iter().filter(|i| i.user.as_deref() == Some("bob")).collect::<Vec<_>>();
    assert!(
        !bob.is_empty() && bob.iter().all(|i| i.granted == [("alice/tiny".into(), vec!["pull".into()])]),
        "{bob:?}"
    );

    // Anonymous: a token without push on public/tiny; the error says how to give credentials.
    let anon = [("DOCKER_CONFIG", s.no_docker.to_str().unwrap())];
    let (code, v, text) = mp(&["push", p, &format!("{}/public/tiny:v1", s.reg.addr), "--plain-http", "--json"], &anon);
    assert_eq!(code, 2, "{text}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("insufficient_scope") && err.contains("MODELPACK_REGISTRY_USERNAME"), "{err}");
    assert_no_repo(&s.reg, "public/tiny");

    // The registry checks the token's signature chain: alice's token signed by a certificate
    // outside its root bundle is refused (invalid_token, even after one renewal), exit 2.
    s.ts.set_rogue(true);
    let env = env_creds("alice", ALICE_PW, &s.no_docker);
    let (code, v, text) = mp(&["push", p, &dest, "--plain-http", "--json"], &env);
    assert_eq!(code, 2, "{text}");
    assert!(v["error"].as_str().unwrap().contains("invalid_token"), "{v}");
    assert_no_secrets(&text);
    assert_no_repo(&s.reg, "alice/tiny");
    s.ts.set_rogue(false);

    // Anonymous pull of a private repository: refused (exit 2), nothing at the destination.
    assert_eq!(mp(&["push", p, &dest, "--plain-http"], &env).0, 0);
    let out = t.path().join("anon-private");
    let (code, v, text) = mp(&["pull", &dest, "-o", out.to_str().unwrap(), "--plain-http", "--json"], &anon);
    assert_eq!(code, 2, "{text}");
    assert!(v["error"].as_str().unwrap().contains("insufficient_scope"), "{v}");
    assert_nothing_left(&out);
}

#[test]
fn token_anonymous_pull_of_a_public_repository() {
    let t = tempfile::tempdir().unwrap();
    let Some(s) = setup(t.path()) else { return };
    let pkg = package(t.path(), "tiny-q8");
    let dest = format!("{}/public/tiny:v1", s.reg.addr);
    let (code, _, text) =
        mp(&["push", pkg.to_str().unwrap(), &dest, "--plain-http"], &env_creds("alice", ALICE_PW, &s.no_docker));
    assert_eq!(code, 0, "{text}");
    let out = t.path().join("pulled");
    let (code, v, text) = mp(
        &["pull", &dest, "-o", out.to_str().unwrap(), "--plain-http", "--json"],
        &[("DOCKER_CONFIG", s.no_docker.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["credentials"], "none", "{v}");
    assert_eq!(tree(&out), tree(&pkg));
    assert_verifies(&out);
    let issued = s.ts.issued();
    assert!(
        issued.iter().any(|i| i.user.is_none() && i.granted == [("public/tiny".into(), vec!["pull".into()])]),
        "no anonymous pull token: {issued:?}"
    );
    // skopeo, anonymous too, sees the same manifest.
    assert_eq!(skopeo_digest(&s.skopeo, &format!("docker://{dest}"), None), v["manifest_digest"].as_str().unwrap());
}

/// Tokens that expire while a client holds them: an honest `expires_in` is renewed before it
/// runs out; a server that says 300 s but whose tokens die after 2 s makes the registry answer
/// `invalid_token`, and the client fetches a new token and repeats the request.
#[test]
fn token_expiry_is_renewed_and_a_refused_token_is_replaced() {
    use modelpack_oci::{build, BuildOptions, ClientOptions, Credentials, Location, NoProgress};
    let t = tempfile::tempdir().unwrap();
    let Some(s) = setup(t.path()) else { return };
    let pkg = package(t.path(), "tiny-q8");
    let art = build(&pkg, &BuildOptions::default()).unwrap();
    let opts = ClientOptions {
        plain_http: true,
        credentials: Some(Credentials { username: "alice".into(), password: ALICE_PW.into() }),
        chunk_size: 1 << 20,
    };
    let reference = |tag: &str| {
        let Location::Registry(r) = Location::parse(&format!("{}/alice/tiny:{tag}", s.reg.addr)).unwrap() else {
            panic!("not a registry reference")
        };
        r
    };
    let alice_tokens = || s.ts.issued().iter().filter(|i| i.user.as_deref() == Some("alice")).count();

    // Honest 2 s tokens: the push starts after the first one expired.
    s.ts.set_lifetime(2, 2);
    let reg = modelpack_oci::Registry::connect(&reference("v1"), opts.clone(), true).unwrap();
    assert_eq!(alice_tokens(), 1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let rep = reg.push(&art, &NoProgress).unwrap_or_else(|e| panic!("{e}\n{}", s.reg.log()));
    assert_eq!(rep.manifest_digest, art.manifest_digest());
    assert!(alice_tokens() >= 2, "the expired token was not renewed");

    // A lying server: expires_in 300, dead after 2 s. The pull's first request is refused with
    // invalid_token; a new token is fetched and the request repeated.
    s.ts.set_lifetime(2, 300);
    let reg = modelpack_oci::Registry::connect(&reference("v1"), opts.clone(), false).unwrap();
    let before = alice_tokens();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = t.path().join("pulled");
    reg.pull(&out, &NoProgress).unwrap_or_else(|e| panic!("{e}\n{}", s.reg.log()));
    assert_eq!(tree(&out), tree(&pkg));
    assert!(alice_tokens() > before, "the refused token was not replaced");
    let last = s.ts.issued().into_iter().last().unwrap();
    assert_eq!(last.requested, ["repository:alice/tiny:pull"], "renewal asks for the same scope");
}
