//! The record of one request as it runs, and the guard that settles it exactly once: when the
//! request finishes, fails, or is dropped half-way (a client that hung up is billed for what it
//! got).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::pricing::Pricing;
use super::writer::GenerationSink;
use crate::openai::{ChatChunk, ChatRequest, ChatResponse, Cost, Usage};
use crate::store::{GenerationContent, GenerationRow};

/// The app a request came from (OpenRouter's `HTTP-Referer` and `X-Title` headers).
#[derive(Debug, Clone, Default)]
pub struct AppInfo {
    pub referer: Option<String>,
    pub title: Option<String>,
}

/// One try of one endpoint, kept on the generation and returned by `GET /generation`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    /// The upstream's HTTP status, when it sent one.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// The endpoint that answered, with the prices it is billed at.
#[derive(Debug, Clone)]
pub struct Served {
    pub model: Arc<str>,
    pub provider: Arc<str>,
    pub upstream_model: String,
    pub pricing: Pricing,
}

/// How a settled request ended.
#[derive(Debug, Default)]
pub struct Outcome<'a> {
    /// The HTTP status the caller saw, or the error's status for a stream that failed mid-way.
    pub status: u16,
    /// What to bill; nothing when no endpoint produced tokens.
    pub usage: Option<&'a Usage>,
    pub finish_reason: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    pub fn completed(usage: &'a Usage, finish_reason: Option<&'a str>) -> Self {
        Self {
            status: 200,
            usage: Some(usage),
            finish_reason,
            error: None,
        }
    }

    pub fn failed(status: u16, error: &'a str) -> Self {
        Self {
            status,
            usage: None,
            finish_reason: None,
            error: Some(error),
        }
    }
}

/// Settles one request's generation row exactly once; on drop without settling (client gone),
/// the tokens seen so far are billed and the row is marked `cancelled`.
pub struct Recorder {
    id: Arc<str>,
    key_hash: Arc<str>,
    requested_model: String,
    app: AppInfo,
    created_at: DateTime<Utc>,
    started: Instant,
    streamed: bool,
    estimated_prompt_tokens: u64,
    attempts: Vec<Attempt>,
    served: Option<Served>,
    first_token_at: Option<Instant>,
    /// Content deltas seen so far: the completion-token count of a stream cut short.
    streamed_deltas: u64,
    /// Usage the upstream reported before the stream was cut, which beats the estimate.
    reported_usage: Option<Usage>,
    /// The prompt and the answer so far, only when prompt logging is on.
    content: Option<Box<GenerationContent>>,
    /// Whether a credit hold was taken for this request, for its settlement to release.
    held: bool,
    /// The serving thread's own handle: cloning a [`GenerationSink`] itself would touch counters
    /// every thread shares.
    sink: Option<Arc<GenerationSink>>,
}

impl Recorder {
    pub fn start(
        id: Arc<str>,
        key_hash: Arc<str>,
        request: &ChatRequest,
        app: AppInfo,
        created_at: DateTime<Utc>,
        log_prompts: bool,
        sink: Arc<GenerationSink>,
    ) -> Self {
        let content = log_prompts.then(|| {
            Box::new(GenerationContent {
                prompt: serde_json::to_string(&request.messages).unwrap_or_default(),
                completion: None,
            })
        });
        Self {
            id,
            key_hash,
            requested_model: request
                .model
                .as_deref()
                .or(request.models.first().map(String::as_str))
                .unwrap_or_default()
                .to_owned(),
            app,
            created_at,
            started: Instant::now(),
            streamed: request.stream,
            estimated_prompt_tokens: request.estimated_prompt_tokens(),
            attempts: Vec::new(),
            served: None,
            first_token_at: None,
            streamed_deltas: 0,
            reported_usage: None,
            content,
            held: false,
            sink: Some(sink),
        }
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    pub fn attempted(&mut self, attempt: Attempt) {
        self.attempts.push(attempt);
    }

    pub fn served_by(&mut self, served: Served) {
        self.served = Some(served);
    }

    /// Counts a chunk that reaches the client, for time-to-first-token and cut-short billing.
    pub fn observe(&mut self, chunk: &ChatChunk) {
        let deltas = chunk
            .choices
            .iter()
            .filter(|choice| {
                let delta = &choice.delta;
                delta
                    .content
                    .as_deref()
                    .is_some_and(|text| !text.is_empty())
                    || delta
                        .reasoning
                        .as_deref()
                        .is_some_and(|text| !text.is_empty())
                    || delta.tool_calls.is_some()
            })
            .count() as u64;
        if let Some(content) = &mut self.content {
            for choice in &chunk.choices {
                if let Some(text) = choice.delta.content.as_deref() {
                    content
                        .completion
                        .get_or_insert_with(String::new)
                        .push_str(text);
                }
            }
        }
        if deltas > 0 && self.first_token_at.is_none() {
            self.first_token_at = Some(Instant::now());
        }
        self.streamed_deltas += deltas;
    }

    /// A credit hold was taken for this request.
    pub fn held(&mut self) {
        self.held = true;
    }

    /// The whole answer's text, for prompt logging (a stream's is gathered by [`Recorder::observe`]).
    pub fn answered(&mut self, response: &ChatResponse) {
        if let Some(content) = &mut self.content {
            content.completion = response.first_content().map(Cow::into_owned);
        }
    }

    pub fn reported(&mut self, usage: Usage) {
        self.reported_usage = Some(usage);
    }

    /// The usage to bill a stream by. A finished stream's is what the upstream reported (else a
    /// local estimate). A stream cut short may have reported only its prompt so far (Anthropic
    /// does at the start), so its completion is at least the content deltas counted locally.
    pub fn stream_usage(&self, finished: bool) -> Usage {
        match &self.reported_usage {
            Some(reported) if finished => reported.clone(),
            Some(reported) => Usage {
                completion_tokens: reported.completion_tokens.max(self.streamed_deltas),
                ..reported.clone()
            },
            None => self.estimated_usage(),
        }
    }

    /// Usage for a stream that ended without the upstream reporting it: estimated locally.
    fn estimated_usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.estimated_prompt_tokens,
            completion_tokens: self.streamed_deltas,
            ..Usage::default()
        }
    }

    /// What this usage costs at the serving endpoint's prices. Nothing if nothing served, if the
    /// answer ended in an upstream error, or if it was empty (no completion token): the caller
    /// pays only for answers it got. A stream the caller cancelled is not an error: it pays for
    /// what was produced until then.
    pub fn price(&self, usage: &Usage, errored: bool) -> Cost {
        match &self.served {
            Some(served) if !errored && usage.completion_tokens > 0 => served.pricing.cost(usage),
            _ => Cost::FREE,
        }
    }

    pub fn settle(mut self, outcome: Outcome<'_>) {
        self.write(outcome, false);
    }

    fn write(&mut self, outcome: Outcome<'_>, cancelled: bool) {
        let Some(sink) = self.sink.take() else { return };
        let Outcome {
            status,
            usage,
            finish_reason,
            error,
        } = outcome;
        let usage = usage.cloned().unwrap_or_default();
        // 499: the client closed the request (nginx's convention, which dashboards know).
        let status = if cancelled { 499 } else { status };
        let cost = self.price(&usage, error.is_some());
        let served = self.served.as_ref();
        let count = |tokens: u64| i64::try_from(tokens).unwrap_or(i64::MAX);
        let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        // `String::from(&*shared)`: `to_string` on an `Arc<str>` formats through `Display` into a
        // buffer that grows from nothing.
        let row = GenerationRow {
            id: String::from(&*self.id),
            key_hash: String::from(&*self.key_hash),
            model: served.map_or_else(|| self.requested_model.clone(), |s| String::from(&*s.model)),
            provider: served.map(|s| String::from(&*s.provider)),
            upstream_model: served.map(|s| s.upstream_model.clone()),
            app_referer: self.app.referer.take(),
            app_title: self.app.title.take(),
            created_at: self.created_at,
            latency_ms: millis(self.started.elapsed()),
            ttft_ms: self.first_token_at.map(|at| millis(at - self.started)),
            prompt_tokens: count(usage.prompt_tokens),
            completion_tokens: count(usage.completion_tokens),
            cached_tokens: count(usage.cached_tokens()),
            cache_write_tokens: count(usage.cache_write_tokens()),
            reasoning_tokens: count(usage.reasoning_tokens()),
            cost: cost.total.0,
            status: i32::from(status),
            finish_reason: finish_reason.map(str::to_owned),
            streamed: self.streamed,
            cancelled,
            attempts: serde_json::to_string(&self.attempts).unwrap_or_else(|_| "[]".to_owned()),
            error: error.map(str::to_owned),
            content: self.content.take(),
            held: self.held,
        };
        sink.record(row);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.sink.is_some() {
            let usage = self.stream_usage(false);
            self.write(Outcome::completed(&usage, None), true);
        }
    }
}

/// Base62 digits in ASCII order, so ids compare as text in the order of their numbers.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TIME_DIGITS: usize = 8;
const RANDOM_DIGITS: usize = 16;

/// A fresh `gen-…` id: 8 base62 digits of the Unix time in milliseconds, then 16 random ones.
/// Time first (as OpenRouter's ids are) makes ids sort by creation, so the primary-key index
/// grows at its end instead of rewriting random pages on every batch.
pub fn new_generation_id() -> Arc<str> {
    let millis = u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default();
    new_generation_id_at(millis)
}

fn new_generation_id_at(millis: u64) -> Arc<str> {
    use rand::Rng;
    let mut id = [0u8; 4 + TIME_DIGITS + RANDOM_DIGITS];
    id[..4].copy_from_slice(b"gen-");
    let mut rest = millis;
    for digit in id[4..4 + TIME_DIGITS].iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let mut rng = rand::rng();
    for digit in &mut id[4 + TIME_DIGITS..] {
        *digit = BASE62[rng.random_range(0..BASE62.len())];
    }
    Arc::from(String::from_utf8_lossy(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_ids_sort_by_creation_time() {
        let earlier = new_generation_id_at(1_795_462_792_000);
        let later = new_generation_id_at(1_795_462_792_001);
        assert!(earlier < later, "{earlier} < {later}");
        assert_eq!(earlier.len(), 28);
        assert!(earlier.starts_with("gen-"));
        assert!(
            earlier[4..]
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric())
        );
    }
}
