//! The per-request plan: which endpoints to try, in which order. Filters drop endpoints that
//! cannot honour the request; the caller's `provider` preferences order and restrict the rest.

use std::sync::Arc;

use super::catalog::{Catalog, Endpoint, Model};
use crate::openai::{ChatRequest, ProviderPreferences, SamplingSet};

/// One endpoint of one model, to be tried in turn.
#[derive(Debug, Clone)]
pub struct PlannedAttempt {
    pub model: Arc<Model>,
    endpoint: usize,
}

impl PlannedAttempt {
    pub fn endpoint(&self) -> &Endpoint {
        &self.model.endpoints[self.endpoint]
    }
}

#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub attempts: Vec<PlannedAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("`model` is required (or a non-empty `models` list)")]
    MissingModel,
    #[error("model {0:?} is not available on this gateway; GET /v1/models lists the models")]
    UnknownModel(String),
    #[error("no endpoint of {model:?} can serve this request ({filter})")]
    NoEndpoint { model: String, filter: &'static str },
}

/// What of the request the filters look at, worked out once for all endpoints.
struct Needs {
    /// The sampling parameters every endpoint must support (`provider.require_parameters`).
    required_sampling: SamplingSet,
    reasoning: bool,
}

/// Why an endpoint cannot take the request, or `None` when it can.
fn rejection(
    endpoint: &Endpoint,
    request: &ChatRequest,
    preferences: &ProviderPreferences,
    needs: &Needs,
) -> Option<&'static str> {
    let named = |list: &Option<Vec<String>>| {
        list.as_ref()
            .map(|ids| ids.iter().any(|id| *id == *endpoint.provider))
    };
    let capabilities = &endpoint.capabilities;
    if named(&preferences.only) == Some(false) {
        return Some("provider.only");
    }
    if named(&preferences.ignore) == Some(true) {
        return Some("provider.ignore");
    }
    if preferences.allow_fallbacks == Some(false) && named(&preferences.order) == Some(false) {
        return Some("provider.order with allow_fallbacks: false");
    }
    if request
        .tools
        .as_ref()
        .is_some_and(|tools| !tools.is_empty())
        && !capabilities.tools
    {
        return Some("tools are not supported");
    }
    if request.has_images() && !capabilities.vision {
        return Some("images are not supported");
    }
    let structured = request
        .response_format
        .as_ref()
        .and_then(|format| format.get("type"))
        .is_some_and(|kind| kind != "text");
    if structured && !capabilities.response_format {
        return Some("response_format is not supported");
    }
    if needs.reasoning && !capabilities.reasoning {
        return Some("reasoning is not supported");
    }
    if !capabilities.sampling.contains(needs.required_sampling) {
        return Some("provider.require_parameters: a sampling parameter is not supported");
    }
    let too_long = request
        .max_output_tokens()
        .zip(endpoint.max_output)
        .is_some_and(|(asked, max)| asked > max);
    if too_long {
        return Some("max_tokens exceeds the endpoint's max_output");
    }
    None
}

/// Builds the plan: each model in `model_candidates` order, its usable endpoints in catalog
/// order, with `provider.order` moved to the front.
pub fn plan(catalog: &Catalog, request: &ChatRequest) -> Result<RoutePlan, PlanError> {
    let candidates = request.model_candidates();
    if candidates.is_empty() {
        return Err(PlanError::MissingModel);
    }
    let no_preferences = ProviderPreferences::default();
    let preferences = request.provider.as_ref().unwrap_or(&no_preferences);
    let needs = Needs {
        required_sampling: if preferences.require_parameters == Some(true) {
            request.sampling_parameters()
        } else {
            SamplingSet::EMPTY
        },
        reasoning: request.wants_reasoning(),
    };
    let mut attempts = Vec::new();
    let mut first_rejection = None;
    for id in candidates {
        let model = catalog
            .model(id)
            .ok_or_else(|| PlanError::UnknownModel(id.to_owned()))?;
        let start = attempts.len();
        for (index, endpoint) in model.endpoints.iter().enumerate() {
            match rejection(endpoint, request, preferences, &needs) {
                None => attempts.push(PlannedAttempt {
                    model: model.clone(),
                    endpoint: index,
                }),
                Some(filter) => {
                    first_rejection.get_or_insert_with(|| (model.id.to_string(), filter));
                }
            }
        }
        if let Some(order) = &preferences.order {
            let rank = |attempt: &PlannedAttempt| {
                let provider = &*attempt.endpoint().provider;
                order
                    .iter()
                    .position(|id| id == provider)
                    .unwrap_or(order.len())
            };
            attempts[start..].sort_by_key(rank);
        }
    }
    if attempts.is_empty() {
        let (model, filter) = first_rejection.unwrap_or_else(|| {
            (
                request.model_candidates()[0].to_owned(),
                "the model has no endpoints",
            )
        });
        return Err(PlanError::NoEndpoint { model, filter });
    }
    Ok(RoutePlan { attempts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn catalog() -> Catalog {
        let config: Config = toml::from_str(
            r#"
[[providers]]
id = "a"
kind = "mock"
[[providers]]
id = "b"
kind = "mock"
[[providers]]
id = "c"
kind = "mock"

[[models]]
id = "x/one"
  [[models.endpoints]]
  provider = "a"
  upstream = "one-a"
  prompt = "1"
  completion = "2"
  max_output = 100
  [[models.endpoints]]
  provider = "b"
  upstream = "one-b"
  prompt = "1"
  completion = "2"
  supports = ["tools"]

  [[models.endpoints]]
  provider = "c"
  upstream = "one-c"
  prompt = "1"
  completion = "2"
  supports = ["temperature", "seed", "reasoning"]

[[models]]
id = "x/three"
  [[models.endpoints]]
  provider = "c"
  upstream = "three-c"
  prompt = "1"
  completion = "2"
  supports = ["temperature"]

[[models]]
id = "x/two"
  [[models.endpoints]]
  provider = "a"
  upstream = "two-a"
  prompt = "1"
  completion = "2"
"#,
        )
        .unwrap();
        Catalog::build(&config).unwrap()
    }

    fn providers_for(body: &str) -> Result<Vec<String>, PlanError> {
        let request: ChatRequest = serde_json::from_str(body).unwrap();
        let plan = plan(&catalog(), &request)?;
        Ok(plan
            .attempts
            .iter()
            .map(|attempt| format!("{}@{}", attempt.model.id, attempt.endpoint().provider))
            .collect())
    }

    #[test]
    fn endpoints_follow_the_catalog_then_the_fallback_models() {
        let got = providers_for(r#"{"model":"x/one","models":["x/two"],"messages":[]}"#).unwrap();
        assert_eq!(got, ["x/one@a", "x/one@b", "x/one@c", "x/two@a"]);
    }

    #[test]
    fn provider_order_goes_first_and_only_and_ignore_filter() {
        let order = r#"{"model":"x/one","provider":{"order":["b"]},"messages":[]}"#;
        assert_eq!(
            providers_for(order).unwrap(),
            ["x/one@b", "x/one@a", "x/one@c"]
        );
        let only = r#"{"model":"x/one","provider":{"only":["a"]},"messages":[]}"#;
        assert_eq!(providers_for(only).unwrap(), ["x/one@a"]);
        let ignore = r#"{"model":"x/one","provider":{"ignore":["a"]},"messages":[]}"#;
        assert_eq!(providers_for(ignore).unwrap(), ["x/one@b", "x/one@c"]);
    }

    #[test]
    fn tools_and_max_tokens_filter_endpoints_that_cannot_honour_them() {
        let tools = r#"{"model":"x/one","tools":[{"type":"function"}],"messages":[]}"#;
        assert_eq!(providers_for(tools).unwrap(), ["x/one@b"]);
        let long =
            r#"{"model":"x/two","max_tokens":500,"tools":[{"type":"function"}],"messages":[]}"#;
        assert_eq!(
            providers_for(long).unwrap_err(),
            PlanError::NoEndpoint {
                model: "x/two".into(),
                filter: "tools are not supported"
            }
        );
    }

    #[test]
    fn require_parameters_keeps_only_endpoints_that_support_every_sampling_parameter() {
        let seed = r#"{"model":"x/one","seed":1,"temperature":0.5,"messages":[]}"#;
        assert_eq!(
            providers_for(seed).unwrap(),
            ["x/one@a", "x/one@b", "x/one@c"],
            "without require_parameters they are dropped, not filtered"
        );
        let required = r#"{"model":"x/one","seed":1,"temperature":0.5,"provider":{"require_parameters":true},"messages":[]}"#;
        assert_eq!(
            providers_for(required).unwrap(),
            ["x/one@a", "x/one@b", "x/one@c"],
            "implicit endpoints accept every sampling parameter"
        );
        let top_k =
            r#"{"model":"x/one","top_k":5,"provider":{"require_parameters":true},"messages":[]}"#;
        assert_eq!(providers_for(top_k).unwrap(), ["x/one@a", "x/one@b"]);
        let three = r#"{"model":"x/three","temperature":1,"seed":2,"provider":{"require_parameters":true},"messages":[]}"#;
        assert_eq!(
            providers_for(three).unwrap_err(),
            PlanError::NoEndpoint {
                model: "x/three".into(),
                filter: "provider.require_parameters: a sampling parameter is not supported"
            }
        );
    }

    #[test]
    fn reasoning_needs_an_endpoint_that_lists_it_unless_it_is_switched_off() {
        let wants = r#"{"model":"x/one","reasoning":{"effort":"high"},"messages":[]}"#;
        assert_eq!(providers_for(wants).unwrap(), ["x/one@c"]);
        let off = r#"{"model":"x/one","reasoning":{"effort":"none"},"messages":[]}"#;
        assert_eq!(providers_for(off).unwrap().len(), 3);
        let disabled = r#"{"model":"x/two","reasoning":{"enabled":false},"messages":[]}"#;
        assert_eq!(providers_for(disabled).unwrap(), ["x/two@a"]);
        let two = r#"{"model":"x/two","reasoning":{"max_tokens":100},"messages":[]}"#;
        assert_eq!(
            providers_for(two).unwrap_err(),
            PlanError::NoEndpoint {
                model: "x/two".into(),
                filter: "reasoning is not supported"
            }
        );
    }

    #[test]
    fn unknown_and_missing_models_are_errors() {
        assert_eq!(
            providers_for(r#"{"model":"x/nope","messages":[]}"#).unwrap_err(),
            PlanError::UnknownModel("x/nope".into())
        );
        assert_eq!(
            providers_for(r#"{"messages":[]}"#).unwrap_err(),
            PlanError::MissingModel
        );
    }
}
