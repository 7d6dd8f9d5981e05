//! A small blocking client for the OCI distribution API: exactly the requests push and pull
//! need (distribution-spec v1.1), streaming every blob with bounded memory.
//!
//! Auth: anonymous, Basic, and the Bearer token flow (`WWW-Authenticate: Bearer realm=...`).
//! Credentials come from `MODELPACK_REGISTRY_USERNAME` / `MODELPACK_REGISTRY_PASSWORD`, else
//! the Docker config file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): a
//! credential helper (`credHelpers[host]`, else `credsStore`: `docker-credential-<name> get`
//! with the host on stdin, as the Docker CLI runs it), else the inline `auths` entry.
//! They are never printed: errors name the registry, not the credential.

use crate::artifact::{digest_of, Artifact, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::error::{OciError, Result};
use crate::io::{copy_verified, Progress, Staging};
use crate::reference::{RegistryRef, TagOrDigest};
use crate::unpack::{unpack, BlobSource, Descriptor, PullReport, MAX_MANIFEST_BYTES};
use base64::Engine as _;
use std::io::Read;
use std::path::Path;
use ureq::http::Response;
use ureq::Body;

/// Blobs up to this size go up in one PUT; bigger ones in PATCH chunks of this size
/// (KitOps' choice too: some registries reject big PATCH bodies, others multi-part uploads).
pub const DEFAULT_CHUNK_SIZE: u64 = 100 << 20;

/// Username and password for Basic auth or the token endpoint.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

/// Where the credentials came from (reported, never the secret itself).
pub fn find_credentials(host: &str) -> (Option<Credentials>, &'static str) {
    if let (Ok(u), Ok(p)) = (std::env::var("MODELPACK_REGISTRY_USERNAME"), std::env::var("MODELPACK_REGISTRY_PASSWORD"))
    {
        return (Some(Credentials { username: u, password: p }), "environment");
    }
    let cfg = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => std::path::PathBuf::from(d).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(h) => std::path::PathBuf::from(h).join(".docker/config.json"),
            None => return (None, "none"),
        },
    };
    let Ok(bytes) = std::fs::read(&cfg) else { return (None, "none") };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return (None, "none") };
    from_docker_config(&v, host, &|name, host| {
        helper_get(std::path::Path::new(&format!("docker-credential-{name}")), host)
    })
}

/// Run a Docker credential helper's `get` for `host` (stdin: the server, stdout:
/// `{"Username", "Secret"}`). `None` when the helper is missing, fails (no entry: "credentials not
/// found") or answers something else; its stderr is discarded, so nothing secret reaches ours.
pub fn helper_get(program: &Path, host: &str) -> Option<Credentials> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let _ = child.stdin.take()?.write_all(host.as_bytes());
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let username = v.get("Username")?.as_str()?.to_string();
    let password = v.get("Secret")?.as_str()?.to_string();
    Some(Credentials { username, password })
}

/// Credentials for `host` from a parsed Docker config: `credHelpers[host]`, else `credsStore`
/// (through `run_helper(name, host)`), else `auths[host]`.
pub fn from_docker_config(
    v: &serde_json::Value,
    host: &str,
    run_helper: &dyn Fn(&str, &str) -> Option<Credentials>,
) -> (Option<Credentials>, &'static str) {
    let helper = v
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .and_then(|n| n.as_str())
        .or_else(|| v.get("credsStore").and_then(|n| n.as_str()))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'));
    if let Some(name) = helper {
        if let Some(c) = run_helper(name, host) {
            return (Some(c), "docker credential helper");
        }
    }
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else { return (None, "none") };
    for (key, entry) in auths {
        let k = key.trim_start_matches("https://").trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        if k != host {
            continue;
        }
        if let Some(a) = entry.get("auth").and_then(|a| a.as_str()) {
            if let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(a) {
                if let Some((u, p)) = String::from_utf8_lossy(&dec).split_once(':') {
                    return (Some(Credentials { username: u.into(), password: p.into() }), "docker config");
                }
            }
        }
        if let (Some(u), Some(p)) =
            (entry.get("username").and_then(|x| x.as_str()), entry.get("password").and_then(|x| x.as_str()))
        {
            return (Some(Credentials { username: u.into(), password: p.into() }), "docker config");
        }
    }
    (None, "none")
}

/// Client options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Use `http://` instead of `https://` (loopback or lab registries).
    pub plain_http: bool,
    /// Credentials; anonymous when `None`.
    pub credentials: Option<Credentials>,
    /// Monolithic-upload threshold and PATCH chunk size.
    pub chunk_size: u64,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// Manifest digest the registry confirmed.
    pub manifest_digest: String,
    /// Blobs uploaded (digest, bytes).
    pub uploaded: Vec<(String, u64)>,
    /// Blobs the registry already had.
    pub skipped: Vec<(String, u64)>,
}

/// A repository on a registry, with its authorization once negotiated.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    r: RegistryRef,
    opts: ClientOptions,
    /// Behind a lock because a Bearer token is renewed while `&self` methods run.
    auth: std::sync::Mutex<Auth>,
}

/// What goes into the `Authorization` header.
enum Auth {
    /// The registry answered `/v2/` without a challenge.
    Anonymous,
    /// `Basic base64(user:password)`, sent on every request.
    Basic(String),
    /// A token from the realm, renewed before it expires and when the registry refuses it.
    Bearer(Bearer),
}

/// A Bearer token and what is needed to ask for the next one.
struct Bearer {
    realm: String,
    service: Option<String>,
    /// The scopes asked for (`repository:REPO:pull,push`), merged with any a challenge names.
    scopes: Vec<String>,
    token: String,
    /// When to fetch a new token rather than send this one: `expires_in` (default 60 s, the
    /// token spec's) after it arrived, less a margin of a quarter of that, at most 10 s.
    renew_at: std::time::Instant,
}

/// Seconds a token lives when the reply has no `expires_in` (distribution's token spec).
const DEFAULT_TOKEN_SECS: u64 = 60;

fn status_body(resp: &mut Response<Body>) -> String {
    let s = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    s.chars().take(300).collect()
}

/// Parse `Bearer realm="...",service="...",scope="..."` into its parameters.
fn challenge_params(h: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, next) = if let Some(v) = v.strip_prefix('"') {
            match v.find('"') {
                Some(i) => (v[..i].to_string(), &v[i + 1..]),
                None => (v.to_string(), ""),
            }
        } else {
            match v.find(',') {
                Some(i) => (v[..i].to_string(), &v[i..]),
                None => (v.to_string(), ""),
            }
        };
        out.push((k, val));
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_ascii_lowercase(), out)
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Parse `repository:NAME:a,b` scopes (space-separated, possibly several) into
/// (type:name, actions) pairs.
fn parse_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for sc in scopes.into_iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()) {
        let Some((res, actions)) = sc.rsplit_once(':') else { continue };
        let i = match out.iter().position(|(r, _)| r == res) {
            Some(i) => i,
            None => {
                out.push((res.to_string(), Vec::new()));
                out.len() - 1
            }
        };
        for a in actions.split(',').filter(|a| !a.is_empty()) {
            if !out[i].1.iter().any(|x| x == a) {
                out[i].1.push(a.to_string());
            }
        }
    }
    out
}

/// The scopes of `have` plus those of `want`, as `type:name:actions` strings.
fn merge_scopes(have: &[String], want: &str) -> Vec<String> {
    parse_scopes(have.iter().map(String::as_str).chain(std::iter::once(want)))
        .into_iter()
        .map(|(r, a)| format!("{r}:{}", a.join(",")))
        .collect()
}

/// Does `have` already ask for every action `want` names?
fn covers(have: &[String], want: &str) -> bool {
    let have = parse_scopes(have.iter().map(String::as_str));
    parse_scopes([want])
        .iter()
        .all(|(r, acts)| have.iter().any(|(hr, ha)| hr == r && acts.iter().all(|a| ha.contains(a))))
}

/// The `WWW-Authenticate` challenge of a reply, parsed.
fn challenge_of(resp: &Response<Body>) -> Option<(String, Vec<(String, String)>)> {
    let h = resp.headers().get("www-authenticate")?.to_str().ok()?;
    Some(challenge_params(h))
}

/// What sending one request gives.
type Sent = std::result::Result<Response<Body>, ureq::Error>;

/// `req` with `Authorization: a` when there is one.
fn authed<B>(req: ureq::RequestBuilder<B>, a: Option<&str>) -> ureq::RequestBuilder<B> {
    match a {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

fn param<'a>(params: &'a [(String, String)], k: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

impl Registry {
    /// Connect to the repository of `r` and negotiate auth (`push` asks for push scope).
    pub fn connect(r: &RegistryRef, opts: ClientOptions, push: bool) -> Result<Self> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(5)
            .timeout_connect(Some(std::time::Duration::from_secs(30)))
            .timeout_per_read(Some(std::time::Duration::from_secs(300)))
            .timeout_per_write(Some(std::time::Duration::from_secs(300)))
            .build()
            .into();
        let scheme = if opts.plain_http { "http" } else { "https" };
        let mut reg = Registry {
            agent,
            base: format!("{scheme}://{}", r.host),
            r: r.clone(),
            opts,
            auth: std::sync::Mutex::new(Auth::Anonymous),
        };
        reg.authenticate(push)?;
        Ok(reg)
    }

    fn net(&self, url: &str, e: ureq::Error) -> OciError {
        OciError::Network { url: url.to_string(), detail: e.to_string() }
    }

    fn auth_err(&self, detail: impl Into<String>) -> OciError {
        OciError::Auth { registry: self.r.host.clone(), detail: detail.into() }
    }

    fn basic(&self) -> Option<String> {
        self.opts.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
            )
        })
    }

    fn set_auth(&self, a: Auth) {
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = a;
    }

    fn authenticate(&mut self, push: bool) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let mut resp = self.agent.get(&url).call().map_err(|e| self.net(&url, e))?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        if status != 401 {
            return Err(OciError::Network { url, detail: format!("HTTP {status}: {}", status_body(&mut resp)) });
        }
        let (scheme, params) = challenge_of(&resp).unwrap_or_default();
        match scheme.as_str() {
            "basic" => {
                let Some(b) = self.basic() else {
                    return Err(self.auth_err(
                        "the registry wants credentials: set MODELPACK_REGISTRY_USERNAME/PASSWORD or log in (docker config auths)",
                    ));
                };
                let mut resp =
                    self.agent.get(&url).header("Authorization", &b).call().map_err(|e| self.net(&url, e))?;
                match resp.status().as_u16() {
                    200 => {
                        self.set_auth(Auth::Basic(b));
                        Ok(())
                    }
                    401 | 403 => Err(self.auth_err("credentials rejected")),
                    s => Err(OciError::Network { url, detail: format!("HTTP {s}: {}", status_body(&mut resp)) }),
                }
            }
            "bearer" => {
                let realm = param(&params, "realm").ok_or_else(|| self.auth_err("Bearer challenge without realm"))?;
                let scope = format!("repository:{}:{}", self.r.repo, if push { "pull,push" } else { "pull" });
                let b = self.fetch_token(realm, param(&params, "service"), vec![scope])?;
                self.set_auth(Auth::Bearer(b));
                Ok(())
            }
            _ => Err(self.auth_err(format!("unsupported auth scheme {scheme:?}"))),
        }
    }

    /// `GET realm?scope=..&service=..` (Basic credentials when we have them): a token for `scopes`.
    fn fetch_token(&self, realm: &str, service: Option<&str>, scopes: Vec<String>) -> Result<Bearer> {
        let mut turl = realm.to_string();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        for sc in &scopes {
            turl.push_str(&format!("{sep}scope={}", pct(sc)));
            sep = '&';
        }
        if let Some(s) = service {
            turl.push_str(&format!("{sep}service={}", pct(s)));
        }
        let mut req = self.agent.get(&turl);
        let basic = self.basic();
        if let Some(b) = &basic {
            req = req.header("Authorization", b);
        }
        let mut resp = req.call().map_err(|e| self.net(realm, e))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 if basic.is_some() => return Err(self.auth_err("token endpoint rejected the credentials")),
            401 | 403 => {
                return Err(self.auth_err(
                    "the token endpoint wants credentials: set MODELPACK_REGISTRY_USERNAME/PASSWORD or log in (docker config auths)",
                ))
            }
            s => return Err(self.auth_err(format!("token endpoint {realm}: HTTP {s}: {}", status_body(&mut resp)))),
        }
        let got = std::time::Instant::now();
        let body = resp.body_mut().with_config().limit(1 << 20).read_to_string().map_err(|e| self.net(realm, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| self.auth_err(format!("token reply is not JSON: {e}")))?;
        let token = v
            .get("token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .or_else(|| v.get("access_token").and_then(|t| t.as_str()))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.auth_err("token reply has no token"))?
            .to_string();
        let secs = v.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(DEFAULT_TOKEN_SECS);
        let life = std::time::Duration::from_secs(secs);
        let margin = (life / 4).min(std::time::Duration::from_secs(10));
        Ok(Bearer {
            realm: realm.to_string(),
            service: service.map(str::to_string),
            scopes,
            token,
            renew_at: got + life - margin,
        })
    }

    /// The `Authorization` value for the next request; a Bearer token due for renewal is
    /// renewed first (the registry checks it when a request starts, so a long upload is fine).
    fn authorization(&self) -> Result<Option<String>> {
        let mut a = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *a {
            Auth::Anonymous => Ok(None),
            Auth::Basic(b) => Ok(Some(b.clone())),
            Auth::Bearer(b) => {
                if std::time::Instant::now() >= b.renew_at {
                    *b = self.fetch_token(&b.realm, b.service.as_deref(), b.scopes.clone())?;
                }
                Ok(Some(format!("Bearer {}", b.token)))
            }
        }
    }

    /// After a 401 with a Bearer challenge: fetch a token for our scopes plus the challenge's
    /// (`invalid_token`: ours expired or was revoked; a scope we did not ask for, e.g. `pull` on
    /// another repository). `false` when a new token cannot help (Basic, or the challenge asks
    /// for nothing beyond what the refused token was requested for).
    fn renew_after(&self, resp: &Response<Body>) -> Result<bool> {
        let Some((scheme, params)) = challenge_of(resp) else { return Ok(false) };
        if scheme != "bearer" {
            return Ok(false);
        }
        let mut a = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let (realm, service, scopes) = match &*a {
            Auth::Bearer(b) => (b.realm.clone(), b.service.clone(), b.scopes.clone()),
            _ => return Ok(false),
        };
        let want = param(&params, "scope").unwrap_or_default();
        let expired = param(&params, "error") == Some("invalid_token");
        if !expired && covers(&scopes, want) {
            return Ok(false);
        }
        let realm = param(&params, "realm").map(str::to_string).unwrap_or(realm);
        let service = param(&params, "service").map(str::to_string).or(service);
        *a = Auth::Bearer(self.fetch_token(&realm, service.as_deref(), merge_scopes(&scopes, want))?);
        Ok(true)
    }

    /// Send a request that can be repeated (no streamed body): once, and once more with a new
    /// token when the registry refuses the first with a Bearer challenge a new token may meet.
    fn send(&self, url: &str, make: &dyn Fn(Option<&str>) -> Sent) -> Result<Response<Body>> {
        let auth = self.authorization()?;
        let resp = make(auth.as_deref()).map_err(|e| self.net(url, e))?;
        if resp.status().as_u16() != 401 || !self.renew_after(&resp)? {
            return Ok(resp);
        }
        let auth = self.authorization()?;
        make(auth.as_deref()).map_err(|e| self.net(url, e))
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.r.repo)
    }

    fn absolute(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            format!("{}/{loc}", self.base)
        }
    }

    /// Add the `Authorization` header (a streamed request: sent once, after any renewal).
    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> Result<ureq::RequestBuilder<B>> {
        Ok(match self.authorization()? {
            Some(a) => req.header("Authorization", &a),
            None => req,
        })
    }

    fn check(&self, resp: &mut Response<Body>, ok: &[u16], what: &str) -> Result<()> {
        let s = resp.status().as_u16();
        if ok.contains(&s) {
            return Ok(());
        }
        let challenge = challenge_of(resp);
        let body = status_body(resp);
        Err(match s {
            401 | 403 => {
                let who = if self.opts.credentials.is_some() { "the credentials given" } else { "anonymous access" };
                let hint = if self.opts.credentials.is_some() {
                    ""
                } else {
                    "; set MODELPACK_REGISTRY_USERNAME/PASSWORD or log in (docker config auths)"
                };
                let detail = match challenge.as_ref().map(|(_, p)| (param(p, "error"), param(p, "scope"))) {
                    Some((Some("insufficient_scope"), scope)) => format!(
                        "{what}: the token server did not grant {} to {who} (insufficient_scope){hint}",
                        scope.unwrap_or("the scope needed")
                    ),
                    Some((Some("invalid_token"), _)) => {
                        format!("{what}: the registry refused the token (invalid_token: expired, revoked or not signed by an issuer it trusts)")
                    }
                    _ => format!("{what}: HTTP {s}: {body}"),
                };
                OciError::Auth { registry: self.r.host.clone(), detail }
            }
            404 => OciError::NotFound(format!("{what} in {}/{}: {body}", self.r.host, self.r.repo)),
            500.. => OciError::Network { url: what.to_string(), detail: format!("HTTP {s}: {body}") },
            _ => OciError::Refused { what: what.into(), status: s, body },
        })
    }

    fn location(&self, resp: &Response<Body>, what: &str) -> Result<String> {
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| self.absolute(l))
            .ok_or_else(|| OciError::Network { url: what.into(), detail: "upload reply without Location".into() })
    }

    /// Does the repository hold this blob already?
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let mut resp = self.send(&url, &|a| authed(self.agent.head(&url), a).call())?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => self.check(&mut resp, &[], &format!("HEAD blob {digest}")).map(|_| false),
        }
    }

    /// Upload a blob from `src` (exactly `size` bytes): one PUT up to the chunk size, PATCH
    /// chunks above it. The registry checks the digest when the upload is closed.
    pub fn upload_blob(&self, digest: &str, size: u64, src: &mut dyn Read, progress: &dyn Progress) -> Result<()> {
        let what = format!("upload of {digest}");
        let url = self.url("blobs/uploads/");
        let mut resp =
            self.send(&url, &|a| authed(self.agent.post(&url), a).header("Content-Length", "0").send_empty())?;
        self.check(&mut resp, &[202], &what)?;
        let mut loc = self.location(&resp, &what)?;
        let sep = |l: &str| if l.contains('?') { '&' } else { '?' };
        let mut src = crate::io::HashingReader::new(src, progress);
        if size <= self.opts.chunk_size {
            let put = format!("{loc}{}digest={digest}", sep(&loc));
            let mut body = (&mut src).take(size);
            let mut resp = self
                .with_auth(self.agent.put(&put))?
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", &size.to_string())
                .send(ureq::SendBody::from_reader(&mut body))
                .map_err(|e| self.net(&what, e))?;
            return self.check(&mut resp, &[201], &what);
        }
        let mut start = 0u64;
        while start < size {
            let n = self.opts.chunk_size.min(size - start);
            let mut body = (&mut src).take(n);
            let mut resp = self
                .with_auth(self.agent.patch(&loc))?
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", &n.to_string())
                .header("Content-Range", &format!("{start}-{}", start + n - 1))
                .send(ureq::SendBody::from_reader(&mut body))
                .map_err(|e| self.net(&what, e))?;
            self.check(&mut resp, &[202], &what)?;
            loc = self.location(&resp, &what)?;
            start += n;
        }
        let put = format!("{loc}{}digest={digest}", sep(&loc));
        let mut resp =
            self.send(&what, &|a| authed(self.agent.put(&put), a).header("Content-Length", "0").send_empty())?;
        self.check(&mut resp, &[201], &what)
    }

    /// Push the whole artifact: layers and config (skipping blobs the registry has), then the
    /// exact manifest bytes under the tag (or digest); the registry's digest must equal ours.
    pub fn push(&self, a: &Artifact, progress: &dyn Progress) -> Result<PushReport> {
        let mut uploaded = Vec::new();
        let mut skipped = Vec::new();
        for l in &a.layers {
            let digest = l.digest();
            if uploaded.iter().chain(&skipped).any(|(d, _)| *d == digest) || self.has_blob(&digest)? {
                skipped.push((digest, l.size));
                continue;
            }
            let p = a.root.join(&l.path);
            let mut f = std::fs::File::open(&p).map_err(|e| OciError::io(format!("opening {}", p.display()), e))?;
            progress.start(&l.path, l.size);
            let r = self.upload_blob(&digest, l.size, &mut f, progress);
            progress.finish();
            r?;
            uploaded.push((digest, l.size));
        }
        let cd = a.config_digest();
        if self.has_blob(&cd)? {
            skipped.push((cd, a.config.len() as u64));
        } else {
            self.upload_blob(&cd, a.config.len() as u64, &mut a.config.as_slice(), &crate::io::NoProgress)?;
            uploaded.push((cd, a.config.len() as u64));
        }
        let digest = a.manifest_digest();
        let url = self.url(&format!("manifests/{}", self.r.reference.as_str()));
        if let TagOrDigest::Digest(d) = &self.r.reference {
            if *d != digest {
                return Err(OciError::Mismatch { what: "push by digest".into(), expected: d.clone(), actual: digest });
            }
        }
        let mut resp = self.send(&url, &|auth| {
            authed(self.agent.put(&url), auth).header("Content-Type", MANIFEST_MEDIA_TYPE).send(a.manifest.as_slice())
        })?;
        self.check(&mut resp, &[201], "manifest PUT")?;
        if let Some(got) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            if got != digest {
                return Err(OciError::Mismatch {
                    what: "manifest digest the registry stored".into(),
                    expected: digest,
                    actual: got.into(),
                });
            }
        }
        Ok(PushReport { manifest_digest: digest, uploaded, skipped })
    }

    /// Fetch the manifest bytes for the reference, verifying them when named by digest.
    pub fn manifest(&self) -> Result<Vec<u8>> {
        let rf = self.r.reference.as_str();
        let url = self.url(&format!("manifests/{rf}"));
        let accept = format!("{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}");
        let mut resp = self.send(&url, &|a| authed(self.agent.get(&url), a).header("Accept", &accept).call())?;
        self.check(&mut resp, &[200], &format!("manifest {rf}"))?;
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let bytes =
            resp.body_mut().with_config().limit(MAX_MANIFEST_BYTES).read_to_vec().map_err(|e| self.net(&url, e))?;
        if ct.starts_with(INDEX_MEDIA_TYPE) {
            return Err(OciError::malformed(
                "manifest",
                "the reference names an image index, not a ModelPack manifest",
            ));
        }
        if let TagOrDigest::Digest(d) = &self.r.reference {
            let got = digest_of(&bytes);
            if got != *d {
                return Err(OciError::Mismatch { what: "manifest".into(), expected: d.clone(), actual: got });
            }
        }
        Ok(bytes)
    }

    /// Pull the artifact into a new package directory `dest` (staged, renamed when verified).
    pub fn pull(&self, dest: &Path, progress: &dyn Progress) -> Result<PullReport> {
        if dest.exists() {
            return Err(OciError::Exists(dest.to_path_buf()));
        }
        let manifest = self.manifest()?;
        crate::unpack::parse_manifest(&manifest)?;
        let staging = Staging::new(dest)?;
        unpack(&manifest, &mut RegistryBlobs(self), staging, progress, None)
    }
}

struct RegistryBlobs<'a>(&'a Registry);
impl BlobSource for RegistryBlobs<'_> {
    fn fetch(&mut self, d: &Descriptor, dest: &Path, what: &str, progress: &dyn Progress) -> Result<()> {
        let reg = self.0;
        let url = reg.url(&format!("blobs/{}", d.digest));
        let mut resp = reg.send(&url, &|a| authed(reg.agent.get(&url), a).call())?;
        reg.check(&mut resp, &[200], &format!("blob {} ({what})", d.digest))?;
        let mut body = resp.body_mut().as_reader();
        progress.start(what, d.size);
        let r = copy_verified(&mut body, dest, &d.digest, d.size, what, progress);
        progress.finish();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `docker-credential-NAME`: answers for `known` only, as real helpers do.
    #[cfg(unix)]
    fn fake_helper(dir: &Path, name: &str, known: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r host\nif [ \"$host\" = \"{known}\" ]; then\n  \
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{name}-user\",\"Secret\":\"s3cret\"}}' \"$host\"\nelse\n  \
             echo 'credentials not found in native keychain'; exit 1\nfi\n"
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[cfg(unix)]
    #[test]
    fn credential_helpers_take_precedence_and_fall_back() {
        let t = tempfile::tempdir().unwrap();
        fake_helper(t.path(), "store", "reg.example:5000");
        fake_helper(t.path(), "special", "other.example");
        let run = |name: &str, host: &str| helper_get(&t.path().join(format!("docker-credential-{name}")), host);
        let auth = base64::engine::general_purpose::STANDARD.encode("inline:pw");
        let cfg = serde_json::json!({
            "credsStore": "store",
            "credHelpers": { "other.example": "special" },
            "auths": { "reg.example:5000": {}, "third.example": { "auth": auth } }
        });
        let (c, from) = from_docker_config(&cfg, "reg.example:5000", &run);
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str(), from),
            ("store-user", "s3cret", "docker credential helper")
        );
        assert!(!format!("{c:?}").contains("s3cret"), "Debug must not print the secret");
        let (c, _) = from_docker_config(&cfg, "other.example", &run);
        assert_eq!(c.unwrap().username, "special-user", "credHelpers wins over credsStore");
        // The store has no entry for this host: the inline auths entry is used.
        let (c, from) = from_docker_config(&cfg, "third.example", &run);
        assert_eq!((c.unwrap().password.as_str(), from), ("pw", "docker config"));
        let (c, from) = from_docker_config(&cfg, "nobody.example", &run);
        assert!(c.is_none() && from == "none");
        // A helper that does not exist, or a name that would be a path, is not run.
        let missing = serde_json::json!({ "credsStore": "absent" });
        assert!(from_docker_config(&missing, "reg.example:5000", &run).0.is_none());
        let sneaky = serde_json::json!({ "credsStore": "../store" });
        let called = std::cell::Cell::new(false);
        let spy = |_: &str, _: &str| {
            called.set(true);
            None
        };
        assert!(from_docker_config(&sneaky, "reg.example:5000", &spy).0.is_none());
        assert!(!called.get());
    }

    #[test]
    fn parses_challenges() {
        let (s, p) = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        let (s, p) = challenge_params(r#"Basic realm="basic-realm""#);
        assert_eq!((s.as_str(), p[0].1.as_str()), ("basic", "basic-realm"));
    }

    #[test]
    fn scopes_merge_and_cover() {
        let have = vec!["repository:alice/tiny:pull,push".to_string()];
        assert!(covers(&have, "repository:alice/tiny:pull"));
        assert!(covers(&have, "repository:alice/tiny:push,pull"));
        assert!(!covers(&have, "repository:alice/other:pull"));
        assert!(!covers(&["repository:alice/tiny:pull".to_string()], "repository:alice/tiny:pull,push"));
        assert_eq!(
            merge_scopes(&["repository:a/b:pull".to_string()], "repository:a/b:push repository:c/d:pull"),
            ["repository:a/b:pull,push", "repository:c/d:pull"]
        );
        assert_eq!(merge_scopes(&have, ""), have);
    }

    #[test]
    fn credentials_are_redacted_in_debug() {
        let c = Credentials { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
