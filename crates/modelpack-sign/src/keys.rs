//! ECDSA keys: P-256 (default) and P-384, read from PEM (PKCS#8 plain or encrypted, SEC1;
//! SPKI for public keys) and written as PKCS#8 / SPKI PEM.
//!
//! The curve of the key alone decides the signature algorithm (P-256 → ECDSA/SHA-256,
//! P-384 → ECDSA/SHA-384): nothing in a bundle can select another one.

use crate::SignError;
use base64::Engine as _;
use pkcs8::der::asn1::ObjectIdentifier;
use pkcs8::der::Decode as _;
use pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use sha2::Digest as _;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");

/// PBKDF2 rounds for keys `keygen --password-file` encrypts (OWASP 2023 figure for
/// PBKDF2-HMAC-SHA256; about a third of a second per sign on this class of machine).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// The elliptic curves we sign with. Each implies its hash (no algorithm negotiation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Curve {
    /// NIST P-256 (secp256r1) with SHA-256: the default, what most verifiers expect.
    #[default]
    P256,
    /// NIST P-384 (secp384r1) with SHA-384.
    P384,
}

impl Curve {
    /// The name used on the command line and in JSON reports (`p256`, `p384`).
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::P384 => "p384",
        }
    }
}

impl std::fmt::Display for Curve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Curve {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, SignError> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "secp256r1" | "prime256v1" => Ok(Curve::P256),
            "p384" | "p-384" | "secp384r1" => Ok(Curve::P384),
            _ => Err(SignError::Key(format!("unsupported curve {s:?} (use p256 or p384)"))),
        }
    }
}

enum SecretInner {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// An ECDSA private key. `Debug` shows only the curve, never key material.
pub struct PrivateKey(SecretInner);

#[derive(Clone, PartialEq, Eq)]
enum PublicInner {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// An ECDSA public key, used to verify bundles and to compute the bundle's key hint.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(PublicInner);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.curve())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}, hint {})", self.curve(), self.hint())
    }
}

/// One `-----BEGIN X-----` block of a PEM file.
pub(crate) struct PemBlock {
    pub(crate) label: String,
    /// RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, ...) were present: legacy encryption.
    has_headers: bool,
    pub(crate) der: Vec<u8>,
}

/// Split PEM text into blocks. Text outside blocks is ignored (OpenSSL allows comments).
pub(crate) fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, SignError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut has_headers = false;
        let mut closed = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                closed = true;
                break;
            }
            if l.contains(':') {
                has_headers = true;
                continue;
            }
            body.push_str(l);
        }
        if !closed {
            return Err(SignError::Key(format!("PEM block {label:?} has no END line")));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| SignError::Key(format!("PEM block {label:?}: bad base64: {e}")))?;
        blocks.push(PemBlock { label: label.to_string(), has_headers, der });
    }
    Ok(blocks)
}

/// Name an algorithm / curve we do not support, for error messages.
fn unsupported_algorithm(alg: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> SignError {
    let what = if alg == OID_RSA || alg == OID_RSA_PSS {
        "RSA key".to_string()
    } else if alg == OID_ED25519 {
        "Ed25519 key".to_string()
    } else if alg == OID_ED448 {
        "Ed448 key".to_string()
    } else if alg == OID_DSA {
        "DSA key".to_string()
    } else if alg == OID_EC_PUBLIC_KEY {
        match curve {
            Some(c) if c == OID_P521 => "EC key on curve P-521".to_string(),
            Some(c) if c == OID_SECP256K1 => "EC key on curve secp256k1".to_string(),
            Some(c) => format!("EC key on curve {c}"),
            None => "EC key without named curve".to_string(),
        }
    } else {
        format!("key of algorithm {alg}")
    };
    SignError::Key(format!("{what} not supported (only ECDSA P-256 and P-384)"))
}

fn curve_of_oid(alg: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> Result<Curve, SignError> {
    match (alg == OID_EC_PUBLIC_KEY, curve) {
        (true, Some(c)) if c == OID_P256 => Ok(Curve::P256),
        (true, Some(c)) if c == OID_P384 => Ok(Curve::P384),
        _ => Err(unsupported_algorithm(alg, curve)),
    }
}

fn der_err(what: &str) -> impl Fn(String) -> SignError + '_ {
    move |e| SignError::Key(format!("invalid {what}: {e}"))
}

impl PrivateKey {
    /// Read a private key from PEM text: PKCS#8 (`PRIVATE KEY`), encrypted PKCS#8
    /// (`ENCRYPTED PRIVATE KEY`, needs `password`) or SEC1 (`EC PRIVATE KEY`, optionally after
    /// an `EC PARAMETERS` block as `openssl ecparam -genkey` writes). Errors say what was found
    /// instead (an RSA key, a public key, a legacy-encrypted SEC1 key, ...).
    pub fn from_pem(pem: &str, password: Option<&[u8]>) -> Result<Self, SignError> {
        let blocks = pem_blocks(pem)?;
        let Some(block) = blocks.into_iter().find(|b| b.label != "EC PARAMETERS") else {
            return Err(SignError::Key("no PEM private key block found".into()));
        };
        match block.label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&block.der),
            "ENCRYPTED PRIVATE KEY" => {
                let password = password.ok_or(SignError::KeyNeedsPassword)?;
                let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&block.der)
                    .map_err(|e| der_err("encrypted PKCS#8 key")(e.to_string()))?;
                let doc = info
                    .decrypt(password)
                    .map_err(|e| SignError::Key(format!("cannot decrypt private key (wrong password?): {e}")))?;
                Self::from_pkcs8_der(doc.as_bytes())
            }
            "EC PRIVATE KEY" if block.has_headers => Err(SignError::Key(
                "legacy OpenSSL-encrypted SEC1 key not supported; convert it with \
                 `openssl pkcs8 -topk8 -in KEY -out KEY.p8` (encrypted PKCS#8 is supported)"
                    .into(),
            )),
            "EC PRIVATE KEY" => Self::from_sec1_der(&block.der),
            "RSA PRIVATE KEY" => Err(SignError::Key("RSA key not supported (only ECDSA P-256 and P-384)".into())),
            "OPENSSH PRIVATE KEY" => Err(SignError::Key(
                "OpenSSH private key format not supported; use a PEM PKCS#8 or SEC1 ECDSA key".into(),
            )),
            "PUBLIC KEY" => Err(SignError::Key("found a public key where a private key is expected".into())),
            other => Err(SignError::Key(format!("unsupported PEM block {other:?} (expected a private key)"))),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignError> {
        let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| der_err("PKCS#8 key")(e.to_string()))?;
        let curve = curve_of_oid(info.algorithm.oid, info.algorithm.parameters_oid().ok())?;
        let inner = match curve {
            Curve::P256 => SecretInner::P256(
                p256::SecretKey::from_pkcs8_der(der).map_err(|e| der_err("P-256 PKCS#8 key")(e.to_string()))?.into(),
            ),
            Curve::P384 => SecretInner::P384(
                p384::SecretKey::from_pkcs8_der(der).map_err(|e| der_err("P-384 PKCS#8 key")(e.to_string()))?.into(),
            ),
        };
        Ok(PrivateKey(inner))
    }

    fn from_sec1_der(der: &[u8]) -> Result<Self, SignError> {
        let key = sec1::EcPrivateKey::from_der(der).map_err(|e| der_err("SEC1 key")(e.to_string()))?;
        let curve = match key.parameters.and_then(|p| p.named_curve()) {
            Some(oid) => curve_of_oid(OID_EC_PUBLIC_KEY, Some(oid))?,
            // No parameters: the scalar length is the only hint.
            None => match key.private_key.len() {
                32 => Curve::P256,
                48 => Curve::P384,
                n => return Err(SignError::Key(format!("SEC1 key without curve and {n}-byte scalar not supported"))),
            },
        };
        let inner = match curve {
            Curve::P256 => SecretInner::P256(
                p256::SecretKey::from_sec1_der(der).map_err(|e| der_err("P-256 SEC1 key")(e.to_string()))?.into(),
            ),
            Curve::P384 => SecretInner::P384(
                p384::SecretKey::from_sec1_der(der).map_err(|e| der_err("P-384 SEC1 key")(e.to_string()))?.into(),
            ),
        };
        Ok(PrivateKey(inner))
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate(curve: Curve) -> Self {
        let mut rng = rand_core::OsRng;
        PrivateKey(match curve {
            Curve::P256 => SecretInner::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            Curve::P384 => SecretInner::P384(p384::ecdsa::SigningKey::random(&mut rng)),
        })
    }

    /// The key as unencrypted PKCS#8 PEM (LF line endings), what `keygen` writes with mode 0600.
    pub fn to_pkcs8_pem(&self) -> String {
        let lf = pkcs8::LineEnding::LF;
        let pem = match &self.0 {
            SecretInner::P256(k) => p256::SecretKey::from(k).to_pkcs8_pem(lf),
            SecretInner::P384(k) => p384::SecretKey::from(k).to_pkcs8_pem(lf),
        };
        // Encoding a valid in-memory key cannot fail.
        pem.map(|z| z.to_string()).unwrap_or_default()
    }

    /// The key as encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`): PBES2 with
    /// PBKDF2-HMAC-SHA256 ([`PBKDF2_ITERATIONS`] rounds, random 16-byte salt) and AES-256-CBC,
    /// the scheme `openssl pkcs8 -topk8 -v2 aes256` writes and every PKCS#8 reader (OpenSSL,
    /// Python `cryptography`, hence `model_signing sign key --password`) understands. Chosen over
    /// the crate's scrypt default for that reason.
    pub fn to_encrypted_pkcs8_pem(&self, password: &[u8]) -> Result<String, SignError> {
        use rand_core::RngCore as _;
        let mut salt = [0u8; 16];
        let mut iv = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut salt);
        rand_core::OsRng.fill_bytes(&mut iv);
        let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
            .map_err(|e| SignError::Key(format!("cannot set up key encryption: {e}")))?;
        let der = match &self.0 {
            SecretInner::P256(k) => p256::SecretKey::from(k).to_pkcs8_der(),
            SecretInner::P384(k) => p384::SecretKey::from(k).to_pkcs8_der(),
        }
        .map_err(|e| SignError::Key(format!("cannot encode key: {e}")))?;
        let info = pkcs8::PrivateKeyInfo::from_der(der.as_bytes())
            .map_err(|e| SignError::Key(format!("cannot encode key: {e}")))?;
        let enc = info
            .encrypt_with_params(params, password)
            .map_err(|e| SignError::Key(format!("cannot encrypt key: {e}")))?;
        enc.to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| SignError::Key(format!("cannot encode key: {e}")))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(match &self.0 {
            SecretInner::P256(k) => PublicInner::P256(*k.verifying_key()),
            SecretInner::P384(k) => PublicInner::P384(*k.verifying_key()),
        })
    }

    /// The curve, which fixes the signature hash.
    pub fn curve(&self) -> Curve {
        match &self.0 {
            SecretInner::P256(_) => Curve::P256,
            SecretInner::P384(_) => Curve::P384,
        }
    }

    /// Deterministic (RFC 6979) ECDSA signature over `msg`, ASN.1 DER encoded. Deterministic
    /// so the same package and key always give the same `model.sig` bytes.
    pub fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        use ecdsa::signature::Signer as _;
        match &self.0 {
            SecretInner::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
            SecretInner::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

impl PublicKey {
    /// Read an SPKI public key (`-----BEGIN PUBLIC KEY-----`). A private key or certificate
    /// is refused with a message saying so.
    pub fn from_pem(pem: &str) -> Result<Self, SignError> {
        let blocks = pem_blocks(pem)?;
        let Some(block) = blocks.into_iter().next() else {
            return Err(SignError::Key("no PEM public key block found".into()));
        };
        match block.label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&block.der),
            "RSA PUBLIC KEY" => Err(SignError::Key("RSA key not supported (only ECDSA P-256 and P-384)".into())),
            "CERTIFICATE" => Err(SignError::Key(
                "found an X.509 certificate where a public key is expected; verify a certificate-signed \
                 package with --cert-chain ROOTS.pem instead of --key"
                    .into(),
            )),
            l if l.contains("PRIVATE KEY") || l == "EC PARAMETERS" => {
                Err(SignError::Key("found a private key where a public key is expected (use the .pub file)".into()))
            }
            other => Err(SignError::Key(format!("unsupported PEM block {other:?} (expected PUBLIC KEY)"))),
        }
    }

    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, SignError> {
        let info = pkcs8::spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| der_err("SPKI public key")(e.to_string()))?;
        let curve = curve_of_oid(info.algorithm.oid, info.algorithm.parameters_oid().ok())?;
        Ok(PublicKey(match curve {
            Curve::P256 => PublicInner::P256(
                p256::PublicKey::from_public_key_der(der)
                    .map_err(|e| der_err("P-256 public key")(e.to_string()))?
                    .into(),
            ),
            Curve::P384 => PublicInner::P384(
                p384::PublicKey::from_public_key_der(der)
                    .map_err(|e| der_err("P-384 public key")(e.to_string()))?
                    .into(),
            ),
        }))
    }

    /// SPKI PEM with LF line endings and the uncompressed point: the exact text OpenSSL and
    /// Python `cryptography` write, which matters because the key hint hashes this text.
    pub fn to_pem(&self) -> String {
        let lf = pkcs8::LineEnding::LF;
        let pem = match &self.0 {
            PublicInner::P256(k) => p256::PublicKey::from(k).to_public_key_pem(lf),
            PublicInner::P384(k) => p384::PublicKey::from(k).to_public_key_pem(lf),
        };
        pem.unwrap_or_default()
    }

    /// The bundle's `publicKey.hint`: lowercase hex SHA-256 of [`PublicKey::to_pem`], as
    /// `model_signing` computes it. Lets a verifier say "signed by another key" up front.
    pub fn hint(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.to_pem().as_bytes()))
    }

    /// The curve, which fixes the signature hash.
    pub fn curve(&self) -> Curve {
        match &self.0 {
            PublicInner::P256(_) => Curve::P256,
            PublicInner::P384(_) => Curve::P384,
        }
    }

    /// Check a DER ECDSA signature over an already computed digest (certificate signatures,
    /// whose hash the certificate names and may differ from the curve's own).
    pub fn verify_prehash_der(&self, digest: &[u8], sig_der: &[u8]) -> bool {
        use ecdsa::signature::hazmat::PrehashVerifier as _;
        match &self.0 {
            PublicInner::P256(k) => {
                p256::ecdsa::Signature::from_der(sig_der).map(|s| k.verify_prehash(digest, &s).is_ok()).unwrap_or(false)
            }
            PublicInner::P384(k) => {
                p384::ecdsa::Signature::from_der(sig_der).map(|s| k.verify_prehash(digest, &s).is_ok()).unwrap_or(false)
            }
        }
    }

    /// Check a DER ECDSA signature over `msg` with this key's curve and hash. Any parse or
    /// math failure is `false`: the signature bytes are untrusted input.
    pub fn verify_der(&self, msg: &[u8], sig_der: &[u8]) -> bool {
        use ecdsa::signature::Verifier as _;
        match &self.0 {
            PublicInner::P256(k) => {
                p256::ecdsa::Signature::from_der(sig_der).map(|s| k.verify(msg, &s).is_ok()).unwrap_or(false)
            }
            PublicInner::P384(k) => {
                p384::ecdsa::Signature::from_der(sig_der).map(|s| k.verify(msg, &s).is_ok()).unwrap_or(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with `openssl ecparam -name prime256v1 -genkey -noout` and converted with
    // `openssl pkcs8 -topk8 -nocrypt` / `openssl ec -pubout`; the hint was computed with
    // `sha256sum` of the .pub file (independent of this code).
    const SEC1_P256: &str = include_str!("../../../fixtures/keys/p256-sec1.pem");
    const PKCS8_P256: &str = include_str!("../../../fixtures/keys/p256-pkcs8.pem");
    const PUB_P256: &str = include_str!("../../../fixtures/keys/p256.pub");
    const HINT_P256: &str = include_str!("../../../fixtures/keys/p256.pub.sha256");
    const ENC_P384: &str = include_str!("../../../fixtures/keys/p384-enc.pem");
    const PUB_P384: &str = include_str!("../../../fixtures/keys/p384.pub");
    const RSA: &str = include_str!("../../../fixtures/keys/rsa.pem");

    #[test]
    fn sec1_and_pkcs8_give_the_same_key_and_openssl_hint() {
        let a = PrivateKey::from_pem(SEC1_P256, None).unwrap();
        let b = PrivateKey::from_pem(PKCS8_P256, None).unwrap();
        assert_eq!(a.public(), b.public());
        assert_eq!(a.public().to_pem(), PUB_P256);
        assert_eq!(a.public().hint(), HINT_P256.split_whitespace().next().unwrap());
        assert_eq!(PublicKey::from_pem(PUB_P256).unwrap(), a.public());
    }

    #[test]
    fn encrypted_pkcs8_needs_the_right_password() {
        assert!(matches!(PrivateKey::from_pem(ENC_P384, None), Err(SignError::KeyNeedsPassword)));
        let e = PrivateKey::from_pem(ENC_P384, Some(b"wrong")).unwrap_err();
        assert!(e.to_string().contains("decrypt"), "{e}");
        let k = PrivateKey::from_pem(ENC_P384, Some(b"s3cret")).unwrap();
        assert_eq!(k.curve(), Curve::P384);
        assert_eq!(k.public().to_pem(), PUB_P384);
    }

    #[test]
    fn wrong_kinds_are_named() {
        let e = PrivateKey::from_pem(RSA, None).unwrap_err().to_string();
        assert!(e.contains("RSA key not supported"), "{e}");
        let e = PrivateKey::from_pem(PUB_P256, None).unwrap_err().to_string();
        assert!(e.contains("public key"), "{e}");
        let e = PublicKey::from_pem(PKCS8_P256).unwrap_err().to_string();
        assert!(e.contains("private key"), "{e}");
        let e = PrivateKey::from_pem("hello", None).unwrap_err().to_string();
        assert!(e.contains("no PEM"), "{e}");
    }

    #[test]
    fn signatures_are_deterministic_and_curve_bound() {
        for curve in [Curve::P256, Curve::P384] {
            let k = PrivateKey::generate(curve);
            let s1 = k.sign_der(b"payload");
            assert_eq!(s1, k.sign_der(b"payload"));
            assert!(k.public().verify_der(b"payload", &s1));
            assert!(!k.public().verify_der(b"payloaD", &s1));
            assert!(!k.public().verify_der(b"payload", &s1[1..]));
            let pem = k.to_pkcs8_pem();
            let back = PrivateKey::from_pem(&pem, None).unwrap();
            assert_eq!(back.public(), k.public());
        }
        let a = PrivateKey::generate(Curve::P256);
        let b = PrivateKey::generate(Curve::P384);
        assert!(!b.public().verify_der(b"m", &a.sign_der(b"m")));
    }
}
