//! queuelet's native JSON HTTP API. Each producer and consumer owns one keep-alive
//! HTTP/1.1 connection ([`super::http1`]); queue set-up goes through the crate's typed
//! client. Single style: one send, one receive of at most one, one delete per message.
//! Best style: batch send, receive and delete of 16.

use std::path::Path;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use http::Method;
use queuelet::api::model::{
    DeleteBatch, DeleteResults, ReceiveRequest, ReceivedMessages, SendBatch, SendMessage,
    SentBatch, SentMessage,
};
use queuelet::client::Client;
use queuelet::engine::QueueAttributes;

use super::http1::{Address, Connection, Target};
use super::{ClientStyle, Consumer, Delivery, Producer, Receipt, System};
use crate::body::text;

pub struct Queuelet {
    client: Client,
    /// Where producers and consumers connect.
    target: Target,
    queue: String,
}

impl Queuelet {
    /// Sets the queue up through `url`; producers and consumers connect to the same
    /// server, through `unix_socket` when it is given.
    pub fn new(url: &str, unix_socket: Option<&Path>, queue: &str) -> Result<Self> {
        let client = Client::new(url).with_context(|| format!("queuelet URL {url:?}"))?;
        let authority = Address::parse(url)?.authority;
        Ok(Self {
            client,
            target: match unix_socket {
                Some(path) => Target::Unix {
                    path: path.to_path_buf(),
                    host: authority,
                },
                None => Target::Tcp(authority),
            },
            queue: queue.to_string(),
        })
    }

    async fn endpoint(&self, style: ClientStyle) -> Result<Endpoint> {
        let base = format!("/v1/queues/{}/messages", self.queue);
        Ok(Endpoint {
            connection: Connection::open(&self.target).await?,
            send_batch: format!("{base}/batch"),
            receive: format!("{base}/receive"),
            delete_batch: format!("{base}/delete"),
            base,
            style,
        })
    }
}

struct Endpoint {
    connection: Connection,
    /// `/v1/queues/NAME/messages`: single sends, and deletes under it.
    base: String,
    send_batch: String,
    receive: String,
    delete_batch: String,
    style: ClientStyle,
}

#[async_trait]
impl System for Queuelet {
    async fn prepare(&self) -> Result<()> {
        if let Err(error) = self.client.delete_queue(&self.queue).await
            && error.code() != Some("queue_not_found")
        {
            return Err(error).context("delete the previous run's queue");
        }
        let attrs = QueueAttributes {
            visibility_timeout_seconds: 120,
            ..QueueAttributes::default()
        };
        self.client
            .create_queue(&self.queue, &attrs)
            .await
            .with_context(|| format!("create queue {}", self.queue))?;
        Ok(())
    }

    async fn producer(&self, style: ClientStyle) -> Result<Box<dyn Producer>> {
        Ok(Box::new(self.endpoint(style).await?))
    }

    async fn consumer(&self, style: ClientStyle, _index: usize) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(self.endpoint(style).await?))
    }
}

#[async_trait]
impl Producer for Endpoint {
    async fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        let sent = match (self.style, bodies) {
            (ClientStyle::Single, [body]) => {
                let _: SentMessage = self
                    .connection
                    .post_json(&self.base, &SendMessage::text(text(body)?.to_string()))
                    .await
                    .context("queuelet send")?;
                1
            }
            (ClientStyle::Single, _) => bail!("single style sends one message per operation"),
            (ClientStyle::Best, _) => {
                let messages = bodies
                    .iter()
                    .map(|b| text(b).map(|t| SendMessage::text(t.to_string())))
                    .collect::<Result<Vec<_>>>()?;
                let sent: SentBatch = self
                    .connection
                    .post_json(&self.send_batch, &SendBatch { messages })
                    .await
                    .context("queuelet batch send")?;
                sent.messages.len()
            }
        };
        if sent != bodies.len() {
            bail!("queuelet accepted {sent} of {} messages", bodies.len());
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for Endpoint {
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let request = ReceiveRequest {
            max: Some(max),
            wait_seconds: Some(1),
            ..ReceiveRequest::default()
        };
        let received: ReceivedMessages = self
            .connection
            .post_json(&self.receive, &request)
            .await
            .context("queuelet receive")?;
        Ok(received
            .messages
            .into_iter()
            .map(|m| Delivery {
                redelivered: m.dequeue_count > 1,
                body: m.body.into_bytes(),
                receipt: Receipt::Handle(m.receipt_handle),
            })
            .collect())
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let handles = deliveries
            .iter()
            .map(|d| match &d.receipt {
                // Receipt handles are URL-safe base64: they go into a path unescaped.
                Receipt::Handle(h) if !h.contains(['/', '?', '#', '%']) => Ok(h.clone()),
                other => bail!("queuelet cannot acknowledge by {other:?}"),
            })
            .collect::<Result<Vec<_>>>()?;
        if let (ClientStyle::Single, [handle]) = (self.style, handles.as_slice()) {
            let path = format!("{}/{handle}", self.base);
            self.connection
                .call(Method::DELETE, &path, None)
                .await
                .context("queuelet delete")?;
            return Ok(());
        }
        let results: DeleteResults = self
            .connection
            .post_json(
                &self.delete_batch,
                &DeleteBatch {
                    receipt_handles: handles,
                },
            )
            .await
            .context("queuelet batch delete")?;
        if results.results.len() != deliveries.len() {
            bail!(
                "queuelet answered {} delete results for {} handles",
                results.results.len(),
                deliveries.len()
            );
        }
        if let Some(failed) = results.results.iter().find(|r| !r.ok) {
            bail!(
                "queuelet refused a delete: {} {}",
                failed.code.as_deref().unwrap_or("?"),
                failed.message.as_deref().unwrap_or("")
            );
        }
        Ok(())
    }
}
