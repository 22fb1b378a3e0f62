//! Builds one adapter and one connection pool per configured provider, each adapter behind the
//! scrubber that keeps every configured credential out of its errors. Adding a provider kind is
//! one line in `adapter_for`.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use super::anthropic::{self, Anthropic};
use super::azure::Azure;
use super::bedrock::{Bedrock, Credentials};
use super::gemini::{self, Gemini};
use super::mock::Mock;
use super::openai::OpenAi;
use super::presets;
use super::scrub::{Scrubber, Scrubbing};
use super::upstream::Upstream;
use super::{Provider, ProviderError};
use crate::config::{AZURE_API_VERSION, DataCollection, ProviderConfig, ProviderKind};

/// A configured provider: its adapter, its pool, and what routing needs to know of it.
pub struct ProviderEntry {
    pub id: Arc<str>,
    pub adapter: Box<dyn Provider>,
    pub upstream: Upstream,
    pub data_collection: DataCollection,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("provider {id:?}: {source}")]
    Adapter { id: String, source: ProviderError },
    #[error("provider {id:?}: cannot build its HTTP client: {source}")]
    Client { id: String, source: std::io::Error },
    #[error("provider {id:?}: base_url is required for kind {kind:?}")]
    MissingBaseUrl { id: String, kind: &'static str },
    #[error("provider {id:?}: {key} is required for kind \"bedrock\"")]
    MissingAwsSetting { id: String, key: &'static str },
}

/// Every configured provider by id. Immutable once built; shared through `Arc`.
#[derive(Default)]
pub struct Registry {
    providers: HashMap<Arc<str>, Arc<ProviderEntry>>,
}

const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

fn adapter_for(config: &ProviderConfig) -> Result<Box<dyn Provider>, RegistryError> {
    let adapter_error = |source| RegistryError::Adapter {
        id: config.id.clone(),
        source,
    };
    let api_key = config.api_key.as_deref();
    let base_url_or = |default| config.base_url.as_deref().unwrap_or(default);
    let required_base_url = |kind| {
        config
            .base_url
            .as_deref()
            .ok_or_else(|| RegistryError::MissingBaseUrl {
                id: config.id.clone(),
                kind,
            })
    };
    Ok(match config.kind {
        ProviderKind::Mock => Box::new(Mock),
        ProviderKind::Openai => {
            let base_url = base_url_or(OPENAI_BASE_URL);
            Box::new(OpenAi::new(base_url, api_key, None).map_err(adapter_error)?)
        }
        ProviderKind::Anthropic => {
            let base_url = base_url_or(anthropic::DEFAULT_BASE_URL);
            Box::new(Anthropic::new(base_url, api_key).map_err(adapter_error)?)
        }
        ProviderKind::OpenaiCompatible => {
            let base_url = required_base_url("openai-compatible")?;
            let preset = config.preset.as_deref().and_then(presets::preset_named);
            Box::new(OpenAi::new(base_url, api_key, preset).map_err(adapter_error)?)
        }
        ProviderKind::Gemini => {
            let base_url = base_url_or(gemini::DEFAULT_BASE_URL);
            Box::new(Gemini::new(base_url, api_key).map_err(adapter_error)?)
        }
        ProviderKind::Azure => {
            let base_url = required_base_url("azure")?;
            let api_version = config.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
            Box::new(Azure::new(base_url, api_version, api_key).map_err(adapter_error)?)
        }
        ProviderKind::Bedrock => {
            let required = |value: &Option<String>, key| {
                value
                    .clone()
                    .ok_or_else(|| RegistryError::MissingAwsSetting {
                        id: config.id.clone(),
                        key,
                    })
            };
            let region = required(&config.region, "region")?;
            let credentials = Credentials {
                access_key_id: required(&config.access_key_id, "access_key_id")?,
                secret_access_key: required(&config.secret_access_key, "secret_access_key")?,
                session_token: config.session_token.clone(),
            };
            // Loading the config fills in the regional default.
            let base_url = required(&config.base_url, "base_url")?;
            Box::new(Bedrock::new(&base_url, region, credentials).map_err(adapter_error)?)
        }
    })
}

impl Registry {
    pub fn build(configs: &[ProviderConfig]) -> Result<Registry, RegistryError> {
        let mut providers = HashMap::with_capacity(configs.len());
        // One scrubber for every adapter, holding every provider's credentials: an upstream
        // that is a proxy in front of several providers can echo any of them.
        let scrubber = Arc::new(Scrubber::of_providers(configs));
        for config in configs {
            let id: Arc<str> = Arc::from(config.id.as_str());
            let upstream = Upstream::new(config).map_err(|source| RegistryError::Client {
                id: config.id.clone(),
                source,
            })?;
            let entry = ProviderEntry {
                id: id.clone(),
                adapter: Box::new(Scrubbing::new(adapter_for(config)?, scrubber.clone())),
                upstream,
                data_collection: config.data_collection,
            };
            providers.insert(id, Arc::new(entry));
        }
        Ok(Registry { providers })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<ProviderEntry>> {
        self.providers.get(id)
    }
}
