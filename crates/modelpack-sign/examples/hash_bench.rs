//! Throughput of `hash_package` (what `verify` spends its time on) with 1 and 2 rayon threads.
//!
//! `cargo run --release -p modelpack-sign --example hash_bench -- DIR [FILES] [MIB_EACH]`
//! creates DIR with FILES files of MIB_EACH MiB (default 2 × 1024) unless they exist, warms
//! the page cache, then reports the best of three runs per thread count. Not a test: numbers
//! depend on the machine and its load.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map(String::as_str).unwrap_or("/tmp/modelpack-hash-bench"));
    let files: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let mib: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1024);
    std::fs::create_dir_all(dir).expect("create bench dir");
    let mut block = vec![0u8; 1 << 20];
    for i in 0..files {
        let p = dir.join(format!("shard-{i:02}.bin"));
        if std::fs::metadata(&p).map(|m| m.len() as usize == mib << 20).unwrap_or(false) {
            continue;
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).expect("create file"));
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
        for _ in 0..mib {
            for c in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).expect("write");
        }
    }
    let total = (files * (mib << 20)) as f64;
    let _ = modelpack_sign::hash_package(dir).expect("warm-up hash");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let (best, cpu) = (0..3)
            .map(|_| {
                let (t, c) = (Instant::now(), cpu_seconds());
                let d = pool.install(|| modelpack_sign::hash_package(dir)).expect("hash");
                assert_eq!(d.len(), files);
                (t.elapsed().as_secs_f64(), cpu_seconds() - c)
            })
            .fold((f64::INFINITY, f64::INFINITY), |a, b| if b.0 < a.0 { b } else { a });
        // On a shared machine wall time includes waiting for a core; bytes per CPU-second
        // is the per-core rate the hashing itself achieves.
        println!(
            "hash_package {files} x {mib} MiB, {threads} thread(s): {best:.3} s wall, {:.2} GB/s; \
             {cpu:.3} CPU-s, {:.2} GB/s per busy core",
            total / best / 1e9,
            total / cpu / 1e9
        );
    }
}

/// User + system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other invariants.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
