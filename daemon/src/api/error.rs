//! The API's error responses: one JSON body, `{"error": {"code", "message", "field"}}`, and one
//! exhaustive mapping from core errors to HTTP status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::core::{Error, Refusal};
use crate::host::net::NetError;
use crate::host::runner::RunError;
use crate::host::zfs::{ZfsError, ZfsErrorKind};
use crate::wire::{ErrorBody, ErrorInfo};

/// An error as the API returns it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    info: ErrorInfo,
}

impl ApiError {
    /// A request the API layer itself rejects (malformed JSON, unknown query key, bad path).
    pub fn bad_request(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            info: ErrorInfo {
                code: code.to_owned(),
                message: message.into(),
                field: Some(field.to_owned()),
            },
        }
    }

    /// A caller the API does not serve (a TLS client certificate not allowed).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            info: ErrorInfo {
                code: "forbidden".to_owned(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// No such route or object.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            info: ErrorInfo {
                code: "not_found".to_owned(),
                message: message.into(),
                field: None,
            },
        }
    }
}

/// The status of each core error. Adding a variant forces a decision here.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Refused { reason, .. } => match reason {
            Refusal::HasChildren
            | Refusal::HasSnapshots
            | Refusal::Held
            | Refusal::NewerSnapshots
            | Refusal::NotManaged
            | Refusal::RootDataset
            | Refusal::Exported
            | Refusal::Running
            | Refusal::NotRunning
            | Refusal::Exists
            | Refusal::InUse => StatusCode::CONFLICT,
        },
        Error::ShuttingDown | Error::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        Error::Zfs(ZfsError::Command { kind, .. }) => match kind {
            ZfsErrorKind::NotFound => StatusCode::NOT_FOUND,
            ZfsErrorKind::Exists
            | ZfsErrorKind::Busy
            | ZfsErrorKind::HasChildren
            | ZfsErrorKind::HasDependents
            | ZfsErrorKind::NewerSnapshots => StatusCode::CONFLICT,
            ZfsErrorKind::InvalidValue => StatusCode::UNPROCESSABLE_ENTITY,
            ZfsErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ZfsErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ZfsErrorKind::Other => StatusCode::INTERNAL_SERVER_ERROR,
        },
        Error::Zfs(ZfsError::Run(run)) => match run {
            RunError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RunError::Spawn { .. } | RunError::Exit { .. } | RunError::Killed { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        },
        Error::Net(NetError::Run(RunError::Timeout { .. })) => StatusCode::GATEWAY_TIMEOUT,
        Error::Net(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Zfs(ZfsError::Parse(_)) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self {
            status: status_of(&e),
            info: e.info(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.info })).into_response()
    }
}
