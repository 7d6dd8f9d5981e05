//! The GGUF reader on arbitrary bytes: never panics; accepted tensors lie inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_format::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::parse(data) {
        for t in &f.tensors {
            let end = t.file_offset as usize + t.data.len();
            assert!(end <= data.len());
        }
        for (_, v) in &f.metadata {
            let _ = v.to_json(8);
        }
    }
});
