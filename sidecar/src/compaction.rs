//! Background compaction keeps the data directory proportional to the live backlog and
//! start-up short. Each round:
//! 1. takes a checkpoint (a short pause of every queue while the state is copied),
//! 2. removes the segments before it that hold no live or rewindable message,
//! 3. copies the live messages out of sparse older segments to the end of the log, so
//!    the next round can remove those segments too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, SegmentUse};
use crate::store::Store;

/// A segment is copied forward when its live bytes are below this share of its size.
const SPARSE: f64 = 0.5;
/// Checkpoint at least after this much new log, to bound the replay at start-up.
const CHECKPOINT_EVERY_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    /// How long every queue was paused while the state was copied.
    pub pause: Duration,
    pub removed: Vec<u32>,
    pub copied: u64,
    /// Sparse segments nothing could be copied out of (their messages are kept for a
    /// rewind): not worth another try until their use changes.
    pub stuck: Vec<u32>,
}

fn sparse(store: &Store, id: u32, usage: Option<&SegmentUse>) -> bool {
    let live = usage.map_or(0, |u| u.bytes);
    (live as f64) < SPARSE * store.segment_len(id) as f64
}

/// Whether a round has anything to do: a closed segment to remove or to empty, or
/// enough new log since the checkpoint to make start-up slower.
fn due(engine: &Engine, store: &Store, stuck: &HashMap<u32, SegmentUse>) -> bool {
    let segments = store.segments();
    let Some(&active) = segments.last() else {
        return false;
    };
    let grown = match store.checkpoint() {
        Some(position) if position.segment == active => {
            store.segment_len(active).saturating_sub(position.offset)
        }
        _ => store.segment_len(active),
    };
    if grown >= CHECKPOINT_EVERY_BYTES {
        return true;
    }
    let usage = engine.segment_use();
    segments.iter().filter(|id| **id < active).any(|id| {
        let used = usage.get(id);
        used.is_none() || (sparse(store, *id, used) && stuck.get(id) != used)
    })
}

/// One round. `unused` carries, from one round to the next, the segments found holding no
/// message: a segment is removed only when two rounds in a row find it unused, so a send
/// whose record is written but not yet marked stored in the engine (its task not yet
/// scheduled) cannot lose its segment in between.
pub async fn compact_once(
    engine: &Engine,
    store: &Arc<Store>,
    unused: &mut HashSet<u32>,
) -> anyhow::Result<Round> {
    let started = Instant::now();
    let (snapshot, mark) = engine.capture();
    let pause = started.elapsed();
    let position = mark.await.context("marking the log for a checkpoint")?;
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.write_checkpoint(&snapshot, position))
        .await
        .context("the checkpoint task failed")??;

    let segments = store.segments();
    let active = segments.last().copied().unwrap_or(position.segment);
    let usage = engine.segment_use();
    let now_unused: HashSet<u32> = segments
        .iter()
        .copied()
        .filter(|id| *id < position.segment && !usage.contains_key(id))
        .collect();
    let mut removed: Vec<u32> = now_unused.intersection(unused).copied().collect();
    removed.sort_unstable();
    // Unlinking a full segment and syncing the directory takes tens of milliseconds here:
    // off the request threads.
    let remover = store.clone();
    let to_remove = removed.clone();
    tokio::task::spawn_blocking(move || {
        to_remove
            .into_iter()
            .try_for_each(|id| remover.remove_segment(id))
    })
    .await
    .context("the segment removal task failed")??;
    *unused = now_unused;
    unused.retain(|id| !removed.contains(id));
    let mut copied = 0;
    let mut stuck = Vec::new();
    for &id in segments
        .iter()
        .filter(|id| **id < active && !removed.contains(id))
    {
        if sparse(store, id, usage.get(&id)) {
            let moved = engine
                .copy_forward(id)
                .await
                .with_context(|| format!("copying live messages out of segment {id}"))?;
            if moved == 0 {
                stuck.push(id);
            }
            copied += moved;
        }
    }
    Ok(Round {
        pause,
        removed,
        copied,
        stuck,
    })
}

/// Runs rounds every `every` until `stop`.
pub async fn run(engine: Arc<Engine>, store: Arc<Store>, every: Duration, stop: CancellationToken) {
    let mut stuck: HashMap<u32, SegmentUse> = HashMap::new();
    let mut unused = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !due(&engine, &store, &stuck) {
            continue;
        }
        match compact_once(&engine, &store, &mut unused).await {
            Ok(round) => {
                let usage = engine.segment_use();
                stuck.retain(|id, _| usage.contains_key(id));
                for id in &round.stuck {
                    if let Some(used) = usage.get(id) {
                        stuck.insert(*id, *used);
                    }
                }
                tracing::info!(
                    pause_us = round.pause.as_micros() as u64,
                    removed = ?round.removed,
                    copied = round.copied,
                    "compaction round"
                );
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "compaction round failed; retrying later"
                )
            }
        }
    }
}
