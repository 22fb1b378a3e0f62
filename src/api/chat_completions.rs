//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};

use super::json::ApiJson;
use super::sse::{self, SseSettings};
use crate::accounts::{AuthedKey, RateLimiter};
use crate::chat::{Caller, Chat};
use crate::error::{ApiError, rate_limit_headers};
use crate::openai::ChatRequest;
use crate::usage::record::{AppInfo, new_generation_id};

pub const GENERATION_ID: &str = "x-generation-id";

pub async fn create(
    State(chat): State<Chat>,
    State(limiter): State<RateLimiter>,
    State(settings): State<SseSettings>,
    key: AuthedKey,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Response {
    let allowance = match limiter.admit(&key, request.asks_for_free()).await {
        Ok(allowance) => allowance,
        Err(refused) => return ApiError::from(refused).into_response(),
    };
    let generation_id = new_generation_id();
    let caller = Caller {
        generation_id: generation_id.clone(),
        key,
        app: app_info(&headers),
    };
    let mut response = if request.stream {
        sse::respond(generation_id, chat.stream(caller, request), settings).await
    } else {
        let mut response = match chat.complete(caller, request).await {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(error) => error.into_response(),
        };
        with_generation_id(&mut response, &generation_id);
        response
    };
    if let Some(window) = allowance.tightest {
        response.headers_mut().extend(rate_limit_headers(&window));
    }
    response
}

pub fn with_generation_id(response: &mut Response, id: &Arc<str>) {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(GENERATION_ID, value);
    }
}

/// OpenRouter's app attribution headers, capped so a header cannot bloat the usage table.
fn app_info(headers: &HeaderMap) -> AppInfo {
    let text = |name: &str| {
        let value = headers.get(name)?.to_str().ok()?.trim();
        (!value.is_empty()).then(|| value.chars().take(256).collect())
    };
    AppInfo {
        referer: text("http-referer").or_else(|| text("referer")),
        title: text("x-title"),
    }
}
