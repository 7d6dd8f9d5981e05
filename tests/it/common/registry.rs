//! Real CNCF distribution (`docker-registry`, Debian) and `skopeo` processes for the OCI tests.
//! Each [`Registry`] runs on 127.0.0.1 with its own storage and config in a temp dir and is
//! killed on drop. Under `MODELPACK_REQUIRE_INTEROP=1` a missing binary fails the test.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Find an executable on PATH; `None` (with a skip message) unless interop is required.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    assert!(
        std::env::var_os("MODELPACK_REQUIRE_INTEROP").is_none(),
        "interop required but `{name}` is missing: apt-get install {package} (.ci/run does)"
    );
    eprintln!("skipping: `{name}` not installed (apt-get install {package})");
    None
}

/// The registry binary, skopeo and htpasswd, or `None` when the test should skip.
pub fn tools() -> Option<(PathBuf, PathBuf, PathBuf)> {
    Some((tool("docker-registry", "docker-registry")?, tool("skopeo", "skopeo")?, tool("htpasswd", "apache2-utils")?))
}

/// A running registry process.
pub struct Registry {
    child: Option<Child>,
    bin: PathBuf,
    /// Config, storage (`storage/`) and logs live here.
    pub dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    /// Start an anonymous registry, or one with htpasswd Basic auth for `user:password`.
    pub fn start(bin: &Path, htpasswd: &Path, dir: &Path, auth: Option<(&str, &str)>) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut auth_cfg = String::new();
        if let Some((u, p)) = auth {
            let out = Command::new(htpasswd).args(["-Bbn", u, p]).output().unwrap();
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
            auth_cfg =
                format!("auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n", dir.join("htpasswd").display());
        }
        Self::start_with(bin, dir, &auth_cfg)
    }

    /// Start a registry in token mode (`auth: token:`) trusting `ts`: realm, service, issuer and
    /// root certificate bundle are the token server's.
    pub fn start_token(bin: &Path, dir: &Path, ts: &super::token_server::TokenServer) -> Self {
        let auth_cfg = format!(
            "auth:\n  token:\n    realm: \"{}\"\n    service: \"{}\"\n    issuer: \"{}\"\n    rootcertbundle: \"{}\"\n",
            ts.realm,
            ts.service,
            ts.issuer,
            ts.root_pem.display()
        );
        Self::start_with(bin, dir, &auth_cfg)
    }

    fn start_with(bin: &Path, dir: &Path, auth_cfg: &str) -> Self {
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_cfg}",
            dir.join("storage").display()
        );
        std::fs::write(dir.join("config.yml"), cfg).unwrap();
        let mut r = Registry { child: None, bin: bin.to_path_buf(), dir: dir.to_path_buf(), addr };
        r.restart();
        r
    }

    /// (Re)start the process on the same address and storage; waits until it accepts connections.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.join("registry.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(&self.addr).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "registry did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the process (a registry dying mid-transfer).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Path of a blob's data file in the filesystem storage driver.
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.dir.join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
