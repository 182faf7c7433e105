//! Message handlers: send, receive, delete, change visibility.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::AppState;
use super::error::{ApiError, ApiJson, classify};
use super::model::{
    BodyEncoding, ChangeVisibility, DeleteBatch, DeleteResult, DeleteResults, ErrorBody,
    ReceiveRequest, ReceivedMessage, ReceivedMessages, SendBatch, SendMessage, SentBatch,
    SentMessage, VisibilityChanged,
};
use crate::engine::{self, NewMessage};

/// A body as sent in JSON: text as is, or base64.
pub(super) fn decode_body(body: String, encoding: BodyEncoding) -> Result<Bytes, ApiError> {
    match encoding {
        BodyEncoding::Text => Ok(Bytes::from(body)),
        BodyEncoding::Base64 => STANDARD
            .decode(body.as_bytes())
            .map(Bytes::from)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_body_encoding",
                    format!("body is not valid base64: {e}"),
                )
            }),
    }
}

fn decode(message: SendMessage) -> Result<NewMessage, ApiError> {
    Ok(NewMessage {
        body: decode_body(message.body, message.encoding)?,
        delay_seconds: message.delay_seconds,
        tags: message.tags,
    })
}

fn encode(message: engine::ReceivedMessage, wanted: BodyEncoding) -> ReceivedMessage {
    let (body, encoding) = match (wanted, std::str::from_utf8(&message.body)) {
        (BodyEncoding::Text, Ok(text)) => (text.to_string(), BodyEncoding::Text),
        _ => (STANDARD.encode(&message.body), BodyEncoding::Base64),
    };
    ReceivedMessage {
        id: message.id,
        receipt_handle: message.receipt_handle,
        body,
        encoding,
        tags: message.tags,
        enqueue_time_ms: message.enqueued_ms,
        first_dequeue_time_ms: message.first_dequeue_ms,
        dequeue_count: message.dequeue_count,
        next_visible_time_ms: message.next_visible_ms,
    }
}

#[utoipa::path(post, path = "/v1/queues/{name}/messages", tag = "messages",
    params(("name" = String, Path, description = "Queue name")),
    request_body = SendMessage,
    responses((status = 201, body = SentMessage), (status = "4XX", body = ErrorBody)))]
pub async fn send_message(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(message): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let ids = state.engine.send(&name, vec![decode(message)?]).await?;
    let id = ids.into_iter().next().unwrap_or_default();
    Ok((StatusCode::CREATED, Json(SentMessage { id })))
}

/// Sends up to the batch limit (16 by default) at once: all are accepted, or none.
#[utoipa::path(post, path = "/v1/queues/{name}/messages/batch", tag = "messages",
    params(("name" = String, Path, description = "Queue name")),
    request_body = SendBatch,
    responses((status = 201, body = SentBatch), (status = "4XX", body = ErrorBody)))]
pub async fn send_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(batch): ApiJson<SendBatch>,
) -> Result<(StatusCode, Json<SentBatch>), ApiError> {
    let messages = batch
        .messages
        .into_iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?;
    let ids = state.engine.send(&name, messages).await?;
    Ok((
        StatusCode::CREATED,
        Json(SentBatch {
            messages: ids.into_iter().map(|id| SentMessage { id }).collect(),
        }),
    ))
}

/// Receives up to `max` messages, long-polling up to `waitSeconds` for the first.
/// An empty list means none became visible in time.
#[utoipa::path(post, path = "/v1/queues/{name}/messages/receive", tag = "messages",
    params(("name" = String, Path, description = "Queue name")),
    request_body = ReceiveRequest,
    responses((status = 200, body = ReceivedMessages), (status = "4XX", body = ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<ReceiveRequest>,
) -> Result<Json<ReceivedMessages>, ApiError> {
    let max = request.max.unwrap_or(1);
    let received = state
        .engine
        .receive(&name, max, request.wait_seconds)
        .await?;
    Ok(Json(ReceivedMessages {
        messages: received
            .into_iter()
            .map(|m| encode(m, request.encoding))
            .collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/queues/{name}/messages/{receipt_handle}", tag = "messages",
    params(("name" = String, Path, description = "Queue name"),
           ("receipt_handle" = String, Path, description = "The latest receipt handle of the message")),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorBody)))]
pub async fn delete_message(
    State(state): State<AppState>,
    Path((name, receipt_handle)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let results = state
        .engine
        .delete_messages(&name, std::slice::from_ref(&receipt_handle))
        .await?;
    match results.into_iter().next() {
        Some(Err(error)) => Err(error.into()),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// Deletes several messages; each handle gets its own result.
#[utoipa::path(post, path = "/v1/queues/{name}/messages/delete", tag = "messages",
    params(("name" = String, Path, description = "Queue name")),
    request_body = DeleteBatch,
    responses((status = 200, body = DeleteResults), (status = "4XX", body = ErrorBody)))]
pub async fn delete_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(batch): ApiJson<DeleteBatch>,
) -> Result<Json<DeleteResults>, ApiError> {
    let results = state
        .engine
        .delete_messages(&name, &batch.receipt_handles)
        .await?;
    Ok(Json(DeleteResults {
        results: batch
            .receipt_handles
            .into_iter()
            .zip(results)
            .map(|(receipt_handle, result)| match result {
                Ok(()) => DeleteResult {
                    receipt_handle,
                    ok: true,
                    code: None,
                    message: None,
                },
                Err(error) => DeleteResult {
                    receipt_handle,
                    ok: false,
                    code: Some(classify(&error).1.to_string()),
                    message: Some(error.to_string()),
                },
            })
            .collect(),
    }))
}

/// Hides an in-flight message for longer, or releases it now with 0.
#[utoipa::path(post, path = "/v1/queues/{name}/messages/visibility", tag = "messages",
    params(("name" = String, Path, description = "Queue name")),
    request_body = ChangeVisibility,
    responses((status = 200, body = VisibilityChanged), (status = "4XX", body = ErrorBody)))]
pub async fn change_visibility(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<ChangeVisibility>,
) -> Result<Json<VisibilityChanged>, ApiError> {
    let next_visible_time_ms = state
        .engine
        .change_visibility(
            &name,
            &request.receipt_handle,
            request.visibility_timeout_seconds,
        )
        .await?;
    Ok(Json(VisibilityChanged {
        next_visible_time_ms,
    }))
}
