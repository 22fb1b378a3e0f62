//! [`ApiQuery`] and [`ApiPath`]: axum's query and path extractors with their rejections in the
//! API's error shape, like [`super::json::ApiJson`] for bodies, instead of `text/plain`.

use axum::extract::{FromRequestParts, Path, Query};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(query)) => Ok(ApiQuery(query)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(path)) => Ok(ApiPath(path)),
            // A route whose pattern and type disagree is our bug, not the caller's.
            Err(rejection) if rejection.status().is_server_error() => {
                tracing::error!(%rejection, "a route's path parameters do not fit its handler");
                Err(ApiError::internal())
            }
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}
