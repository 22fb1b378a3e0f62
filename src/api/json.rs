//! [`ApiJson`]: a JSON body extractor whose rejection is an [`ApiError`] (400 for malformed JSON
//! or wrong types, 413 over the body limit), unlike axum's plain-text rejections.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

/// The configured body limits: the size, so a 413 can say what it is, and how long a body may
/// take to arrive once its head has (a client trickling it in would otherwise hold its
/// connection and its in-flight slot for as long as it liked).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max: usize,
    pub read_timeout: Duration,
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    BodyLimit: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = <BodyLimit as axum::extract::FromRef<S>>::from_ref(state);
        let bytes = tokio::time::timeout(limit.read_timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                ApiError::request_timeout(format!(
                    "the request body did not arrive within {} ms (server.body_read_timeout)",
                    limit.read_timeout.as_millis()
                ))
            })?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(limit.max)
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {rejection}"))
                }
            })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON object",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
    }
}
