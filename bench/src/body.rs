//! The body every message carries: its sequence number in the run and the instant it was
//! sent (nanoseconds since the run began), as ASCII hex so that every system, text-only
//! APIs included, carries it unchanged; padded to the run's message size.

/// The smallest body that still holds the sequence number and the send time.
pub const MIN_SIZE: usize = 32;

pub fn encode(sequence: u64, sent_nanos: u64, size: usize) -> Vec<u8> {
    let mut body = format!("{sequence:016x}{sent_nanos:016x}").into_bytes();
    body.resize(size.max(MIN_SIZE), b'.');
    body
}

/// A body as text, for the APIs that carry text: the bodies this harness writes are ASCII.
pub fn text(body: &[u8]) -> anyhow::Result<&str> {
    use anyhow::Context as _;
    std::str::from_utf8(body).context("message bodies in this harness are ASCII text")
}

/// The sequence number and send time, or `None` for a body this harness did not write.
pub fn decode(body: &[u8]) -> Option<(u64, u64)> {
    let hex = |range: std::ops::Range<usize>| {
        let text = std::str::from_utf8(body.get(range)?).ok()?;
        u64::from_str_radix(text, 16).ok()
    };
    Some((hex(0..16)?, hex(16..32)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_gives_back_what_it_carries_at_the_requested_size() {
        let body = encode(42, 1_234_567_890, 256);
        assert_eq!(body.len(), 256);
        assert_eq!(decode(&body), Some((42, 1_234_567_890)));
    }

    #[test]
    fn foreign_bodies_are_told_apart() {
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(&[b'z'; 40]), None);
    }
}
