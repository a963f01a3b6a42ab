//! The HTTP side of bearer tokens: a middleware that lets a request through only with a
//! token that has its route's role (the tokens and roles are `crate::auth`'s).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::response::ApiError;
use crate::auth::role_for_route;
use crate::state::AppState;

/// HTTP middleware: lets a request through only with a token that has its route's role.
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(tokens) = state.tokens.get() else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str());
    let Some(needed) = role_for_route(req.method(), route) else {
        return next.run(req).await;
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens.check(authorization, needed) {
        Ok(()) => next.run(req).await,
        Err(denied) => ApiError::from(denied).into_response(),
    }
}
