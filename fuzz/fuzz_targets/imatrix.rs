//! The importance matrix reader (GGUF and legacy `.dat`) on arbitrary bytes: never panics;
//! accepted entries are consistent and their weights have `columns × experts` values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_format::imatrix::Imatrix;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Imatrix::parse(data) {
        for (name, e) in &m.entries {
            assert_eq!(e.sums.len(), e.columns * e.experts);
            assert_eq!(m.weights(name).map(|w| w.len()), Some(e.sums.len()));
        }
    }
});
