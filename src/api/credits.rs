//! `GET /v1/credits`: total credits (limits) and total usage, in OpenRouter's shape; over every
//! key for the admin token, over the calling key otherwise.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::admin::Caller;
use super::envelope::Data;
use crate::accounts::Keys;
use crate::error::ApiError;

pub async fn show(State(keys): State<Arc<Keys>>, caller: Caller) -> Result<Response, ApiError> {
    let scope = match &caller {
        Caller::Admin => None,
        Caller::Key(key) => Some(&*key.hash),
    };
    let totals = keys.credits(scope).await?;
    Ok(Json(Data { data: totals }).into_response())
}
