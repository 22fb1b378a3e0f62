//! `GET /v1/models`: the catalog in OpenAI's list shape with OpenRouter's fields. Rendered once
//! at startup, since the catalog does not change while the process runs.

use axum::extract::State;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::header;
use serde_json::{Value, json};

use super::catalog_access::CatalogReader;
use crate::routing::{Catalog, Endpoint, Model};
use crate::usage::Pricing;

/// The rendered model list.
#[derive(Debug, Clone)]
pub struct ModelList(pub Bytes);

/// Unix time the catalog's models report as `created`; the catalog has no dates of its own.
pub(super) const CATALOG_CREATED: i64 = 1_735_689_600;

impl ModelList {
    pub fn render(catalog: &Catalog) -> ModelList {
        let data: Vec<Value> = catalog.models().map(|model| describe(model)).collect();
        let body = json!({ "object": "list", "data": data });
        ModelList(Bytes::from(body.to_string()))
    }
}

fn describe(model: &Model) -> Value {
    // OpenRouter reports the first (default) endpoint's price; the catalog lists it first.
    let Some(top) = model.endpoints.first() else {
        return Value::Null;
    };
    let input_modalities: &[&str] = if top.capabilities.vision {
        &["text", "image"]
    } else {
        &["text"]
    };
    json!({
        "id": model.id,
        "object": "model",
        "created": CATALOG_CREATED,
        "owned_by": model.author(),
        "name": model.name,
        "description": model.description,
        "context_length": model.context_length,
        "architecture": {
            "input_modalities": input_modalities,
            "output_modalities": ["text"],
        },
        "pricing": pricing(&top.pricing),
        "top_provider": {
            "context_length": model.context_length,
            "max_completion_tokens": top.max_output,
            "is_moderated": false,
        },
        "supported_parameters": supported_parameters(&model.endpoints),
    })
}

/// OpenRouter's `pricing` object: USD per token, as decimal strings.
pub(super) fn pricing(pricing: &Pricing) -> Value {
    json!({
        "prompt": pricing.prompt.usd_per_token(),
        "completion": pricing.completion.usd_per_token(),
        "input_cache_read": pricing.cache_read.usd_per_token(),
        "input_cache_write": pricing.cache_write.usd_per_token(),
        "request": "0",
        "image": "0",
    })
}

/// The parameters any of `endpoints` takes: their explicit lists, or for endpoints that name
/// none the few nearly every API takes.
pub(super) fn supported_parameters(endpoints: &[Endpoint]) -> Vec<&str> {
    let mut supported: Vec<&str> = vec!["max_tokens", "stream"];
    for endpoint in endpoints {
        for name in endpoint.capabilities.names() {
            if !supported.contains(&name) {
                supported.push(name);
            }
        }
    }
    supported
}

pub async fn list(_: CatalogReader, State(models): State<ModelList>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], models.0)
}
