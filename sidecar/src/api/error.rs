//! One error type for the HTTP layer, rendered in one place as
//! `{"code", "message", "requestId"}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::model::ErrorBody;
use crate::engine::EngineError;

/// Names a request; a constant, so using it parses no header name.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

/// Status and code of every engine refusal.
pub fn classify(error: &EngineError) -> (StatusCode, &'static str) {
    use EngineError::*;
    match error {
        InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_queue_name"),
        InvalidAttribute { .. } => (StatusCode::BAD_REQUEST, "invalid_attribute"),
        InvalidMessage(_) => (StatusCode::BAD_REQUEST, "invalid_message"),
        InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        QueueNotFound(_) => (StatusCode::NOT_FOUND, "queue_not_found"),
        QueueExists(_) => (StatusCode::CONFLICT, "queue_exists"),
        QueueManaged(_) => (StatusCode::CONFLICT, "queue_managed"),
        QueueInUse { .. } => (StatusCode::CONFLICT, "queue_in_use"),
        QueueSubscribed { .. } => (StatusCode::CONFLICT, "queue_in_use"),
        TopicNotFound(_) => (StatusCode::NOT_FOUND, "topic_not_found"),
        TopicExists(_) => (StatusCode::CONFLICT, "topic_exists"),
        TopicManaged(_) => (StatusCode::CONFLICT, "topic_managed"),
        TopicInUse(_) => (StatusCode::CONFLICT, "topic_in_use"),
        SubscriptionNotFound { .. } => (StatusCode::NOT_FOUND, "subscription_not_found"),
        SubscriptionExists { .. } => (StatusCode::CONFLICT, "subscription_exists"),
        LimitExceeded(_) => (StatusCode::CONFLICT, "limit_exceeded"),
        DeadLetterQueueNotFound(_) => (StatusCode::BAD_REQUEST, "dead_letter_queue_not_found"),
        MessageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
        BatchTooLarge { .. } => (StatusCode::BAD_REQUEST, "batch_too_large"),
        EmptyBatch => (StatusCode::BAD_REQUEST, "empty_batch"),
        QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
        InvalidReceiptHandle => (StatusCode::BAD_REQUEST, "invalid_receipt_handle"),
        StaleReceiptHandle => (StatusCode::CONFLICT, "stale_receipt_handle"),
        WrongReplica(_) => (StatusCode::MISDIRECTED_REQUEST, "wrong_replica"),
        RewindRefused(_) => (StatusCode::CONFLICT, "rewind_refused"),
        Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let (status, code) = classify(&error);
        Self::new(status, code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    /// The body is written by `error::render`, called by the envelope, which knows the
    /// request id.
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Generic codes for errors raised outside the handlers (routing, extractors, layers).
fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    }
}

/// An error response in the JSON error shape, with the request's id; a response that is
/// no error is returned as it is.
pub async fn render(response: Response, request_id_header: &HeaderValue) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let request_id = request_id_header.to_str().unwrap_or_default().to_string();
    let (mut parts, body) = response.into_parts();
    let error = match parts.extensions.get::<ApiError>() {
        Some(error) => error.clone(),
        None => {
            let text = axum::body::to_bytes(body, 4_096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            let message = if text.is_empty() {
                parts
                    .status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_string()
            } else {
                text
            };
            ApiError::new(status, code_for_status(status), message)
        }
    };
    if error.status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(code = error.code, message = %error.message, request_id, "request failed");
    } else if error.status.is_server_error() {
        tracing::warn!(code = error.code, message = %error.message, request_id, "request failed");
    } else {
        tracing::debug!(code = error.code, message = %error.message, request_id, "request refused");
    }
    let body = ErrorBody {
        code: error.code.to_string(),
        message: error.message,
        request_id,
    };
    let mut response = (error.status, axum::Json(body)).into_response();
    // What else the refusal said in its headers stays (`Allow` on a 405, say).
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    response.headers_mut().extend(parts.headers);
    if error.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"queuelet\""),
        );
    }
    response
}

/// `axum::Json`, with its refusals in our error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == "application"
                    && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                ApiError::new(status, code_for_status(status), rejection.body_text())
            })?;
        // Every request body is an object; serde would also take an array by position.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                    Ok(_) => ApiError::bad_request(
                        "invalid_request",
                        "the request body must be a JSON object",
                    ),
                    Err(e) => {
                        ApiError::bad_request("malformed_json", format!("malformed JSON: {e}"))
                    }
                },
            );
        }
        // serde_json straight away; axum's parser, which tracks the path of the offending
        // field for its message and costs more, only words a refusal.
        if let Ok(value) = serde_json::from_slice::<T>(&bytes) {
            return Ok(Self(value));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::JsonSyntaxError(_) => {
                    ApiError::bad_request("malformed_json", rejection.body_text())
                }
                _ => ApiError::bad_request("invalid_request", rejection.body_text()),
            }),
        }
    }
}
