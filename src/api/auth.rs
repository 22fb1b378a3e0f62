//! Bearer key → [`AuthedKey`]: the extractor that guards every API route.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::accounts::{AuthError, AuthedKey, Keys};
use crate::error::ApiError;

impl<S> FromRequestParts<S> for AuthedKey
where
    S: Send + Sync,
    Arc<Keys>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let presented = bearer(parts).ok_or(AuthError::Missing)?;
        let keys = Arc::<Keys>::from_ref(state);
        Ok(keys.authenticate(presented).await?)
    }
}

/// The token of an `Authorization: Bearer …` header, if the request has one.
pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}
