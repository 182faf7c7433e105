//! One keep-alive HTTP/1.1 connection, over TCP or a Unix socket, driven by hyper
//! directly (no pool, no redirects, no per-request URL building): the way a client that
//! cares about its CPU calls queuelet, since the load generator shares the machine's
//! cores with the server. Both of queuelet's APIs (native JSON and CMQ) go through it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Where an `http://[USER:PASSWORD@]HOST:PORT` URL points.
pub struct Address {
    /// `host:port`.
    pub authority: String,
    /// `USER:PASSWORD`, when the URL has them.
    pub user_info: Option<String>,
}

impl Address {
    pub fn parse(url: &str) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("queuelet URL {url:?}"))?;
        let Some(("http", authority)) = uri.scheme_str().zip(uri.authority()) else {
            bail!("queuelet URL {url:?} is not http://HOST:PORT");
        };
        Ok(match authority.as_str().rsplit_once('@') {
            Some((user_info, host)) => Self {
                authority: host.to_string(),
                user_info: Some(user_info.to_string()),
            },
            None => Self {
                authority: authority.as_str().to_string(),
                user_info: None,
            },
        })
    }
}

/// Where a connection goes.
pub enum Target {
    /// `host:port` over TCP.
    Tcp(String),
    /// A Unix socket; `host` is the `Host` header to send (`host:port` of the server's
    /// URL).
    Unix { path: PathBuf, host: String },
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// The `Host` header: `host:port`.
    host: String,
}

impl Connection {
    pub async fn open(target: &Target) -> Result<Self> {
        let (sender, host) = match target {
            Target::Tcp(authority) => {
                let stream = TcpStream::connect(authority)
                    .await
                    .with_context(|| format!("connect to queuelet at {authority}"))?;
                stream.set_nodelay(true).context("set TCP_NODELAY")?;
                (Self::handshake(stream).await?, authority)
            }
            Target::Unix { path, host } => {
                let stream = UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connect to queuelet at {}", path.display()))?;
                (Self::handshake(stream).await?, host)
            }
        };
        Ok(Self {
            sender,
            host: host.clone(),
        })
    }

    async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake with queuelet")?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("queuelet connection closed: {error}");
            }
        });
        Ok(sender)
    }

    /// The `Host` this connection sends: `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// One request on this connection; the response body when its status is a success.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Bytes> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.host);
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .with_context(|| format!("build {method} {path}"))?;
        self.sender
            .ready()
            .await
            .context("queuelet connection lost")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {path}: reading the response"))?
            .to_bytes();
        if !status.is_success() {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }

    /// POSTs `body` as JSON and decodes the JSON answer.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let body = serde_json::to_vec(body).context("encode the request")?;
        let bytes = self
            .call(Method::POST, path, Some(("application/json", body)))
            .await?;
        serde_json::from_slice(&bytes).with_context(|| format!("decode the answer of POST {path}"))
    }
}
