//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, header};

use super::json::ApiJson;
use super::sse::{self, SseSettings};
use crate::accounts::{AuthedKey, RateLimiter};
use crate::chat::{Caller, Chat};
use crate::error::{ApiError, rate_limit_headers};
use crate::openai::ChatRequest;
use crate::usage::record::{AppInfo, new_generation_id};

pub const GENERATION_ID: &str = "x-generation-id";

pub async fn create(
    State(chat): State<Arc<Chat>>,
    State(limiter): State<RateLimiter>,
    State(settings): State<SseSettings>,
    key: AuthedKey,
    app: AppInfo,
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
        app,
    };
    let mut response = if request.stream {
        sse::respond(generation_id, chat.stream(caller, request), settings).await
    } else {
        let mut response = match chat.complete(caller, request).await {
            Ok(body) => json(body),
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

/// A JSON answer, its header map sized once for every header it leaves with (type, generation
/// id, length, rate limits).
fn json(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().reserve(8);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// OpenRouter's app attribution headers, capped so a header cannot bloat the usage table. Read
/// in place, rather than through a copy of the whole header map.
impl<S: Send + Sync> FromRequestParts<S> for AppInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let text = |name: &str| {
            let value = parts.headers.get(name)?.to_str().ok()?.trim();
            (!value.is_empty()).then(|| value.chars().take(256).collect())
        };
        Ok(AppInfo {
            referer: text("http-referer").or_else(|| text("referer")),
            title: text("x-title"),
        })
    }
}
