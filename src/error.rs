//! [`ApiError`], the one error a client ever sees, in the contract's shape
//! `{"error": {"message", "type", "code", "metadata"}}`. Module errors convert into it; it is
//! logged once, here, when it becomes a response.

use std::borrow::Cow;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

use crate::accounts::{AuthError, CreditError, RateLimitError, RateLimited, RateWindow};
use crate::providers::{UpstreamError, UpstreamErrorKind};
use crate::routing::PlanError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    metadata: Option<Value>,
    retry_after: Option<Duration>,
    /// Headers beyond `Retry-After` that explain the error (the `X-RateLimit-*` of a 429). Boxed
    /// and absent for most errors, so every `Result<_, ApiError>` stays small.
    headers: Option<Box<HeaderMap>>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            metadata: None,
            retry_after: None,
            headers: None,
        }
    }

    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the gateway's limit of {limit} bytes"),
        )
    }

    pub fn too_many_json_values(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body holds more than the gateway's limit of {limit} JSON values"),
        )
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn method_not_allowed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }

    pub fn request_timeout(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, message)
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// Sent as `Retry-After`: whole seconds rounded up (a client told 4 when 4.7 remain would
    /// come back too early and be refused again), at least one.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// OpenAI's `type` strings, which SDKs and log tools key on.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 413 => "invalid_request_error",
            401 => "authentication_error",
            402 => "insufficient_credits",
            403 => "permission_error",
            408 => "timeout_error",
            429 => "rate_limit_error",
            502 | 503 => "upstream_error",
            _ => "server_error",
        }
    }

    /// The `error` object, also used inside a stream's error chunk.
    pub fn body(&self) -> ErrorObject<'_> {
        ErrorObject {
            message: &self.message,
            kind: self.kind(),
            code: self.status.as_u16(),
            metadata: self.metadata.as_ref(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Value>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorObject<'a>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.message, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.message, "request refused");
        }
        let body = serde_json::to_vec(&Envelope { error: self.body() }).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry_after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            );
        }
        if let Some(extra) = self.headers {
            headers.extend(*extra);
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Store(error) => error.into(),
            other => Self::new(StatusCode::UNAUTHORIZED, other.to_string()),
        }
    }
}

impl From<CreditError> for ApiError {
    fn from(error: CreditError) -> Self {
        match error {
            CreditError::Store(error) => error.into(),
            insufficient => Self::new(StatusCode::PAYMENT_REQUIRED, insufficient.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway's database is unavailable",
        )
    }
}

impl From<PlanError> for ApiError {
    fn from(error: PlanError) -> Self {
        let message = error.to_string();
        match error {
            PlanError::MissingModel | PlanError::InvalidMaxPrice(_) => Self::bad_request(message),
            PlanError::UnknownModel(_) => Self::not_found(message),
            PlanError::NoEndpoint { filter, .. } => {
                Self::not_found(message).with_metadata(serde_json::json!({ "filter": filter }))
            }
            PlanError::Unhealthy { retry_after, .. } => {
                Self::unavailable(message).with_retry_after(retry_after)
            }
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        let status = match error.kind {
            UpstreamErrorKind::BadRequest | UpstreamErrorKind::ContextLength => {
                StatusCode::BAD_REQUEST
            }
            UpstreamErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            UpstreamErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            UpstreamErrorKind::Unauthorized
            | UpstreamErrorKind::NotFound
            | UpstreamErrorKind::Server
            | UpstreamErrorKind::Connect
            | UpstreamErrorKind::Protocol => StatusCode::BAD_GATEWAY,
        };
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS => {
                Some(error.retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        };
        Self {
            status,
            message: Cow::Owned(error.message),
            metadata: None,
            retry_after,
            headers: None,
        }
    }
}

impl From<RateLimitError> for ApiError {
    fn from(error: RateLimitError) -> Self {
        match error {
            RateLimitError::Limited(refused) => refused.into(),
            RateLimitError::Store(error) => error.into(),
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(refused: RateLimited) -> Self {
        let metadata = serde_json::json!({ "rate_limit": refused.limit.config_key() });
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, refused.to_string())
            .with_metadata(metadata)
            .with_retry_after(refused.retry_after);
        error.headers = Some(Box::new(HeaderMap::from_iter(rate_limit_headers(
            &refused.window,
        ))));
        error
    }
}

/// OpenRouter's rate-limit headers, on refusals and on admitted requests alike; the reset is
/// Unix time in milliseconds, as OpenRouter sends it.
pub(crate) fn rate_limit_headers(window: &RateWindow) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(window.limit),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(window.remaining),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(window.reset.timestamp_millis()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::RateLimit;

    #[test]
    fn the_body_has_the_contract_shape() {
        let error = ApiError::not_found("no such model")
            .with_metadata(serde_json::json!({"filter": "tools"}));
        let json = serde_json::to_value(Envelope {
            error: error.body(),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"message": "no such model", "type": "invalid_request_error",
                "code": 404, "metadata": {"filter": "tools"}}})
        );
    }

    #[test]
    fn an_all_unhealthy_plan_is_a_503_with_retry_after() {
        let error = PlanError::Unhealthy {
            model: "x/one".into(),
            retry_after: Duration::from_secs(12),
        };
        let response = ApiError::from(error).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "12");
    }

    #[test]
    fn a_rate_limit_refusal_is_a_429_with_retry_after_and_the_rate_limit_headers() {
        let reset = chrono::DateTime::from_timestamp(1_795_996_860, 0).unwrap();
        let refused = RateLimited {
            limit: RateLimit::FreePerMinute,
            window: RateWindow {
                limit: 20,
                remaining: 0,
                reset,
            },
            retry_after: Duration::from_secs(12),
        };
        let response = ApiError::from(refused).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers[header::RETRY_AFTER], "12");
        assert_eq!(headers["x-ratelimit-limit"], "20");
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        assert_eq!(headers["x-ratelimit-reset"], "1795996860000");
    }

    #[test]
    fn upstream_rate_limits_become_429_with_retry_after() {
        let upstream = UpstreamError::from_status(StatusCode::TOO_MANY_REQUESTS, None)
            .with_retry_after(Some(Duration::from_secs(7)));
        let response = ApiError::from(upstream).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
