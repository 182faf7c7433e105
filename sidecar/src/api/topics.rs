//! Topic handlers: topics and their attributes, subscriptions, and publishing.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::error::{ApiError, ApiJson};
use super::messages::decode_body;
use super::model::{
    ErrorBody, ListQuery, PublishBatch, PublishMessage, PublishedMessages, SentMessage,
    SubscriptionList, SubscriptionView, TopicList, TopicView,
};
use super::{AppState, created_status, paging};
use crate::engine::{
    Origin, SubscriptionPatch, SubscriptionSpec, TopicAttributes, TopicAttributesPatch,
    TopicMessage,
};

#[utoipa::path(get, path = "/v1/topics", tag = "topics", params(ListQuery),
    responses((status = 200, body = TopicList), (status = "4XX", body = ErrorBody)))]
pub async fn list_topics(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<TopicList>, ApiError> {
    let limit = paging::limit(query.limit)?;
    let offset = query.offset.unwrap_or(0);
    let (topics, total) =
        state
            .engine
            .list_topics(query.prefix.as_deref().unwrap_or(""), offset, limit);
    Ok(Json(TopicList {
        next_offset: paging::next_offset(offset, topics.len(), total),
        topics: topics.into_iter().map(TopicView::from).collect(),
        total,
    }))
}

/// Creates the topic; repeating the same call is harmless (200), different attributes are a 409.
#[utoipa::path(put, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    request_body = TopicAttributes,
    responses((status = 201, body = TopicView, description = "Created"),
               (status = 200, body = TopicView, description = "Already existed with these attributes"),
               (status = "4XX", body = ErrorBody)))]
pub async fn create_topic(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(attrs): ApiJson<TopicAttributes>,
) -> Result<(StatusCode, Json<TopicView>), ApiError> {
    let created = state.engine.create_topic(&name, attrs, Origin::Api).await?;
    let info = state.engine.get_topic(&name)?;
    Ok((created_status(created), Json(info.into())))
}

#[utoipa::path(get, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    responses((status = 200, body = TopicView), (status = "4XX", body = ErrorBody)))]
pub async fn get_topic(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TopicView>, ApiError> {
    Ok(Json(state.engine.get_topic(&name)?.into()))
}

/// Changes the given attributes; the filter type cannot change.
#[utoipa::path(patch, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    request_body = TopicAttributesPatch,
    responses((status = 200, body = TopicView), (status = "4XX", body = ErrorBody)))]
pub async fn update_topic(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(patch): ApiJson<TopicAttributesPatch>,
) -> Result<Json<TopicView>, ApiError> {
    state
        .engine
        .update_topic(&name, &patch, Origin::Api)
        .await?;
    Ok(Json(state.engine.get_topic(&name)?.into()))
}

/// Deletes the topic; refused (409 `topic_in_use`) while it has subscriptions.
#[utoipa::path(delete, path = "/v1/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorBody)))]
pub async fn delete_topic(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_topic(&name, Origin::Api).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn decode(message: PublishMessage) -> Result<TopicMessage, ApiError> {
    Ok(TopicMessage {
        body: decode_body(message.body, message.encoding)?,
        tags: message.tags,
        routing_key: message.routing_key,
    })
}

async fn publish(
    state: &AppState,
    name: &str,
    messages: Vec<PublishMessage>,
) -> Result<(StatusCode, Json<PublishedMessages>), ApiError> {
    let messages = messages
        .into_iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?;
    let published = state.engine.publish(name, messages).await?;
    Ok((
        StatusCode::CREATED,
        Json(PublishedMessages {
            messages: published
                .ids
                .into_iter()
                .map(|id| SentMessage { id })
                .collect(),
            deliveries: published.deliveries,
        }),
    ))
}

/// Publishes one message: it is in every matching subscribed queue when this answers.
#[utoipa::path(post, path = "/v1/topics/{name}/messages", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    request_body = PublishMessage,
    responses((status = 201, body = PublishedMessages), (status = "4XX", body = ErrorBody)))]
pub async fn publish_message(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(message): ApiJson<PublishMessage>,
) -> Result<(StatusCode, Json<PublishedMessages>), ApiError> {
    publish(&state, &name, vec![message]).await
}

/// Publishes up to the batch limit (16 by default) at once.
#[utoipa::path(post, path = "/v1/topics/{name}/messages/batch", tag = "topics",
    params(("name" = String, Path, description = "Topic name")),
    request_body = PublishBatch,
    responses((status = 201, body = PublishedMessages), (status = "4XX", body = ErrorBody)))]
pub async fn publish_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(batch): ApiJson<PublishBatch>,
) -> Result<(StatusCode, Json<PublishedMessages>), ApiError> {
    publish(&state, &name, batch.messages).await
}

#[utoipa::path(get, path = "/v1/topics/{name}/subscriptions", tag = "topics",
    params(("name" = String, Path, description = "Topic name"), ListQuery),
    responses((status = 200, body = SubscriptionList), (status = "4XX", body = ErrorBody)))]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let limit = paging::limit(query.limit)?;
    let offset = query.offset.unwrap_or(0);
    let (subscriptions, total) = state.engine.list_subscriptions(
        &name,
        query.prefix.as_deref().unwrap_or(""),
        offset,
        limit,
    )?;
    Ok(Json(SubscriptionList {
        next_offset: paging::next_offset(offset, subscriptions.len(), total),
        subscriptions: subscriptions
            .into_iter()
            .map(SubscriptionView::from)
            .collect(),
        total,
    }))
}

/// Subscribes a queue of this server (`{"queue": …}`) or an HTTP endpoint
/// (`{"endpoint": …}`, pushed to with retries) to the topic, with optional filters; the
/// same settings again are harmless (200), different ones a 409.
#[utoipa::path(put, path = "/v1/topics/{name}/subscriptions/{subscription}", tag = "topics",
    params(("name" = String, Path, description = "Topic name"),
           ("subscription" = String, Path, description = "Subscription name")),
    request_body = SubscriptionSpec,
    responses((status = 201, body = SubscriptionView, description = "Subscribed"),
               (status = 200, body = SubscriptionView, description = "Already subscribed with these settings"),
               (status = "4XX", body = ErrorBody)))]
pub async fn subscribe(
    State(state): State<AppState>,
    Path((name, subscription)): Path<(String, String)>,
    ApiJson(spec): ApiJson<SubscriptionSpec>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    let created = state
        .engine
        .subscribe(&name, &subscription, spec, Origin::Api)
        .await?;
    let info = state.engine.get_subscription(&name, &subscription)?;
    Ok((created_status(created), Json(info.into())))
}

#[utoipa::path(get, path = "/v1/topics/{name}/subscriptions/{subscription}", tag = "topics",
    params(("name" = String, Path, description = "Topic name"),
           ("subscription" = String, Path, description = "Subscription name")),
    responses((status = 200, body = SubscriptionView), (status = "4XX", body = ErrorBody)))]
pub async fn get_subscription(
    State(state): State<AppState>,
    Path((name, subscription)): Path<(String, String)>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(
        state.engine.get_subscription(&name, &subscription)?.into(),
    ))
}

/// Changes filters or push settings; `"filterTags": []` clears the tag filter.
#[utoipa::path(patch, path = "/v1/topics/{name}/subscriptions/{subscription}", tag = "topics",
    params(("name" = String, Path, description = "Topic name"),
           ("subscription" = String, Path, description = "Subscription name")),
    request_body = SubscriptionPatch,
    responses((status = 200, body = SubscriptionView), (status = "4XX", body = ErrorBody)))]
pub async fn update_subscription(
    State(state): State<AppState>,
    Path((name, subscription)): Path<(String, String)>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let info = state
        .engine
        .update_subscription(&name, &subscription, &patch, Origin::Api)
        .await?;
    Ok(Json(info.into()))
}

#[utoipa::path(delete, path = "/v1/topics/{name}/subscriptions/{subscription}", tag = "topics",
    params(("name" = String, Path, description = "Topic name"),
           ("subscription" = String, Path, description = "Subscription name")),
    responses((status = 204, description = "Unsubscribed"), (status = "4XX", body = ErrorBody)))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path((name, subscription)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .unsubscribe(&name, &subscription, Origin::Api)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
