//! queuelet's CMQ API 2.0 (`/v2/index.php`): what a client migrating from Tencent Cloud
//! CMQ sends. Every request is a form-encoded POST signed with HmacSHA256, as the CMQ
//! SDKs sign; the address carries the key as `http://SecretId:SecretKey@HOST:PORT`.
//! Single style: SendMessage, ReceiveMessage, DeleteMessage per message. Best style:
//! BatchSendMessage, BatchReceiveMessage and BatchDeleteMessage of 16.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use http::Method;
use queuelet::api::cmq::sign::{SignatureMethod, canonical_string, sign};
use serde::Deserialize;

use super::http1::{Address, Connection, Target};
use super::{ClientStyle, Consumer, Delivery, Producer, Receipt, System};
use crate::body::text;

const PATH: &str = "/v2/index.php";
/// CMQ's "no message": the long poll ended with the queue empty.
const NO_MESSAGE: i64 = 7000;
/// CMQ's "queue does not exist".
const QUEUE_NOT_FOUND: i64 = 4440;

pub struct Cmq {
    authority: String,
    secret_id: String,
    secret_key: String,
    queue: String,
}

impl Cmq {
    pub fn new(url: &str, queue: &str) -> Result<Self> {
        let address = Address::parse(url)?;
        let Some((secret_id, secret_key)) = address
            .user_info
            .as_deref()
            .and_then(|info| info.split_once(':'))
        else {
            bail!("the CMQ address carries its key: http://SecretId:SecretKey@HOST:PORT");
        };
        Ok(Self {
            secret_id: secret_id.to_string(),
            secret_key: secret_key.to_string(),
            authority: address.authority,
            queue: queue.to_string(),
        })
    }

    async fn endpoint(&self, style: ClientStyle) -> Result<Endpoint> {
        Ok(Endpoint {
            connection: Connection::open(&Target::Tcp(self.authority.clone())).await?,
            secret_id: self.secret_id.clone(),
            secret_key: self.secret_key.clone(),
            queue: self.queue.clone(),
            style,
        })
    }
}

/// The fields of CMQ answers this harness reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    code: i64,
    #[serde(default)]
    message: String,
    /// BatchSendMessage: one entry per message accepted.
    #[serde(default)]
    msg_list: Vec<serde::de::IgnoredAny>,
    /// BatchReceiveMessage.
    #[serde(default)]
    msg_info_list: Vec<Message>,
    /// ReceiveMessage answers with the message's fields at the top level.
    msg_body: Option<String>,
    receipt_handle: Option<String>,
    dequeue_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    msg_body: String,
    receipt_handle: String,
    dequeue_count: u64,
}

impl Message {
    fn delivery(self) -> Delivery {
        Delivery {
            redelivered: self.dequeue_count > 1,
            body: self.msg_body.into_bytes(),
            receipt: Receipt::Handle(self.receipt_handle),
        }
    }
}

struct Endpoint {
    connection: Connection,
    secret_id: String,
    secret_key: String,
    queue: String,
    style: ClientStyle,
}

impl Endpoint {
    /// One signed action on the queue; the answer whatever its code.
    async fn action(
        &mut self,
        action: &str,
        mut params: BTreeMap<String, String>,
    ) -> Result<Answer> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        params.insert("Action".into(), action.into());
        params.insert("queueName".into(), self.queue.clone());
        params.insert("SecretId".into(), self.secret_id.clone());
        // Random, as CMQ's SDKs make it: the server accepts each signed request once, so
        // two consumers must not sign the same ReceiveMessage alike in the same second.
        let nonce = rand::random::<u64>() >> 1;
        params.insert("Nonce".into(), nonce.to_string());
        params.insert("Timestamp".into(), timestamp.to_string());
        params.insert("SignatureMethod".into(), "HmacSHA256".into());
        let text = canonical_string("POST", self.connection.host(), PATH, &params);
        params.insert(
            "Signature".into(),
            sign(SignatureMethod::HmacSha256, &self.secret_key, &text),
        );
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let bytes = self
            .connection
            .call(
                Method::POST,
                PATH,
                Some(("application/x-www-form-urlencoded", form.into_bytes())),
            )
            .await
            .with_context(|| format!("CMQ {action}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("decode the answer of CMQ {action}"))
    }

    /// Like [`Endpoint::action`], but any code other than 0 and `also` is an error.
    async fn expect(
        &mut self,
        action: &str,
        params: BTreeMap<String, String>,
        also: i64,
    ) -> Result<Answer> {
        let answer = self.action(action, params).await?;
        if answer.code != 0 && answer.code != also {
            bail!("CMQ {action}: code {} {}", answer.code, answer.message);
        }
        Ok(answer)
    }
}

/// `name.1`, `name.2`, … for CMQ's list parameters.
fn numbered<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| (format!("{name}.{}", index + 1), value.to_string()))
        .collect()
}

#[async_trait]
impl System for Cmq {
    async fn prepare(&self) -> Result<()> {
        let mut endpoint = self.endpoint(ClientStyle::Single).await?;
        endpoint
            .expect("DeleteQueue", BTreeMap::new(), QUEUE_NOT_FOUND)
            .await
            .context("delete the previous run's queue")?;
        let attributes = BTreeMap::from([("visibilityTimeout".into(), "120".into())]);
        endpoint
            .expect("CreateQueue", attributes, 0)
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
        match (self.style, bodies) {
            (ClientStyle::Single, [body]) => {
                let params = BTreeMap::from([("msgBody".into(), text(body)?.to_string())]);
                self.expect("SendMessage", params, 0).await?;
            }
            (ClientStyle::Single, _) => bail!("single style sends one message per operation"),
            (ClientStyle::Best, _) => {
                let texts = bodies.iter().map(|b| text(b)).collect::<Result<Vec<_>>>()?;
                let answer = self
                    .expect("BatchSendMessage", numbered("msgBody", texts), 0)
                    .await?;
                if answer.msg_list.len() != bodies.len() {
                    bail!(
                        "CMQ accepted {} of {} messages",
                        answer.msg_list.len(),
                        bodies.len()
                    );
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for Endpoint {
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let mut params = BTreeMap::from([("pollingWaitSeconds".into(), "1".into())]);
        let answer = if self.style == ClientStyle::Single {
            self.expect("ReceiveMessage", params, NO_MESSAGE).await?
        } else {
            params.insert("numOfMsg".into(), max.to_string());
            self.expect("BatchReceiveMessage", params, NO_MESSAGE)
                .await?
        };
        if answer.code == NO_MESSAGE {
            return Ok(Vec::new());
        }
        if self.style == ClientStyle::Best {
            return Ok(answer
                .msg_info_list
                .into_iter()
                .map(Message::delivery)
                .collect());
        }
        let (Some(msg_body), Some(receipt_handle), Some(dequeue_count)) =
            (answer.msg_body, answer.receipt_handle, answer.dequeue_count)
        else {
            bail!("CMQ ReceiveMessage answered code 0 without a message");
        };
        let message = Message {
            msg_body,
            receipt_handle,
            dequeue_count,
        };
        Ok(vec![message.delivery()])
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let handles = deliveries
            .iter()
            .map(|d| match &d.receipt {
                Receipt::Handle(handle) => Ok(handle.as_str()),
                other => bail!("CMQ cannot acknowledge by {other:?}"),
            })
            .collect::<Result<Vec<_>>>()?;
        if let (ClientStyle::Single, [handle]) = (self.style, handles.as_slice()) {
            let params = BTreeMap::from([("receiptHandle".into(), handle.to_string())]);
            self.expect("DeleteMessage", params, 0).await?;
        } else {
            // Any failed handle makes the answer's code non-zero.
            self.expect("BatchDeleteMessage", numbered("receiptHandle", handles), 0)
                .await?;
        }
        Ok(())
    }
}
