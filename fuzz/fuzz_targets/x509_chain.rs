//! X.509 parsing and chain building (`verify --cert-chain`): the input is a mode byte, then
//! either PEM text (mode bit 0 set) or DER certificates back to back. The first certificate is
//! the leaf, the last the trusted root, the others the bundle's intermediates; mode bit 1 pins
//! an identity. Never panics; a chain that verifies must end at the given root and name the
//! pinned identity. Seeds (corpus/x509_chain): root -> intermediate -> leaf (P-256, codeSigning,
//! SAN email) made with `openssl req -x509` / `openssl x509 -req`, as DER and PEM.
#![no_main]
use der::{Decode as _, Reader as _};
use libfuzzer_sys::fuzz_target;
use modelpack_sign::x509::{verify_chain, Cert, ChainPolicy};

/// Split `data` into consecutive DER TLVs (stops at the first that does not parse).
fn ders(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && out.len() < 40 {
        let Ok(mut r) = der::SliceReader::new(rest) else { break };
        if der::asn1::AnyRef::decode(&mut r).is_err() {
            break;
        }
        let used = u32::from(r.position()) as usize;
        out.push(rest[..used].to_vec());
        rest = &rest[used..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    let certs: Vec<Cert> = if mode & 1 == 1 {
        Cert::from_pem(body, "fuzz").unwrap_or_default()
    } else {
        ders(body).iter().filter_map(|d| Cert::from_der(d, "fuzz").ok()).collect()
    };
    for c in &certs {
        let _ = (c.subject(), c.issuer(), c.identities(), c.public_key(), c.fingerprint());
    }
    let Some((leaf, rest)) = certs.split_first() else { return };
    let Some((root, inter)) = rest.split_last() else { return };
    let identity = (mode & 2 == 2).then(|| "release@example.com".to_string());
    let policy = ChainPolicy {
        roots: vec![root.clone()],
        identity: identity.clone(),
        // 2027-01-01: inside the seeds' validity, so the fuzzer reaches the signature checks.
        time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_798_761_600),
    };
    if let Ok(v) = verify_chain(leaf, inter, &policy) {
        assert_eq!(v.fingerprints.last(), Some(&root.fingerprint()));
        assert_eq!(v.fingerprints.first(), Some(&leaf.fingerprint()));
        if let Some(id) = identity {
            assert!(v.identities.iter().any(|i| i.ends_with(&id)));
        }
    }
});
