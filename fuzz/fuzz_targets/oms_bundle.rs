//! OMS bundle verification: the input is either a whole `model.sig` (first byte even), or an
//! in-toto statement that we wrap in a DSSE envelope and sign with the test key (odd), so the
//! statement parser behind the signature check is reached. Never panics; a passing verify
//! means the statement really lists the package's one file.
#![no_main]
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use modelpack_sign::{pae, verify_package, PrivateKey, PublicKey};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    key: PrivateKey,
    public: PublicKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("modelpack-fuzz-oms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), b"hello\n").unwrap();
        let key = PrivateKey::from_pem(include_str!("../../fixtures/keys/p256-pkcs8.pem"), None).unwrap();
        let public = PublicKey::from_pem(include_str!("../../fixtures/keys/p256.pub")).unwrap();
        Fixture { dir, key, public }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, body)) = data.split_first() else { return };
    let sig_file = if mode % 2 == 0 {
        body.to_vec()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig = f.key.sign_der(&pae(body));
        serde_json::to_vec(&serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": f.public.hint()}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": b64.encode(body),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": [{"sig": b64.encode(sig), "keyid": ""}]
            }
        }))
        .unwrap()
    };
    std::fs::write(f.dir.join("model.sig"), &sig_file).unwrap();
    if let Ok(report) = verify_package(&f.dir, &f.public) {
        if report.passed() {
            assert!(report.files.iter().any(|c| c.path == "a.txt"));
        }
    }
});
