//! API errors: every failure becomes Ironic's error body with a fitting status,
//! and request bodies or queries that do not parse become 400s in the same shape.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ironclad_versioning::controller_api::ErrorBody;

use crate::conductor::ConductorError;
use crate::drivers::DriverError;
use crate::store::StoreError;

/// An error reply: a status and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `faultstring`.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 406 (a field or verb newer than the request's version).
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        } else {
            tracing::debug!(status = %self.status, message = %self.message, "request refused");
        }
        let body = ErrorBody::new(self.status.as_u16(), self.message);
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::DuplicateName(_)
            | StoreError::DuplicateUuid(_)
            | StoreError::DuplicateMac(_) => Self::conflict(message),
            StoreError::NodeNotFound(_) | StoreError::MarkerNotFound(_) => {
                Self::bad_request(message)
            }
            StoreError::Missing(_) => Self::not_found(message),
            _ => Self::internal(message),
        }
    }
}

impl From<ConductorError> for ApiError {
    fn from(error: ConductorError) -> Self {
        let message = error.to_string();
        match error {
            ConductorError::NodeNotFound(_) | ConductorError::LookupNotFound => {
                Self::not_found(message)
            }
            ConductorError::NodeLocked { .. } => Self::conflict(message),
            ConductorError::InvalidState { .. } | ConductorError::InvalidParameter(_) => {
                Self::bad_request(message)
            }
            ConductorError::Store(store) => store.into(),
            ConductorError::Driver(
                DriverError::InvalidParameters(_)
                | DriverError::Unsupported(_)
                | DriverError::NotEnabled { .. },
            ) => Self::bad_request(message),
            ConductorError::Driver(DriverError::Bmc(_)) => Self::internal(message),
        }
    }
}

/// A JSON body whose parse errors are Ironic-style 400s.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let status = match rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(
        status,
        format!("Invalid request body: {}", rejection.body_text()),
    )
}

/// A query string whose parse errors are Ironic-style 400s.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::bad_request(format!("Invalid query: {}", rejection.body_text()))
}

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

/// Fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for the requested URL.",
    )
}
