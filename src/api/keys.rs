//! `/keys` and `/keys/{hash}`: key provisioning with the admin token, in OpenRouter's shapes.
//! Parses and answers; what a change means is decided in `accounts`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::admin::Admin;
use super::envelope::Data;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use crate::accounts::{
    KeyChange, KeyError, KeyStatement, Keys, parse_expiry, parse_limit, parse_limit_reset,
};
use crate::error::ApiError;
use crate::openai::MicroUsd;
use crate::store::KeyPage;

/// As OpenRouter pages its key listing.
const PAGE_SIZE: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct NewKeyRequest {
    name: String,
    /// USD, as a JSON number (or a string holding one); kept raw so it is parsed exactly.
    #[serde(default)]
    limit: Option<Box<RawValue>>,
    #[serde(default)]
    limit_reset: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// PATCH semantics: an absent field is left alone; `"limit": null` means unlimited and
/// `"limit_reset": null` means never reset.
#[derive(Debug, Deserialize)]
pub struct KeyPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    limit: Option<Option<Box<RawValue>>>,
    #[serde(default, deserialize_with = "present")]
    limit_reset: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    include_disabled: bool,
    #[serde(default)]
    offset: u32,
}

#[derive(Serialize)]
struct Created {
    data: KeyStatement,
    /// The key itself: shown here once, never again.
    key: String,
}

#[derive(Serialize)]
struct Deleted {
    deleted: bool,
}

pub async fn create(
    _: Admin,
    State(keys): State<Arc<Keys>>,
    ApiJson(request): ApiJson<NewKeyRequest>,
) -> Result<Response, ApiError> {
    let limit = request.limit.as_deref().map(usd).transpose()?;
    let limit_reset = request
        .limit_reset
        .as_deref()
        .map(parse_limit_reset)
        .transpose()?;
    let expires_at = request
        .expires_at
        .as_deref()
        .map(parse_expiry)
        .transpose()?;
    let created = keys
        .create(&request.name, limit, limit_reset, expires_at)
        .await?;
    let body = Created {
        data: KeyStatement::opening(created.row, keys.now()),
        key: created.key,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list(
    _: Admin,
    State(keys): State<Arc<Keys>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let page = KeyPage {
        include_disabled: query.include_disabled,
        offset: i64::from(query.offset),
        limit: Some(PAGE_SIZE),
    };
    let statements = keys.statements(page).await?;
    Ok(Json(Data { data: statements }).into_response())
}

pub async fn show(
    _: Admin,
    State(keys): State<Arc<Keys>>,
    ApiPath(hash): ApiPath<String>,
) -> Result<Response, ApiError> {
    let statement = keys
        .statement(&hash)
        .await?
        .ok_or(KeyError::NotFound(hash))?;
    Ok(Json(Data { data: statement }).into_response())
}

pub async fn update(
    _: Admin,
    State(keys): State<Arc<Keys>>,
    ApiPath(hash): ApiPath<String>,
    ApiJson(patch): ApiJson<KeyPatch>,
) -> Result<Response, ApiError> {
    let change = KeyChange {
        name: patch.name,
        disabled: patch.disabled,
        limit: patch
            .limit
            .map(|limit| limit.as_deref().map(usd).transpose())
            .transpose()?,
        limit_reset: patch
            .limit_reset
            .map(|reset| reset.as_deref().map(parse_limit_reset).transpose())
            .transpose()?,
    };
    let statement = keys.update(&hash, change).await?;
    Ok(Json(Data { data: statement }).into_response())
}

pub async fn delete(
    _: Admin,
    State(keys): State<Arc<Keys>>,
    ApiPath(hash): ApiPath<String>,
) -> Result<Response, ApiError> {
    keys.delete(&hash).await?;
    Ok(Json(Deleted { deleted: true }).into_response())
}

/// A JSON number of USD, or a string holding one, read from its digits so no float rounds it.
fn usd(raw: &RawValue) -> Result<MicroUsd, KeyError> {
    let text = raw.get();
    match serde_json::from_str::<String>(text) {
        Ok(quoted) => parse_limit(&quoted),
        Err(_) => parse_limit(text),
    }
}

/// Makes a present `null` `Some(None)`, which a plain `Option<Option<T>>` would fold into `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Lives beside the handlers that raise it: only they turn a [`KeyError`] into a response.
impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Store(error) => error.into(),
            KeyError::NotFound(_) => ApiError::not_found(error.to_string()),
            KeyError::EmptyName
            | KeyError::NameTooLong
            | KeyError::NameWithControlCharacters
            | KeyError::InvalidLimit
            | KeyError::InvalidLimitReset
            | KeyError::InvalidExpiry => ApiError::bad_request(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> KeyPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_null_limit_is_a_change_and_an_absent_one_is_not() {
        assert!(patch(r#"{"name": "x"}"#).limit.is_none());
        assert!(matches!(patch(r#"{"limit": null}"#).limit, Some(None)));
        assert!(matches!(
            patch(r#"{"limit_reset": null}"#).limit_reset,
            Some(None)
        ));
        let limit = patch(r#"{"limit": 12.5}"#).limit.flatten().unwrap();
        assert_eq!(usd(&limit).unwrap(), MicroUsd(12_500_000));
    }

    #[test]
    fn limits_are_read_exactly_from_numbers_or_strings_and_never_negative() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        assert_eq!(usd(&raw("0.000001")).unwrap(), MicroUsd(1));
        assert_eq!(usd(&raw(r#""7.25""#)).unwrap(), MicroUsd(7_250_000));
        for bad in ["-1", "1e2", "true", r#""ten""#, "0.1234567"] {
            assert!(usd(&raw(bad)).is_err(), "{bad}");
        }
    }
}
