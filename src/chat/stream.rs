//! A running stream: upstream chunks rewritten for the caller (id, model, provider), the upstream
//! usage chunk swallowed, and the ending the contract promises — a usage chunk with the exact
//! cost, or an error chunk followed by it. The generation is settled when the stream ends, or by
//! the recorder's guard when the stream is dropped first (the client went away or stopped
//! reading).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::attempt::Opened;
use crate::error::ApiError;
use crate::openai::{ChatChunk, ChunkChoice, ChunkError, Delta};
use crate::providers::upstream::UpstreamResponse;
use crate::providers::{StreamDecoder, UpstreamError, UpstreamErrorKind};
use crate::routing::{HealthTracker, Measurement, PlannedAttempt};
use crate::usage::record::{Outcome, Recorder};

/// Reports an opened stream's outcome to the health tracker, exactly once: how it ended, with
/// its time to first token and total latency. Reporting at the end rather than at the first
/// chunk is what lets a stream that always breaks midway add up to an open breaker.
pub(super) struct Watch {
    health: Arc<HealthTracker>,
    planned: PlannedAttempt,
    started: Instant,
    ttft: Duration,
    reported: bool,
}

impl Watch {
    /// Called as the first chunk arrives, which fixes the time to first token.
    pub fn new(health: Arc<HealthTracker>, planned: PlannedAttempt, started: Instant) -> Self {
        Self {
            health,
            planned,
            ttft: started.elapsed(),
            started,
            reported: false,
        }
    }

    fn completed(&mut self, output_tokens: u64) {
        self.reported = true;
        self.health.answered(
            &self.planned,
            Some(Measurement {
                ttft: self.ttft,
                latency: self.started.elapsed(),
                output_tokens,
            }),
        );
    }

    fn failed(&mut self, error: &UpstreamError) {
        self.reported = true;
        self.health.failed(&self.planned, error);
    }
}

impl Drop for Watch {
    /// The client left first: the endpoint was answering.
    fn drop(&mut self) {
        if !self.reported {
            self.health.answered(&self.planned, None);
        }
    }
}

enum State {
    Streaming,
    /// One chunk left to send (the usage chunk after an error chunk), then the end.
    Ending(Box<ChatChunk>),
    Done,
}

pub struct ChatStream {
    response: UpstreamResponse,
    decoder: Box<dyn StreamDecoder>,
    pending: Option<ChatChunk>,
    recorder: Option<Recorder>,
    id: String,
    model: String,
    provider: String,
    created: i64,
    finish_reason: Option<String>,
    state: State,
    watch: Watch,
}

impl ChatStream {
    pub(super) fn new(opened: Opened, recorder: Recorder, watch: Watch) -> Self {
        let Opened {
            response,
            decoder,
            first,
            served,
        } = opened;
        let created = if first.created > 0 {
            first.created
        } else {
            chrono::Utc::now().timestamp()
        };
        let mut recorder = recorder;
        let (model, provider) = (
            String::from(&*served.model),
            String::from(&*served.provider),
        );
        recorder.served_by(served);
        Self {
            response,
            decoder,
            pending: Some(first),
            id: String::from(&**recorder.id()),
            recorder: Some(recorder),
            model,
            provider,
            created,
            finish_reason: None,
            state: State::Streaming,
            watch,
        }
    }

    /// When waiting for the client to take the next chunk ends, from `now`: it may take as long
    /// as the upstream may take to send one, the upstream being held open meanwhile.
    pub(crate) fn idle_deadline(&self, now: Instant) -> Instant {
        self.response.idle_deadline(now)
    }

    /// The next chunk for the client; `None` once the stream has ended (the caller then sends
    /// `[DONE]`).
    pub async fn next(&mut self) -> Option<ChatChunk> {
        loop {
            match std::mem::replace(&mut self.state, State::Streaming) {
                State::Done => {
                    self.state = State::Done;
                    return None;
                }
                State::Ending(last) => {
                    self.state = State::Done;
                    return Some(*last);
                }
                State::Streaming => {}
            }
            let pending = self.pending.take().or_else(|| self.decoder.take_pending());
            let decoded = match pending {
                Some(chunk) => Ok(Some(chunk)),
                None => match self.response.next_event().await {
                    Some(Ok(event)) => self.decoder.decode(&event),
                    Some(Err(error)) => Err(error),
                    None if self.finish_reason.is_some() || self.decoder.finished() => {
                        return Some(self.finish(None));
                    }
                    None => Err(UpstreamError::new(
                        UpstreamErrorKind::Connect,
                        "the upstream closed the stream before it finished",
                    )),
                },
            };
            match decoded {
                Ok(Some(chunk)) => {
                    if let Some(chunk) = self.rewrite(chunk) {
                        return Some(chunk);
                    }
                }
                Ok(None) if self.decoder.finished() => return Some(self.finish(None)),
                Ok(None) => {}
                Err(error) => {
                    self.watch.failed(&error);
                    return Some(self.finish(Some(ApiError::from(error))));
                }
            }
        }
    }

    /// Gives the chunk the caller's ids; `None` for chunks that only carried usage.
    fn rewrite(&mut self, mut chunk: ChatChunk) -> Option<ChatChunk> {
        let recorder = self.recorder.as_mut()?;
        if let Some(usage) = chunk.usage.take() {
            recorder.reported(usage);
        }
        if chunk.choices.is_empty() {
            return None;
        }
        if let Some(reason) = chunk
            .choices
            .iter()
            .find_map(|choice| choice.finish_reason.as_ref())
        {
            self.finish_reason = Some(reason.clone());
        }
        chunk.id.clone_from(&self.id);
        chunk.model.clone_from(&self.model);
        chunk.provider = Some(self.provider.clone());
        chunk.created = self.created;
        recorder.observe(&chunk);
        Some(chunk)
    }

    /// Settles the generation and returns the closing chunk: the usage chunk, or on `error` the
    /// error chunk (with the usage chunk queued after it).
    fn finish(&mut self, error: Option<ApiError>) -> ChatChunk {
        let Some(recorder) = self.recorder.take() else {
            self.state = State::Done;
            return self.empty_chunk();
        };
        let usage = recorder.stream_usage(error.is_none());
        let cost = recorder.price(&usage, error.is_some());
        let usage = usage.with_cost(cost);
        let mut usage_chunk = self.empty_chunk();
        usage_chunk.usage = Some(usage.clone());
        match error {
            None => {
                self.watch.completed(usage.completion_tokens);
                recorder.settle(Outcome::completed(&usage, self.finish_reason.as_deref()));
                self.state = State::Done;
                usage_chunk
            }
            Some(error) => {
                recorder.settle(Outcome {
                    status: error.status().as_u16(),
                    usage: Some(&usage),
                    finish_reason: Some("error"),
                    error: Some(error.message()),
                });
                self.state = State::Ending(Box::new(usage_chunk));
                self.error_chunk(&error)
            }
        }
    }

    fn empty_chunk(&self) -> ChatChunk {
        ChatChunk::empty(&self.id, self.created, &self.model, Some(&self.provider))
    }

    fn error_chunk(&self, error: &ApiError) -> ChatChunk {
        error_chunk(self.empty_chunk(), error)
    }
}

/// OpenRouter's in-stream error: a top-level `error` and one choice finishing with `"error"`.
pub fn error_chunk(mut chunk: ChatChunk, error: &ApiError) -> ChatChunk {
    let body = error.body();
    chunk.error = Some(ChunkError {
        message: body.message.to_owned(),
        code: body.code,
        metadata: body.metadata.cloned(),
    });
    chunk.choices.push(ChunkChoice {
        index: 0,
        delta: Delta {
            content: Some(String::new()),
            ..Delta::default()
        },
        finish_reason: Some("error".to_owned()),
        extra: serde_json::Map::new(),
    });
    chunk
}
