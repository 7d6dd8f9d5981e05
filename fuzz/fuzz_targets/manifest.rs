//! The `modelpack.json` manifest parser on arbitrary bytes: never panics, and an accepted
//! manifest serialises and parses back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_sign::manifest::PackageManifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PackageManifest::from_json(data) {
        let again = PackageManifest::from_json(m.to_json().as_bytes()).expect("our own output parses");
        assert_eq!(again.to_json(), m.to_json());
    }
});
