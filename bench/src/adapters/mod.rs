//! One trait for every queue under test: a producer sends bodies and returns once the
//! system has accepted them at its configured durability; a consumer receives, then
//! acknowledges (deletes) what it received.
//!
//! Adding a system means one more module here implementing [`System`], one more
//! [`SystemKind`] variant and one arm in [`connect`]; the workload, the accounting and
//! the report need no change.

pub mod beanstalkd;
pub mod cmq;
mod http1;
pub mod queuelet;
pub mod rabbitmq;
pub mod redis;

use std::path::Path;

use anyhow::{Result, bail};
use async_trait::async_trait;

/// The systems the harness can drive.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    /// queuelet's native JSON HTTP API (`/v1/queues/...`).
    Queuelet,
    /// queuelet's CMQ API 2.0 (`/v2/index.php`), signed requests.
    QueueletCmq,
    /// beanstalkd's text protocol.
    Beanstalkd,
    /// Redis lists, reliable-queue pattern (LPUSH; BLMOVE to a processing list; LREM).
    Redis,
    /// RabbitMQ over AMQP 0-9-1: durable queue, persistent messages, confirms, manual acks.
    Rabbitmq,
    /// `queuelet-bench bare-http`: queuelet's native message routes answered from memory
    /// by a bare HTTP server, through the same client as `queuelet`.
    BareHttp,
}

/// How a client talks to the system.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ClientStyle {
    /// One message per operation and a round trip per operation: equal terms for all.
    Single,
    /// Each system's best practice: batches, pipelining or many confirms in flight.
    Best,
}

/// How many messages one operation carries (or one pipeline holds) in the best-practice style.
pub const BEST_BATCH: usize = 16;

impl ClientStyle {
    pub fn batch(self) -> usize {
        match self {
            ClientStyle::Single => 1,
            ClientStyle::Best => BEST_BATCH,
        }
    }
}

/// What a consumer needs to acknowledge one delivery.
#[derive(Debug, Clone)]
pub enum Receipt {
    /// A receipt handle (queuelet).
    Handle(String),
    /// A numeric job id or delivery tag (beanstalkd, RabbitMQ).
    Tag(u64),
    /// The body itself identifies the delivery (Redis `LREM`).
    Body,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: Vec<u8>,
    /// The system says it delivered this message before.
    pub redelivered: bool,
    pub receipt: Receipt,
}

#[async_trait]
pub trait Producer: Send {
    /// Sends `bodies` (one operation, or one pipeline in the best-practice style) and
    /// returns once the system has acknowledged every one of them, except where the
    /// system's best practice keeps acknowledgements in flight (RabbitMQ's asynchronous
    /// confirms): then [`Producer::flush`] waits for the rest.
    async fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()>;

    /// Waits for every acknowledgement still outstanding; fails if one was refused.
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` messages; waits about a second for the first, then returns what it has
    /// (possibly nothing).
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>>;
    /// Acknowledges (deletes) `deliveries`; returns once the system confirmed it.
    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()>;
}

#[async_trait]
pub trait System: Send + Sync {
    /// Creates the queue (empty) the run uses.
    async fn prepare(&self) -> Result<()>;
    async fn producer(&self, style: ClientStyle) -> Result<Box<dyn Producer>>;
    async fn consumer(&self, style: ClientStyle, index: usize) -> Result<Box<dyn Consumer>>;
}

/// The adapter for `kind`, talking to `address` (a URL for queuelet, RabbitMQ and Redis,
/// `http://SecretId:SecretKey@HOST:PORT` for queuelet's CMQ API; `host:port` for
/// beanstalkd), using queue `queue`. queuelet's producers and consumers connect through
/// `unix_socket` when it is given.
pub fn connect(
    kind: SystemKind,
    address: &str,
    unix_socket: Option<&Path>,
    queue: &str,
) -> Result<Box<dyn System>> {
    if unix_socket.is_some() && !matches!(kind, SystemKind::Queuelet | SystemKind::BareHttp) {
        bail!(
            "only queuelet's native API connects through --unix-socket (Redis: redis+unix:///PATH)"
        );
    }
    Ok(match kind {
        SystemKind::Queuelet | SystemKind::BareHttp => {
            Box::new(queuelet::Queuelet::new(address, unix_socket, queue)?)
        }
        SystemKind::QueueletCmq => Box::new(cmq::Cmq::new(address, queue)?),
        SystemKind::Beanstalkd => Box::new(beanstalkd::Beanstalkd::new(address, queue)),
        SystemKind::Redis => Box::new(redis::Redis::new(address, queue)?),
        SystemKind::Rabbitmq => Box::new(rabbitmq::Rabbitmq::new(address, queue)),
    })
}
