//! A small seeded pseudo-random generator (xorshift64, seed spread by a splitmix64 step) for
//! choosing kill moments: reproducible from its seed, not for anything secret.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64 state (never zero).
#[derive(Debug, Clone)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator whose whole sequence follows from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> XorShift {
        // One splitmix64 step: nearby seeds give unrelated sequences, and 0 is not stuck.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift {
            state: if z == 0 { 1 } else { z },
        }
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Uniform in `lo..=hi` (`lo` if `hi < lo`), without modulo bias.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64;
        if span == u64::MAX {
            return lo.wrapping_add(self.next_u64() as usize);
        }
        let n = span + 1;
        // The largest multiple of n that fits: draws at or above it are thrown away.
        let limit = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < limit {
                return lo + (x % n) as usize;
            }
        }
    }
}

/// A seed from the clock and the process id, for runs not given one.
pub fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_stays_in_range_and_reaches_both_ends() {
        for every in [1usize, 2, 3, 24, 100] {
            let mut r = XorShift::new(every as u64);
            let hi = 2 * every;
            let mut seen = vec![0usize; hi + 1];
            for _ in 0..20_000 {
                let v = r.between(1, hi);
                assert!((1..=hi).contains(&v), "{v} outside 1..={hi}");
                seen[v] += 1;
            }
            assert_eq!(seen[0], 0);
            // Roughly uniform: every value drawn, none more than twice its share.
            let share = 20_000 / hi;
            for (v, n) in seen.iter().enumerate().skip(1) {
                assert!(
                    *n > 0 && *n < 2 * share,
                    "{v} drawn {n} times (share {share})"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        let mut c = XorShift::new(43);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }

    #[test]
    fn degenerate_ranges() {
        let mut r = XorShift::new(7);
        assert_eq!(r.between(5, 5), 5);
        assert_eq!(r.between(5, 3), 5);
        let _ = r.between(0, usize::MAX);
    }
}
