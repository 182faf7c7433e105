//! CMQ API 2.0 at `/v2/index.php`: GET query strings or form-encoded POST bodies,
//! signed with a configured SecretId/SecretKey, answered with HTTP 200 and CMQ's JSON
//! envelope `{code, message, requestId, …}`. Handlers translate CMQ's parameters onto
//! the engine; a refused request changes nothing.

mod error;
mod params;
mod queue;
pub mod replay;
pub mod sign;
mod topic;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::REQUEST_ID_HEADER;
use error::CmqError;
use params::Params;
use replay::Replay;
use sign::{SignatureMethod, canonical_string};

pub use replay::Replays;
pub use sign::Keys;

/// Where CMQ clients send every action.
pub const PATH: &str = "/v2/index.php";
/// Largest accepted difference between a request's Timestamp and the server's clock.
/// Stricter than CMQ's two hours: the signatures of a shorter window are remembered (to
/// refuse replays) in less memory.
pub const MAX_SKEW_SECONDS: u64 = 300;

/// Fields of a successful answer besides code, message and requestId.
type Fields = Map<String, Value>;

pub async fn index(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let request_id = headers
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let answer = match handle(&state, &method, &uri, &headers, &body).await {
        Ok(fields) => {
            let mut out = json!({"code": 0, "message": "", "requestId": request_id});
            if let Value::Object(map) = &mut out {
                map.extend(fields);
            }
            out
        }
        Err((error, extra)) => {
            tracing::debug!(code = error.code, module = error.module, text = %error.text, request_id, "CMQ request refused");
            let mut out =
                json!({"code": error.code, "message": error.message(), "requestId": request_id});
            if let Value::Object(map) = &mut out {
                map.extend(extra);
            }
            out
        }
    };
    Json(answer)
}

/// An error, with fields some errors carry (BatchDeleteMessage's `errorList`).
type Refusal = (CmqError, Fields);

async fn handle(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Fields, Refusal> {
    let bare = |e: CmqError| (e, Fields::new());
    let encoded = match *method {
        Method::GET => uri.query().unwrap_or_default().as_bytes(),
        Method::POST => body,
        _ => {
            return Err(bare(CmqError::param(format!(
                "method {method} is not supported; use GET or POST"
            ))));
        }
    };
    let params = Params::parse(encoded).map_err(bare)?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    verify(
        state,
        method.as_str(),
        host,
        &params,
        state.engine.now_ms() / 1_000,
    )
    .map_err(bare)?;
    let action = params.required("Action").map_err(bare)?;
    match action {
        "CreateQueue"
        | "SetQueueAttributes"
        | "GetQueueAttributes"
        | "ListQueue"
        | "DeleteQueue"
        | "RewindQueue"
        | "SendMessage"
        | "BatchSendMessage"
        | "ReceiveMessage"
        | "BatchReceiveMessage"
        | "DeleteMessage" => queue::handle(&state.engine, action, &params)
            .await
            .map_err(bare),
        "BatchDeleteMessage" => queue::batch_delete(&state.engine, &params).await,
        _ => topic::handle(&state.engine, action, &params)
            .await
            .map_err(bare),
    }
}

/// Checks the common parameters and the signature.
fn verify(
    state: &AppState,
    method: &str,
    host: &str,
    params: &Params,
    now_seconds: u64,
) -> Result<(), CmqError> {
    let secret_id = params.required("SecretId")?;
    let secret_key = state
        .cmq_keys
        .secret_key(secret_id)
        .ok_or_else(|| CmqError::new(4100, 10270, "unknown SecretId"))?;
    let timestamp = params
        .required("Timestamp")?
        .parse::<u64>()
        .map_err(|_| CmqError::param("Timestamp must be Unix seconds"))?;
    if timestamp.abs_diff(now_seconds) > MAX_SKEW_SECONDS {
        return Err(CmqError::new(
            4500,
            10090,
            format!(
                "Timestamp {timestamp} is more than {MAX_SKEW_SECONDS} s away from the server's clock ({now_seconds})"
            ),
        ));
    }
    params.required("Nonce")?;
    let signature_method = SignatureMethod::parse(params.get("SignatureMethod"))
        .ok_or_else(|| CmqError::param("SignatureMethod must be HmacSHA1 or HmacSHA256"))?;
    let given = params.required("Signature")?;
    let text = canonical_string(method, host, PATH, &params.0);
    let expected = sign::sign(signature_method, secret_key, &text);
    if !sign::same(given, &expected) {
        return Err(CmqError::new(4100, 10030, "signature verification failed"));
    }
    state
        .cmq_replays
        .first_use(given, timestamp, now_seconds)
        .map_err(|replay| {
            let text = match replay {
                Replay::Repeated => {
                    "this signed request was used before; sign each request with a fresh Nonce"
                        .to_string()
                }
                Replay::TooOld { forgotten_through } => format!(
                    "Timestamp {timestamp} is too old to check for replays under this load \
                     (requests stamped up to {forgotten_through} are refused); check the client's clock"
                ),
            };
            CmqError::new(4500, 10090, text)
        })
}

/// Fields from a JSON object literal.
fn fields(value: Value) -> Fields {
    match value {
        Value::Object(map) => map,
        _ => Fields::new(),
    }
}
