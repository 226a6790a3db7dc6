//! The mutation engine the targets share: byte-level mutations that any
//! format gets, and the pieces the format-aware mutators of the other
//! modules are built from.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Values at which parsers of lengths, counts and offsets tend to break:
/// zero, small counts, the edges of each integer width, and sizes no file
/// here could hold (2^32, 2^40, 2^63).
const INTERESTING: [u64; 20] = [
    0,
    1,
    2,
    3,
    8,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

pub fn interesting(rng: &mut ChaCha8Rng) -> u64 {
    INTERESTING[rng.random_range(0..INTERESTING.len())]
}

/// A random start and end in `0..=len`, short more often than long.
pub fn span(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    let start = rng.random_range(0..=len);
    let max = (len - start).min(1 << rng.random_range(0..12));
    (start, start + rng.random_range(0..=max))
}

/// Up to `max` random bytes.
pub fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// One to four byte-level mutations: bit flips, byte and integer
/// overwrites, truncation, extension, inserted, deleted and duplicated
/// ranges, and `tokens` spliced in.
pub fn bytes(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, tokens: &[&[u8]]) {
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = if rng.random() {
                    interesting(rng) as u8
                } else {
                    rng.random()
                };
            }
            2 => {
                let width = 1 << rng.random_range(0..4);
                let value = interesting(rng);
                let encoded = if rng.random() {
                    value.to_le_bytes()
                } else {
                    (value << (64 - 8 * width)).to_be_bytes()
                };
                let at = rng.random_range(0..=len);
                overwrite(data, at, &encoded[..width]);
            }
            3 => data.truncate(rng.random_range(0..=len)),
            4 => {
                let extra = random_bytes(rng, 64);
                data.extend(extra);
            }
            5 => {
                let at = rng.random_range(0..=len);
                let extra = random_bytes(rng, 64);
                data.splice(at..at, extra);
            }
            6 => {
                let (start, end) = span(rng, len);
                data.drain(start..end);
            }
            7 => {
                let (start, end) = span(rng, len);
                let copy = data[start..end].to_vec();
                let at = rng.random_range(0..=len);
                data.splice(at..at, copy);
            }
            _ if !tokens.is_empty() => {
                let token = tokens[rng.random_range(0..tokens.len())];
                let at = rng.random_range(0..=len);
                if rng.random() {
                    data.splice(at..at, token.iter().copied());
                } else {
                    overwrite(data, at, token);
                }
            }
            _ => {}
        }
    }
}

/// Writes `bytes` at `at`, growing `data` where they run past its end.
pub fn overwrite(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[at..end].copy_from_slice(bytes);
}
