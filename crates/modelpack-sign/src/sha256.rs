//! SHA-256 over several independent messages at once, so one core hashes two files.
//!
//! With SHA-NI, one message's SHA-256 is bound by the latency of `sha256rnds2` (each pair of
//! rounds waits for the previous one), not by the unit's throughput: on this project's machine
//! a dependent chain of `sha256rnds2` runs about 2.5× slower per instruction than two
//! independent chains. [`compress_x2`] interleaves the rounds of two messages in one
//! instruction stream, which is how `verify` and `sign` of a multi-file package get past one
//! stream's speed per core. One message alone goes through the `sha2` crate
//! ([`sha2::compress256`], which picks SHA-NI or its software rounds at run time).
//!
//! [`Sha256State`] is the streaming front end (buffering and FIPS 180-4 padding); it feeds
//! whole blocks to either path. [`compress_scalar`] is the portable twin that defines correct
//! output for the tests. No I/O here: `digest.rs` reads the files.

/// The SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// The SHA-256 round constants (FIPS 180-4 §4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// Bytes per SHA-256 block.
pub const BLOCK: usize = 64;

/// Which code ran the two-message path: named in `verify`/`sign` reports and the benchmark so
/// figures from different machines can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShaImpl {
    /// Two messages interleaved with SHA-NI ([`compress_x2`] on x86-64 with the `sha` feature).
    ShaNiX2,
    /// One message at a time through the `sha2` crate, which itself uses SHA-NI when present.
    Sha2ShaNi,
    /// One message at a time through the `sha2` crate's portable rounds (no SHA-NI).
    Sha2Software,
}

impl ShaImpl {
    /// Stable name for reports and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            ShaImpl::ShaNiX2 => "sha-ni x2",
            ShaImpl::Sha2ShaNi => "sha-ni",
            ShaImpl::Sha2Software => "software",
        }
    }
}

/// Does this CPU have the SHA extensions (and the SSE levels their code needs)?
pub fn has_sha_ni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What file hashing uses on this machine: the interleaved kernel when the CPU has SHA-NI and
/// `MODELPACK_SIMD` does not ask for `scalar` (which keeps one message at a time in the `sha2`
/// crate, as a check on the kernel), else the `sha2` crate with its own run-time choice.
pub fn active_impl() -> ShaImpl {
    static CHOICE: std::sync::OnceLock<ShaImpl> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        let forced_scalar = std::env::var("MODELPACK_SIMD").is_ok_and(|v| v.trim().eq_ignore_ascii_case("scalar"));
        match (has_sha_ni(), forced_scalar) {
            (true, false) => ShaImpl::ShaNiX2,
            (true, true) => ShaImpl::Sha2ShaNi,
            (false, _) => ShaImpl::Sha2Software,
        }
    })
}

/// The portable compression function (FIPS 180-4 §6.2.2) over whole blocks: the reference
/// the SHA-NI kernel is tested against.
pub fn compress_scalar(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % BLOCK, 0);
    for block in blocks.chunks_exact(BLOCK) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for t in 16..64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16].wrapping_add(s0).wrapping_add(w[t - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for t in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[t]).wrapping_add(w[t]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

/// A 64-byte block as `sha2::compress256` takes it.
type Block = sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>;
const _: () = assert!(std::mem::size_of::<Block>() == BLOCK && std::mem::align_of::<Block>() == 1);

/// One message's whole blocks through the `sha2` crate (SHA-NI or software, its choice).
pub fn compress_one(state: &mut [u32; 8], blocks: &[u8]) {
    assert_eq!(blocks.len() % BLOCK, 0, "whole blocks only");
    // SAFETY: `Block` is a `repr(transparent)` wrapper of 64 bytes with alignment 1 (checked
    // above), so `blocks` is exactly `len / 64` of them; no copy of the data.
    let blocks: &[Block] = unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len() / BLOCK) };
    sha2::compress256(state, blocks);
}

/// Two messages' whole blocks, the same number of each: interleaved with SHA-NI when
/// [`active_impl`] is [`ShaImpl::ShaNiX2`], else one after the other through [`compress_one`].
pub fn compress_x2(a: &mut [u32; 8], blocks_a: &[u8], b: &mut [u32; 8], blocks_b: &[u8]) {
    assert_eq!(blocks_a.len(), blocks_b.len(), "compress_x2 needs the same number of blocks");
    assert_eq!(blocks_a.len() % BLOCK, 0);
    #[cfg(target_arch = "x86_64")]
    if active_impl() == ShaImpl::ShaNiX2 {
        // SAFETY: ShaNiX2 is chosen only when the CPU has sha, sse2, ssse3 and sse4.1; the
        // slices are equal multiples of 64 bytes (asserted above).
        unsafe { x86::compress_x2_shani(a, blocks_a, b, blocks_b) };
        return;
    }
    compress_one(a, blocks_a);
    compress_one(b, blocks_b);
}

/// Streaming SHA-256 of one message: whole blocks go to whichever compression the caller
/// picks (so two states can be advanced together by [`compress_x2`]); this type keeps the
/// partial block and the length and does the padding.
#[derive(Clone)]
pub struct Sha256State {
    h: [u32; 8],
    /// Bytes of a partial block not yet compressed.
    tail: [u8; BLOCK],
    tail_len: usize,
    /// Message length so far, in bytes.
    len: u64,
}

impl Default for Sha256State {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256State {
    /// The state before any input.
    pub const fn new() -> Self {
        Sha256State { h: H0, tail: [0; BLOCK], tail_len: 0, len: 0 }
    }

    /// Is a partial block pending? Then [`Self::whole_blocks_mut`] is unavailable: the
    /// caller must go through [`Self::update`].
    pub fn is_aligned(&self) -> bool {
        self.tail_len == 0
    }

    /// The chaining value, for a caller that compresses whole blocks itself (only while
    /// [`Self::is_aligned`]); it must then call [`Self::count`] with the bytes it compressed.
    pub fn chaining_mut(&mut self) -> &mut [u32; 8] {
        debug_assert!(self.is_aligned());
        &mut self.h
    }

    /// Record `n` bytes compressed by the caller straight into [`Self::chaining_mut`].
    pub fn count(&mut self, n: usize) {
        debug_assert!(self.is_aligned() && n.is_multiple_of(BLOCK));
        self.len += n as u64;
    }

    /// Absorb `data` of any length, one message at a time ([`compress_one`]).
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail_len > 0 {
            let take = (BLOCK - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < BLOCK {
                return;
            }
            let block = self.tail;
            compress_one(&mut self.h, &block);
            self.tail_len = 0;
        }
        let whole = data.len() / BLOCK * BLOCK;
        compress_one(&mut self.h, &data[..whole]);
        let rest = &data[whole..];
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// Pad (FIPS 180-4 §5.1.1) and return the digest.
    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 2 * BLOCK];
        pad[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        pad[self.tail_len] = 0x80;
        let total = if self.tail_len < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
        pad[total - 8..total].copy_from_slice(&bits.to_be_bytes());
        compress_one(&mut self.h, &pad[..total]);
        let mut out = [0u8; 32];
        for (o, v) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&v.to_be_bytes());
        }
        out
    }
}

/// SHA-256 of two in-memory messages at once (e.g. two memory-mapped shards): their common
/// whole-block prefix goes through [`compress_x2`] `chunk` bytes at a time (interleaved with
/// SHA-NI where [`active_impl`] says so), the rest of each through [`Sha256State::update`]. The
/// digests are those of hashing each alone. `stop` is polled between chunks; once it returns
/// true the remaining input is skipped (the caller is abandoning the digests).
pub fn digest_pair(a: &[u8], b: &[u8], chunk: usize, stop: &dyn Fn() -> bool) -> ([u8; 32], [u8; 32]) {
    let chunk = (chunk / BLOCK).max(1) * BLOCK;
    let (mut sa, mut sb) = (Sha256State::new(), Sha256State::new());
    let common = a.len().min(b.len()) / BLOCK * BLOCK;
    let mut off = 0;
    while off < common && !stop() {
        let n = chunk.min(common - off);
        compress_x2(sa.chaining_mut(), &a[off..off + n], sb.chaining_mut(), &b[off..off + n]);
        sa.count(n);
        sb.count(n);
        off += n;
    }
    for (st, m) in [(&mut sa, a), (&mut sb, b)] {
        for c in m[off..].chunks(chunk) {
            if stop() {
                break;
            }
            st.update(c);
        }
    }
    (sa.finalize(), sb.finalize())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, K};
    use std::arch::x86_64::*;

    /// Two messages' states in SHA-NI layout (ABEF, CDGH) and their four message-word groups.
    ///
    /// # Safety
    /// The CPU must have sha, sse2, ssse3 and sse4.1; `da` and `db` must be equal multiples
    /// of 64 bytes.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_x2_shani(a: &mut [u32; 8], da: &[u8], b: &mut [u32; 8], db: &[u8]) {
        debug_assert!(da.len() == db.len() && da.len().is_multiple_of(BLOCK));
        // Byte order within each 32-bit word: the message is big-endian.
        let bswap = _mm_set_epi64x(0x0c0d0e0f_08090a0bu64 as i64, 0x04050607_00010203u64 as i64);
        let (mut abef, mut cdgh) = ([_mm_setzero_si128(); 2], [_mm_setzero_si128(); 2]);
        for (i, h) in [&*a, &*b].into_iter().enumerate() {
            // SAFETY: [u32; 8] is 32 readable bytes; unaligned loads.
            let (dcba, hgfe) =
                unsafe { (_mm_loadu_si128(h.as_ptr().cast()), _mm_loadu_si128(h.as_ptr().add(4).cast())) };
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
            abef[i] = _mm_alignr_epi8(cdab, efgh, 8);
            cdgh[i] = _mm_blend_epi16(efgh, cdab, 0xF0);
        }
        let blocks = da.len() / BLOCK;
        for blk in 0..blocks {
            let (save_abef, save_cdgh) = (abef, cdgh);
            let mut w = [[_mm_setzero_si128(); 4]; 2];
            for (s, d) in [da, db].into_iter().enumerate() {
                for (g, wg) in w[s].iter_mut().enumerate() {
                    // SAFETY: blk < blocks and g < 4, so the 16 bytes lie inside `d`.
                    let p = unsafe { d.as_ptr().add(blk * BLOCK + 16 * g) };
                    *wg = _mm_shuffle_epi8(unsafe { _mm_loadu_si128(p.cast()) }, bswap);
                }
            }
            // 16 groups of 4 rounds; group g uses message words 4g..4g+4, kept in slot g % 4
            // (unrolled by four so every slot index is a constant and stays in a register).
            for q in 0..4 {
                round4::<0>(q, &mut w, &mut abef, &mut cdgh);
                round4::<1>(q, &mut w, &mut abef, &mut cdgh);
                round4::<2>(q, &mut w, &mut abef, &mut cdgh);
                round4::<3>(q, &mut w, &mut abef, &mut cdgh);
            }
            for s in 0..2 {
                abef[s] = _mm_add_epi32(abef[s], save_abef[s]);
                cdgh[s] = _mm_add_epi32(cdgh[s], save_cdgh[s]);
            }
        }
        for (i, h) in [a, b].into_iter().enumerate() {
            let feba = _mm_shuffle_epi32(abef[i], 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh[i], 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgfe = _mm_alignr_epi8(dchg, feba, 8);
            // SAFETY: [u32; 8] is 32 writable bytes; unaligned stores.
            unsafe {
                _mm_storeu_si128(h.as_mut_ptr().cast(), dcba);
                _mm_storeu_si128(h.as_mut_ptr().add(4).cast(), hgfe);
            }
        }
    }

    /// Four rounds of both messages: group `4q + S`, whose message words live in slot `S`.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn round4<const S: usize>(q: usize, w: &mut [[__m128i; 4]; 2], abef: &mut [__m128i; 2], cdgh: &mut [__m128i; 2]) {
        let g = 4 * q + S;
        // SAFETY: g < 16, so words 4g..4g+4 lie inside K.
        let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * g).cast()) };
        for s in 0..2 {
            if q > 0 {
                // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], four at a time.
                let t = _mm_sha256msg1_epu32(w[s][S], w[s][(S + 1) % 4]);
                let t = _mm_add_epi32(t, _mm_alignr_epi8(w[s][(S + 3) % 4], w[s][(S + 2) % 4], 4));
                w[s][S] = _mm_sha256msg2_epu32(t, w[s][(S + 3) % 4]);
            }
            let wk = _mm_add_epi32(w[s][S], k);
            cdgh[s] = _mm_sha256rnds2_epu32(cdgh[s], abef[s], wk);
            abef[s] = _mm_sha256rnds2_epu32(abef[s], cdgh[s], _mm_shuffle_epi32(wk, 0x0E));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::Digest as _;

    /// Pad `msg` by hand (FIPS 180-4 §5.1.1) and run `compress` over it: a digest built only
    /// from a compression function, to check [`compress_scalar`] on its own.
    fn digest_via(compress: fn(&mut [u32; 8], &[u8]), msg: &[u8]) -> [u8; 32] {
        let mut m = msg.to_vec();
        m.push(0x80);
        while m.len() % BLOCK != BLOCK - 8 {
            m.push(0);
        }
        m.extend_from_slice(&(msg.len() as u64 * 8).to_be_bytes());
        let mut h = H0;
        compress(&mut h, &m);
        let mut out = [0u8; 32];
        for (o, v) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    #[test]
    fn scalar_twin_matches_fips_180_vectors() {
        // FIPS 180-2 appendix B: one-block, two-block and million-'a' messages.
        let cases: [(&[u8], &str); 3] = [
            (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ];
        for (msg, want) in cases {
            assert_eq!(hex::encode(digest_via(compress_scalar, msg)), want, "{msg:?}");
            let mut s = Sha256State::new();
            s.update(msg);
            assert_eq!(hex::encode(s.finalize()), want, "{msg:?} streamed");
        }
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            hex::encode(digest_via(compress_scalar, &million)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    /// [`digest_pair`] equals the `sha2` crate on each message, for equal and unequal lengths
    /// around block and chunk boundaries (chunk of two blocks, so the x2 loop runs many times).
    #[test]
    fn digest_pair_equals_each_alone() {
        use sha2::Digest as _;
        let data: Vec<u8> = (0..5100u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let lens = [0usize, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000, 4999];
        for &la in &lens {
            for &lb in &lens {
                let (a, b) = (&data[..la], &data[7..7 + lb]);
                let (da, db) = digest_pair(a, b, 128, &|| false);
                assert_eq!(da.as_slice(), sha2::Sha256::digest(a).as_slice(), "{la} {lb}");
                assert_eq!(db.as_slice(), sha2::Sha256::digest(b).as_slice(), "{la} {lb}");
            }
        }
    }

    /// The interleaved SHA-NI kernel against the scalar twin and the `sha2` crate, on random
    /// chaining values and random blocks (so every lane sees unrelated data).
    fn check_x2(ha: [u32; 8], hb: [u32; 8], da: &[u8], db: &[u8]) {
        let (mut ra, mut rb) = (ha, hb);
        compress_scalar(&mut ra, da);
        compress_scalar(&mut rb, db);
        let (mut sa, mut sb) = (ha, hb);
        compress_one(&mut sa, da);
        compress_one(&mut sb, db);
        assert_eq!((sa, sb), (ra, rb), "sha2 crate vs scalar twin");
        let (mut xa, mut xb) = (ha, hb);
        compress_x2(&mut xa, da, &mut xb, db);
        assert_eq!((xa, xb), (ra, rb), "compress_x2 ({:?}) vs scalar twin", active_impl());
        #[cfg(target_arch = "x86_64")]
        if has_sha_ni() {
            let (mut ka, mut kb) = (ha, hb);
            // SAFETY: the CPU has SHA-NI; equal multiples of 64 bytes.
            unsafe { x86::compress_x2_shani(&mut ka, da, &mut kb, db) };
            assert_eq!((ka, kb), (ra, rb), "SHA-NI x2 kernel vs scalar twin");
        }
    }

    #[test]
    fn this_machine_runs_the_sha_ni_kernel_when_it_has_sha_ni() {
        // A report line, not a silent skip: on a CPU without SHA-NI the kernel is untested here.
        if !has_sha_ni() {
            eprintln!("no SHA-NI on this CPU: the x2 kernel is not exercised by these tests");
            assert_eq!(active_impl(), ShaImpl::Sha2Software);
            return;
        }
        let forced = std::env::var("MODELPACK_SIMD").is_ok_and(|v| v.trim().eq_ignore_ascii_case("scalar"));
        assert_eq!(active_impl(), if forced { ShaImpl::Sha2ShaNi } else { ShaImpl::ShaNiX2 });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn x2_kernel_is_bit_identical_to_the_scalar_twin(
            ha in prop::array::uniform8(any::<u32>()),
            hb in prop::array::uniform8(any::<u32>()),
            blocks in 0usize..40,
            seed in any::<u64>(),
        ) {
            let mut x = seed | 1;
            let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 };
            let da: Vec<u8> = (0..blocks * BLOCK).map(|_| next()).collect();
            let db: Vec<u8> = (0..blocks * BLOCK).map(|_| next()).collect();
            check_x2(ha, hb, &da, &db);
        }

        #[test]
        fn streaming_state_matches_sha2_at_any_split(
            msg in prop::collection::vec(any::<u8>(), 0..700),
            cuts in prop::collection::vec(0usize..700, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(msg.len())).collect();
            cuts.sort_unstable();
            let mut s = Sha256State::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([msg.len()]) {
                s.update(&msg[at..c]);
                at = c;
            }
            let want: [u8; 32] = sha2::Sha256::digest(&msg).into();
            prop_assert_eq!(s.finalize(), want);
            prop_assert_eq!(digest_via(compress_scalar, &msg), want);
        }
    }

    #[test]
    fn x2_edge_values() {
        // All-zero and all-one blocks and chaining values, and zero blocks (a no-op).
        for (h, byte) in [([0u32; 8], 0u8), ([u32::MAX; 8], 0xff), (H0, 0x80)] {
            for blocks in [0, 1, 2, 17] {
                let d = vec![byte; blocks * BLOCK];
                let e: Vec<u8> = d.iter().map(|b| !b).collect();
                check_x2(h, H0, &d, &e);
            }
        }
    }

    #[test]
    fn blocks_fed_outside_update_count_towards_the_length() {
        // The path digest.rs takes: whole blocks via chaining_mut/count, then the tail.
        let msg: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut a, mut b) = (Sha256State::new(), Sha256State::new());
        let whole = 15 * BLOCK;
        compress_x2(a.chaining_mut(), &msg[..whole], b.chaining_mut(), &msg[..whole]);
        a.count(whole);
        b.count(whole);
        a.update(&msg[whole..]);
        b.update(&msg[whole..999]);
        assert_eq!(a.finalize(), <[u8; 32]>::from(sha2::Sha256::digest(&msg)));
        assert_eq!(b.finalize(), <[u8; 32]>::from(sha2::Sha256::digest(&msg[..999])));
    }
}
