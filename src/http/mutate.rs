//! Test-only: a tiny deterministic generator of mutated inputs, for the parsers' "never panics"
//! tests (a seed input, then random replacements, deletions and insertions from an alphabet).

/// A xorshift64 generator.
pub(crate) struct Mutator(u64);

impl Mutator {
    /// A generator from a non-zero seed.
    pub(crate) fn new(seed: u64) -> Mutator {
        Mutator(seed.max(1))
    }

    /// The next pseudo-random number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `seed` with up to `max_edits - 1` random edits using bytes from `alphabet`.
    pub(crate) fn mutate(&mut self, seed: &[u8], alphabet: &[u8], max_edits: u64) -> Vec<u8> {
        let mut input = seed.to_vec();
        let edits = self.next() % max_edits;
        for _ in 0..edits {
            let r = self.next();
            let pos = (r >> 8) as usize % (input.len() + 1);
            let b = alphabet[(r % alphabet.len() as u64) as usize];
            match r % 3 {
                0 if pos < input.len() => input[pos] = b,
                1 if pos < input.len() => {
                    input.remove(pos);
                }
                _ => input.insert(pos, b),
            }
        }
        input
    }
}
