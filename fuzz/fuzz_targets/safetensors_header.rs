//! The safetensors header validator on arbitrary bytes: never panics, and whatever it accepts
//! has every tensor inside the file, tiled without holes or overlaps.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_checkpoint::{validate_safetensors, Limits};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // Small caps too, so the cap paths are exercised as well as the defaults.
    let small = Limits { max_tensors: 4, max_header_bytes: 512, max_tensor_elements: 64, ..Limits::default() };
    for limits in [Limits::default(), small] {
        if let Ok(tensors) = validate_safetensors(Path::new("fuzz.safetensors"), data, &limits) {
            for t in &tensors {
                assert!(t.1.start <= t.1.end && t.1.end <= data.len());
            }
            assert!(tensors.len() <= limits.max_tensors);
        }
    }
});
