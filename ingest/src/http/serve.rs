//! The HTTP listener: hyper's connection loop with the timeouts `axum::serve` does not set,
//! so slow, silent or half-open clients cannot hold the server. A new connection must send
//! its first byte within the header timeout (hyper's own header timeout starts only at the
//! first byte), headers of every request must arrive within it, which also closes idle
//! kept-alive connections, and request bodies are read under their own timeout by
//! [`guard_body`]. Connections past the listener's cap are refused at once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::response::{ApiError, CONNECTIONS_FULL, PLAIN_HTTP_ON_TLS};
use crate::connections::Connections;
use crate::state::AppState;

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` turns true, then
/// lets open requests finish (for at most five seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: Arc<Connections>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    // TLS handshakes run in their own tasks and hand finished streams back here, so one
    // slow handshake holds up no one.
    let (handshaken, mut handshakes) = tokio::sync::mpsc::channel(64);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors or the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting an HTTP connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(permit) = connections.http.admit() else {
                    // Best effort, never waiting: the socket's buffer takes this at once.
                    let _ = stream.try_write(CONNECTIONS_FULL);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match tls.clone() {
                    None => {
                        let (builder, app) = (builder.clone(), app.clone());
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            // Silent connections close at the header timeout (hyper's own
                            // starts at the first byte).
                            let mut first = [0u8; 1];
                            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                                Ok(Ok(0)) => {}
                                Ok(Ok(_)) => {
                                    serve_connection(builder, watcher, TokioIo::new(stream), app, peer, permit).await;
                                }
                                Ok(Err(e)) => tracing::debug!(error = %e, "connection failed before a request"),
                                Err(_) => tracing::debug!("connection sent nothing within the header timeout"),
                            }
                        });
                    }
                    Some(acceptor) => {
                        let handshaken = handshaken.clone();
                        tokio::spawn(async move {
                            // Plain HTTP on the TLS port (a TLS client hello starts with
                            // 0x16): said plainly, rather than a failed handshake.
                            let mut first = [0u8; 1];
                            if let Ok(Ok(1)) = tokio::time::timeout(header_timeout, stream.peek(&mut first)).await
                                && first[0].is_ascii_uppercase()
                            {
                                refuse_plain_http(stream, header_timeout).await;
                                return;
                            }
                            // The handshake is held to the header timeout too.
                            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => {
                                    let _ = handshaken.send((tls, peer, permit)).await;
                                }
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            Some((tls, peer, permit)) = handshakes.recv() => {
                let (builder, app) = (builder.clone(), app.clone());
                let watcher = graceful.watcher();
                tokio::spawn(serve_connection(builder, watcher, TokioIo::new(tls), app, peer, permit));
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}

/// Answers a plain-HTTP request on the TLS port with [`PLAIN_HTTP_ON_TLS`], then reads what the
/// client sent until it closes (a close with unread bytes would reset the connection and
/// lose the answer).
async fn refuse_plain_http(mut stream: tokio::net::TcpStream, within: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(within, async {
        stream.write_all(PLAIN_HTTP_ON_TLS).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves one connection to its end; `permit` holds its place under the cap until then.
async fn serve_connection<I>(
    builder: Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: TokioIo<I>,
    app: Router,
    peer: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Handlers learn the client's address as axum's `ConnectInfo`.
    let app = tower::ServiceExt::map_request(
        app,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        },
    );
    let service = TowerToHyperService::new(app);
    let conn = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    // A timed-out or reset connection is the client's business.
    let _ = watcher.watch(conn).await;
    drop(permit);
}

/// Routes whose handlers read the body as it arrives, applying the body timeout and size
/// limit themselves: NDJSON events, which can be large and are useful line by line.
const STREAMED_BODIES: &str = "/api/v1/events/";

/// Refuses a declared body over `--max-body-bytes` before reading any of it, and reads
/// every other body whole within `--http-body-timeout` (408 otherwise), so a client that
/// trickles a body holds no handler and no thread. Methods without a body, and upgrades,
/// pass untouched.
pub async fn guard_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.cfg.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit as u64
    {
        let mut response = ApiError::too_large(format!(
            "request body of {len} bytes is over the limit of {limit} bytes \
             (--max-body-bytes); refused before reading it"
        ))
        .into_response();
        // The unread body is not drained: the connection closes.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    // Without a body, or taken as it arrives by its handler (under the same limits).
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path().starts_with(STREAMED_BODIES)
    {
        return next.run(req).await;
    }
    let timeout = Duration::from_millis(state.cfg.http_body_timeout_ms.max(1) as u64);
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => ApiError::body_timeout(format!(
            "the request body did not arrive within {} ms (--http-body-timeout)",
            timeout.as_millis()
        ))
        .into_response(),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::too_large(format!(
                    "request body is larger than the limit of {limit} bytes (--max-body-bytes)"
                ))
                .into_response()
            } else {
                ApiError::bad_request(format!("reading the request body: {e}")).into_response()
            }
        }
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}
