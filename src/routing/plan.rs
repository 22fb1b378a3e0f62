//! The per-request plan: which endpoints to try, in which order. Resolves the candidate models
//! (with their `:floor`, `:nitro` and `:free` suffixes), drops endpoints the filters or the health
//! tracker rule out, and hands each model's group (or, for `sort` with `partition: "none"`,
//! everything) to selection to order.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::catalog::{Catalog, Endpoint, Model};
use super::filter::Needs;
use super::select::{self, Candidate, Preferences};
use super::status::EndpointHealth;
use crate::openai::{
    ChatRequest, FREE_SUFFIX, MicroUsd, ProviderPreferences, SortBy, SortPartition, SortPreference,
};

/// One endpoint of one model, to be tried in turn.
#[derive(Debug, Clone)]
pub struct PlannedAttempt {
    pub model: Arc<Model>,
    endpoint: usize,
}

impl PlannedAttempt {
    pub(crate) fn new(model: Arc<Model>, endpoint: usize) -> Self {
        Self { model, endpoint }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.model.endpoints[self.endpoint]
    }

    /// The endpoint's place in its model's list: with the model id, how health tracks it.
    pub(crate) fn endpoint_index(&self) -> usize {
        self.endpoint
    }
}

#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub attempts: Vec<PlannedAttempt>,
}

/// The output a request on a limited key is capped at (and sent as `max_tokens`) when neither
/// the caller, the endpoint nor the model bounds it, so its hold covers it.
pub const UNBOUNDED_OUTPUT_CAP: u32 = 4_096;

impl RoutePlan {
    /// The most this request can cost on any endpoint it may be tried on, for the credit hold:
    /// the prompt's token bound at the dearest prompt price, plus each of the `n` choices at the
    /// output cap at the completion price. The output cap is the caller's `max_tokens` (within
    /// the endpoint's own cap), else the endpoint's cap, else what the model's context leaves
    /// after the prompt, whatever the prompt turns out to be.
    pub fn worst_case_cost(&self, request: &ChatRequest) -> MicroUsd {
        let prompt = request.prompt_token_bound();
        let choices = u64::from(request.choices());
        self.attempts
            .iter()
            .map(|attempt| {
                let pricing = &attempt.endpoint().pricing;
                match output_cap(request, attempt) {
                    Some(output) => pricing.worst_case(prompt, output.saturating_mul(choices)),
                    None => {
                        let context = attempt
                            .model
                            .context_length
                            .map_or(u64::from(UNBOUNDED_OUTPUT_CAP), u64::from);
                        // Prompt and answers share the context; the cost is linear in how it
                        // is split, so the dearest split is one of the two extremes.
                        let prompt = prompt.min(context);
                        let all_answer = pricing.worst_case(0, context.saturating_mul(choices));
                        let all_prompt =
                            pricing.worst_case(prompt, (context - prompt).saturating_mul(choices));
                        all_answer.max(all_prompt)
                    }
                }
            })
            .max()
            .unwrap_or(MicroUsd::ZERO)
    }

    /// Whether some attempt's output is bounded by nothing: no `max_tokens`, no endpoint cap
    /// and no context length.
    pub fn output_unbounded(&self, request: &ChatRequest) -> bool {
        self.attempts.iter().any(|attempt| {
            output_cap(request, attempt).is_none() && attempt.model.context_length.is_none()
        })
    }
}

/// One choice's output cap from the caller and the endpoint, if either sets one.
fn output_cap(request: &ChatRequest, attempt: &PlannedAttempt) -> Option<u64> {
    let asked = request.max_output_tokens().map(u64::from);
    let endpoint = attempt.endpoint().max_output.map(u64::from);
    match (asked, endpoint) {
        (Some(asked), Some(cap)) => Some(asked.min(cap)),
        (asked, cap) => asked.or(cap),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("`model` is required (or a non-empty `models` list)")]
    MissingModel,
    #[error("model {0:?} is not available on this gateway; GET /v1/models lists the models")]
    UnknownModel(String),
    #[error("provider.max_price: {0}")]
    InvalidMaxPrice(String),
    #[error("no endpoint of {model:?} can serve this request ({filter})")]
    NoEndpoint { model: String, filter: &'static str },
    #[error("every endpoint of {model:?} that could serve this request is unhealthy; retry later")]
    Unhealthy {
        model: String,
        retry_after: Duration,
    },
}

/// `Retry-After` when every usable endpoint is unhealthy and the tracker gave no estimate.
const UNHEALTHY_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The model suffixes that pick a sort, as OpenRouter's shortcuts for `provider.sort`.
const SUFFIXES: [(&str, SortBy); 2] = [(":floor", SortBy::Price), (":nitro", SortBy::Throughput)];

/// What a candidate id's suffix asks of its model's endpoints.
#[derive(Debug, Clone, Copy, Default)]
struct Suffix {
    sort: Option<SortBy>,
    /// `:free`: only the zero-priced endpoints.
    free_only: bool,
}

/// The catalog model a candidate id names, and what its suffix asks for. An id the catalog
/// holds verbatim wins, so ids that contain `:` keep working.
fn resolve<'c>(catalog: &'c Catalog, id: &str) -> Result<(&'c Arc<Model>, Suffix), PlanError> {
    if let Some(model) = catalog.model(id) {
        return Ok((model, Suffix::default()));
    }
    if let Some(model) = id
        .strip_suffix(FREE_SUFFIX)
        .and_then(|plain| catalog.model(plain))
    {
        let free = Suffix {
            sort: None,
            free_only: true,
        };
        return Ok((model, free));
    }
    SUFFIXES
        .iter()
        .find_map(|(suffix, sort)| {
            let model = catalog.model(id.strip_suffix(suffix)?)?;
            let sorted = Suffix {
                sort: Some(*sort),
                free_only: false,
            };
            Some((model, sorted))
        })
        .ok_or_else(|| PlanError::UnknownModel(id.to_owned()))
}

/// Why `:free` drops an endpoint: free means nothing is charged for input or output.
fn not_free(suffix: Suffix, endpoint: &Endpoint) -> Option<&'static str> {
    let free = endpoint.pricing.prompt.is_free() && endpoint.pricing.completion.is_free();
    (suffix.free_only && !free).then_some(":free: the endpoint is not zero-priced")
}

/// Builds the plan: models in `model_candidates` order, each model's usable endpoints ordered
/// by selection. `health` says which endpoints are up and how fast; `rng` drives the weighted
/// default order (a thread-local generator in the gateway, a seeded one in tests).
pub fn plan<R: Rng + ?Sized>(
    catalog: &Catalog,
    request: &ChatRequest,
    health: &dyn EndpointHealth,
    rng: &mut R,
) -> Result<RoutePlan, PlanError> {
    let candidates = request.model_candidates();
    if candidates.is_empty() {
        return Err(PlanError::MissingModel);
    }
    let no_preferences = ProviderPreferences::default();
    let preferences = request.provider.as_ref().unwrap_or(&no_preferences);
    let needs = Needs::of(request, preferences)
        .map_err(|error| PlanError::InvalidMaxPrice(error.to_string()))?;
    let ordering = Preferences {
        sort: preferences.sort.map(SortPreference::by),
        order: preferences.order.as_deref().unwrap_or_default(),
        min_throughput: preferences.preferred_min_throughput,
        max_latency: preferences.preferred_max_latency,
    };
    let across_models = preferences
        .sort
        .is_some_and(|sort| sort.partition() == SortPartition::None);
    let mut chosen: Vec<Candidate> = Vec::new();
    let mut planned: Vec<&Arc<Model>> = Vec::with_capacity(candidates.len());
    let mut first_rejection = None;
    let mut unhealthy: Option<(&str, Option<Duration>)> = None;
    for id in candidates {
        let (model, suffix) = resolve(catalog, id)?;
        // `x` and `x:floor` (or `x:free`) in one list are one model, planned once, as the
        // first of them asks.
        if planned.iter().any(|seen| Arc::ptr_eq(seen, model)) {
            continue;
        }
        planned.push(model);
        let start = chosen.len();
        for (index, endpoint) in model.endpoints.iter().enumerate() {
            if let Some(filter) =
                not_free(suffix, endpoint).or_else(|| needs.rejection(model, endpoint))
            {
                first_rejection.get_or_insert((&*model.id, filter));
                continue;
            }
            let status = health.status(model, endpoint);
            if !status.healthy {
                let (_, retry) = unhealthy.get_or_insert((&*model.id, status.retry_in));
                // The soonest any of them is expected back.
                *retry = match (*retry, status.retry_in) {
                    (Some(known), Some(new)) => Some(known.min(new)),
                    (known, new) => known.or(new),
                };
                continue;
            }
            let attempt = PlannedAttempt::new(model.clone(), index);
            chosen.push(Candidate::new(attempt, status));
        }
        if !across_models {
            let sort = ordering.sort.or(suffix.sort);
            let ordering = Preferences { sort, ..ordering };
            select::arrange(&mut chosen[start..], &ordering, rng);
        }
    }
    if across_models {
        select::arrange(&mut chosen, &ordering, rng);
    }
    if preferences.allow_fallbacks == Some(false) && preferences.order.is_none() {
        keep_primary_endpoints(&mut chosen);
    }
    if chosen.is_empty() {
        return Err(no_endpoint_left(request, first_rejection, unhealthy));
    }
    Ok(RoutePlan {
        attempts: chosen
            .into_iter()
            .map(|candidate| candidate.attempt)
            .collect(),
    })
}

/// `allow_fallbacks: false` without an `order`: each model's first choice only, as OpenRouter
/// keeps only the primary provider.
fn keep_primary_endpoints(chosen: &mut Vec<Candidate>) {
    let mut kept: Vec<Arc<Model>> = Vec::new();
    chosen.retain(|candidate| {
        let model = &candidate.attempt.model;
        if kept.iter().any(|seen| Arc::ptr_eq(seen, model)) {
            return false;
        }
        kept.push(model.clone());
        true
    });
}

/// Why the plan is empty: 503 when an endpoint passed every filter but is down (retrying can
/// help), else the 404 naming the first filter that dropped an endpoint.
fn no_endpoint_left(
    request: &ChatRequest,
    first_rejection: Option<(&str, &'static str)>,
    unhealthy: Option<(&str, Option<Duration>)>,
) -> PlanError {
    if let Some((model, retry_in)) = unhealthy {
        return PlanError::Unhealthy {
            model: model.to_owned(),
            retry_after: retry_in.unwrap_or(UNHEALTHY_RETRY_AFTER),
        };
    }
    let (model, filter) = first_rejection
        .unwrap_or_else(|| (request.model_candidates()[0], "the model has no endpoints"));
    PlanError::NoEndpoint {
        model: model.to_owned(),
        filter,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::config::Config;
    use crate::routing::status::{EndpointStatus, StubHealth};

    /// Providers `a` (which collects no data), `b` and `c`; `x/one` offers all three at
    /// rising prices, `x/two` only `a`, `x/three` only `c`, `x/big` has a small context.
    pub(crate) fn catalog() -> Catalog {
        catalog_from(
            r#"
[[providers]]
id = "a"
kind = "mock"
data_collection = "deny"
[[providers]]
id = "b"
kind = "mock"
[[providers]]
id = "c"
kind = "mock"

[[models]]
id = "x/one"
context_length = 1000
  [[models.endpoints]]
  provider = "a"
  upstream = "one-a"
  prompt = "1"
  completion = "2"
  max_output = 100
  [[models.endpoints]]
  provider = "b"
  upstream = "one-b"
  prompt = "2"
  completion = "4"
  supports = ["tools"]
  [[models.endpoints]]
  provider = "c"
  upstream = "one-c"
  prompt = "4"
  completion = "8"
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
  prompt = "0.5"
  completion = "1"

[[models]]
id = "x/gift"
  [[models.endpoints]]
  provider = "a"
  upstream = "gift-a"
  prompt = "0"
  completion = "0"
  [[models.endpoints]]
  provider = "b"
  upstream = "gift-b"
  prompt = "0"
  completion = "0.5"

[[models]]
id = "x/tagged:v1"
  [[models.endpoints]]
  provider = "b"
  upstream = "tagged-b"
  prompt = "1"
  completion = "1"
"#,
        )
    }

    pub(crate) fn catalog_from(tables: &str) -> Catalog {
        let config: Config = toml::from_str(tables).unwrap();
        Catalog::build(&config).unwrap()
    }

    pub(crate) fn plan_with(
        body: &str,
        health: &StubHealth,
        seed: u64,
    ) -> Result<Vec<String>, PlanError> {
        let request: ChatRequest = serde_json::from_str(body).unwrap();
        let plan = plan(
            &catalog(),
            &request,
            health,
            &mut StdRng::seed_from_u64(seed),
        )?;
        Ok(plan
            .attempts
            .iter()
            .map(|attempt| format!("{}@{}", attempt.model.id, attempt.endpoint().provider))
            .collect())
    }

    fn providers_for(body: &str) -> Result<Vec<String>, PlanError> {
        plan_with(body, &StubHealth::default(), 7)
    }

    /// The plan as a set, for requests whose order is a random draw.
    fn sorted(body: &str) -> Vec<String> {
        let mut got = providers_for(body).unwrap();
        got.sort();
        got
    }

    fn chat(extra: &str) -> String {
        format!(r#"{{"model":"x/one","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#)
    }

    #[test]
    fn each_model_is_planned_whole_before_the_fallback_models() {
        let got = providers_for(r#"{"model":"x/one","models":["x/two"],"messages":[]}"#).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], "x/two@a");
    }

    #[test]
    fn provider_order_goes_first_and_the_rest_follow_unless_fallbacks_are_off() {
        let order = chat(r#","provider":{"order":["c","b"]}"#);
        assert_eq!(
            providers_for(&order).unwrap(),
            ["x/one@c", "x/one@b", "x/one@a"]
        );
        let strict = chat(r#","provider":{"order":["c","b"],"allow_fallbacks":false}"#);
        assert_eq!(providers_for(&strict).unwrap(), ["x/one@c", "x/one@b"]);
    }

    #[test]
    fn allow_fallbacks_false_without_order_keeps_each_models_primary_only() {
        let body = r#"{"model":"x/one","models":["x/two"],"provider":{"allow_fallbacks":false,"sort":"price"},"messages":[]}"#;
        assert_eq!(providers_for(body).unwrap(), ["x/one@a", "x/two@a"]);
    }

    #[test]
    fn only_and_ignore_filter() {
        let only = chat(r#","provider":{"only":["a"]}"#);
        assert_eq!(providers_for(&only).unwrap(), ["x/one@a"]);
        let ignore = chat(r#","provider":{"ignore":["a"]}"#);
        assert_eq!(sorted(&ignore), ["x/one@b", "x/one@c"]);
    }

    #[test]
    fn data_collection_deny_keeps_only_providers_that_collect_nothing() {
        let deny = chat(r#","provider":{"data_collection":"deny"}"#);
        assert_eq!(providers_for(&deny).unwrap(), ["x/one@a"]);
        let allow = chat(r#","provider":{"data_collection":"allow"}"#);
        assert_eq!(sorted(&allow).len(), 3);
        let none_left =
            r#"{"model":"x/three","provider":{"data_collection":"deny"},"messages":[]}"#;
        assert_eq!(
            providers_for(none_left).unwrap_err(),
            PlanError::NoEndpoint {
                model: "x/three".into(),
                filter: "provider.data_collection: the provider may collect data"
            }
        );
    }

    #[test]
    fn max_price_is_a_hard_cap_on_each_price() {
        let cheap = chat(r#","provider":{"max_price":{"prompt":2,"completion":4}}"#);
        assert_eq!(sorted(&cheap), ["x/one@a", "x/one@b"]);
        let prompt_only = chat(r#","provider":{"max_price":{"prompt":1.5}}"#);
        assert_eq!(providers_for(&prompt_only).unwrap(), ["x/one@a"]);
        let too_low = chat(r#","provider":{"max_price":{"completion":0.5}}"#);
        assert_eq!(
            providers_for(&too_low).unwrap_err(),
            PlanError::NoEndpoint {
                model: "x/one".into(),
                filter: "provider.max_price"
            }
        );
        let negative = chat(r#","provider":{"max_price":{"prompt":-1}}"#);
        assert!(matches!(
            providers_for(&negative).unwrap_err(),
            PlanError::InvalidMaxPrice(_)
        ));
    }

    #[test]
    fn sort_orders_within_each_model_unless_partition_is_none() {
        let body = |sort: &str| {
            format!(
                r#"{{"model":"x/one","models":["x/two"],"provider":{{"sort":{sort}}},"messages":[]}}"#
            )
        };
        assert_eq!(
            providers_for(&body(r#""price""#)).unwrap(),
            ["x/one@a", "x/one@b", "x/one@c", "x/two@a"]
        );
        assert_eq!(
            providers_for(&body(r#"{"by":"price","partition":"model"}"#)).unwrap(),
            ["x/one@a", "x/one@b", "x/one@c", "x/two@a"]
        );
        assert_eq!(
            providers_for(&body(r#"{"by":"price","partition":"none"}"#)).unwrap(),
            ["x/two@a", "x/one@a", "x/one@b", "x/one@c"]
        );
    }

    #[test]
    fn floor_and_nitro_suffixes_sort_and_resolve_to_the_plain_model() {
        let floor = r#"{"model":"x/one:floor","messages":[]}"#;
        assert_eq!(
            providers_for(floor).unwrap(),
            ["x/one@a", "x/one@b", "x/one@c"]
        );
        let measured = |tps| EndpointStatus {
            throughput: Some(tps),
            ..EndpointStatus::default()
        };
        let health = StubHealth(vec![("b", measured(90.0)), ("c", measured(120.0))]);
        let nitro = r#"{"model":"x/two","models":["x/one:nitro"],"messages":[]}"#;
        assert_eq!(
            plan_with(nitro, &health, 1).unwrap(),
            ["x/two@a", "x/one@c", "x/one@b", "x/one@a"]
        );
        let twice = r#"{"model":"x/one:floor","models":["x/one"],"messages":[]}"#;
        assert_eq!(
            providers_for(twice).unwrap().len(),
            3,
            "one model, planned once"
        );
    }

    #[test]
    fn ids_with_a_colon_in_the_catalog_are_not_suffixes() {
        let tagged = r#"{"model":"x/tagged:v1","messages":[]}"#;
        assert_eq!(providers_for(tagged).unwrap(), ["x/tagged:v1@b"]);
        assert_eq!(
            providers_for(r#"{"model":"x/one:beta","messages":[]}"#).unwrap_err(),
            PlanError::UnknownModel("x/one:beta".into())
        );
    }

    #[test]
    fn the_free_suffix_keeps_only_zero_priced_endpoints_of_that_candidate() {
        let free = r#"{"model":"x/gift:free","models":["x/two"],"messages":[]}"#;
        assert_eq!(providers_for(free).unwrap(), ["x/gift@a", "x/two@a"]);
        assert_eq!(sorted(r#"{"model":"x/gift","messages":[]}"#).len(), 2);
        assert_eq!(
            providers_for(r#"{"model":"x/one:free","messages":[]}"#).unwrap_err(),
            PlanError::NoEndpoint {
                model: "x/one".into(),
                filter: ":free: the endpoint is not zero-priced"
            }
        );
    }

    #[test]
    fn the_prompt_and_max_tokens_must_fit_the_context_length() {
        // About 4 bytes a token: 3,600 bytes is 900 tokens of x/one's 1,000.
        let prompt = "word".repeat(900);
        let body = |max_tokens: u32| {
            format!(
                r#"{{"model":"x/one","models":["x/two"],"max_tokens":{max_tokens},"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
            )
        };
        assert_eq!(providers_for(&body(50)).unwrap().len(), 4);
        assert_eq!(
            providers_for(&body(200)).unwrap(),
            ["x/two@a"],
            "x/two has no known context length"
        );
        let alone = format!(
            r#"{{"model":"x/one","max_tokens":200,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
        );
        assert_eq!(
            providers_for(&alone).unwrap_err(),
            PlanError::NoEndpoint {
                model: "x/one".into(),
                filter: "context_length: the prompt and max_tokens exceed the model's context"
            }
        );
    }

    #[test]
    fn tools_and_max_tokens_filter_endpoints_that_cannot_honour_them() {
        let tools = chat(r#","tools":[{"type":"function"}]"#);
        assert_eq!(providers_for(&tools).unwrap(), ["x/one@b"]);
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
        let seed = chat(r#","seed":1,"temperature":0.5"#);
        assert_eq!(
            sorted(&seed).len(),
            3,
            "without require_parameters they are dropped, not filtered"
        );
        let required =
            chat(r#","seed":1,"temperature":0.5,"provider":{"require_parameters":true}"#);
        assert_eq!(
            sorted(&required).len(),
            3,
            "implicit endpoints accept every sampling parameter"
        );
        let top_k = chat(r#","top_k":5,"provider":{"require_parameters":true}"#);
        assert_eq!(sorted(&top_k), ["x/one@a", "x/one@b"]);
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
        let wants = chat(r#","reasoning":{"effort":"high"}"#);
        assert_eq!(providers_for(&wants).unwrap(), ["x/one@c"]);
        let off = chat(r#","reasoning":{"effort":"none"}"#);
        assert_eq!(sorted(&off).len(), 3);
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
    fn unhealthy_endpoints_are_dropped_and_none_left_is_unhealthy_with_the_soonest_retry() {
        let down = |retry_in| EndpointStatus {
            healthy: false,
            retry_in,
            ..EndpointStatus::default()
        };
        let health = StubHealth(vec![
            ("a", down(None)),
            ("b", down(Some(Duration::from_secs(30)))),
            ("c", down(Some(Duration::from_secs(4)))),
        ]);
        let some_up = StubHealth(vec![("a", down(None))]);
        let mut got = plan_with(&chat(""), &some_up, 3).unwrap();
        got.sort();
        assert_eq!(got, ["x/one@b", "x/one@c"]);
        assert_eq!(
            plan_with(&chat(""), &health, 3).unwrap_err(),
            PlanError::Unhealthy {
                model: "x/one".into(),
                retry_after: Duration::from_secs(4)
            }
        );
        let all_down_no_hint = StubHealth(vec![("a", down(None))]);
        let two = r#"{"model":"x/two","messages":[]}"#;
        assert_eq!(
            plan_with(two, &all_down_no_hint, 3).unwrap_err(),
            PlanError::Unhealthy {
                model: "x/two".into(),
                retry_after: UNHEALTHY_RETRY_AFTER
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

/// Whatever usage an upstream can report for a request, the hold taken for it covers the charge:
/// prompts up to their token bound, cached and cache-written parts at their own prices, every
/// choice up to its cap, or all of the context between prompt and answers.
#[cfg(test)]
mod hold_covers_charge {
    use proptest::prelude::*;
    use serde_json::json;

    use super::tests::catalog_from;
    use super::*;
    use crate::openai::{PromptTokensDetails, Usage};
    use crate::routing::status::StubHealth;

    const TABLES: &str = r#"
[[providers]]
id = "p"
kind = "mock"

[[models]]
id = "m/capped"
context_length = 64000
  [[models.endpoints]]
  provider = "p"
  upstream = "capped"
  prompt = "3"
  completion = "15"
  cache_read = "0.3"
  cache_write = "3.75"
  max_output = 500
  supports = ["tools", "vision", "n"]

[[models]]
id = "m/context"
context_length = 30000
  [[models.endpoints]]
  provider = "p"
  upstream = "context"
  prompt = "5"
  completion = "1"
  supports = ["tools", "vision", "n"]

[[models]]
id = "m/open"
  [[models.endpoints]]
  provider = "p"
  upstream = "open"
  prompt = "0.7"
  completion = "2.1"
  supports = ["tools", "vision", "n"]
"#;

    fn text() -> impl Strategy<Value = String> {
        // ASCII, accents, CJK and emoji: one to four bytes a character.
        proptest::string::string_regex("[a-z é漢字🙂]{0,300}").unwrap()
    }

    fn request() -> impl Strategy<Value = ChatRequest> {
        (
            prop::sample::select(vec!["m/capped", "m/context", "m/open"]),
            prop::collection::vec((text(), 0usize..3), 1..4),
            prop::option::of(1u32..2000),
            1u32..5,
            any::<bool>(),
        )
            .prop_map(|(model, messages, max_tokens, n, tools)| {
                let messages: Vec<_> = messages
                    .into_iter()
                    .map(|(text, images)| {
                        let mut parts = vec![json!({"type": "text", "text": text})];
                        parts.extend((0..images).map(|_| {
                            json!({"type": "image_url", "image_url": {"url": "https://i/x.png"}})
                        }));
                        json!({"role": "user", "content": parts})
                    })
                    .collect();
                let mut body = json!({"model": model, "messages": messages, "n": n});
                if let Some(max_tokens) = max_tokens {
                    body["max_tokens"] = json!(max_tokens);
                }
                if tools {
                    body["tools"] = json!([{"type": "function", "function": {"name": "lookup",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
                }
                serde_json::from_value(body).unwrap()
            })
    }

    proptest! {
        #[test]
        fn the_hold_covers_every_usage_the_upstream_can_report(
            mut request in request(),
            shares in (0.0f64..=1.0, 0.0f64..=1.0, 0.0f64..=1.0, 0.0f64..=1.0),
        ) {
            let catalog = catalog_from(TABLES);
            let planned = plan(&catalog, &request, &StubHealth::default(), &mut rand::rng());
            // A prompt and max_tokens past the context is refused before any hold.
            prop_assume!(planned.is_ok());
            let plan = planned.unwrap();
            // What the gateway does for a limited key before holding.
            if request.max_output_tokens().is_none() && plan.output_unbounded(&request) {
                request.max_tokens = Some(UNBOUNDED_OUTPUT_CAP);
            }
            let hold = plan.worst_case_cost(&request);
            let attempt = &plan.attempts[0];
            let bound = request.prompt_token_bound();
            let context = attempt.model.context_length.map(u64::from);
            let prompt_tokens = scaled(shares.0, context.map_or(bound, |c| bound.min(c)));
            let cached = scaled(shares.1, prompt_tokens);
            let cache_write = scaled(shares.2, prompt_tokens - cached);
            let per_choice = output_cap(&request, attempt)
                .or(context.map(|c| c - prompt_tokens))
                .unwrap_or(u64::from(UNBOUNDED_OUTPUT_CAP));
            let completion = scaled(shares.3, per_choice * u64::from(request.choices()));
            let usage = Usage {
                prompt_tokens,
                completion_tokens: completion,
                total_tokens: prompt_tokens + completion,
                prompt_tokens_details: Some(PromptTokensDetails {
                    cached_tokens: cached,
                    cache_write_tokens: cache_write,
                    extra: Default::default(),
                }),
                ..Usage::default()
            };
            let charge = attempt.endpoint().pricing.cost(&usage).total;
            prop_assert!(charge <= hold, "charge {charge:?} > hold {hold:?} for {usage:?}");
        }
    }

    /// `share` of `whole`, rounded to a whole token.
    fn scaled(share: f64, whole: u64) -> u64 {
        ((whole as f64) * share).round() as u64
    }
}
