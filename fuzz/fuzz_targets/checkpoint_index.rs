//! A sharded checkpoint directory: the input is split into `model.safetensors.index.json`, a
//! shard `a.safetensors` and `config.json` (separator `\n--8<--\n`), written to a scratch
//! directory and opened. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_checkpoint::{Checkpoint, INDEX_FILE};
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("modelpack-fuzz-index-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let sep = b"\n--8<--\n";
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        parts.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    parts.push(rest);
    let dir = scratch();
    let names = [INDEX_FILE, "a.safetensors", "config.json"];
    for (i, name) in names.iter().enumerate() {
        let p = dir.join(name);
        match parts.get(i) {
            Some(bytes) => std::fs::write(&p, bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    if let Ok(ck) = Checkpoint::open(dir) {
        for t in ck.tensors() {
            assert_eq!(t.nbytes(), t.data.len());
        }
        ck.snapshot().verify_unchanged().unwrap();
    }
});
