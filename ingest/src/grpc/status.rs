//! The one place where the gRPC services' errors become statuses: every code the agent
//! protocol and OTLP answer with is chosen here, including the codes tonic's codec picks for
//! a bad inbound message, which are corrected to what the protocol promises.

use tonic::{Code, Status};

use crate::auth::Denied;

/// Nothing was taken and the same request may succeed later: UNAVAILABLE, which agents and
/// OTLP exporters retry.
pub fn retry_later(why: impl std::fmt::Display) -> Status {
    Status::unavailable(why.to_string())
}

pub fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down")
}

/// The blocking task doing a request's work failed (it panicked): the server's fault.
pub fn task_failed(what: &str) -> Status {
    Status::internal(format!("{what} failed"))
}

/// A call without a usable agent id.
pub fn invalid_agent_id() -> Status {
    Status::invalid_argument(format!(
        "missing or invalid '{}' metadata: one id per agent process, up to 256 characters",
        argus_proto::AGENT_ID_HEADER
    ))
}

/// A call without a token that may send data.
pub fn denied(d: Denied) -> Status {
    match d {
        Denied::Unauthenticated(_) => Status::unauthenticated(d.to_string()),
        Denied::Forbidden { .. } => Status::permission_denied(d.to_string()),
    }
}

pub fn no_service(name: &str) -> Status {
    Status::unimplemented(format!("no gRPC service {name:?} here"))
}

/// What the protocol calls a bad inbound message, where tonic's codec says otherwise: a
/// message over the size limit is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE when it was
/// not compressed) and one that does not decode is INVALID_ARGUMENT (tonic says INTERNAL,
/// which clients would retry). Handlers return neither OUT_OF_RANGE nor a decode INTERNAL.
fn inbound_code(code: Code, message: &[u8]) -> Code {
    match code {
        Code::OutOfRange => Code::ResourceExhausted,
        Code::Internal
            if message.starts_with(b"failed to decode")
                || message.starts_with(b"failed%20to%20decode") =>
        {
            Code::InvalidArgument
        }
        other => other,
    }
}

/// An error from a stream's inbound side, as the client should see it.
pub fn inbound_error(status: Status) -> Status {
    let code = inbound_code(status.code(), status.message().as_bytes());
    Status::new(code, status.message().to_string())
}

/// The same for a unary call refused before its handler ran (a trailers-only response).
pub fn inbound_error_response(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(code) = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
    else {
        return resp;
    };
    let message = resp
        .headers()
        .get("grpc-message")
        .map_or(&b""[..], |v| v.as_bytes());
    let mapped = inbound_code(Code::from_i32(code), message) as i32;
    if mapped != code {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from(mapped));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inbound_messages_get_the_protocol_codes() {
        assert_eq!(
            inbound_code(Code::OutOfRange, b"message length too large"),
            Code::ResourceExhausted
        );
        assert_eq!(
            inbound_code(Code::Internal, b"failed%20to%20decode%20Protobuf"),
            Code::InvalidArgument
        );
        assert_eq!(
            inbound_code(Code::Internal, b"storing the batch failed"),
            Code::Internal
        );
    }
}
