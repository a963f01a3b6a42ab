//! The HTTP API (axum), a thin shell over the server: the routes (`ingest.rs`: publish,
//! backfill, remote write, events; `query.rs`: graph, tags, expr, operator views;
//! `live.rs`: live queries and per-step streams), the middleware (`auth.rs`, and the body
//! guard with the listener loop in `serve.rs`), and the one place errors and outcomes
//! become responses (`response.rs`). Handlers decode the request, do CPU-bound work on a
//! blocking thread, and hand what came of it to `response.rs`.

mod auth;
mod ingest;
mod live;
pub mod promql;
mod query;
pub mod response;
pub mod serve;
pub mod ui;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::state::AppState;
use response::ApiError;

/// Every route template, as counted in `argus_http_requests_total{route}`.
const ROUTES: [&str; 40] = [
    "/api/v1/agents",
    "/api/v1/loss",
    "/",
    "/ui/{file}",
    "/api/v1/cardinality",
    "/api/v1/cluster",
    "/api/v1/cluster/aggregate",
    "/api/v1/cluster/partial",
    "/api/v1/cluster/series",
    "/api/v1/cluster/top",
    "/api/v1/cluster/loss",
    "/api/v1/cluster/tags",
    "/api/v1/live",
    "/api/v1/live/subscriptions",
    "/api/v1/stream",
    "/api/v1/publish",
    "/api/v1/write",
    "/api/v1/events/{stream}",
    "/api/v1/publish-fast",
    "/api/v4/update",
    "/api/v1/backfill",
    "/api/v1/tags",
    "/api/v1/tags/{key}",
    "/api/v1/graph",
    "/api/v1/expr",
    "/api/v1/expr/debug",
    "/api/v1/debug/storage",
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/labels",
    "/api/v1/label/{name}/values",
    "/api/v1/series",
    "/api/v1/metadata",
    "/api/v1/status/buildinfo",
    "/api/v1/query_exemplars",
    "/api/v1/rules",
    "/api/v1/format_query",
    "/api/v1/parse_query",
    "/healthz",
    "/metrics",
];

pub fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/api/v1/publish", post(ingest::publish))
        .route("/api/v1/publish-fast", post(ingest::publish))
        .route("/api/v4/update", post(ingest::update))
        .route("/api/v1/backfill", post(ingest::backfill))
        .route("/api/v1/write", post(ingest::remote_write))
        .route("/api/v1/events/{stream}", post(ingest::events))
        .route("/api/v1/live", get(live::live))
        .route("/api/v1/live/subscriptions", get(live::subscriptions))
        .route("/api/v1/stream", get(live::stream))
        .route("/api/v1/tags", get(query::tag_keys))
        .route("/api/v1/tags/{key}", get(query::tag_values))
        .route("/api/v1/graph", get(query::graph))
        .route("/api/v1/expr", get(query::expr_debug))
        .route("/api/v1/expr/debug", get(query::expr_debug))
        .route("/api/v1/debug/storage", get(query::debug_storage))
        .route("/api/v1/cardinality", get(query::cardinality))
        .route("/api/v1/agents", get(query::agents))
        .route("/api/v1/loss", get(query::loss))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/cluster/partial", get(query::cluster_partial))
        .route("/api/v1/cluster/series", get(query::cluster_series))
        .route("/api/v1/cluster/aggregate", get(query::cluster_aggregate))
        .route("/api/v1/cluster/top", get(query::cluster_top))
        .route("/api/v1/cluster/loss", get(query::cluster_loss))
        .route("/api/v1/cluster/tags", get(query::cluster_tags))
        .route("/api/v1/query", get(promql::query).post(promql::query))
        .route(
            "/api/v1/query_range",
            get(promql::query_range).post(promql::query_range),
        )
        .route("/api/v1/labels", get(promql::labels).post(promql::labels))
        .route("/api/v1/label/{name}/values", get(promql::label_values))
        .route("/api/v1/series", get(promql::series).post(promql::series))
        .route("/api/v1/metadata", get(promql::metadata))
        .route("/api/v1/status/buildinfo", get(promql::buildinfo))
        .route(
            "/api/v1/query_exemplars",
            get(promql::exemplars).post(promql::exemplars),
        )
        .route("/api/v1/rules", get(promql::rules))
        .route(
            "/api/v1/format_query",
            get(promql::format_query).post(promql::format_query),
        )
        .route(
            "/api/v1/parse_query",
            get(promql::parse_query).post(promql::parse_query),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            serve::guard_body,
        ))
        // Before the body is read: an unauthenticated client costs no body.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Route templates are a fixed set (metric labels must be bounded); anything else,
    // including unmatched paths, is counted as "other".
    let matched = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    let route = ROUTES
        .iter()
        .copied()
        .find(|r| Some(*r) == matched)
        .unwrap_or("other");
    let resp = next.run(req).await;
    state.metrics.http_request(route, resp.status().as_u16());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see the README for the API")
}

/// `ok`, or 503 with the reason while a cluster node has not joined its cluster.
async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    match state.cluster.as_ref().map(|c| c.readiness()) {
        Some(Err(reason)) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response(),
        _ => axum::Json(json!({"status": "ok"})).into_response(),
    }
}

/// This node's view of its cluster; a single node says so.
async fn cluster(State(state): State<AppState>) -> axum::response::Response {
    match &state.cluster {
        Some(c) => axum::Json(c.describe().await).into_response(),
        None => axum::Json(json!({"mode": "single node"})).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render(&state.store, &state.connections);
    text.push_str(&state.tokens.render_metrics());
    if let Some(c) = &state.cluster {
        text.push_str(&c.render_metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
