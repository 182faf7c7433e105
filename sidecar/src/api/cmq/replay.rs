//! The CMQ API's replay guard: a signed request is accepted once. Its signature covers
//! every parameter, `Nonce` and `Timestamp` included, so the signatures of the requests
//! accepted within the `Timestamp` window are remembered and a second use is refused.
//! Memory is bounded: when full, the oldest `Timestamp`s are forgotten, and requests
//! stamped that early are refused from then on, since their reuse could not be told.
//! Each server remembers what it accepted itself.

use std::collections::{BTreeMap, HashSet};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::MAX_SKEW_SECONDS;

/// Most signatures remembered by default: about 5 MB in all (21 bytes each, measured
/// with 250,000 over the window); as many as 400 CMQ requests a second over the ±300 s
/// window.
pub const MAX_REMEMBERED: usize = 250_000;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// This very request was accepted before.
    Repeated,
    /// Requests stamped at or before `forgotten_through` are no longer remembered.
    TooOld { forgotten_through: u64 },
}

pub struct Replays {
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Digests of accepted signatures, by the `Timestamp` of their request.
    by_timestamp: BTreeMap<u64, HashSet<[u8; 16]>>,
    len: usize,
    forgotten_through: Option<u64>,
}

impl Default for Replays {
    fn default() -> Self {
        Self::with_capacity(MAX_REMEMBERED)
    }
}

impl Replays {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Takes note of a verified request's `signature`; refuses it if it was seen before
    /// or is stamped too early to tell. `timestamp` is within the window of `now`.
    pub fn first_use(&self, signature: &str, timestamp: u64, now: u64) -> Result<(), Replay> {
        let digest: [u8; 32] = Sha256::digest(signature.as_bytes()).into();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let mut seen = self.seen.lock();
        // Requests stamped this early are refused by their Timestamp alone.
        while let Some(entry) = seen.by_timestamp.first_entry() {
            if entry.key().saturating_add(MAX_SKEW_SECONDS) >= now {
                break;
            }
            let dropped = entry.remove().len();
            seen.len -= dropped;
        }
        if let Some(forgotten_through) = seen.forgotten_through
            && timestamp <= forgotten_through
        {
            return Err(Replay::TooOld { forgotten_through });
        }
        if !seen.by_timestamp.entry(timestamp).or_default().insert(key) {
            return Err(Replay::Repeated);
        }
        seen.len += 1;
        while seen.len > self.capacity {
            let Some((oldest, keys)) = seen.by_timestamp.pop_first() else {
                break;
            };
            seen.len -= keys.len();
            // Ascending: anything at or before the previous mark was refused, not kept.
            seen.forgotten_through = Some(oldest);
        }
        Ok(())
    }

    /// Signatures remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_signature_is_accepted_once() {
        let replays = Replays::default();
        assert_eq!(replays.first_use("sig-a", NOW, NOW), Ok(()));
        assert_eq!(
            replays.first_use("sig-a", NOW, NOW + 5),
            Err(Replay::Repeated)
        );
        assert_eq!(replays.first_use("sig-b", NOW, NOW), Ok(()));
        assert_eq!(replays.len(), 2);
    }

    #[test]
    fn signatures_are_forgotten_once_their_timestamp_is_out_of_the_window() {
        let replays = Replays::default();
        replays.first_use("old", NOW - 300, NOW).unwrap();
        replays.first_use("new", NOW, NOW).unwrap();
        assert_eq!(replays.len(), 2);
        // One second later the first request is refused by its Timestamp anyway.
        replays.first_use("newer", NOW + 1, NOW + 1).unwrap();
        assert_eq!(replays.len(), 2);
        assert_eq!(
            replays.first_use("new", NOW, NOW + 1),
            Err(Replay::Repeated)
        );
    }

    #[test]
    fn when_full_the_oldest_timestamps_are_forgotten_and_refused() {
        let replays = Replays::with_capacity(3);
        for (sig, ts) in [("a", NOW - 10), ("b", NOW - 10), ("c", NOW - 5)] {
            replays.first_use(sig, ts, NOW).unwrap();
        }
        replays.first_use("d", NOW, NOW).unwrap();
        assert_eq!(replays.len(), 2, "the whole oldest second went");
        let too_old = Err(Replay::TooOld {
            forgotten_through: NOW - 10,
        });
        assert_eq!(replays.first_use("a", NOW - 10, NOW), too_old);
        assert_eq!(replays.first_use("e", NOW - 11, NOW), too_old);
        assert_eq!(replays.first_use("c", NOW - 5, NOW), Err(Replay::Repeated));
        assert_eq!(replays.first_use("f", NOW - 9, NOW), Ok(()));
    }
}
