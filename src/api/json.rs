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

/// The most JSON values one body may hold. Unknown fields are kept as trees for pass-through,
/// about 100 bytes a value while parsing, so this bounds a parse near 100 MiB whatever the
/// body's size: a 30 MiB body of `[0,0,…]` would otherwise take over a gigabyte. A prompt's text
/// is one value however long, so no chat request comes near it.
const MAX_JSON_VALUES: usize = 1_000_000;

/// Bodies larger than this are parsed on the blocking pool, so a big one does not hold up the
/// other requests of its serving thread.
const BLOCKING_PARSE_BYTES: usize = 256 * 1024;

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + 'static,
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
        if bytes.len() < BLOCKING_PARSE_BYTES {
            return decode(&bytes).map(ApiJson);
        }
        tokio::task::spawn_blocking(move || decode(&bytes))
            .await
            .map_err(|_| ApiError::internal())?
            .map(ApiJson)
    }
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // A value takes at least a byte, so only a body longer than the cap needs counting.
    if bytes.len() > MAX_JSON_VALUES && json_values_bound(bytes) > MAX_JSON_VALUES {
        return Err(ApiError::too_many_json_values(MAX_JSON_VALUES));
    }
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
}

/// At least as many as the JSON values in `bytes`: every value but the first follows a comma or
/// opens an array or object. Bytes inside strings are skipped, escapes included.
fn json_values_bound(bytes: &[u8]) -> usize {
    let mut values = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b',' | b'[' | b'{' => values += 1,
                _ => {}
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_bound_counts_structure_outside_strings_only() {
        assert_eq!(json_values_bound(b"1"), 1);
        assert!(json_values_bound(br#"{"a":[1,2,3],"b":{"c":null}}"#) >= 7);
        assert_eq!(json_values_bound(br#""[,{,\"[,""#), 1, "inside a string");
        let zeros = format!("[{}0]", "0,".repeat(10_000));
        assert!(json_values_bound(zeros.as_bytes()) > 10_000);
    }

    #[test]
    fn a_body_of_too_many_values_is_a_413_before_it_is_parsed() {
        let zeros = format!(
            r#"{{"model":"m","junk":[{}0]}}"#,
            "0,".repeat(MAX_JSON_VALUES)
        );
        let error = decode::<serde_json::Value>(zeros.as_bytes()).unwrap_err();
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let fine = format!(
            r#"{{"model":"m","text":"{}"}}"#,
            ",".repeat(MAX_JSON_VALUES * 2)
        );
        decode::<serde_json::Value>(fine.as_bytes()).unwrap();
    }
}
