//! Typed async client for the native API, used by the tests, the CLI and the operator.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::model::{
    ChangeVisibility, DeleteBatch, DeleteResult, DeleteResults, ErrorBody, ListQueuesQuery, Purged,
    QueueList, QueueView, ReceiveRequest, ReceivedMessage, ReceivedMessages, RewindRequest,
    Rewound, SendBatch, SendMessage, SentBatch, SentMessage, VisibilityChanged,
};
use crate::engine::{QueueAttributes, QueueAttributesPatch};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with its error shape.
    #[error("{status} {code}: {message} (request {request_id})")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },
    /// `request` is the method and URL, e.g. `POST http://…/v1/queues/a/messages`.
    #[error("{request}: {source}")]
    Transport {
        request: String,
        source: reqwest::Error,
    },
    #[error("{request}: unexpected response {status}: {detail}")]
    Unexpected {
        request: String,
        status: u16,
        detail: String,
    },
    #[error("invalid server URL {0:?}")]
    BadUrl(String),
}

impl ClientError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    /// The Unix socket requests go through, when not over TCP.
    socket: Option<PathBuf>,
}

impl Client {
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_http(base_url, reqwest::Client::new())
    }

    /// Uses a caller-built `reqwest::Client` (e.g. with `http2_prior_knowledge`).
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Self, ClientError> {
        let base = Url::parse(base_url).map_err(|_| ClientError::BadUrl(base_url.to_string()))?;
        if base.cannot_be_a_base() {
            return Err(ClientError::BadUrl(base_url.to_string()));
        }
        Ok(Self {
            http,
            base,
            token: None,
            socket: None,
        })
    }

    /// Sends every request through the server's Unix socket (its `--unix-socket`);
    /// `base_url` then only names the server.
    pub fn with_unix_socket(base_url: &str, socket: &Path) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .unix_socket(socket)
            .build()
            .map_err(|source| ClientError::Transport {
                request: format!("a client for the socket {}", socket.display()),
                source,
            })?;
        Ok(Self {
            socket: Some(socket.to_path_buf()),
            ..Self::with_http(base_url, http)?
        })
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let what = match &self.socket {
            Some(socket) => format!("{method} {url} through {}", socket.display()),
            None => format!("{method} {url}"),
        };
        let transport = |source| ClientError::Transport {
            request: what.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ClientError::Unexpected {
                    request: what,
                    status: status.as_u16(),
                    detail: e.to_string(),
                });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(error) => Err(ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                request_id: error.request_id,
            }),
            Err(_) => Err(ClientError::Unexpected {
                request: what,
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }

    async fn expect<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call(method.clone(), url.clone(), body)
            .await?
            .ok_or(ClientError::Unexpected {
                request: format!("{method} {url}"),
                status: 204,
                detail: "no body".into(),
            })
    }

    pub async fn create_queue(
        &self,
        name: &str,
        attrs: &QueueAttributes,
    ) -> Result<QueueView, ClientError> {
        self.expect(Method::PUT, self.url(&["v1", "queues", name]), Some(attrs))
            .await
    }

    pub async fn get_queue(&self, name: &str) -> Result<QueueView, ClientError> {
        self.expect::<(), _>(Method::GET, self.url(&["v1", "queues", name]), None)
            .await
    }

    pub async fn update_queue(
        &self,
        name: &str,
        patch: &QueueAttributesPatch,
    ) -> Result<QueueView, ClientError> {
        self.expect(
            Method::PATCH,
            self.url(&["v1", "queues", name]),
            Some(patch),
        )
        .await
    }

    pub async fn delete_queue(&self, name: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(Method::DELETE, self.url(&["v1", "queues", name]), None)
            .await
            .map(|_| ())
    }

    pub async fn list_queues(&self, query: &ListQueuesQuery) -> Result<QueueList, ClientError> {
        let mut url = self.url(&["v1", "queues"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(prefix) = &query.prefix {
                pairs.append_pair("prefix", prefix);
            }
            if let Some(offset) = query.offset {
                pairs.append_pair("offset", &offset.to_string());
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.expect::<(), _>(Method::GET, url, None).await
    }

    pub async fn purge_queue(&self, name: &str) -> Result<u64, ClientError> {
        let purged: Purged = self
            .expect::<(), _>(
                Method::POST,
                self.url(&["v1", "queues", name, "purge"]),
                None,
            )
            .await?;
        Ok(purged.purged)
    }

    pub async fn rewind_queue(&self, name: &str, start_time_ms: u64) -> Result<u64, ClientError> {
        let rewound: Rewound = self
            .expect(
                Method::POST,
                self.url(&["v1", "queues", name, "rewind"]),
                Some(&RewindRequest { start_time_ms }),
            )
            .await?;
        Ok(rewound.rewound)
    }

    pub async fn send(&self, queue: &str, message: &SendMessage) -> Result<String, ClientError> {
        let sent: SentMessage = self
            .expect(
                Method::POST,
                self.url(&["v1", "queues", queue, "messages"]),
                Some(message),
            )
            .await?;
        Ok(sent.id)
    }

    /// Sends a UTF-8 text body with the queue's defaults.
    pub async fn send_text(&self, queue: &str, body: &str) -> Result<String, ClientError> {
        self.send(queue, &SendMessage::text(body)).await
    }

    pub async fn send_batch(
        &self,
        queue: &str,
        messages: Vec<SendMessage>,
    ) -> Result<Vec<String>, ClientError> {
        let sent: SentBatch = self
            .expect(
                Method::POST,
                self.url(&["v1", "queues", queue, "messages", "batch"]),
                Some(&SendBatch { messages }),
            )
            .await?;
        Ok(sent.messages.into_iter().map(|m| m.id).collect())
    }

    pub async fn receive(
        &self,
        queue: &str,
        request: &ReceiveRequest,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let received: ReceivedMessages = self
            .expect(
                Method::POST,
                self.url(&["v1", "queues", queue, "messages", "receive"]),
                Some(request),
            )
            .await?;
        Ok(received.messages)
    }

    pub async fn delete(&self, queue: &str, receipt_handle: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(
            Method::DELETE,
            self.url(&["v1", "queues", queue, "messages", receipt_handle]),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn delete_batch(
        &self,
        queue: &str,
        receipt_handles: Vec<String>,
    ) -> Result<Vec<DeleteResult>, ClientError> {
        let results: DeleteResults = self
            .expect(
                Method::POST,
                self.url(&["v1", "queues", queue, "messages", "delete"]),
                Some(&DeleteBatch { receipt_handles }),
            )
            .await?;
        Ok(results.results)
    }

    /// Returns when the message becomes visible (ms since the Unix epoch).
    pub async fn change_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        visibility_timeout_seconds: u32,
    ) -> Result<u64, ClientError> {
        let changed: VisibilityChanged = self
            .expect(
                Method::POST,
                self.url(&["v1", "queues", queue, "messages", "visibility"]),
                Some(&ChangeVisibility {
                    receipt_handle: receipt_handle.to_string(),
                    visibility_timeout_seconds,
                }),
            )
            .await?;
        Ok(changed.next_visible_time_ms)
    }
}
