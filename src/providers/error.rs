//! Errors at the provider boundary, and the one status-to-kind mapping every adapter shares.

use std::time::Duration;

use http::StatusCode;

/// A request an adapter cannot express, or an answer it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the endpoint cannot serve this request: {0}")]
    Unsupported(String),
    /// The caller's request cannot be expressed in the provider's API at all (an image by URL
    /// where only inline bytes are accepted): the caller's to fix, so it answers 400.
    #[error("the request cannot be sent to this provider: {0}")]
    InvalidRequest(String),
    #[error("the upstream sent a body the gateway cannot read: {0}")]
    InvalidResponse(String),
    #[error("cannot encode the upstream request: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What went wrong upstream, classified so routing can decide whether to try elsewhere and the
/// API can pick a status. `message` is safe to show: never a raw body, never a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The request itself is wrong (400/422); another endpoint would reject it too.
    BadRequest,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The provider rejected the gateway's own credentials (401/403): an operator problem.
    Unauthorized,
    /// The provider does not know the upstream model (404).
    NotFound,
    PayloadTooLarge,
    RateLimited,
    /// 5xx, 529 and other provider-side failures.
    Server,
    /// No answer within the configured connect, first-token, idle or request timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connect,
    /// The provider answered something that does not follow its own wire format.
    Protocol,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    /// The provider's HTTP status, when it sent one.
    pub status: Option<u16>,
    pub message: String,
    /// From the provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Classifies a provider's error status. `detail` is the provider's own error message; it is
    /// kept only for the caller's 4xx mistakes, since a 5xx body may describe the provider's
    /// internals.
    pub fn from_status(status: StatusCode, detail: Option<&str>) -> Self {
        let kind = match status.as_u16() {
            400 | 422 => UpstreamErrorKind::BadRequest,
            401 | 403 => UpstreamErrorKind::Unauthorized,
            404 => UpstreamErrorKind::NotFound,
            408 | 504 => UpstreamErrorKind::Timeout,
            413 => UpstreamErrorKind::PayloadTooLarge,
            429 => UpstreamErrorKind::RateLimited,
            _ => UpstreamErrorKind::Server,
        };
        let message = match (kind, detail) {
            (UpstreamErrorKind::BadRequest | UpstreamErrorKind::PayloadTooLarge, Some(detail)) => {
                format!("upstream rejected the request: {}", truncate(detail, 500))
            }
            (UpstreamErrorKind::Unauthorized, _) => {
                "upstream rejected the gateway's credentials for this provider".to_owned()
            }
            (UpstreamErrorKind::RateLimited, _) => "upstream rate limit reached".to_owned(),
            (UpstreamErrorKind::NotFound, _) => "upstream does not know this model".to_owned(),
            (UpstreamErrorKind::Timeout, _) => "upstream timed out".to_owned(),
            _ => format!("upstream failed with status {}", status.as_u16()),
        };
        Self {
            kind,
            status: Some(status.as_u16()),
            message,
            retry_after: None,
        }
    }

    pub fn with_kind(mut self, kind: UpstreamErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Whether another endpoint is tried after this failure. Not after 400/401/403/413 or a
    /// context-length error: the routing contract treats those as the request's to fix (a
    /// context-length error moves on only to a model with more context; see `chat::failover`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::RateLimited
                | UpstreamErrorKind::Server
                | UpstreamErrorKind::Timeout
                | UpstreamErrorKind::Connect
                | UpstreamErrorKind::Protocol
                | UpstreamErrorKind::NotFound
        )
    }
}

impl From<ProviderError> for UpstreamError {
    fn from(error: ProviderError) -> Self {
        let kind = match error {
            ProviderError::InvalidRequest(_) => UpstreamErrorKind::BadRequest,
            _ => UpstreamErrorKind::Protocol,
        };
        UpstreamError::new(kind, error.to_string())
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_never_carry_the_upstream_detail() {
        let error =
            UpstreamError::from_status(StatusCode::BAD_GATEWAY, Some("db at 10.0.0.3 down"));
        assert_eq!(error.kind, UpstreamErrorKind::Server);
        assert!(!error.message.contains("10.0.0.3"));
    }

    #[test]
    fn bad_requests_keep_the_providers_explanation() {
        let error =
            UpstreamError::from_status(StatusCode::BAD_REQUEST, Some("temperature too high"));
        assert_eq!(error.kind, UpstreamErrorKind::BadRequest);
        assert!(error.message.contains("temperature too high"));
        assert!(!error.is_retryable());
    }
}
