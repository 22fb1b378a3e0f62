//! The resolved catalog: every servable model with its endpoints and exact prices, built once
//! from the config and shared read-only by all requests.

use foldhash::HashMap;
use std::sync::Arc;

use crate::config::{Config, DataCollection, EndpointConfig, ModelConfig};
use crate::providers::Capabilities;
use crate::providers::presets;
use crate::usage::{InvalidPrice, Price, Pricing};

/// One provider's offer of a model.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider id, as in `provider.order` and responses.
    pub provider: Arc<str>,
    /// The provider's own model name.
    pub upstream_model: String,
    pub pricing: Pricing,
    pub max_output: Option<u32>,
    pub capabilities: Capabilities,
    /// The provider's data policy: `Deny` when it neither stores nor trains on prompts, the only
    /// endpoints a caller's `provider.data_collection: "deny"` keeps.
    pub data_collection: DataCollection,
}

#[derive(Debug, Clone)]
pub struct Model {
    /// The public id callers send, `author/slug`.
    pub id: Arc<str>,
    pub name: String,
    pub description: String,
    pub context_length: Option<u32>,
    pub endpoints: Vec<Endpoint>,
}

impl Model {
    /// The part before the `/`, which OpenAI's `owned_by` reports.
    pub fn author(&self) -> &str {
        self.id
            .split_once('/')
            .map_or(&self.id, |(author, _)| author)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model {model:?}, endpoint {provider:?}: {source}")]
    Price {
        model: String,
        provider: String,
        source: InvalidPrice,
    },
    #[error("model {model:?}: endpoint names provider {provider:?}, which is not configured")]
    UnknownProvider { model: String, provider: String },
}

#[derive(Debug, Default)]
pub struct Catalog {
    models: Vec<Arc<Model>>,
    by_id: HashMap<Arc<str>, Arc<Model>>,
}

impl Catalog {
    pub fn build(config: &Config) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::default();
        for model_config in &config.models {
            let model = Arc::new(resolve_model(config, model_config)?);
            catalog.by_id.insert(model.id.clone(), model.clone());
            catalog.models.push(model);
        }
        Ok(catalog)
    }

    pub fn model(&self, id: &str) -> Option<&Arc<Model>> {
        self.by_id.get(id)
    }

    /// Models in catalog order.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.iter()
    }
}

fn resolve_model(config: &Config, model: &ModelConfig) -> Result<Model, CatalogError> {
    let endpoints = model
        .endpoints
        .iter()
        .map(|endpoint| resolve_endpoint(config, model, endpoint))
        .collect::<Result<_, _>>()?;
    Ok(Model {
        id: Arc::from(model.id.as_str()),
        name: model.name.clone().unwrap_or_else(|| model.id.clone()),
        description: model.description.clone().unwrap_or_default(),
        context_length: model.context_length,
        endpoints,
    })
}

fn resolve_endpoint(
    config: &Config,
    model: &ModelConfig,
    endpoint: &EndpointConfig,
) -> Result<Endpoint, CatalogError> {
    let provider = config
        .providers
        .iter()
        .find(|provider| provider.id == endpoint.provider)
        .ok_or_else(|| CatalogError::UnknownProvider {
            model: model.id.clone(),
            provider: endpoint.provider.clone(),
        })?;
    // A preset's refused sampling parameters are unsupported whatever the catalog says.
    let refused = provider
        .preset
        .as_deref()
        .and_then(presets::preset_named)
        .map_or(&[][..], |preset| preset.rejects);
    let price = |text: &str| {
        Price::parse(text).map_err(|source| CatalogError::Price {
            model: model.id.clone(),
            provider: endpoint.provider.clone(),
            source,
        })
    };
    let prompt = price(&endpoint.prompt)?;
    let optional = |text: &Option<String>| text.as_deref().map(price).transpose();
    let pricing = Pricing {
        prompt,
        completion: price(&endpoint.completion)?,
        cache_read: optional(&endpoint.cache_read)?.unwrap_or(prompt),
        cache_write: optional(&endpoint.cache_write)?.unwrap_or(prompt),
    };
    Ok(Endpoint {
        provider: Arc::from(provider.id.as_str()),
        upstream_model: endpoint.upstream.clone(),
        pricing,
        max_output: endpoint.max_output,
        capabilities: Capabilities::from_names(&endpoint.supports).refusing(refused),
        data_collection: provider.data_collection,
    })
}
