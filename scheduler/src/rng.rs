//! The seeded generator (SplitMix64, kept in `rigwatch-common` for every simulation) and a
//! deterministic hash, so policies and the simulator are reproducible from one `u64` seed.

pub use rigwatch_common::rng::SplitMix64;

/// FNV-1a, for deterministic grouping (nodes into suppliers) independent of the std hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
