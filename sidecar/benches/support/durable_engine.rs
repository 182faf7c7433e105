//! An engine over the real log in a data directory, as the server wires it; shared by
//! the micro-benchmarks and `examples/storage_bench.rs`.

use std::path::Path;
use std::sync::Arc;

use queuelet::engine::{Engine, EngineConfig, LateJournal, SystemClock};
use queuelet::store::file::RealFs;
use queuelet::store::log::LogOptions;
use queuelet::store::{Durability, Store};

/// Opens (recovering) the log in `dir` and an engine over it. Needs a Tokio runtime.
pub fn open(dir: &Path, durability: Durability) -> anyhow::Result<(Arc<Engine>, Arc<Store>)> {
    let journal = Arc::new(LateJournal::default());
    let engine = Arc::new(Engine::new(
        EngineConfig::new(0),
        Arc::new(SystemClock::default()),
        journal.clone(),
    ));
    let options = LogOptions {
        durability,
        ..LogOptions::default()
    };
    let (store, _) = Store::open(dir, options, Arc::new(RealFs), &mut |r| engine.replay(r))?;
    let store = Arc::new(store);
    journal.set(store.clone());
    engine.start_replayed();
    Ok((engine, store))
}
