//! `GET /v1/key`: the calling key's statement (limit, what is left, usage by period), in
//! OpenRouter's shape.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::envelope::Data;
use crate::accounts::{AuthError, AuthedKey, Keys};
use crate::error::ApiError;

pub async fn show(State(keys): State<Arc<Keys>>, key: AuthedKey) -> Result<Response, ApiError> {
    // Deleted since the cache last looked: the key is no longer valid.
    let statement = keys.statement(&key.hash).await?.ok_or(AuthError::Invalid)?;
    Ok(Json(Data { data: statement }).into_response())
}
