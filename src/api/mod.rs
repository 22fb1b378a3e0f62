//! The HTTP surface: each handler extracts, calls one domain function and responds. The route
//! table is [`routes`]; every API path is served under both `/v1` and `/api/v1`.

pub mod admin;
pub mod auth;
pub mod catalog_access;
mod chat_completions;
mod cors;
mod credits;
pub mod endpoints;
mod envelope;
mod extract;
mod generation;
mod health;
pub mod json;
mod key;
mod keys;
pub mod models;
#[cfg(test)]
mod parser_fuzz;
pub mod sse;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::{AppState, RouterState};

pub fn routes(state: AppState, max_body: usize, cors_origins: &[String]) -> Router {
    let mut router = Router::new();
    // Each path is registered under both prefixes at the top level rather than with `nest`,
    // whose extra routing layer every request would pay for.
    for prefix in ["/v1", "/api/v1"] {
        router = router
            .route(
                &format!("{prefix}/chat/completions"),
                post(chat_completions::create),
            )
            .route(&format!("{prefix}/models"), get(models::list))
            .route(
                &format!("{prefix}/models/{{author}}/{{slug}}/endpoints"),
                get(endpoints::list),
            )
            .route(&format!("{prefix}/generation"), get(generation::show))
            .route(&format!("{prefix}/key"), get(key::show))
            .route(&format!("{prefix}/credits"), get(credits::show))
            .route(
                &format!("{prefix}/keys"),
                get(keys::list).post(keys::create),
            )
            .route(
                &format!("{prefix}/keys/{{hash}}"),
                get(keys::show).patch(keys::update).delete(keys::delete),
            );
    }
    let router = router
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unknown_path)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(RouterState::new(state));
    match cors::layer(cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// axum still adds the `Allow` header listing the path's methods.
async fn method_not_allowed(method: http::Method) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{method} is not allowed on this path; the Allow header lists the methods that are"
    ))
}

async fn unknown_path() -> ApiError {
    ApiError::not_found("no such path; the API is served under /v1 and /api/v1")
}
