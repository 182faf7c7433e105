//! Time as the engine sees it: milliseconds since the Unix epoch, behind a trait so
//! tests drive visibility timeouts, delays and retention without real sleeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch; never goes backwards.
    fn now_ms(&self) -> u64;
    /// Completes once `now_ms() >= deadline_ms`.
    fn sleep_until(&self, deadline_ms: u64) -> Sleep<'_>;
}

/// The wall clock, made monotonic so a backwards step of the system time cannot
/// reorder enqueue times.
#[derive(Debug, Default)]
pub struct SystemClock {
    last_ms: AtomicU64,
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let previous = self.last_ms.fetch_max(wall, Ordering::AcqRel);
        previous.max(wall)
    }

    fn sleep_until(&self, deadline_ms: u64) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let now = self.now_ms();
                if now >= deadline_ms {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(deadline_ms - now)).await;
            }
        })
    }
}

/// A clock that only moves when told to; sleepers wake as it passes their deadline.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<u64>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: watch::Sender::new(start_ms),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|now| *now = now.saturating_add(by.as_millis() as u64));
    }

    pub fn set(&self, to_ms: u64) {
        self.now.send_modify(|now| *now = (*now).max(to_ms));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline_ms: u64) -> Sleep<'_> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, so `wait_for` only ends when the deadline passes.
            let _ = rx.wait_for(|now| *now >= deadline_ms).await;
        })
    }
}
