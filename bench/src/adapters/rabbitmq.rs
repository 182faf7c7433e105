//! RabbitMQ over AMQP 0-9-1: a durable classic queue, persistent messages (delivery
//! mode 2), publisher confirms, manual consumer acks with a prefetch limit; one
//! connection per worker. Single style: wait for each publish's confirm; prefetch 1 and
//! one ack per message. Best style: asynchronous confirms with up to
//! [`CONFIRMS_IN_FLIGHT`] outstanding per producer; prefetch [`BEST_PREFETCH`] and one
//! `multiple` ack per received batch.
//!
//! An AMQP `basic.ack` has no reply: the acknowledgement is done once it is written.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use lapin::PublisherConfirm;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{ClientStyle, Consumer, Delivery, Producer, Receipt, System};

/// Publishes awaiting their confirm, per producer, in the best-practice style.
pub const CONFIRMS_IN_FLIGHT: usize = 256;
/// Unacknowledged deliveries a consumer may hold in the best-practice style.
pub const BEST_PREFETCH: u16 = 64;
const PERSISTENT: u8 = 2;
/// Retries of the first connection, half a second apart.
const PREPARE_ATTEMPTS: u32 = 60;

pub struct Rabbitmq {
    url: String,
    queue: String,
}

impl Rabbitmq {
    pub fn new(url: &str, queue: &str) -> Self {
        Self {
            url: url.to_string(),
            queue: queue.to_string(),
        }
    }

    async fn channel(&self) -> Result<(Connection, Channel)> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connect to RabbitMQ at {}", self.url))?;
        let channel = connection
            .create_channel()
            .await
            .context("open an AMQP channel")?;
        Ok((connection, channel))
    }
}

struct Publisher {
    _connection: Connection,
    channel: Channel,
    queue: String,
    in_flight: VecDeque<PublisherConfirm>,
    window: usize,
}

struct Subscriber {
    _connection: Connection,
    channel: Channel,
    deliveries: lapin::Consumer,
    style: ClientStyle,
}

#[async_trait]
impl System for Rabbitmq {
    async fn prepare(&self) -> Result<()> {
        // A broker that has just opened its port may still refuse connections for a
        // moment while it boots: the first connection gets some seconds.
        let mut attempts = 0;
        let (connection, channel) = loop {
            match self.channel().await {
                Ok(opened) => break opened,
                Err(_) if attempts < PREPARE_ATTEMPTS => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        };
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .context("delete the previous run's queue")?;
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.queue.as_str().into(), options, FieldTable::default())
            .await
            .context("declare a durable queue")?;
        connection.close(200, "prepared".into()).await.ok();
        Ok(())
    }

    async fn producer(&self, style: ClientStyle) -> Result<Box<dyn Producer>> {
        let (connection, channel) = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enable publisher confirms")?;
        Ok(Box::new(Publisher {
            _connection: connection,
            channel,
            queue: self.queue.clone(),
            in_flight: VecDeque::new(),
            window: match style {
                ClientStyle::Single => 0,
                ClientStyle::Best => CONFIRMS_IN_FLIGHT,
            },
        }))
    }

    async fn consumer(&self, style: ClientStyle, index: usize) -> Result<Box<dyn Consumer>> {
        let (connection, channel) = self.channel().await?;
        let prefetch = match style {
            ClientStyle::Single => 1,
            ClientStyle::Best => BEST_PREFETCH,
        };
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("set the prefetch limit")?;
        let deliveries = channel
            .basic_consume(
                self.queue.as_str().into(),
                format!("bench-{index}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("start consuming")?;
        Ok(Box::new(Subscriber {
            _connection: connection,
            channel,
            deliveries,
            style,
        }))
    }
}

async fn confirmed(confirm: PublisherConfirm) -> Result<()> {
    let confirmation = confirm.await.context("RabbitMQ publisher confirm")?;
    if !confirmation.is_ack() {
        bail!("RabbitMQ refused a publish (nack)");
    }
    Ok(())
}

#[async_trait]
impl Producer for Publisher {
    async fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        for body in bodies {
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(PERSISTENT),
                )
                .await
                .context("RabbitMQ publish")?;
            self.in_flight.push_back(confirm);
        }
        while self.in_flight.len() > self.window {
            if let Some(confirm) = self.in_flight.pop_front() {
                confirmed(confirm).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        while let Some(confirm) = self.in_flight.pop_front() {
            confirmed(confirm).await?;
        }
        Ok(())
    }
}

fn delivery(delivery: lapin::message::Delivery) -> Delivery {
    Delivery {
        body: delivery.data,
        redelivered: delivery.redelivered,
        receipt: Receipt::Tag(delivery.delivery_tag),
    }
}

#[async_trait]
impl Consumer for Subscriber {
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let first = match tokio::time::timeout(Duration::from_secs(1), self.deliveries.next()).await
        {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(None) => bail!("RabbitMQ cancelled the consumer"),
            Ok(Some(first)) => first.context("RabbitMQ delivery")?,
        };
        let mut received = vec![delivery(first)];
        while received.len() < max {
            match self.deliveries.next().now_or_never() {
                Some(Some(next)) => received.push(delivery(next.context("RabbitMQ delivery")?)),
                Some(None) => bail!("RabbitMQ cancelled the consumer"),
                None => break,
            }
        }
        Ok(received)
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let tags = deliveries
            .iter()
            .map(|d| match d.receipt {
                Receipt::Tag(tag) => Ok(tag),
                _ => bail!("RabbitMQ acknowledges by delivery tag"),
            })
            .collect::<Result<Vec<_>>>()?;
        match self.style {
            ClientStyle::Single => {
                for tag in tags {
                    self.channel
                        .basic_ack(tag, BasicAckOptions::default())
                        .await
                        .context("RabbitMQ ack")?;
                }
            }
            ClientStyle::Best => {
                // Everything this consumer holds is in `deliveries`: one ack covers it all.
                if let Some(&last) = tags.iter().max() {
                    self.channel
                        .basic_ack(last, BasicAckOptions { multiple: true })
                        .await
                        .context("RabbitMQ ack")?;
                }
            }
        }
        Ok(())
    }
}
