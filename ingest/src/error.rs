//! The one place where server errors become HTTP responses: `{"type":"error","message":…}`
//! with the right status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::publish::PayloadError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 503 with `Retry-After`: the same request may succeed later (the store cannot make
    /// writes durable now).
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        let status = match e {
            PayloadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PayloadError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

impl From<argus_query::Error> for ApiError {
    fn from(e: argus_query::Error) -> Self {
        match e {
            // A query over a limit is the query's business; stopped at its deadline, a
            // retry may do; any other failure of the store is the server's.
            argus_query::Error::Store(argus_tsdb::Error::TooLarge { .. }) => {
                ApiError::bad_request(e.to_string())
            }
            argus_query::Error::Store(argus_tsdb::Error::Stopped(_)) => {
                ApiError::unavailable(e.to_string())
            }
            // The limits the operator sets, named so the message says which to raise.
            argus_query::Error::MemoryLimit { .. } => {
                ApiError::bad_request(format!("{e} (--query-max-memory)"))
            }
            argus_query::Error::TooMany { what: "lines", .. } => {
                ApiError::bad_request(format!("{e} (--graph-max-lines)"))
            }
            argus_query::Error::TooMany {
                what: "datapoints", ..
            } => ApiError::bad_request(format!("{e} (--graph-max-datapoints)")),
            argus_query::Error::Store(_) => ApiError::internal(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<argus_tsdb::Error> for ApiError {
    fn from(e: argus_tsdb::Error) -> Self {
        if e.is_retryable() {
            ApiError::unavailable(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    }
}

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_S: &str = "1";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"type": "error", "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_S),
            );
        }
        response
    }
}
