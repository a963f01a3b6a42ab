//! The one place where the server's errors and ingest outcomes become HTTP responses: every
//! status code the HTTP API answers with is chosen here. Errors are
//! `{"type":"error","message":…}`; outcomes take the shape their route's clients expect
//! ([`Dialect`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Denied;
use crate::convert::publish::PayloadError;
use crate::events::{EventError, IntakeError};
use crate::live::SubscribeError;
use crate::outcome::Outcome;

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

    /// A body over `--max-body-bytes`.
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: message.into(),
        }
    }

    /// A body that did not arrive within `--http-body-timeout`.
    pub fn body_timeout(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: message.into(),
        }
    }

    /// A request body axum could not read (its own status: too large, or a broken body).
    pub fn body(e: axum::extract::rejection::BytesRejection) -> Self {
        ApiError {
            status: e.status(),
            message: format!("reading the request body: {}", e.body_text()),
        }
    }

    /// The events body failed partway: what failed, and how many events before it were
    /// taken (they stay taken).
    pub fn intake(e: IntakeError, accepted: usize) -> Self {
        let status = match e {
            IntakeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IntakeError::Gzip(_) | IntakeError::Stream(_) => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            message: format!("{e}; {accepted} events before it were taken"),
        }
    }

    /// The task doing a request's work failed (it panicked): the server's fault.
    pub fn task_failed(what: &str, e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("{what} failed: {e}"))
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::TooMany | SubscribeError::TooManyForClient { .. } => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: e.to_string(),
            },
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        let status = match d {
            Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden { .. } => StatusCode::FORBIDDEN,
        };
        ApiError {
            status,
            message: d.to_string(),
        }
    }
}

/// How a route's clients expect an ingest outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Atlas's publish: 200 when all was stored; 202 `{"type":"partial","errorCount",
    /// "message"}` when some was; 400 `{"type":"error",…}` when none was.
    Atlas,
    /// Prometheus remote write: 204 when all was stored; 400 (which Prometheus does not
    /// retry) naming the refusals when any was refused, the rest stored.
    RemoteWrite,
    /// Raw events: 200 `{"accepted"}`; 202 or 400 as Atlas's, with `accepted`.
    Events,
}

/// An ingest outcome as the HTTP response its route's clients expect. A retry-later
/// outcome is a 503 with `Retry-After`.
pub fn outcome(outcome: Outcome, dialect: Dialect) -> Result<Response, ApiError> {
    let (stored, refused, reasons) = match outcome {
        Outcome::RetryLater(why) => return Err(ApiError::unavailable(why)),
        // HTTP requests are never resends.
        Outcome::Duplicate => (0, 0, Vec::new()),
        taken @ Outcome::Taken { .. } => (taken.stored(), taken.refused(), taken.reasons()),
    };
    let kind = if stored == 0 { "error" } else { "partial" };
    let status = if stored == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::ACCEPTED
    };
    Ok(match dialect {
        Dialect::Atlas if refused == 0 => StatusCode::OK.into_response(),
        Dialect::Atlas => (
            status,
            axum::Json(json!({"type": kind, "errorCount": refused, "message": reasons})),
        )
            .into_response(),
        Dialect::RemoteWrite if refused == 0 => StatusCode::NO_CONTENT.into_response(),
        Dialect::RemoteWrite => {
            return Err(ApiError::bad_request(format!(
                "{refused} samples refused, {stored} stored; first reasons: {}",
                reasons.join("; ")
            )));
        }
        Dialect::Events if refused == 0 => axum::Json(json!({"accepted": stored})).into_response(),
        Dialect::Events => (
            status,
            axum::Json(json!({
                "type": kind,
                "accepted": stored,
                "errorCount": refused,
                "message": reasons,
            })),
        )
            .into_response(),
    })
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        let status = match e {
            PayloadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PayloadError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
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
            argus_query::Error::Store(_) => ApiError::internal(e.to_string()),
            // The limits the operator sets, named so the message says which to raise.
            _ => ApiError::bad_request(crate::query_guard::with_limit_setting(&e)),
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
        let body = json!({"type": "error", "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"argus\""),
            );
        }
        response
    }
}

/// What a connection over the cap gets before it is closed, written to the socket before
/// any HTTP is parsed: a careless client learns why.
pub const CONNECTIONS_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 92\r\n\r\n\
{\"type\":\"error\",\"message\":\"the server holds its maximum of connections (--max-connections)\"}";

/// What a plain-HTTP request on the TLS port gets before it is closed.
pub const PLAIN_HTTP_ON_TLS: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 76\r\n\r\n\
{\"type\":\"error\",\"message\":\"this port speaks HTTPS: use an https:// address\"}";

#[cfg(test)]
mod tests {
    #[test]
    fn the_canned_refusals_are_whole_responses() {
        for (canned, says) in [
            (super::CONNECTIONS_FULL, "--max-connections"),
            (super::PLAIN_HTTP_ON_TLS, "https://"),
        ] {
            let text = std::str::from_utf8(canned).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(json["message"].as_str().unwrap().contains(says));
        }
    }
}
