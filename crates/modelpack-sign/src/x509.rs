//! X.509 certificates for signing with a key a CA certified (`model_signing sign certificate`).
//!
//! Parsing is RustCrypto `x509-cert` (strict DER); signatures are checked with the `p256` /
//! `p384` ECDSA code the key method already uses. What [`verify_chain`] checks, and where it is
//! stricter than `model_signing` 1.1.1 (which delegates to OpenSSL's `X509_verify_cert` with no
//! purpose set, at the leaf's `notBefore` time, then accepts keyUsage digitalSignature *or* the
//! codeSigning EKU):
//!
//! * every certificate of the path is valid at the verification time (not at the leaf's
//!   `notBefore`: an expired certificate fails here even when `model_signing` accepts it);
//! * the leaf has keyUsage with digitalSignature **and** an extendedKeyUsage with codeSigning
//!   (`model_signing` accepts either one);
//! * every issuer on the path is a CA (basicConstraints `cA`), has keyCertSign when it has a
//!   keyUsage, and its pathLenConstraint holds;
//! * every signature on the path verifies (ECDSA with SHA-256/384/512, P-256/P-384 keys);
//! * no certificate has a critical extension we do not understand;
//! * the path ends at a self-signed certificate the verifier passed (other certificates the
//!   verifier passes only serve as intermediates, as in OpenSSL), is at most [`MAX_PATH_LEN`] long,
//!   and path building gives up after [`MAX_SIGNATURE_CHECKS`] signature checks.

use crate::keys::PublicKey;
use der::asn1::ObjectIdentifier;
use der::{Decode as _, Encode as _};
use sha2::Digest as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

/// Longest accepted path, leaf and trust anchor included.
pub const MAX_PATH_LEN: usize = 8;
/// Most certificates a bundle may carry (leaf plus intermediates).
pub const MAX_BUNDLE_CERTS: usize = 32;
/// Most signature checks one path search may do: bounds the work hostile name collisions cause.
pub const MAX_SIGNATURE_CHECKS: usize = 256;
/// Largest certificate we parse (real ones are 0.5-3 KiB).
pub const MAX_CERT_BYTES: usize = 64 << 10;

const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_KP_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const OID_AT_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_CE_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_CE_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_CE_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");

/// Why a certificate could not be used or a chain did not verify. [`CertError::is_input`]
/// separates unusable input (exit 2) from a verification failure (exit 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not PEM / DER we can parse as an X.509 certificate.
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    Parse {
        /// Which file or bundle entry.
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// A PEM file with no `CERTIFICATE` block.
    #[error("{what}: no PEM CERTIFICATE block found")]
    NoCertificates {
        /// Which file.
        what: String,
    },
    /// A certificate whose public key we cannot use (RSA, Ed25519, P-521, ...).
    #[error("certificate {subject:?}: {reason}")]
    UnsupportedKey {
        /// The certificate's subject.
        subject: String,
        /// What key it has.
        reason: String,
    },
    /// A certificate signed with an algorithm we do not implement.
    #[error("certificate {subject:?} is signed with algorithm {oid}, not supported (only ECDSA with SHA-256/384/512)")]
    UnsupportedSignature {
        /// The certificate's subject.
        subject: String,
        /// The signature algorithm.
        oid: String,
    },
    /// The certificate's key is not the key the package is signed with.
    #[error(
        "certificate {subject:?} holds another public key than the private key (key hint {cert_hint} vs {key_hint})"
    )]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
        /// Hint of the certificate's key.
        cert_hint: String,
        /// Hint of the private key's public half.
        key_hint: String,
    },
    /// Past `notAfter` at the verification time.
    #[error("certificate {subject:?} expired at {not_after} (verification time {at})")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// Its notAfter (RFC 3339).
        not_after: String,
        /// The verification time (RFC 3339).
        at: String,
    },
    /// Before `notBefore` at the verification time.
    #[error("certificate {subject:?} is not valid before {not_before} (verification time {at})")]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its notBefore (RFC 3339).
        not_before: String,
        /// The verification time (RFC 3339).
        at: String,
    },
    /// No path from the leaf to any given trust anchor: signed by a foreign root, or an
    /// intermediate is missing.
    #[error("no path to a trusted root: {detail}")]
    ForeignRoot {
        /// Where path building stopped.
        detail: String,
    },
    /// The leaf may not sign: no keyUsage digitalSignature.
    #[error("signing certificate {subject:?} lacks keyUsage digitalSignature")]
    KeyUsage {
        /// The leaf's subject.
        subject: String,
    },
    /// The leaf has no extendedKeyUsage codeSigning.
    #[error("signing certificate {subject:?} lacks extendedKeyUsage codeSigning (has: {found})")]
    BadEku {
        /// The leaf's subject.
        subject: String,
        /// The EKUs it has.
        found: String,
    },
    /// An issuer on the path is not allowed to issue certificates.
    #[error("certificate {subject:?} issued another certificate but is not a CA: {reason}")]
    NotCa {
        /// The issuer's subject.
        subject: String,
        /// basicConstraints / keyUsage / pathLen detail.
        reason: String,
    },
    /// A critical extension we do not process (RFC 5280: the certificate must be rejected).
    #[error("certificate {subject:?} has an unsupported critical extension {oid}")]
    CriticalExtension {
        /// The certificate's subject.
        subject: String,
        /// The extension.
        oid: String,
    },
    /// An extension we need is malformed or repeated.
    #[error("certificate {subject:?}: bad {ext} extension: {reason}")]
    BadExtension {
        /// The certificate's subject.
        subject: String,
        /// Which extension.
        ext: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The certificates form a loop or a path longer than allowed.
    #[error("certificate chain {reason}")]
    ChainTooLong {
        /// Loop, length or work limit.
        reason: String,
    },
    /// `--cert-identity` does not match the leaf.
    #[error("signer identity mismatch: expected {expected:?}, certificate has {found:?}")]
    Identity {
        /// What the caller pinned.
        expected: String,
        /// SAN emails/URIs and subject CN of the leaf.
        found: Vec<String>,
    },
}

impl CertError {
    /// True for input we cannot use at all (exit 2); false for a chain that did not verify
    /// (exit 1).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            CertError::Parse { .. }
                | CertError::NoCertificates { .. }
                | CertError::UnsupportedKey { .. }
                | CertError::UnsupportedSignature { .. }
                | CertError::KeyMismatch { .. }
        )
    }
}

/// One parsed certificate with its DER bytes.
#[derive(Clone)]
pub struct Cert {
    der: Vec<u8>,
    cert: x509_cert::Certificate,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cert({})", self.subject())
    }
}

fn rfc3339(t: Duration) -> String {
    x509_cert::der::DateTime::from_unix_duration(t)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| format!("{}s", t.as_secs()))
}

impl Cert {
    /// Parse one DER certificate; `what` names it in errors.
    pub fn from_der(der: &[u8], what: &str) -> Result<Self, CertError> {
        if der.len() > MAX_CERT_BYTES {
            return Err(CertError::Parse {
                what: what.into(),
                reason: format!("{} bytes is over the limit of {MAX_CERT_BYTES}", der.len()),
            });
        }
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| CertError::Parse { what: what.into(), reason: e.to_string() })?;
        Ok(Cert { der: der.to_vec(), cert })
    }

    /// Every `CERTIFICATE` block of a PEM file, in order. Other PEM blocks (a private key
    /// pasted in the same file) and text between blocks are ignored; none at all is an error.
    pub fn from_pem(text: &[u8], what: &str) -> Result<Vec<Self>, CertError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| CertError::Parse { what: what.into(), reason: "PEM file is not UTF-8 text".into() })?;
        let mut out = Vec::new();
        for block in
            crate::keys::pem_blocks(text).map_err(|e| CertError::Parse { what: what.into(), reason: e.to_string() })?
        {
            if block.label == "CERTIFICATE" {
                let n = out.len() + 1;
                out.push(Self::from_der(&block.der, &format!("{what} (certificate {n})"))?);
            }
        }
        if out.is_empty() {
            return Err(CertError::NoCertificates { what: what.into() });
        }
        Ok(out)
    }

    /// The DER bytes (what the bundle's `rawBytes` carries).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Subject as an RFC 4514 string (`CN=release-bot,O=Example`).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Issuer as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    /// Lowercase hex SHA-256 of the DER: the fingerprint `openssl x509 -fingerprint -sha256` shows.
    pub fn fingerprint(&self) -> String {
        hex::encode(sha2::Sha256::digest(&self.der))
    }

    /// The certified public key; RSA, Ed25519 and curves other than P-256/P-384 are
    /// [`CertError::UnsupportedKey`].
    pub fn public_key(&self) -> Result<PublicKey, CertError> {
        let spki = self
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| CertError::Parse { what: self.subject(), reason: e.to_string() })?;
        PublicKey::from_spki_der(&spki)
            .map_err(|e| CertError::UnsupportedKey { subject: self.subject(), reason: e.to_string() })
    }

    /// The signer identities the leaf names: SAN emails and URIs (in order), then the
    /// subject common names. `--cert-identity` must equal one of them.
    pub fn identities(&self) -> Vec<String> {
        let mut ids = Vec::new();
        if let Ok(Some((_, san))) = self.cert.tbs_certificate.get::<SubjectAltName>() {
            for n in &san.0 {
                match n {
                    GeneralName::Rfc822Name(s) => ids.push(format!("email:{}", s.as_str())),
                    GeneralName::UniformResourceIdentifier(s) => ids.push(format!("uri:{}", s.as_str())),
                    _ => {}
                }
            }
        }
        for rdn in &self.cert.tbs_certificate.subject.0 {
            for atv in rdn.0.iter() {
                if atv.oid == OID_AT_CN {
                    if let Some(s) = directory_string(&atv.value) {
                        ids.push(format!("cn:{s}"));
                    }
                }
            }
        }
        ids
    }

    fn not_before(&self) -> Duration {
        self.cert.tbs_certificate.validity.not_before.to_unix_duration()
    }

    fn not_after(&self) -> Duration {
        self.cert.tbs_certificate.validity.not_after.to_unix_duration()
    }

    fn check_time(&self, at: Duration) -> Result<(), CertError> {
        if at < self.not_before() {
            return Err(CertError::NotYetValid {
                subject: self.subject(),
                not_before: rfc3339(self.not_before()),
                at: rfc3339(at),
            });
        }
        if at > self.not_after() {
            return Err(CertError::Expired {
                subject: self.subject(),
                not_after: rfc3339(self.not_after()),
                at: rfc3339(at),
            });
        }
        Ok(())
    }

    fn ext<'a, T: der::Decode<'a> + der::oid::AssociatedOid>(
        &'a self,
        name: &'static str,
    ) -> Result<Option<T>, CertError> {
        self.cert.tbs_certificate.get::<T>().map(|o| o.map(|(_, v)| v)).map_err(|e| CertError::BadExtension {
            subject: self.subject(),
            ext: name,
            reason: e.to_string(),
        })
    }

    fn check_critical(&self) -> Result<(), CertError> {
        for e in self.cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]) {
            if e.critical && ![OID_CE_KEY_USAGE, OID_CE_SAN, OID_CE_BASIC, OID_CE_EKU].contains(&e.extn_id) {
                return Err(CertError::CriticalExtension { subject: self.subject(), oid: e.extn_id.to_string() });
            }
        }
        Ok(())
    }

    /// The leaf rules: may sign (digitalSignature) and is meant for code signing.
    fn check_leaf_usage(&self) -> Result<(), CertError> {
        let ku: Option<KeyUsage> = self.ext("keyUsage")?;
        if !ku.is_some_and(|k| k.digital_signature()) {
            return Err(CertError::KeyUsage { subject: self.subject() });
        }
        let eku: Option<ExtendedKeyUsage> = self.ext("extendedKeyUsage")?;
        let ekus = eku.map(|e| e.0).unwrap_or_default();
        if !ekus.contains(&OID_KP_CODE_SIGNING) {
            let found = if ekus.is_empty() {
                "none".to_string()
            } else {
                ekus.iter().map(eku_name).collect::<Vec<_>>().join(", ")
            };
            return Err(CertError::BadEku { subject: self.subject(), found });
        }
        Ok(())
    }

    /// Issuer rules at `below` intermediates under it.
    fn check_issuer(&self, below: usize) -> Result<(), CertError> {
        let bc: Option<BasicConstraints> = self.ext("basicConstraints")?;
        let Some(bc) = bc.filter(|b| b.ca) else {
            return Err(CertError::NotCa { subject: self.subject(), reason: "basicConstraints cA is not set".into() });
        };
        if let Some(n) = bc.path_len_constraint {
            if below > usize::from(n) {
                return Err(CertError::NotCa {
                    subject: self.subject(),
                    reason: format!("pathLenConstraint {n} but {below} intermediate(s) below it"),
                });
            }
        }
        let ku: Option<KeyUsage> = self.ext("keyUsage")?;
        if ku.is_some_and(|k| !k.key_cert_sign()) {
            return Err(CertError::NotCa { subject: self.subject(), reason: "keyUsage lacks keyCertSign".into() });
        }
        Ok(())
    }

    /// Did `issuer` sign this certificate? Errors only for algorithms/keys we cannot check.
    fn signed_by(&self, issuer: &Cert) -> Result<bool, CertError> {
        let alg = &self.cert.signature_algorithm;
        if alg.oid != self.cert.tbs_certificate.signature.oid {
            return Ok(false);
        }
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| CertError::Parse { what: self.subject(), reason: e.to_string() })?;
        let digest: Vec<u8> = match alg.oid {
            o if o == OID_ECDSA_SHA256 => sha2::Sha256::digest(&tbs).to_vec(),
            o if o == OID_ECDSA_SHA384 => sha2::Sha384::digest(&tbs).to_vec(),
            o if o == OID_ECDSA_SHA512 => sha2::Sha512::digest(&tbs).to_vec(),
            o => return Err(CertError::UnsupportedSignature { subject: self.subject(), oid: o.to_string() }),
        };
        let Some(sig) = self.cert.signature.as_bytes() else { return Ok(false) };
        Ok(issuer.public_key()?.verify_prehash_der(&digest, sig))
    }

    fn same_name_as_issuer_of(&self, child: &Cert) -> bool {
        self.cert.tbs_certificate.subject == child.cert.tbs_certificate.issuer
    }

    fn self_issued(&self) -> bool {
        self.cert.tbs_certificate.subject == self.cert.tbs_certificate.issuer
    }
}

fn eku_name(o: &ObjectIdentifier) -> String {
    match o.to_string().as_str() {
        "1.3.6.1.5.5.7.3.1" => "serverAuth".into(),
        "1.3.6.1.5.5.7.3.2" => "clientAuth".into(),
        "1.3.6.1.5.5.7.3.3" => "codeSigning".into(),
        "1.3.6.1.5.5.7.3.4" => "emailProtection".into(),
        "1.3.6.1.5.5.7.3.8" => "timeStamping".into(),
        other => other.into(),
    }
}

/// A CN value as text (UTF8String, PrintableString or IA5String).
fn directory_string(v: &der::Any) -> Option<String> {
    use der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    let v = v.to_der().ok()?;
    if let Ok(s) = Utf8StringRef::from_der(&v) {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = PrintableStringRef::from_der(&v) {
        return Some(s.as_str().to_string());
    }
    Ia5StringRef::from_der(&v).ok().map(|s| s.as_str().to_string())
}

/// The checks on the signing certificate alone (key type, critical extensions, validity at
/// `time`, digitalSignature, codeSigning): what `sign` warns about before writing a bundle
/// verifiers will reject.
pub fn check_leaf(leaf: &Cert, time: SystemTime) -> Result<(), CertError> {
    leaf.public_key()?;
    leaf.check_critical()?;
    leaf.check_time(time.duration_since(UNIX_EPOCH).unwrap_or_default())?;
    leaf.check_leaf_usage()
}

/// What a verifier trusts and pins.
#[derive(Debug, Clone)]
pub struct ChainPolicy {
    /// Trusted certificates: a path must end at one of the self-signed ones (checked for
    /// validity period only); others in the list may serve as intermediates, as in OpenSSL.
    pub roots: Vec<Cert>,
    /// Pin the signer: must equal one of [`Cert::identities`] of the leaf, with or without its
    /// `email:` / `uri:` / `cn:` prefix.
    pub identity: Option<String>,
    /// Verification time (normally now).
    pub time: SystemTime,
}

/// A verified path and the signer it names.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    /// The leaf's key: the one the DSSE signature must verify with.
    pub leaf_key: PublicKey,
    /// Leaf identities ([`Cert::identities`]); the first one is the signer shown in reports.
    pub identities: Vec<String>,
    /// Subjects from the leaf to the trust anchor.
    pub subjects: Vec<String>,
    /// SHA-256 fingerprints in the same order.
    pub fingerprints: Vec<String>,
}

/// Build and check a path from `leaf` through any of `intermediates` to a trust anchor of
/// `policy` (see the module documentation for every rule). The first error that stopped the
/// deepest attempt is returned.
pub fn verify_chain(leaf: &Cert, intermediates: &[Cert], policy: &ChainPolicy) -> Result<VerifiedChain, CertError> {
    if intermediates.len() + 1 > MAX_BUNDLE_CERTS {
        return Err(CertError::ChainTooLong {
            reason: format!("has {} certificates, over the limit of {MAX_BUNDLE_CERTS}", intermediates.len() + 1),
        });
    }
    if policy.roots.is_empty() {
        return Err(CertError::ForeignRoot { detail: "no trusted root certificates given".into() });
    }
    let at = policy.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let leaf_key = leaf.public_key()?;
    check_leaf(leaf, policy.time)?;
    let identities = leaf.identities();
    if let Some(want) = &policy.identity {
        let hit = identities.iter().any(|id| {
            id == want
                || id
                    .split_once(':')
                    .is_some_and(|(kind, v)| v == want || (kind == "email" && v.eq_ignore_ascii_case(want)))
        });
        if !hit {
            return Err(CertError::Identity { expected: want.clone(), found: identities });
        }
    }
    // As OpenSSL does: only self-signed certificates given by the verifier are trust anchors;
    // other certificates in the roots file may serve as intermediates.
    let mut anchors = Vec::new();
    let mut extra: Vec<Cert> = intermediates.to_vec();
    for c in &policy.roots {
        if c.self_issued() && c.signed_by(c).unwrap_or(false) {
            anchors.push(c.clone());
        } else {
            extra.push(c.clone());
        }
    }
    if anchors.is_empty() {
        return Err(CertError::ForeignRoot {
            detail: "none of the given trusted certificates is a self-signed root (an intermediate alone cannot \
                     anchor a chain; pass the root)"
                .into(),
        });
    }
    let mut search = Search { intermediates: &extra, anchors: &anchors, at, checks: 0 };
    let mut path = vec![leaf];
    search.extend(&mut path)?;
    Ok(VerifiedChain {
        leaf_key,
        identities,
        subjects: path.iter().map(|c| c.subject()).collect(),
        fingerprints: path.iter().map(|c| c.fingerprint()).collect(),
    })
}

struct Search<'a> {
    intermediates: &'a [Cert],
    anchors: &'a [Cert],
    at: Duration,
    checks: usize,
}

impl<'a> Search<'a> {
    fn signed(&mut self, child: &Cert, issuer: &Cert) -> Result<bool, CertError> {
        self.checks += 1;
        if self.checks > MAX_SIGNATURE_CHECKS {
            return Err(CertError::ChainTooLong {
                reason: format!("search gave up after {MAX_SIGNATURE_CHECKS} signature checks"),
            });
        }
        child.signed_by(issuer)
    }

    /// Extend `path` (leaf first) until a trust anchor signs its last certificate.
    fn extend(&mut self, path: &mut Vec<&'a Cert>) -> Result<(), CertError> {
        let cur = *path.last().unwrap_or_else(|| unreachable!("path starts with the leaf"));
        let mut err: Option<CertError> = None;
        // 1. A trust anchor issued it.
        for root in self.anchors {
            if !root.same_name_as_issuer_of(cur) {
                continue;
            }
            if !self.signed(cur, root)? {
                err = Some(CertError::ForeignRoot {
                    detail: format!(
                        "{:?} is issued by {:?} but its signature does not verify with the trusted certificate of \
                         that name (sha256 {})",
                        cur.subject(),
                        cur.issuer(),
                        root.fingerprint()
                    ),
                });
                continue;
            }
            match root.check_time(self.at) {
                Ok(()) => {
                    path.push(root);
                    return Ok(());
                }
                Err(e) => err = Some(e),
            }
        }
        // 2. An intermediate from the bundle did.
        for ca in self.intermediates {
            if !ca.same_name_as_issuer_of(cur) {
                continue;
            }
            if path.iter().any(|p| p.der == ca.der) {
                if ca.self_issued() {
                    err.get_or_insert(CertError::ForeignRoot {
                        detail: format!("the chain ends at {:?}, which is not a trusted root", ca.subject()),
                    });
                } else {
                    err = Some(CertError::ChainTooLong { reason: format!("loops back to {:?}", ca.subject()) });
                }
                continue;
            }
            if path.len() + 1 >= MAX_PATH_LEN {
                err = Some(CertError::ChainTooLong {
                    reason: format!("is longer than {MAX_PATH_LEN} certificates before reaching a trusted root"),
                });
                continue;
            }
            if !self.signed(cur, ca)? {
                err.get_or_insert(CertError::ForeignRoot {
                    detail: format!("{:?} is not signed by the bundle's {:?}", cur.subject(), ca.subject()),
                });
                continue;
            }
            let step = ca
                .check_critical()
                .and_then(|()| ca.check_time(self.at))
                .and_then(|()| ca.check_issuer(path.len() - 1));
            if let Err(e) = step {
                err = Some(e);
                continue;
            }
            path.push(ca);
            match self.extend(path) {
                Ok(()) => return Ok(()),
                Err(e @ CertError::ChainTooLong { .. }) if e.to_string().contains("gave up") => return Err(e),
                Err(e) => err = Some(e),
            }
            path.pop();
        }
        Err(err.unwrap_or_else(|| CertError::ForeignRoot {
            detail: format!(
                "{:?} is issued by {:?}, which is neither a trusted root nor in the bundle",
                cur.subject(),
                cur.issuer()
            ),
        }))
    }
}
