//! Test helpers shared by the wire codecs' and sessions' unit tests: corpus replay and the
//! segmentations of a byte stream that wire rule 4 asks every decoder to be indifferent to.
//!
//! Test-only (`#[cfg(test)]`); it parses nothing itself.

/// Runs `check` on every file of `dataplane/tests/corpus/<name>` (fuzzer crash inputs and
/// hand-made edge cases); fails if the directory is missing or empty.
pub(crate) fn replay_corpus(name: &str, mut check: impl FnMut(&[u8])) {
    let dir = format!("{}/tests/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let entries = std::fs::read_dir(&dir).expect("corpus directory exists");
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("readable corpus entry").path();
        let input = std::fs::read(&path).expect("readable corpus file");
        check(&input);
        count += 1;
    }
    assert!(count > 0, "empty corpus at {dir}");
}

/// `input` one byte per chunk.
pub(crate) fn byte_by_byte(input: &[u8]) -> Vec<&[u8]> {
    input.chunks(1).collect()
}

/// `input` split in two at every offset `0..=len`, each with its offset.
pub(crate) fn two_part_splits(input: &[u8]) -> impl Iterator<Item = (usize, [&[u8]; 2])> {
    (0..=input.len()).map(move |k| {
        let (a, b) = input.split_at(k);
        (k, [a, b])
    })
}

/// `bytes` with the byte at `at` (an index into it) replaced by `byte`, and each of its
/// prefixes `0..=len` in turn given to `check`: how a one-byte corruption of a valid message
/// is fed to parsers that must stay total.
pub(crate) fn mutated_prefixes(
    mut bytes: Vec<u8>,
    at: proptest::sample::Index,
    byte: u8,
    check: impl FnMut(&[u8]),
) {
    let i = at.index(bytes.len());
    bytes[i] = byte;
    every_prefix(&bytes, check);
}

/// Gives `check` each prefix of `bytes`, `0..=len` bytes long: a parser that must stay total
/// sees every point a stream can be cut at.
pub(crate) fn every_prefix(bytes: &[u8], mut check: impl FnMut(&[u8])) {
    for k in 0..=bytes.len() {
        check(&bytes[..k]);
    }
}
