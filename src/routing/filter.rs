//! Hard filters: whether one endpoint can serve the request at all. An endpoint that fails one
//! is dropped from the plan, and the first filter that dropped something names the 404.

use super::catalog::{Endpoint, Model};
use crate::config::DataCollection;
use crate::openai::{ChatRequest, DataCollectionPreference, ProviderPreferences, SamplingSet};
use crate::usage::{InvalidPrice, Price};

/// What of the request the filters look at, worked out once for all endpoints.
pub(super) struct Needs<'a> {
    request: &'a ChatRequest,
    preferences: &'a ProviderPreferences,
    /// The sampling parameters every endpoint must support (`provider.require_parameters`).
    required_sampling: SamplingSet,
    reasoning: bool,
    /// Estimated prompt plus requested output: what must fit the model's context.
    context_tokens: u64,
    max_prompt_price: Option<Price>,
    max_completion_price: Option<Price>,
}

impl<'a> Needs<'a> {
    pub fn of(
        request: &'a ChatRequest,
        preferences: &'a ProviderPreferences,
    ) -> Result<Self, InvalidPrice> {
        let max_price = preferences.max_price.as_ref();
        let cap =
            |number: Option<&serde_json::Number>| number.map(Price::from_json_number).transpose();
        Ok(Self {
            request,
            preferences,
            required_sampling: if preferences.require_parameters == Some(true) {
                request.sampling_parameters()
            } else {
                SamplingSet::EMPTY
            },
            reasoning: request.wants_reasoning(),
            context_tokens: request.estimated_prompt_tokens()
                + u64::from(request.max_output_tokens().unwrap_or(0)),
            max_prompt_price: cap(max_price.and_then(|price| price.prompt.as_ref()))?,
            max_completion_price: cap(max_price.and_then(|price| price.completion.as_ref()))?,
        })
    }

    /// Why `endpoint` cannot take the request, or `None` when it can.
    pub fn rejection(&self, model: &Model, endpoint: &Endpoint) -> Option<&'static str> {
        let (request, preferences) = (self.request, self.preferences);
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
        if preferences.data_collection == Some(DataCollectionPreference::Deny)
            && endpoint.data_collection != DataCollection::Deny
        {
            return Some("provider.data_collection: the provider may collect data");
        }
        let over = |cap: Option<Price>, price: Price| cap.is_some_and(|cap| price > cap);
        if over(self.max_prompt_price, endpoint.pricing.prompt)
            || over(self.max_completion_price, endpoint.pricing.completion)
        {
            return Some("provider.max_price");
        }
        if model
            .context_length
            .is_some_and(|context| self.context_tokens > u64::from(context))
        {
            return Some("context_length: the prompt and max_tokens exceed the model's context");
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
        if self.reasoning && !capabilities.reasoning {
            return Some("reasoning is not supported");
        }
        if !capabilities.sampling.contains(self.required_sampling) {
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
}
