//! CMQ topic and subscription actions onto the engine.

use super::Fields;
use super::error::CmqError;
use super::params::Params;
use crate::engine::Engine;

pub async fn handle(_engine: &Engine, action: &str, _params: &Params) -> Result<Fields, CmqError> {
    Err(CmqError::new(
        4000,
        10000,
        format!("unknown Action {action}"),
    ))
}
