//! `GET /health/live` (the process answers) and `GET /health/ready` (the database answers and
//! the usage queue is not shedding rows).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::store::Store;
use crate::usage::writer::GenerationSink;

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(
    State(store): State<Store>,
    State(generations): State<GenerationSink>,
) -> Result<Json<Value>, ApiError> {
    store.ping().await?;
    let backlog = generations.backlog();
    if backlog.shedding {
        return Err(ApiError::unavailable(
            "the usage queue is full: the database is not keeping up and generations are being \
             dropped",
        )
        .with_metadata(json!({ "usage_queue": backlog })));
    }
    Ok(Json(
        json!({ "status": "ok", "database": "ok", "usage_queue": backlog }),
    ))
}
