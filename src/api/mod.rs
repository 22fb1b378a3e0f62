//! The HTTP surface: each handler extracts, calls one domain function and responds. The route
//! table is [`routes`]; every API path is served under both `/v1` and `/api/v1`.

pub mod auth;
mod chat_completions;
mod generation;
mod health;
pub mod json;
pub mod models;
pub mod sse;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes(state: AppState, max_body: usize) -> Router {
    let api = Router::new()
        .route("/chat/completions", post(chat_completions::create))
        .route("/models", get(models::list))
        .route("/generation", get(generation::show));
    Router::new()
        .nest("/v1", api.clone())
        .nest("/api/v1", api)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(unknown_path)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn unknown_path() -> ApiError {
    ApiError::not_found("no such path; the API is served under /v1 and /api/v1")
}
