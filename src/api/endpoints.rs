//! `GET /v1/models/{author}/{slug}/endpoints`: one model's endpoints in OpenRouter's shape, with
//! price, limits and what the health tracker knows of each. Rendered per request, since status,
//! latency and uptime change all the time.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::catalog_access::CatalogReader;
use super::extract::ApiPath;
use super::models::{CATALOG_CREATED, pricing, supported_parameters};
use crate::error::ApiError;
use crate::routing::{BreakerState, Catalog, EndpointReport, HealthTracker, Percentiles};

/// What the endpoints API reads: the catalog and the shared health tracker.
#[derive(Clone)]
pub struct ModelEndpoints {
    pub catalog: Arc<Catalog>,
    pub health: Arc<HealthTracker>,
}

pub async fn list(
    _: CatalogReader,
    State(directory): State<ModelEndpoints>,
    ApiPath((author, slug)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = format!("{author}/{slug}");
    let model = directory.catalog.model(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "model {id:?} is not available on this gateway; GET /v1/models lists the models"
        ))
    })?;
    let reports = directory.health.report(model);
    let endpoints: Vec<Value> = model
        .endpoints
        .iter()
        .zip(&reports)
        .map(|(endpoint, report)| {
            json!({
                "name": format!("{}: {}", endpoint.provider, model.name),
                "model_name": model.name,
                "context_length": model.context_length,
                "pricing": pricing(&endpoint.pricing),
                "provider_name": endpoint.provider,
                "tag": endpoint.provider,
                "max_completion_tokens": endpoint.max_output,
                "max_prompt_tokens": model.context_length,
                "supported_parameters": supported_parameters(std::slice::from_ref(endpoint)),
                "status": status(report),
                "uptime_last_5m": report.recent.uptime.last_5m,
                "uptime_last_30m": report.recent.uptime.last_30m,
                "uptime_last_1d": report.recent.uptime.last_1d,
                "latency_last_30m": report.recent.ttft.map(percentiles),
                "total_latency_last_30m": report.recent.latency.map(percentiles),
                "throughput_last_30m": report.recent.throughput.map(percentiles),
            })
        })
        .collect();
    Ok(Json(json!({
        "data": {
            "id": model.id,
            "name": model.name,
            "created": CATALOG_CREATED,
            "description": model.description,
            "endpoints": endpoints,
        }
    })))
}

/// OpenRouter's endpoint status: 0 when serving normally, negative when not. Switchyard uses
/// -1 for failed in the last 30 seconds, -2 for half-open (one probe allowed), -3 for open.
fn status(report: &EndpointReport) -> i8 {
    match (report.breaker, report.recently_failed) {
        (BreakerState::Open, _) => -3,
        (BreakerState::HalfOpen, _) => -2,
        (BreakerState::Closed, true) => -1,
        (BreakerState::Closed, false) => 0,
    }
}

fn percentiles(p: Percentiles) -> Value {
    json!({ "p50": p.p50, "p75": p.p75, "p90": p.p90, "p99": p.p99 })
}
