//! [`CatalogReader`]: who may read `/models` and a model's `/endpoints` — anyone by default, as
//! OpenRouter serves them, or only a caller with a valid key under `server.public_catalog =
//! false`, for a gateway whose catalog is not for the world to see.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;

use crate::accounts::{AuthedKey, Keys};
use crate::error::ApiError;

/// `server.public_catalog`.
#[derive(Debug, Clone, Copy)]
pub struct CatalogAccess {
    pub public: bool,
}

/// A caller allowed to read the catalog.
pub struct CatalogReader;

impl<S> FromRequestParts<S> for CatalogReader
where
    S: Send + Sync,
    Arc<Keys>: FromRef<S>,
    CatalogAccess: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if CatalogAccess::from_ref(state).public {
            return Ok(CatalogReader);
        }
        AuthedKey::from_request_parts(parts, state).await?;
        Ok(CatalogReader)
    }
}
