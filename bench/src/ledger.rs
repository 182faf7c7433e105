//! The run's accounting: which messages were acknowledged, how often, and what came
//! back that should not have. A message acknowledged twice is a duplicate; one never
//! acknowledged by the end is lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct Ledger {
    acked: Vec<AtomicBool>,
    unique: AtomicU64,
    duplicates: AtomicU64,
    redeliveries: AtomicU64,
    foreign: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub acked: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub redeliveries: u64,
    /// Bodies this run did not send (left over from elsewhere, or corrupted).
    pub foreign: u64,
}

impl Tally {
    /// Every message acknowledged exactly once and nothing unexpected received.
    pub fn is_exact(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.foreign == 0
    }
}

impl Ledger {
    pub fn new(messages: u64) -> Self {
        Self {
            acked: (0..messages).map(|_| AtomicBool::new(false)).collect(),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
        }
    }

    /// Records the acknowledgement of message `sequence` (`None`: a body not from this run).
    pub fn acknowledged(&self, sequence: Option<u64>, redelivered: bool) {
        if redelivered {
            self.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
        let slot = sequence
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| self.acked.get(s));
        match slot {
            None => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
            }
            Some(flag) if flag.swap(true, Ordering::Relaxed) => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {
                self.unique.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn all_acknowledged(&self) -> bool {
        self.unique.load(Ordering::Relaxed) >= self.acked.len() as u64
    }

    pub fn tally(&self) -> Tally {
        let acked = self.unique.load(Ordering::Relaxed);
        Tally {
            acked,
            lost: self.acked.len() as u64 - acked,
            duplicates: self.duplicates.load(Ordering::Relaxed),
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            foreign: self.foreign.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_duplicated_and_foreign_messages() {
        let ledger = Ledger::new(3);
        ledger.acknowledged(Some(0), false);
        ledger.acknowledged(Some(0), true);
        ledger.acknowledged(Some(2), false);
        ledger.acknowledged(Some(7), false);
        ledger.acknowledged(None, false);
        assert!(!ledger.all_acknowledged());
        let tally = ledger.tally();
        assert_eq!(
            tally,
            Tally {
                acked: 2,
                lost: 1,
                duplicates: 1,
                redeliveries: 1,
                foreign: 2
            }
        );
        assert!(!tally.is_exact());
    }

    #[test]
    fn a_clean_run_is_exact() {
        let ledger = Ledger::new(2);
        ledger.acknowledged(Some(1), false);
        ledger.acknowledged(Some(0), false);
        assert!(ledger.all_acknowledged());
        assert!(ledger.tally().is_exact());
    }
}
