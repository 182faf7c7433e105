//! The controller's one error type, and how each error is treated: transient ones are
//! retried with backoff, permanent ones (the user or another owner must act) mark the
//! MessageQueue `Degraded` and wait longer before the next attempt.

use crate::build::BuildError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Build(#[from] BuildError),

    #[error("the MessageQueue has no metadata.uid to own its children with")]
    MissingUid,

    #[error("Secret {0} named by spec.auth.secretName does not exist")]
    UserSecretNotFound(String),

    #[error("{kind} {name} already exists and is controlled by {owner}, not by this MessageQueue")]
    OwnedByAnother {
        kind: String,
        name: String,
        owner: String,
    },

    #[error("reading {kind} {name}: {}", describe(.source))]
    Read {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("applying {kind} {name}: {}", describe(.source))]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("deleting {kind} {name}: {}", describe(.source))]
    Delete {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("writing the status: {}", describe(.0))]
    Status(#[source] kube::Error),
}

/// The API server's own words for a refusal (they end up in conditions and events),
/// without the client's debug dump.
fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} (HTTP {})", status.message, status.code)
        }
        other => other.to_string(),
    }
}

impl Error {
    fn api_source(&self) -> Option<&kube::Error> {
        match self {
            Error::Read { source, .. }
            | Error::Apply { source, .. }
            | Error::Delete { source, .. }
            | Error::Status(source) => Some(source),
            _ => None,
        }
    }

    /// The HTTP status code the API server answered with, if it answered at all.
    pub fn api_code(&self) -> Option<u16> {
        match self.api_source()? {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }

    /// True when retrying soon cannot help: a conflicting owner, missing permissions, an
    /// object the API server refuses, or a user Secret that is missing or incomplete.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Build(_)
            | Error::MissingUid
            | Error::UserSecretNotFound(_)
            | Error::OwnedByAnother { .. } => true,
            _ => matches!(self.api_code(), Some(400 | 403 | 409 | 422)),
        }
    }

    /// The `reason` of the Degraded condition and of the Warning event.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Build(BuildError::UserSecretWithoutToken { .. }) => "SecretMissingToken",
            Error::Build(_) | Error::MissingUid => "InvalidResource",
            Error::UserSecretNotFound(_) => "SecretNotFound",
            Error::OwnedByAnother { .. } => "OwnedByAnother",
            _ => match self.api_code() {
                Some(409) => "Conflict",
                Some(403) => "Forbidden",
                Some(422) => "Invalid",
                Some(400) => "BadRequest",
                _ => "ApiError",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Refused")
                .with_code(code)
                .boxed(),
        )
    }

    fn apply_error(code: u16) -> Error {
        Error::Apply {
            kind: "ConfigMap".into(),
            name: "orders-config".into(),
            source: api_error(code),
        }
    }

    #[test]
    fn refusals_by_the_api_server_are_permanent() {
        for (code, reason) in [
            (409, "Conflict"),
            (403, "Forbidden"),
            (422, "Invalid"),
            (400, "BadRequest"),
        ] {
            let err = apply_error(code);
            assert!(err.is_permanent(), "{code}");
            assert_eq!(err.reason(), reason);
        }
    }

    #[test]
    fn messages_carry_the_api_servers_words() {
        assert_eq!(
            apply_error(409).to_string(),
            "applying ConfigMap orders-config: refused (HTTP 409)"
        );
    }

    #[test]
    fn server_failures_are_transient() {
        for code in [500, 503, 504, 429, 404] {
            let err = apply_error(code);
            assert!(!err.is_permanent(), "{code}");
            assert_eq!(err.reason(), "ApiError");
        }
        assert!(!Error::Status(api_error(500)).is_permanent());
    }

    #[test]
    fn a_bad_user_secret_is_permanent() {
        let missing = Error::UserSecretNotFound("mine".into());
        assert!(missing.is_permanent());
        assert_eq!(missing.reason(), "SecretNotFound");
        let keyless = Error::from(BuildError::UserSecretWithoutToken {
            secret: "mine".into(),
        });
        assert!(keyless.is_permanent());
        assert_eq!(keyless.reason(), "SecretMissingToken");
    }
}
