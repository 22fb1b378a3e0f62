//! The canonical wire types every module speaks: OpenAI Chat Completions plus OpenRouter's
//! extensions. Plain data with serde; no I/O and no provider-specific knowledge.

mod chunk;
mod request;
mod response;
mod sampling;
mod usage;

pub use chunk::{ChatChunk, ChunkChoice, ChunkError, Delta};
pub use request::{
    ChatRequest, Content, DataCollectionPreference, FREE_SUFFIX, MaxPrice, Message,
    ProviderPreferences, Role, SortBy, SortPartition, SortPreference, StreamOptions,
};
pub use response::{ChatResponse, Choice, Choices, ResponseMessage};
pub use sampling::{SAMPLING_PARAMETERS, SamplingSet};
pub use usage::{CompletionTokensDetails, Cost, CostDetails, MicroUsd, PromptTokensDetails, Usage};

/// `serde(skip_serializing_if)` helper for flags that default to false.
fn is_false(value: &bool) -> bool {
    !*value
}
