//! Byte-level mutations of corpus inputs: the structure of each seed (a WAV header, a
//! protobuf, a JSON body) survives most mutations, so the readers get past their first
//! check and into the code behind it.

/// A small deterministic generator (xorshift64*): a campaign's seed replays it exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Values at the edges of integer fields: sizes, counts and lengths in headers.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// Text that breaks naive string handling: empty and zero-width characters, combining
/// marks, scripts the front ends treat specially, surrogates' neighbours, control bytes.
const TEXT: [&str; 16] = [
    "\u{0}",
    "\u{200b}",
    "\u{feff}",
    "\u{301}",
    "😀",
    "👩‍👩‍👧",
    "日本語",
    "한국어",
    "עברית",
    "\u{fffd}",
    "...",
    "\r\n",
    "\"",
    "\\u0000",
    "[SPACE]",
    "[en]",
];

/// Most bytes a mutated input may have.
pub const MAX_LEN: usize = 1 << 18;

/// One to four mutations of `seed`, splicing from `other` (another corpus input) at times.
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = out.len();
        match rng.below(10) {
            0 if n > 0 => {
                let i = rng.below(n);
                out[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                out[i] = rng.next_u64() as u8;
            }
            2 if n > 0 => {
                let width = [1, 2, 4, 8][rng.below(4)];
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let at = rng.below(n);
                let end = (at + width).min(n);
                out[at..end].copy_from_slice(&bytes[..end - at]);
            }
            3 => {
                let at = rng.below(n + 1);
                let len = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if n > 0 => {
                let at = rng.below(n);
                let len = 1 + rng.below((n - at).min(64));
                out.drain(at..at + len);
            }
            5 if n > 0 => {
                let at = rng.below(n);
                let len = 1 + rng.below((n - at).min(256));
                let copy = out[at..at + len].to_vec();
                let to = rng.below(n + 1);
                out.splice(to..to, copy);
            }
            6 => out.truncate(rng.below(n + 1)),
            7 if !other.is_empty() => {
                let from = rng.below(other.len());
                let len = 1 + rng.below((other.len() - from).min(512));
                let at = rng.below(n + 1);
                out.splice(at..at, other[from..from + len].iter().copied());
            }
            8 => {
                let at = rng.below(n + 1);
                let text = TEXT[rng.below(TEXT.len())].as_bytes();
                out.splice(at..at, text.iter().copied());
            }
            _ => {
                let len = rng.below(64);
                out = (0..len).map(|_| rng.next_u64() as u8).collect();
            }
        }
        out.truncate(MAX_LEN);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_mutations() {
        let seed = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..50)
                .map(|_| mutate(&mut rng, &seed, b"other"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().any(|m| m != &seed));
    }
}
