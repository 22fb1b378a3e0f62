//! The admin token that guards key provisioning: [`Admin`] for routes only an operator may call,
//! [`Caller`] for routes that answer an operator and a key differently. Never logs a token.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use sha2::{Digest, Sha256};

use super::auth::bearer;
use crate::accounts::{AuthError, AuthedKey, Keys};
use crate::error::ApiError;

/// The configured `[server] admin_token`, kept as its SHA-256 so that comparing a presented token
/// takes the same time whatever its length or how much of it matches.
#[derive(Clone, Copy)]
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    /// `None` leaves the provisioning API switched off.
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|token| Sha256::digest(token.as_bytes()).into()))
    }

    fn check(self, presented: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = self.0 else {
            return Err(ApiError::forbidden(
                "the key-provisioning API is disabled: set [server] admin_token in the config",
            ));
        };
        let presented = presented.ok_or_else(|| {
            ApiError::unauthorized(
                "missing admin token: send `Authorization: Bearer <admin_token>`",
            )
        })?;
        if matches_in_constant_time(&expected, presented) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("invalid admin token"))
        }
    }

    fn matches(self, presented: &str) -> bool {
        self.0
            .is_some_and(|expected| matches_in_constant_time(&expected, presented))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.is_some() { "set" } else { "unset" };
        f.debug_tuple("AdminToken").field(&state).finish()
    }
}

/// Every byte is compared, with no early exit, so timing says nothing about how close a guess was.
fn matches_in_constant_time(expected: &[u8; 32], presented: &str) -> bool {
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    AdminToken: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        AdminToken::from_ref(state).check(bearer(parts))?;
        Ok(Admin)
    }
}

/// The operator (admin token) or a key.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Key(AuthedKey),
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AdminToken: FromRef<S>,
    Arc<Keys>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let presented = bearer(parts).ok_or(AuthError::Missing)?;
        if AdminToken::from_ref(state).matches(presented) {
            return Ok(Caller::Admin);
        }
        let keys = Arc::<Keys>::from_ref(state);
        Ok(Caller::Key(keys.authenticate(presented).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_matches() {
        let admin = AdminToken::new(Some("s3cret"));
        assert!(admin.matches("s3cret"));
        assert!(!admin.matches("s3cret "));
        assert!(!admin.matches(""));
        assert!(admin.check(Some("s3cret")).is_ok());
        assert_eq!(admin.check(Some("nope")).unwrap_err().status(), 401);
        assert_eq!(admin.check(None).unwrap_err().status(), 401);
    }

    #[test]
    fn without_a_configured_token_nothing_matches_and_the_api_is_forbidden() {
        let off = AdminToken::new(None);
        assert!(!off.matches(""));
        assert_eq!(off.check(Some("anything")).unwrap_err().status(), 403);
    }
}
