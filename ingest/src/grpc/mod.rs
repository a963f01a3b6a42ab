//! The gRPC port, a thin shell over the server: the agent protocol (`agent.rs`), OTLP's
//! metrics and logs services (`otlp.rs`), the one place errors become statuses
//! (`status.rs`), and the listener that holds new connections to a deadline for their HTTP/2
//! preface (`io.rs`). Requests go to the service their path names; every service needs a
//! token that may write when the server has `--auth-file`.

mod agent;
pub mod io;
mod otlp;
mod status;

use std::pin::Pin;
use std::time::Duration;

use argus_proto::otlp::collector::logs::v1::logs_service_server::LogsServiceServer;
use argus_proto::otlp::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use argus_proto::v1::ingest_server::IngestServer;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{Role, TokenStore};
use crate::state::AppState;
use agent::IngestService;
use otlp::OtlpService;

/// The interceptor every service sits behind: each takes data, so each needs `write`.
fn authorize(
    tokens: std::sync::Arc<TokenStore>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let Some(tokens) = tokens.get() else {
            return Ok(req);
        };
        let authorization = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        tokens
            .check(authorization, Role::Write)
            .map(|()| req)
            .map_err(status::denied)
    }
}

/// The gRPC services by name: requests go to the service their path names. (Tonic's own
/// router would do this through axum, and cargo would then build tonic with axum for the
/// agent too, in the workspace build.)
#[derive(Clone)]
struct Services<I, M, L> {
    ingest: I,
    metrics: M,
    logs: L,
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;

type GrpcFuture = Pin<
    Box<dyn std::future::Future<Output = Result<GrpcResponse, std::convert::Infallible>> + Send>,
>;

/// Calls a clone of `svc` (each is ready whenever asked) and boxes its response body.
fn route<S, B>(svc: &S, req: GrpcRequest) -> GrpcFuture
where
    S: tower::Service<GrpcRequest, Response = http::Response<B>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let mut svc = svc.clone();
    Box::pin(async move {
        let response = svc.call(req).await?;
        Ok(response.map(tonic::body::Body::new))
    })
}

impl<I, M, L, IB, MB, LB> tower::Service<GrpcRequest> for Services<I, M, L>
where
    I: tower::Service<GrpcRequest, Response = http::Response<IB>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    I::Future: Send,
    IB: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    IB::Error: Into<tonic::codegen::StdError>,
    M: tower::Service<GrpcRequest, Response = http::Response<MB>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    M::Future: Send,
    MB: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    MB::Error: Into<tonic::codegen::StdError>,
    L: tower::Service<GrpcRequest, Response = http::Response<LB>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    L::Future: Send,
    LB: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    LB::Error: Into<tonic::codegen::StdError>,
{
    type Response = GrpcResponse;
    type Error = std::convert::Infallible;
    type Future = GrpcFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Each service is cloned for its call, and is ready whenever asked.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        use tonic::server::NamedService;
        let path = req.uri().path().trim_start_matches('/');
        let service = path.split_once('/').map_or(path, |(s, _)| s).to_string();
        if service == <IngestServer<IngestService> as NamedService>::NAME {
            route(&self.ingest, req)
        } else if service == <MetricsServiceServer<OtlpService> as NamedService>::NAME {
            route(&self.metrics, req)
        } else if service == <LogsServiceServer<OtlpService> as NamedService>::NAME {
            route(&self.logs, req)
        } else {
            let status = status::no_service(&service);
            Box::pin(async move { Ok(status.into_http()) })
        }
    }
}

/// Serves the gRPC services on `listener` until `shutdown` completes.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let max = state.cfg.grpc_max_message_bytes;
    let first_bytes_within = Duration::from_millis(state.cfg.http_header_timeout_ms.max(1) as u64);
    let mut builder = tonic::transport::Server::builder();
    if let Some(files) = &state.cfg.tls {
        builder = builder
            .tls_config(files.grpc_config()?)
            .map_err(|e| anyhow::anyhow!("configuring gRPC TLS: {e}"))?;
    }
    let auth = authorize(state.tokens.clone());
    let ingest = InterceptedService::new(
        IngestServer::new(IngestService::new(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
        auth.clone(),
    );
    let connections = state.connections.clone();
    let otlp = OtlpService { state };
    let metrics = InterceptedService::new(
        MetricsServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
        auth.clone(),
    );
    let logs = InterceptedService::new(
        LogsServiceServer::new(otlp)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
        auth,
    );
    builder
        .layer(tower::util::MapResponseLayer::new(
            status::inbound_error_response,
        ))
        // Bounds per connection: a client cannot open streams without limit.
        .max_concurrent_streams(Some(64))
        .concurrency_limit_per_connection(64)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .serve_with_incoming_shutdown(
            Services {
                ingest,
                metrics,
                logs,
            },
            io::incoming(listener, first_bytes_within, connections),
            shutdown,
        )
        .await
        .map_err(|e| anyhow::anyhow!("serving gRPC: {e}"))
}
