//! The credentials Secret: one bearer token, generated once and kept for the life of the
//! MessageQueue (never rotated behind the user's back).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{BuildError, Component, Instance};

/// Key of the bearer token in the credentials Secret (the operator's or the user's).
pub const TOKEN_KEY: &str = "token";

/// The operator's credentials Secret, or `None` when `spec.auth.secretName` names the
/// user's own. The token of `existing` is kept; `new_token` is called only when there is
/// no usable token yet.
pub fn credentials_secret(
    instance: &Instance<'_>,
    existing: Option<&Secret>,
    new_token: impl FnOnce() -> String,
) -> Option<Secret> {
    if instance.user_secret_name().is_some() {
        return None;
    }
    let token = existing
        .and_then(token_of)
        .unwrap_or_else(|| new_token().into_bytes());
    Some(Secret {
        metadata: instance.metadata(instance.credentials_secret_name(), Component::Credentials),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(TOKEN_KEY.into(), ByteString(token))])),
        ..Secret::default()
    })
}

/// Checks that the user's Secret holds a token the queue server can use.
pub fn check_user_secret(secret: &Secret) -> Result<(), BuildError> {
    match token_of(secret) {
        Some(_) => Ok(()),
        None => Err(BuildError::UserSecretWithoutToken {
            secret: secret.metadata.name.clone().unwrap_or_default(),
        }),
    }
}

/// The token a credentials Secret holds (`data` or `stringData`), if it holds one.
pub fn token_of(secret: &Secret) -> Option<Vec<u8>> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .map(|b| b.0.clone());
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .map(|s| s.clone().into_bytes())
    };
    from_data
        .or_else(from_string_data)
        .filter(|t| !t.iter().all(u8::is_ascii_whitespace))
}

/// A fresh token: 32 random bytes from the operating system, hex-encoded.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    hex::encode(bytes)
}
