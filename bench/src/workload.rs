//! The one workload shape: P producers and C consumers move N messages of S bytes from
//! send to acknowledged delete. Each body carries its send time; the latency of a
//! message is from just before its send to just after its acknowledgement returned.
//! Throughput is N over the time from the first send to the last acknowledgement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::adapters::{ClientStyle, Consumer, Producer, System};
use crate::body;
use crate::ledger::{Ledger, Tally};

#[derive(Debug, Clone)]
pub struct Workload {
    pub producers: usize,
    pub consumers: usize,
    pub messages: u64,
    pub size: usize,
    pub style: ClientStyle,
    /// Total sends per second to pace the producers at; `None`: as fast as they go.
    pub rate: Option<f64>,
    /// The run gives up (and counts what is missing as lost) after this long.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub messages_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub seconds: f64,
    pub tally: Tally,
}

struct Shared {
    started: Instant,
    deadline: Instant,
    next_sequence: AtomicU64,
    last_ack_nanos: AtomicU64,
    stop: AtomicBool,
    ledger: Ledger,
}

impl Shared {
    fn nanos(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// A histogram of durations in microseconds, from 1 µs to an hour, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("latency histogram")
}

async fn produce(
    mut producer: Box<dyn Producer>,
    index: usize,
    shared: Arc<Shared>,
    work: Workload,
) -> Result<Option<Histogram<u64>>> {
    let batch = work.style.batch() as u64;
    let mut pace = work.rate.map(|rate| {
        let period = Duration::from_secs_f64(batch as f64 * work.producers as f64 / rate);
        // Producers tick out of phase, so a paced run offers its sends evenly spread
        // rather than as one burst of P sends every period.
        let phase = period.mul_f64(index as f64 / work.producers as f64);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        if shared.over() {
            break;
        }
        let first = shared.next_sequence.fetch_add(batch, Ordering::Relaxed);
        if first >= work.messages {
            break;
        }
        if let Some(ticks) = pace.as_mut() {
            ticks.tick().await;
        }
        let last = (first + batch).min(work.messages);
        let sent = shared.nanos();
        let bodies: Vec<Vec<u8>> = (first..last)
            .map(|sequence| body::encode(sequence, sent, work.size))
            .collect();
        producer.send(&bodies).await?;
    }
    producer.flush().await?;
    Ok(None)
}

async fn consume(
    mut consumer: Box<dyn Consumer>,
    shared: Arc<Shared>,
    work: Workload,
) -> Result<Option<Histogram<u64>>> {
    let mut latencies = histogram()?;
    while !shared.ledger.all_acknowledged() && !shared.over() {
        let deliveries = consumer.receive(work.style.batch()).await?;
        if deliveries.is_empty() {
            continue;
        }
        consumer.ack(&deliveries).await?;
        let now = shared.nanos();
        shared.last_ack_nanos.fetch_max(now, Ordering::Relaxed);
        for delivery in &deliveries {
            let decoded = body::decode(&delivery.body);
            if let Some((_, sent)) = decoded {
                latencies.saturating_record(now.saturating_sub(sent) / 1_000);
            }
            shared
                .ledger
                .acknowledged(decoded.map(|(sequence, _)| sequence), delivery.redelivered);
        }
    }
    Ok(Some(latencies))
}

/// Runs the workload once against `system`, whose queue it empties first. Connections
/// are opened before the clock starts. Fails on any adapter error.
pub async fn run(system: &dyn System, work: &Workload) -> Result<Outcome> {
    if work.size < body::MIN_SIZE {
        bail!("messages must be at least {} bytes", body::MIN_SIZE);
    }
    if work.producers == 0 || work.consumers == 0 {
        bail!("at least one producer and one consumer");
    }
    system.prepare().await.context("prepare the queue")?;
    let mut producers = Vec::new();
    for _ in 0..work.producers {
        producers.push(
            system
                .producer(work.style)
                .await
                .context("open a producer")?,
        );
    }
    let mut consumers = Vec::new();
    for index in 0..work.consumers {
        consumers.push(
            system
                .consumer(work.style, index)
                .await
                .context("open a consumer")?,
        );
    }
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        deadline: started + work.timeout,
        next_sequence: AtomicU64::new(0),
        last_ack_nanos: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        ledger: Ledger::new(work.messages),
    });
    let mut tasks = JoinSet::new();
    for consumer in consumers {
        tasks.spawn(consume(consumer, shared.clone(), work.clone()));
    }
    for (index, producer) in producers.into_iter().enumerate() {
        tasks.spawn(produce(producer, index, shared.clone(), work.clone()));
    }
    let mut latencies = histogram()?;
    while let Some(joined) = tasks.join_next().await {
        let finished = joined
            .context("a load task panicked")
            .and_then(|result| result);
        match finished {
            Ok(Some(histogram)) => latencies.add(histogram).context("merge latencies")?,
            Ok(None) => {}
            Err(error) => {
                shared.stop.store(true, Ordering::Relaxed);
                tasks.abort_all();
                return Err(error);
            }
        }
    }
    let seconds = Duration::from_nanos(shared.last_ack_nanos.load(Ordering::Relaxed)).as_secs_f64();
    let tally = shared.ledger.tally();
    let quantile_ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1_000.0;
    Ok(Outcome {
        messages_per_second: if seconds > 0.0 {
            tally.acked as f64 / seconds
        } else {
            0.0
        },
        p50_ms: quantile_ms(0.50),
        p99_ms: quantile_ms(0.99),
        p999_ms: quantile_ms(0.999),
        seconds,
        tally,
    })
}
