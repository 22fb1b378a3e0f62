//! `GET /v1/generation?id=gen-…`: one of the caller's own requests, as OpenRouter shapes it.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::extract::ApiQuery;
use crate::accounts::AuthedKey;
use crate::error::ApiError;
use crate::openai::MicroUsd;
use crate::store::{GenerationRow, Store};
use crate::usage::writer::GenerationSink;

#[derive(Debug, Deserialize)]
pub struct GenerationQuery {
    id: Option<String>,
}

pub async fn show(
    State(store): State<Store>,
    State(generations): State<GenerationSink>,
    key: AuthedKey,
    ApiQuery(query): ApiQuery<GenerationQuery>,
) -> Result<Response, ApiError> {
    let id = query
        .id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("`id` is required"))?;
    let mut row = store.generation(&id, &key.hash).await?;
    if row.is_none() {
        // Rows are written in batches behind the request; a just-finished one may still be queued.
        generations.flush().await;
        row = store.generation(&id, &key.hash).await?;
    }
    let row = row.ok_or_else(|| ApiError::not_found(format!("generation {id:?} not found")))?;
    let body = serde_json::to_vec(&describe(&row)).map_err(|_| ApiError::internal())?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// OpenRouter's field names, plus this gateway's own (`provider`, `attempts`, `status`, ...).
#[derive(Serialize)]
struct GenerationView<'a> {
    id: &'a str,
    model: &'a str,
    provider: Option<&'a str>,
    provider_name: Option<&'a str>,
    upstream_model: Option<&'a str>,
    created_at: String,
    app_referer: Option<&'a str>,
    app_title: Option<&'a str>,
    total_cost: MicroUsd,
    tokens_prompt: i64,
    tokens_completion: i64,
    native_tokens_prompt: i64,
    native_tokens_completion: i64,
    native_tokens_cached: i64,
    native_tokens_cache_write: i64,
    native_tokens_reasoning: i64,
    /// Milliseconds from request to last byte.
    latency: i64,
    /// Milliseconds from request to first content token (streams only).
    ttft: Option<i64>,
    status: i32,
    finish_reason: Option<&'a str>,
    streamed: bool,
    cancelled: bool,
    error: Option<&'a str>,
    attempts: Box<RawValue>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    data: GenerationView<'a>,
}

fn describe(row: &GenerationRow) -> Envelope<'_> {
    let attempts = RawValue::from_string(row.attempts.clone())
        .unwrap_or_else(|_| RawValue::from_string("[]".to_owned()).unwrap_or_default());
    Envelope {
        data: GenerationView {
            id: &row.id,
            model: &row.model,
            provider: row.provider.as_deref(),
            provider_name: row.provider.as_deref(),
            upstream_model: row.upstream_model.as_deref(),
            created_at: row.created_at.to_rfc3339(),
            app_referer: row.app_referer.as_deref(),
            app_title: row.app_title.as_deref(),
            total_cost: MicroUsd(row.cost),
            tokens_prompt: row.prompt_tokens,
            tokens_completion: row.completion_tokens,
            native_tokens_prompt: row.prompt_tokens,
            native_tokens_completion: row.completion_tokens,
            native_tokens_cached: row.cached_tokens,
            native_tokens_cache_write: row.cache_write_tokens,
            native_tokens_reasoning: row.reasoning_tokens,
            latency: row.latency_ms,
            ttft: row.ttft_ms,
            status: row.status,
            finish_reason: row.finish_reason.as_deref(),
            streamed: row.streamed,
            cancelled: row.cancelled,
            error: row.error.as_deref(),
            attempts,
        },
    }
}
