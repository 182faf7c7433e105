//! CMQ queue actions onto the engine: CreateQueue, SetQueueAttributes,
//! GetQueueAttributes, ListQueue, DeleteQueue, RewindQueue, SendMessage,
//! BatchSendMessage, ReceiveMessage, BatchReceiveMessage, DeleteMessage and
//! BatchDeleteMessage.

use bytes::Bytes;
use serde_json::{Value, json};

use super::error::CmqError;
use super::params::Params;
use super::{Fields, Refusal, fields};
use crate::engine::attrs::{
    DELAY_SECONDS, MAX_BACKLOG, MAX_MESSAGE_BYTES, POLLING_WAIT_SECONDS, RETENTION_SECONDS,
    VISIBILITY_TIMEOUT_SECONDS,
};
use crate::engine::{
    Engine, NewMessage, Origin, QueueAttributes, QueueAttributesPatch, ReceivedMessage,
};

/// Most items in a CMQ batch.
pub const MAX_BATCH: usize = 16;
/// ListQueue's default and largest page.
const LIST_LIMIT: (usize, usize) = (20, 50);

/// The queue attributes CMQ's CreateQueue and SetQueueAttributes take.
fn attributes_patch(params: &Params) -> Result<QueueAttributesPatch, CmqError> {
    Ok(QueueAttributesPatch {
        max_backlog: params.number("maxMsgHeapNum", MAX_BACKLOG)?,
        polling_wait_seconds: params.number("pollingWaitSeconds", POLLING_WAIT_SECONDS)?,
        visibility_timeout_seconds: params
            .number("visibilityTimeout", VISIBILITY_TIMEOUT_SECONDS)?,
        max_message_bytes: params.number("maxMsgSize", MAX_MESSAGE_BYTES)?,
        retention_seconds: params.number("msgRetentionSeconds", RETENTION_SECONDS)?,
        rewind_seconds: params.number("rewindSeconds", (0, RETENTION_SECONDS.1))?,
        ..QueueAttributesPatch::default()
    })
}

fn seconds(ms: u64) -> u64 {
    ms / 1_000
}

fn message_fields(message: ReceivedMessage) -> Value {
    json!({
        "msgBody": String::from_utf8_lossy(&message.body),
        "msgId": message.id,
        "receiptHandle": message.receipt_handle,
        "enqueueTime": seconds(message.enqueued_ms),
        "firstDequeueTime": seconds(message.first_dequeue_ms),
        "nextVisibleTime": seconds(message.next_visible_ms),
        "dequeueCount": message.dequeue_count,
    })
}

/// The batch of `msgBody.N` (or one `msgBody`) with the request's `delaySeconds`.
fn messages(params: &Params, batch: bool) -> Result<Vec<NewMessage>, CmqError> {
    let bodies = if batch {
        params.list("msgBody", MAX_BATCH)?
    } else {
        vec![params.required("msgBody")?.to_string()]
    };
    if bodies.is_empty() || bodies.iter().any(String::is_empty) {
        return Err(CmqError::new(4000, 10120, "msgBody is empty"));
    }
    let delay_seconds = params
        .number("delaySeconds", (DELAY_SECONDS.0, DELAY_SECONDS.1))
        .map_err(|e| CmqError::new(4000, 10692, e.text))?;
    Ok(bodies
        .into_iter()
        .map(|body| NewMessage {
            body: Bytes::from(body),
            delay_seconds,
            tags: Vec::new(),
        })
        .collect())
}

async fn receive(
    engine: &Engine,
    params: &Params,
    queue: &str,
    max: usize,
) -> Result<Vec<ReceivedMessage>, CmqError> {
    let wait = params.number("pollingWaitSeconds", POLLING_WAIT_SECONDS)?;
    let received = engine.receive(queue, max, wait).await?;
    if received.is_empty() {
        return Err(CmqError::no_message());
    }
    Ok(received)
}

pub async fn handle(engine: &Engine, action: &str, params: &Params) -> Result<Fields, CmqError> {
    let queue = if action == "ListQueue" {
        ""
    } else {
        let queue = params.required("queueName")?;
        crate::engine::validate_name(queue)
            .map_err(|e| CmqError::new(4000, 10020, e.to_string()))?;
        queue
    };
    Ok(match action {
        "CreateQueue" => {
            let attrs = attributes_patch(params)?.apply_to(&QueueAttributes::default());
            match engine.create_queue(queue, attrs, Origin::Api).await? {
                crate::engine::Created::New => fields(json!({"queueId": queue_id(queue)})),
                crate::engine::Created::AlreadyExisted => {
                    return Err(CmqError::new(
                        4460,
                        10160,
                        format!("queue {queue:?} already exists"),
                    ));
                }
            }
        }
        "SetQueueAttributes" => {
            engine
                .update_queue(queue, &attributes_patch(params)?, Origin::Api)
                .await?;
            Fields::new()
        }
        "GetQueueAttributes" => {
            let info = engine.get_queue(queue).await?;
            let rewindable = info.stats.rewindable;
            let mut out = json!({
                "queueName": info.name,
                "maxMsgHeapNum": info.attrs.max_backlog,
                "pollingWaitSeconds": info.attrs.polling_wait_seconds,
                "visibilityTimeout": info.attrs.visibility_timeout_seconds,
                "maxMsgSize": info.attrs.max_message_bytes,
                "msgRetentionSeconds": info.attrs.retention_seconds,
                "createTime": seconds(info.created_ms),
                "lastModifyTime": seconds(info.modified_ms),
                "activeMsgNum": info.stats.active,
                "inactiveMsgNum": info.stats.inactive,
                "delayMsgNum": info.stats.delayed,
                "rewindSeconds": info.attrs.rewind_seconds,
                "rewindmsgNum": rewindable,
                "rewindMsgNum": rewindable,
                "minMsgTime": info.stats.oldest_message_ms.map_or(0, seconds),
            });
            if let (Some(policy), Value::Object(map)) = (&info.attrs.dead_letter, &mut out) {
                let text = json!({
                    "deadLetterQueue": policy.queue,
                    "policy": u8::from(policy.max_receive_count.is_none()),
                    "maxReceiveCount": policy.max_receive_count.unwrap_or(0),
                    "maxTimeToLive": policy.max_time_to_live_seconds.unwrap_or(0),
                });
                map.insert("deadLetterPolicy".into(), Value::String(text.to_string()));
            }
            fields(out)
        }
        "DeleteQueue" => {
            engine.delete_queue(queue, Origin::Api).await?;
            Fields::new()
        }
        "RewindQueue" => {
            let start = params
                .required("startConsumeTime")?
                .parse::<u64>()
                .map_err(|_| CmqError::param("startConsumeTime must be Unix seconds"))?;
            engine
                .rewind_queue(queue, start.saturating_mul(1_000))
                .await?;
            Fields::new()
        }
        "SendMessage" => {
            let ids = engine.send(queue, messages(params, false)?).await?;
            fields(json!({"msgId": ids.into_iter().next().unwrap_or_default()}))
        }
        "BatchSendMessage" => {
            let ids = engine.send(queue, messages(params, true)?).await?;
            let list: Vec<Value> = ids.into_iter().map(|id| json!({"msgId": id})).collect();
            fields(json!({"msgList": list}))
        }
        "ReceiveMessage" => {
            let mut received = receive(engine, params, queue, 1).await?;
            match received.pop() {
                Some(message) => fields(message_fields(message)),
                None => return Err(CmqError::no_message()),
            }
        }
        "BatchReceiveMessage" => {
            let max = params
                .number("numOfMsg", (1, MAX_BATCH))?
                .ok_or_else(|| CmqError::new(4000, 10010, "parameter numOfMsg is missing"))?;
            let received = receive(engine, params, queue, max).await?;
            let list: Vec<Value> = received.into_iter().map(message_fields).collect();
            fields(json!({"msgInfoList": list}))
        }
        "DeleteMessage" => {
            let handle = params.required("receiptHandle")?.to_string();
            let mut results = engine.delete_messages(queue, &[handle]).await?;
            results.pop().unwrap_or(Ok(()))?;
            Fields::new()
        }
        "ListQueue" => {
            let names = engine.snapshot().into_iter().map(|(name, _)| name);
            let (total, page) = params.page(names, LIST_LIMIT)?;
            let list: Vec<Value> = page
                .iter()
                .map(|name| json!({"queueId": queue_id(name), "queueName": name}))
                .collect();
            fields(json!({"totalCount": total, "queueList": list}))
        }
        _ => {
            return Err(CmqError::new(
                4000,
                10000,
                format!("unknown Action {action}"),
            ));
        }
    })
}

/// CMQ's id of a queue: the name says it, and stays stable.
fn queue_id(name: &str) -> String {
    format!("queue-{name}")
}

/// BatchDeleteMessage: 6010 with an `errorList` when some handles fail, 6020 when all do.
pub async fn batch_delete(engine: &Engine, params: &Params) -> Result<Fields, Refusal> {
    let bare = |e: CmqError| (e, Fields::new());
    let queue = params.required("queueName").map_err(bare)?;
    let handles = params.list("receiptHandle", MAX_BATCH).map_err(bare)?;
    if handles.is_empty() {
        return Err(bare(CmqError::new(
            4000,
            10010,
            "parameter receiptHandle.N is missing",
        )));
    }
    let results = engine
        .delete_messages(queue, &handles)
        .await
        .map_err(|e| bare(e.into()))?;
    let errors: Vec<Value> = handles
        .iter()
        .zip(results)
        .filter_map(|(handle, result)| {
            result.err().map(|error| {
                let error = CmqError::from(error);
                json!({"code": error.code, "message": error.message(), "receiptHandle": handle})
            })
        })
        .collect();
    if errors.is_empty() {
        return Ok(Fields::new());
    }
    let error = if errors.len() == handles.len() {
        CmqError::new(6020, 10290, "no message was deleted")
    } else {
        CmqError::new(6010, 10150, "some messages were not deleted")
    };
    Err((error, fields(json!({"errorList": errors}))))
}
