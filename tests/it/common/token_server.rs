//! A Docker/distribution token server for the Bearer-auth tests (the protocol of distribution's
//! `docs/spec/auth/token.md`), written for the tests: plain HTTP on 127.0.0.1 in a thread of the
//! test binary.
//!
//! `GET /token?service=S&scope=repository:REPO:pull,push` checks optional Basic credentials and
//! answers `{"token", "access_token", "expires_in"}`, the token being an ES256 JWT
//! over `iss/sub/aud/exp/nbf/iat/jti/access` with the signing certificate in the `x5c` header.
//! distribution 2.8 accepts it when `x5c[0]` chains to a certificate of its `rootcertbundle`, `iss`
//! is its `issuer`, `aud` (a plain string) is its `service`, and now lies in
//! `[nbf - 60 s, exp + 60 s]` (its leeway). The PKI (a root CA and a signing leaf) is made with
//! the `openssl` CLI; signatures with the `p256` crate (raw `r || s`, as JWS wants).
//!
//! Access is granted as a real token server does: the requested actions intersected with what the
//! policy allows the user (anonymous included), never an error for asking too much.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::DecodePrivateKey as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// distribution's clock-skew leeway on `exp` and `nbf` (registry/auth/token/token.go).
pub const LEEWAY_SECS: u64 = 60;

/// Who may do what: `user` `None` is everyone, anonymous callers included.
#[derive(Clone, Debug)]
pub struct Grant {
    /// A user name, or `None` for everyone.
    pub user: Option<String>,
    /// Repository name.
    pub repo: String,
    /// Allowed actions (`pull`, `push`).
    pub actions: Vec<String>,
}

/// One token the server issued (or a request it refused), for the tests' assertions.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Authenticated user; `None` for anonymous.
    pub user: Option<String>,
    /// The `scope` parameters as requested.
    pub requested: Vec<String>,
    /// (repository, actions) the token grants.
    pub granted: Vec<(String, Vec<String>)>,
}

struct State {
    users: Vec<(String, String)>,
    grants: Vec<Grant>,
    /// Seconds the registry accepts a token after it was issued.
    lifetime: u64,
    /// `expires_in` in the reply (a lying server says more than `lifetime`).
    advertised: u64,
    issued: Vec<Issued>,
    rejected: usize,
    serial: u64,
    /// Sign with the untrusted self-signed `rogue` certificate instead of the root's leaf.
    rogue: bool,
}

/// A running token server; stopped on drop.
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub realm: String,
    /// The registry's `service` (the tokens' audience).
    pub service: String,
    /// The tokens' issuer, the registry's `issuer`.
    pub issuer: String,
    /// PEM bundle with the root CA, the registry's `rootcertbundle`.
    pub root_pem: PathBuf,
    addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn openssl(args: &[&str], dir: &Path) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// `true` when the `openssl` CLI runs; under `MODELPACK_REQUIRE_INTEROP` a missing one fails.
pub fn have_openssl() -> bool {
    if Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var_os("MODELPACK_REQUIRE_INTEROP").is_none(), "interop required but no `openssl` on PATH");
    eprintln!("skipping: no openssl");
    false
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        if let (b'%', Some(Ok(v))) = (b[i], hex.map(|h| u8::from_str_radix(h, 16))) {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl TokenServer {
    /// Make the PKI in `dir` and start serving. `users`: (name, password); `grants`: the policy.
    pub fn start(dir: &Path, users: &[(&str, &str)], grants: Vec<Grant>) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("ext.cnf"),
            "[root]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n\
             [leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        // root signs leaf (the registry trusts root); rogue is a self-signed signer it does not trust.
        let certs = [
            ("root", "modelpack test token root", "root", None),
            ("leaf", "modelpack test token signer", "leaf", Some("root")),
            ("rogue", "modelpack rogue token signer", "leaf", None),
        ];
        for (serial, (name, cn, ext, ca)) in certs.into_iter().enumerate() {
            let (key, csr, pem, serial) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), (serial + 1).to_string());
            openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key], dir);
            openssl(&["req", "-new", "-key", &key, "-subj", &format!("/CN={cn}"), "-out", &csr], dir);
            let mut args = vec!["x509", "-req", "-in", &csr, "-days", "2", "-sha256", "-extfile", "ext.cnf"];
            args.extend(["-extensions", ext, "-out", &pem, "-set_serial", &serial]);
            match ca {
                Some(_) => args.extend(["-CA", "root.pem", "-CAkey", "root.key"]),
                None => args.extend(["-signkey", &key]),
            }
            openssl(&args, dir);
        }
        let signer = |name: &str| {
            let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap();
            let pem = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
            let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            (p256::ecdsa::SigningKey::from_pkcs8_pem(&key).unwrap(), der_b64)
        };
        let (key, x5c) = signer("leaf");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = "modelpack-test-registry".to_string();
        let issuer = "modelpack-test-token-issuer".to_string();
        let state = Arc::new(Mutex::new(State {
            users: users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect(),
            grants,
            lifetime: 300,
            advertised: 300,
            issued: Vec::new(),
            rejected: 0,
            serial: 0,
            rogue: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            signers: [(key, x5c), signer("rogue")],
            service: service.clone(),
            issuer: issuer.clone(),
            state: state.clone(),
        };
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = conn {
                    ctx.handle(s);
                }
            }
        });
        TokenServer {
            realm: format!("http://{addr}/token"),
            service,
            issuer,
            root_pem: dir.join("root.pem"),
            addr,
            state,
            stop,
        }
    }

    /// Tokens from now on are accepted by the registry for `lifetime` seconds after issue, and
    /// the reply says `expires_in: advertised`.
    pub fn set_lifetime(&self, lifetime: u64, advertised: u64) {
        let mut s = self.state.lock().unwrap();
        s.lifetime = lifetime;
        s.advertised = advertised;
    }

    /// Sign tokens from now on with a self-signed certificate the registry does not trust
    /// (`true`), or with the leaf its root bundle certifies (`false`).
    pub fn set_rogue(&self, rogue: bool) {
        self.state.lock().unwrap().rogue = rogue;
    }

    /// Every token issued so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Requests refused for bad credentials.
    pub fn rejected(&self) -> usize {
        self.state.lock().unwrap().rejected
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

struct Ctx {
    /// (key, base64 DER certificate): the trusted leaf, then the rogue signer.
    signers: [(p256::ecdsa::SigningKey, String); 2],
    service: String,
    issuer: String,
    state: Arc<Mutex<State>>,
}

impl Ctx {
    fn handle(&self, s: TcpStream) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut r = BufReader::new(match s.try_clone() {
            Ok(c) => c,
            Err(_) => return,
        });
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut authz = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case("authorization") {
                    authz = Some(v.trim().to_string());
                }
            }
        }
        let (status, extra, body) = self.answer(&line, &target, authz.as_deref());
        let mut w = s;
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        let _ = w.flush();
    }

    fn answer(&self, line: &str, target: &str, authz: Option<&str>) -> (&'static str, String, String) {
        let err = |code: &str, msg: &str| format!(r#"{{"errors":[{{"code":"{code}","message":"{msg}"}}]}}"#);
        if !line.starts_with("GET ") {
            return ("405 Method Not Allowed", String::new(), err("UNSUPPORTED", "GET only"));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/token" {
            return ("404 Not Found", String::new(), err("NOT_FOUND", "no such endpoint"));
        }
        let params: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (pct_decode(k), pct_decode(v))
            })
            .collect();
        if !params.iter().any(|(k, v)| k == "service" && *v == self.service) {
            return ("400 Bad Request", String::new(), err("INVALID_REQUEST", "unknown or missing service"));
        }
        let mut st = self.state.lock().unwrap();
        let user = match authz {
            None => None,
            Some(a) => {
                let ok = a
                    .strip_prefix("Basic ")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
                    .and_then(|d| String::from_utf8(d).ok())
                    .and_then(|d| d.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
                    .filter(|(u, p)| st.users.iter().any(|(uu, pp)| uu == u && pp == p));
                match ok {
                    Some((u, _)) => Some(u),
                    None => {
                        st.rejected += 1;
                        return (
                            "401 Unauthorized",
                            "WWW-Authenticate: Basic realm=\"modelpack-test-token\"\r\n".into(),
                            err("UNAUTHORIZED", "invalid username or password"),
                        );
                    }
                }
            }
        };
        let requested: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        let mut granted: Vec<(String, Vec<String>)> = Vec::new();
        for sc in &requested {
            // repository:NAME:ACTIONS (NAME has no ':' here: no host:port inside repository names).
            let mut parts = sc.splitn(3, ':');
            let (Some("repository"), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let allowed: Vec<String> = actions
                .split(',')
                .filter(|a| {
                    st.grants.iter().any(|g| {
                        g.repo == name
                            && g.actions.iter().any(|x| x == a)
                            && g.user.as_ref().is_none_or(|u| Some(u) == user.as_ref())
                    })
                })
                .map(str::to_string)
                .collect();
            if !allowed.is_empty() {
                granted.push((name.to_string(), allowed));
            }
        }
        st.serial += 1;
        let t = now();
        // exp + distribution's leeway = at least `lifetime` seconds from now (t is rounded down).
        let exp = (t + 1 + st.lifetime).saturating_sub(LEEWAY_SECS);
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": user.clone().unwrap_or_default(),
            "aud": self.service,
            "exp": exp,
            "nbf": t,
            "iat": t,
            "jti": format!("modelpack-test-{}-{}", t, st.serial),
            "access": granted.iter().map(|(n, a)| serde_json::json!({"type": "repository", "name": n, "actions": a})).collect::<Vec<_>>(),
        });
        let (key, x5c) = &self.signers[usize::from(st.rogue)];
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
        let signing_input =
            format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
        let jwt = format!("{signing_input}.{}", b64url(&sig.to_bytes()));
        let body = serde_json::json!({
            "token": jwt,
            "access_token": jwt,
            "expires_in": st.advertised,
        });
        st.issued.push(Issued { user, requested, granted });
        ("200 OK", String::new(), body.to_string())
    }
}
