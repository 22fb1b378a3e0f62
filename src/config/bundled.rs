//! What ships inside the binary: the model catalog (`config/models.toml`), the well-known
//! providers found through their environment variables, and how the catalog merges with a
//! user's models. Knows list prices (base URLs are the presets'); never reads files or the
//! process environment.

use std::collections::HashSet;

use serde::Deserialize;

use super::{ModelConfig, ProviderConfig, ProviderKind};
use crate::providers::presets::{self, Preset};

/// The catalog's text, embedded at build time.
pub(super) const CATALOG: &str = include_str!("../../config/models.toml");

/// How messages name the catalog.
pub(super) const CATALOG_ORIGIN: &str = "config/models.toml (bundled catalog)";

/// The catalog file holds models only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogFile {
    #[serde(default)]
    pub(super) models: Vec<ModelConfig>,
}

/// A provider the embedded default configures when its key is in the environment.
#[derive(Debug, Clone, Copy)]
pub(super) enum WellKnownProvider {
    /// Spoken through its own kind, which knows its base URL.
    Native {
        env: &'static str,
        id: &'static str,
        kind: ProviderKind,
    },
    /// An `openai-compatible` preset, configured under the preset's name with its base URL and
    /// key variable.
    Preset(&'static Preset),
}

impl WellKnownProvider {
    pub(super) fn id(self) -> &'static str {
        match self {
            WellKnownProvider::Native { id, .. } => id,
            WellKnownProvider::Preset(preset) => preset.name,
        }
    }

    fn env(self) -> Option<&'static str> {
        match self {
            WellKnownProvider::Native { env, .. } => Some(env),
            WellKnownProvider::Preset(preset) => preset.api_key_env,
        }
    }
}

/// OpenAI, Anthropic and Google are spoken natively; every other provider here through OpenAI's
/// chat API, as its preset describes.
pub(super) const WELL_KNOWN: [WellKnownProvider; 8] = [
    WellKnownProvider::Native {
        env: "OPENAI_API_KEY",
        id: "openai",
        kind: ProviderKind::Openai,
    },
    WellKnownProvider::Native {
        env: "ANTHROPIC_API_KEY",
        id: "anthropic",
        kind: ProviderKind::Anthropic,
    },
    WellKnownProvider::Native {
        env: "GEMINI_API_KEY",
        id: "google",
        kind: ProviderKind::Gemini,
    },
    WellKnownProvider::Preset(&presets::MISTRAL),
    WellKnownProvider::Preset(&presets::GROQ),
    WellKnownProvider::Preset(&presets::DEEPSEEK),
    WellKnownProvider::Preset(&presets::XAI),
    WellKnownProvider::Preset(&presets::OPENROUTER),
];

/// The embedded default's providers: `mock`, then every well-known provider whose key is set
/// (an empty variable counts as unset). Base URLs are left to validation, which knows the
/// presets' and the native kinds' defaults.
pub(super) fn default_providers(env: &dyn Fn(&str) -> Option<String>) -> Vec<ProviderConfig> {
    let mut providers = vec![ProviderConfig::new("mock", ProviderKind::Mock)];
    for known in WELL_KNOWN {
        let Some(key) = known
            .env()
            .and_then(env)
            .filter(|key| !key.trim().is_empty())
        else {
            continue;
        };
        let mut provider = match known {
            WellKnownProvider::Native { kind, .. } => ProviderConfig::new(known.id(), kind),
            WellKnownProvider::Preset(preset) => {
                let mut provider = ProviderConfig::new(known.id(), ProviderKind::OpenaiCompatible);
                provider.preset = Some(preset.name.to_owned());
                provider
            }
        };
        provider.api_key = Some(key);
        providers.push(provider);
    }
    providers
}

/// The user's models first, then the bundled ones they do not replace. Bundled endpoints of
/// providers that are not configured are dropped, then bundled models left with none, so the
/// catalog lists only what can be served.
pub(super) fn merge(
    user: Vec<ModelConfig>,
    bundled: Vec<ModelConfig>,
    providers: &[ProviderConfig],
) -> Vec<ModelConfig> {
    let configured: HashSet<&str> = providers
        .iter()
        .map(|provider| provider.id.as_str())
        .collect();
    let replaced: HashSet<String> = user.iter().map(|model| model.id.clone()).collect();
    let servable = bundled
        .into_iter()
        .filter(|model| !replaced.contains(&model.id))
        .filter_map(|mut model| {
            model
                .endpoints
                .retain(|endpoint| configured.contains(endpoint.provider.as_str()));
            (!model.endpoints.is_empty()).then_some(model)
        });
    user.into_iter().chain(servable).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointConfig;
    use crate::usage::Price;

    fn catalog() -> Vec<ModelConfig> {
        toml::from_str::<CatalogFile>(CATALOG).unwrap().models
    }

    fn model(id: &str, providers: &[&str]) -> ModelConfig {
        ModelConfig {
            id: id.to_owned(),
            name: None,
            description: None,
            context_length: None,
            endpoints: providers
                .iter()
                .map(|provider| EndpointConfig {
                    provider: (*provider).to_owned(),
                    upstream: "upstream".to_owned(),
                    prompt: "1".to_owned(),
                    completion: "1".to_owned(),
                    cache_read: None,
                    cache_write: None,
                    max_output: None,
                    supports: Vec::new(),
                })
                .collect(),
        }
    }

    fn ids(models: &[ModelConfig]) -> Vec<&str> {
        models.iter().map(|model| model.id.as_str()).collect()
    }

    #[test]
    fn the_bundled_catalog_parses_and_every_price_is_valid() {
        let models = catalog();
        assert!(models.len() > 20, "{} models", models.len());
        let mut problems = Vec::new();
        super::super::validate::models(&models, None, &mut problems);
        assert_eq!(problems, Vec::new());
        for endpoint in models.iter().flat_map(|model| &model.endpoints) {
            let prices = [Some(&endpoint.prompt), Some(&endpoint.completion)];
            let optional = [endpoint.cache_read.as_ref(), endpoint.cache_write.as_ref()];
            for price in prices.into_iter().chain(optional).flatten() {
                assert!(Price::parse(price).is_ok(), "{price}");
            }
            assert!(
                !Price::parse(&endpoint.prompt).unwrap().is_free(),
                "list prices are not zero"
            );
        }
    }

    #[test]
    fn bundled_endpoints_name_only_well_known_providers() {
        let known: HashSet<&str> = WELL_KNOWN
            .iter()
            .map(|known| known.id())
            .chain(["mock"])
            .collect();
        for model in catalog() {
            for endpoint in &model.endpoints {
                assert!(
                    known.contains(endpoint.provider.as_str()),
                    "{}: {}",
                    model.id,
                    endpoint.provider
                );
            }
        }
    }

    #[test]
    fn the_catalog_has_each_providers_flagship_models() {
        let models = catalog();
        let ids = ids(&models);
        for expected in [
            "switchyard/echo",
            "openai/gpt-4o",
            "openai/gpt-4o-mini",
            "openai/gpt-4.1",
            "openai/o3",
            "openai/gpt-5",
            "anthropic/claude-sonnet-4",
            "anthropic/claude-opus-4",
            "google/gemini-2.5-pro",
            "google/gemini-2.5-flash",
            "deepseek/deepseek-chat",
            "meta-llama/llama-3.3-70b-instruct",
            "x-ai/grok-4",
        ] {
            assert!(ids.contains(&expected), "{expected} missing");
        }
    }

    #[test]
    fn bundled_sampling_lists_follow_the_providers_documentation() {
        use crate::openai::SamplingSet;
        use crate::providers::Capabilities;
        let models = catalog();
        let sampling = |id: &str, provider: &str| {
            let model = models.iter().find(|model| model.id == id).unwrap();
            let endpoint = model
                .endpoints
                .iter()
                .find(|endpoint| endpoint.provider == provider)
                .unwrap();
            let capabilities = Capabilities::from_names(&endpoint.supports);
            (capabilities.explicit_sampling, capabilities.sampling)
        };
        assert_eq!(
            sampling("anthropic/claude-sonnet-4.5", "anthropic"),
            (
                true,
                SamplingSet::from_names(["temperature", "top_p", "top_k", "stop"])
            )
        );
        for reasoning in ["openai/o3", "openai/gpt-5"] {
            let (explicit, set) = sampling(reasoning, "openai");
            assert!(explicit, "{reasoning}");
            assert!(
                set.intersection(SamplingSet::from_names(["temperature", "top_p"]))
                    .is_empty(),
                "{reasoning}"
            );
        }
        let (_, gemini) = sampling("google/gemini-2.5-flash", "google");
        assert!(gemini.contains(SamplingSet::from_names(["seed", "top_k"])));
        assert_eq!(
            sampling("openai/o3", "openrouter"),
            (false, SamplingSet::ALL),
            "OpenRouter endpoints stay implicit"
        );
    }

    #[test]
    fn user_models_override_bundled_ones() {
        let bundled = vec![model("a/one", &["p"]), model("a/two", &["p"])];
        let mut mine = model("a/two", &["q"]);
        mine.endpoints[0].prompt = "9".to_owned();
        let merged = merge(
            vec![mine, model("b/new", &["q"])],
            bundled,
            &[
                ProviderConfig::new("p", ProviderKind::Mock),
                ProviderConfig::new("q", ProviderKind::Mock),
            ],
        );
        assert_eq!(ids(&merged), ["a/two", "b/new", "a/one"]);
        assert_eq!(merged[0].endpoints.len(), 1, "the whole model is replaced");
        assert_eq!(merged[0].endpoints[0].prompt, "9");
    }

    #[test]
    fn bundled_endpoints_of_unconfigured_providers_are_dropped() {
        let bundled = vec![
            model("a/both", &["p", "gone"]),
            model("a/orphan", &["gone"]),
        ];
        let merged = merge(
            Vec::new(),
            bundled,
            &[ProviderConfig::new("p", ProviderKind::Mock)],
        );
        assert_eq!(ids(&merged), ["a/both"]);
        assert_eq!(merged[0].endpoints.len(), 1);
        assert_eq!(merged[0].endpoints[0].provider, "p");
    }

    #[test]
    fn only_providers_with_a_key_in_the_environment_are_configured_by_default() {
        let env = |name: &str| match name {
            "GROQ_API_KEY" => Some("gsk-test".to_owned()),
            "OPENAI_API_KEY" => Some(String::new()),
            _ => None,
        };
        let providers = default_providers(&env);
        let ids: Vec<&str> = providers
            .iter()
            .map(|provider| provider.id.as_str())
            .collect();
        assert_eq!(ids, ["mock", "groq"]);
        assert_eq!(
            (providers[1].kind, providers[1].preset.as_deref()),
            (ProviderKind::OpenaiCompatible, Some("groq"))
        );
        assert_eq!(providers[1].api_key.as_deref(), Some("gsk-test"));
    }
}
