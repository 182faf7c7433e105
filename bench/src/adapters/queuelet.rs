//! queuelet's native JSON HTTP API through the crate's own typed client (keep-alive
//! connections pooled by reqwest). Single style: one send, one receive of at most one,
//! one delete per message. Best style: batch send, receive and delete of 16.

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use queuelet::api::model::{ReceiveRequest, SendMessage};
use queuelet::client::Client;
use queuelet::engine::QueueAttributes;

use super::{ClientStyle, Consumer, Delivery, Producer, Receipt, System};

pub struct Queuelet {
    client: Client,
    queue: String,
}

impl Queuelet {
    pub fn new(url: &str, queue: &str) -> Result<Self> {
        let client = Client::new(url).with_context(|| format!("queuelet URL {url:?}"))?;
        Ok(Self {
            client,
            queue: queue.to_string(),
        })
    }

    fn endpoint(&self, style: ClientStyle) -> Endpoint {
        Endpoint {
            client: self.client.clone(),
            queue: self.queue.clone(),
            style,
        }
    }
}

struct Endpoint {
    client: Client,
    queue: String,
    style: ClientStyle,
}

fn text(body: &[u8]) -> Result<String> {
    String::from_utf8(body.to_vec()).context("queuelet bodies in this harness are ASCII text")
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
        Ok(Box::new(self.endpoint(style)))
    }

    async fn consumer(&self, style: ClientStyle, _index: usize) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(self.endpoint(style)))
    }
}

#[async_trait]
impl Producer for Endpoint {
    async fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        match (self.style, bodies) {
            (ClientStyle::Single, [body]) => {
                self.client
                    .send(&self.queue, &SendMessage::text(text(body)?))
                    .await
                    .context("queuelet send")?;
            }
            (ClientStyle::Single, _) => bail!("single style sends one message per operation"),
            (ClientStyle::Best, _) => {
                let messages = bodies
                    .iter()
                    .map(|b| text(b).map(SendMessage::text))
                    .collect::<Result<Vec<_>>>()?;
                self.client
                    .send_batch(&self.queue, messages)
                    .await
                    .context("queuelet batch send")?;
            }
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
        let received = self
            .client
            .receive(&self.queue, &request)
            .await
            .context("queuelet receive")?;
        Ok(received
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
                Receipt::Handle(h) => Ok(h.clone()),
                other => bail!("queuelet cannot acknowledge by {other:?}"),
            })
            .collect::<Result<Vec<_>>>()?;
        if let (ClientStyle::Single, [handle]) = (self.style, handles.as_slice()) {
            return self
                .client
                .delete(&self.queue, handle)
                .await
                .context("queuelet delete");
        }
        let results = self
            .client
            .delete_batch(&self.queue, handles)
            .await
            .context("queuelet batch delete")?;
        if let Some(failed) = results.iter().find(|r| !r.ok) {
            bail!(
                "queuelet refused a delete: {} {}",
                failed.code.as_deref().unwrap_or("?"),
                failed.message.as_deref().unwrap_or("")
            );
        }
        Ok(())
    }
}
