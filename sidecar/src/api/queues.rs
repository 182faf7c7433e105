//! Queue handlers: create, read, update, list, delete, purge, rewind.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::error::{ApiError, ApiJson};
use super::model::{ListQueuesQuery, Purged, QueueList, QueueView, RewindRequest, Rewound};
use super::{AppState, created_status, paging};
use crate::engine::{Origin, QueueAttributes, QueueAttributesPatch};

#[utoipa::path(get, path = "/v1/queues", tag = "queues", params(ListQueuesQuery),
    responses((status = 200, body = QueueList), (status = "4XX", body = super::model::ErrorBody)))]
pub async fn list_queues(
    State(state): State<AppState>,
    Query(query): Query<ListQueuesQuery>,
) -> Result<Json<QueueList>, ApiError> {
    let limit = paging::limit(query.limit)?;
    let offset = query.offset.unwrap_or(0);
    let (queues, total) = state
        .engine
        .list_queues(query.prefix.as_deref().unwrap_or(""), offset, limit)
        .await?;
    let next_offset = paging::next_offset(offset, queues.len(), total);
    Ok(Json(QueueList {
        queues: queues.into_iter().map(QueueView::from).collect(),
        total,
        next_offset,
    }))
}

/// Creates the queue; repeating the same call is harmless (200), different attributes are a 409.
#[utoipa::path(put, path = "/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    request_body = QueueAttributes,
    responses((status = 201, body = QueueView, description = "Created"),
               (status = 200, body = QueueView, description = "Already existed with these attributes"),
               (status = "4XX", body = super::model::ErrorBody)))]
pub async fn create_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(attrs): ApiJson<QueueAttributes>,
) -> Result<(StatusCode, Json<QueueView>), ApiError> {
    let created = state.engine.create_queue(&name, attrs, Origin::Api).await?;
    let info = state.engine.get_queue(&name).await?;
    Ok((created_status(created), Json(info.into())))
}

#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView), (status = "4XX", body = super::model::ErrorBody)))]
pub async fn get_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(state.engine.get_queue(&name).await?.into()))
}

/// Changes the given attributes; the others keep their values.
#[utoipa::path(patch, path = "/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    request_body = QueueAttributesPatch,
    responses((status = 200, body = QueueView), (status = "4XX", body = super::model::ErrorBody)))]
pub async fn update_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(patch): ApiJson<QueueAttributesPatch>,
) -> Result<Json<QueueView>, ApiError> {
    state
        .engine
        .update_queue(&name, &patch, Origin::Api)
        .await?;
    Ok(Json(state.engine.get_queue(&name).await?.into()))
}

#[utoipa::path(delete, path = "/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses((status = 204, description = "Deleted with its messages"), (status = "4XX", body = super::model::ErrorBody)))]
pub async fn delete_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_queue(&name, Origin::Api).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Drops every message of the queue.
#[utoipa::path(post, path = "/v1/queues/{name}/purge", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = Purged), (status = "4XX", body = super::model::ErrorBody)))]
pub async fn purge_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Purged>, ApiError> {
    let purged = state.engine.purge_queue(&name).await?;
    Ok(Json(Purged { purged }))
}

/// Makes deleted messages since a time within the rewind window consumable again.
#[utoipa::path(post, path = "/v1/queues/{name}/rewind", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    request_body = RewindRequest,
    responses((status = 200, body = Rewound), (status = "4XX", body = super::model::ErrorBody)))]
pub async fn rewind_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<RewindRequest>,
) -> Result<Json<Rewound>, ApiError> {
    let rewound = state
        .engine
        .rewind_queue(&name, request.start_time_ms)
        .await?;
    Ok(Json(Rewound { rewound }))
}
