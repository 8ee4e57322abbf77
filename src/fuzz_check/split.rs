//! Deterministic ways of cutting one input into pieces, so that every incremental parser can
//! be fed the same bytes in one piece, one byte at a time and in pieces of varying sizes.

/// A small xorshift generator seeded from the input itself, so a failing input replays exactly.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with the FNV-1a hash of `data`.
    pub(crate) fn from_data(data: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    /// The next pseudo-random number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// `data` cut into pieces of 1 to `max` bytes, sizes drawn from a generator seeded by `data`.
pub(crate) fn pieces(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut rng = Rng::from_data(data);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.range(1, max).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}

/// The prefix lengths to try for an input of `len` bytes: every one for short inputs, else a
/// spread of them plus the last few (where a head usually completes). Re-parsing every prefix
/// of a long input would be quadratic and slow the fuzzer to a crawl.
pub(crate) fn prefix_lengths(len: usize) -> Vec<usize> {
    const ALL_UP_TO: usize = 512;
    const SPREAD: usize = 128;
    if len <= ALL_UP_TO {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..SPREAD).map(|i| i * len / SPREAD).collect();
    v.extend(len.saturating_sub(8)..len);
    v.dedup();
    v
}
