//! Redis lists in the reliable-queue pattern: `LPUSH` to send; `BLMOVE` (or `LMOVE`)
//! to a per-consumer processing list to receive; `LREM` from it to acknowledge. One
//! connection per worker. Best style: commands pipelined 16 at a time.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Direction};

use super::{ClientStyle, Consumer, Delivery, Producer, Receipt, System};

pub struct Redis {
    client: redis::Client,
    queue: String,
}

impl Redis {
    pub fn new(url: &str, queue: &str) -> Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("Redis URL {url:?}"))?;
        Ok(Self {
            client,
            queue: queue.to_string(),
        })
    }

    async fn open(&self) -> Result<MultiplexedConnection> {
        // A blocking BLMOVE holds its reply for up to a second: allow for it.
        let config =
            AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connect to Redis")
    }
}

struct Client {
    connection: MultiplexedConnection,
    queue: String,
    processing: String,
}

#[async_trait]
impl System for Redis {
    async fn prepare(&self) -> Result<()> {
        let mut connection = self.open().await?;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:processing:*", self.queue))
            .query_async(&mut connection)
            .await
            .context("list processing lists")?;
        keys.push(self.queue.clone());
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .context("clear the queue")?;
        Ok(())
    }

    async fn producer(&self, _style: ClientStyle) -> Result<Box<dyn Producer>> {
        Ok(Box::new(Client {
            connection: self.open().await?,
            queue: self.queue.clone(),
            processing: String::new(),
        }))
    }

    async fn consumer(&self, _style: ClientStyle, index: usize) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(Client {
            connection: self.open().await?,
            queue: self.queue.clone(),
            processing: format!("{}:processing:{index}", self.queue),
        }))
    }
}

#[async_trait]
impl Producer for Client {
    async fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        let mut pipe = redis::pipe();
        for body in bodies {
            pipe.cmd("LPUSH").arg(&self.queue).arg(body.as_slice());
        }
        let _: Vec<u64> = pipe
            .query_async(&mut self.connection)
            .await
            .context("Redis LPUSH")?;
        Ok(())
    }
}

fn delivery(body: Vec<u8>) -> Delivery {
    Delivery {
        body,
        redelivered: false,
        receipt: Receipt::Body,
    }
}

#[async_trait]
impl Consumer for Client {
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let first: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(&self.queue)
            .arg(&self.processing)
            .arg(Direction::Right)
            .arg(Direction::Left)
            .arg(1)
            .query_async(&mut self.connection)
            .await
            .context("Redis BLMOVE")?;
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let mut deliveries = vec![delivery(first)];
        if max > 1 {
            let mut pipe = redis::pipe();
            for _ in 1..max {
                pipe.cmd("LMOVE")
                    .arg(&self.queue)
                    .arg(&self.processing)
                    .arg(Direction::Right)
                    .arg(Direction::Left);
            }
            let more: Vec<Option<Vec<u8>>> = pipe
                .query_async(&mut self.connection)
                .await
                .context("Redis LMOVE")?;
            deliveries.extend(more.into_iter().flatten().map(delivery));
        }
        Ok(deliveries)
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let mut pipe = redis::pipe();
        for delivery in deliveries {
            pipe.cmd("LREM")
                .arg(&self.processing)
                .arg(1)
                .arg(delivery.body.as_slice());
        }
        let removed: Vec<u64> = pipe
            .query_async(&mut self.connection)
            .await
            .context("Redis LREM")?;
        if removed.iter().any(|&n| n != 1) {
            bail!(
                "Redis LREM found a message missing from {}",
                self.processing
            );
        }
        Ok(())
    }
}
