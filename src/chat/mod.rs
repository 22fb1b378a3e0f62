//! One chat completion from start to settled record: plan the endpoints, try them in turn until
//! one answers, rewrite the answer for the caller, price it and hand the record to the writer.
//! Sits between the HTTP surface and routing; knows no HTTP types of its own.

mod attempt;
mod failover;
mod stream;

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use self::failover::{Failover, Next};
use crate::accounts::{AuthedKey, Credits};
use crate::clock::WallClock;
use crate::error::ApiError;
use crate::openai::ChatRequest;
use crate::providers::{Registry, UpstreamError};
use crate::routing::{Catalog, HealthTracker, Measurement, RoutePlan, UNBOUNDED_OUTPUT_CAP, plan};
use crate::usage::record::{AppInfo, Outcome, Recorder};
use crate::usage::writer::GenerationSink;

pub use stream::{ChatStream, error_chunk};

/// Everything a chat completion needs, shared by all of a serving thread's requests through one
/// `Arc`.
pub struct Chat {
    catalog: Arc<Catalog>,
    registry: Arc<Registry>,
    health: Arc<HealthTracker>,
    credits: Credits,
    /// This serving thread's handle on the shared sink, which every request's recorder clones.
    generations: Arc<GenerationSink>,
    /// Whether generations keep their prompt and answer (`[database] log_prompts`).
    log_prompts: bool,
    /// The time a generation is recorded at, which decides the day it is rolled up under.
    clock: WallClock,
}

/// Who asked, and under which id the answer is recorded.
#[derive(Debug)]
pub struct Caller {
    pub generation_id: Arc<str>,
    pub key: AuthedKey,
    pub app: AppInfo,
}

impl Chat {
    pub fn new(
        catalog: Arc<Catalog>,
        registry: Arc<Registry>,
        health: Arc<HealthTracker>,
        credits: Credits,
        generations: GenerationSink,
        log_prompts: bool,
        clock: WallClock,
    ) -> Self {
        Self {
            catalog,
            registry,
            health,
            credits,
            generations: Arc::new(generations),
            log_prompts,
            clock,
        }
    }

    /// The endpoints to try, once the caller's key has credit for the dearest of them. The
    /// thread's own generator keeps the weighted draw free of any lock shared by all requests;
    /// it is dropped before the first await.
    async fn plan(
        &self,
        key: &AuthedKey,
        recorder: &mut Recorder,
        request: &mut ChatRequest,
    ) -> Result<RoutePlan, ApiError> {
        let plan = plan(&self.catalog, request, &*self.health, &mut rand::rng())?;
        // Keys without a limit hold nothing, so their requests skip the worst case's arithmetic.
        if key.limit.is_none() {
            return Ok(plan);
        }
        // A hold must cover the answer: when nothing bounds it, the gateway does.
        if request.max_output_tokens().is_none() && plan.output_unbounded(request) {
            request.max_tokens = Some(UNBOUNDED_OUTPUT_CAP);
        }
        let held = self
            .credits
            .hold(key, recorder.id(), plan.worst_case_cost(request))
            .await?;
        if held {
            recorder.held();
        }
        Ok(plan)
    }

    /// A non-streaming completion: the response body, ready to send.
    pub async fn complete(
        &self,
        caller: Caller,
        mut request: ChatRequest,
    ) -> Result<Bytes, ApiError> {
        let key = caller.key.clone();
        let mut recorder = self.recorder(caller, &request);
        let result = self
            .complete_recorded(&key, &mut recorder, &mut request)
            .await;
        match &result {
            Ok((usage, finish_reason, _)) => {
                recorder.settle(Outcome::completed(usage, finish_reason.as_deref()))
            }
            Err(error) => {
                recorder.settle(Outcome::failed(error.status().as_u16(), error.message()))
            }
        }
        result.map(|(_, _, body)| body)
    }

    async fn complete_recorded(
        &self,
        key: &AuthedKey,
        recorder: &mut Recorder,
        request: &mut ChatRequest,
    ) -> Result<(crate::openai::Usage, Option<String>, Bytes), ApiError> {
        let plan = self.plan(key, recorder, request).await?;
        let request = &*request;
        let mut failover = Failover::new(Instant::now());
        let mut last_error = None;
        for planned in &plan.attempts {
            if !failover.admits(planned) {
                continue;
            }
            let started = Instant::now();
            let result = attempt::complete(&self.registry, planned, request).await;
            recorder.attempted(attempt::record(planned, started, result.as_ref().err()));
            if let Err(error) = &result {
                self.health.failed(planned, error);
            }
            match result {
                Ok((mut response, served)) => {
                    let usage = response.usage.take().unwrap_or_default();
                    // A whole answer at once: its first token came with its last.
                    let latency = started.elapsed();
                    self.health.answered(
                        planned,
                        Some(Measurement {
                            ttft: latency,
                            latency,
                            output_tokens: usage.completion_tokens,
                        }),
                    );
                    recorder.served_by(served.clone());
                    let cost = recorder.price(&usage, false);
                    let usage = usage.with_cost(cost);
                    response.id = String::from(&**recorder.id());
                    response.model = String::from(&*served.model);
                    response.provider = Some(String::from(&*served.provider));
                    if response.created == 0 {
                        response.created = chrono::Utc::now().timestamp();
                    }
                    response.usage = Some(usage.clone());
                    let finish_reason = response.finish_reason().map(str::to_owned);
                    recorder.answered(&response);
                    // Most answers fit; `to_vec` would start at 128 bytes and double its way up.
                    let mut body = Vec::with_capacity(1024);
                    serde_json::to_writer(&mut body, &response)
                        .map_err(|_| ApiError::internal())?;
                    return Ok((usage, finish_reason, Bytes::from(body)));
                }
                Err(error) => match failover.after(planned, &error) {
                    Next::Continue => last_error = Some(error),
                    Next::Stop => return Err(attempts_failed(error, recorder)),
                },
            }
        }
        Err(last_error.map_or_else(ApiError::internal, |error| attempts_failed(error, recorder)))
    }

    /// A streaming completion, returned once the first upstream event has arrived (so a failure
    /// before it can still fail over or become a real HTTP error).
    pub async fn stream(
        self: Arc<Self>,
        caller: Caller,
        mut request: ChatRequest,
    ) -> Result<ChatStream, ApiError> {
        let key = caller.key.clone();
        let mut recorder = self.recorder(caller, &request);
        let plan = match self.plan(&key, &mut recorder, &mut request).await {
            Ok(plan) => plan,
            Err(error) => return Err(fail(recorder, error)),
        };
        let mut failover = Failover::new(Instant::now());
        let mut last_error = None;
        for planned in &plan.attempts {
            if !failover.admits(planned) {
                continue;
            }
            let started = Instant::now();
            let result = attempt::open_stream(&self.registry, planned, &request).await;
            recorder.attempted(attempt::record(planned, started, result.as_ref().err()));
            // An opened stream's outcome is known only at its end; its watch reports it then.
            if let Err(error) = &result {
                self.health.failed(planned, error);
            }
            match result {
                Ok(opened) => {
                    let watch = stream::Watch::new(self.health.clone(), planned.clone(), started);
                    return Ok(ChatStream::new(opened, recorder, watch));
                }
                Err(error) => match failover.after(planned, &error) {
                    Next::Continue => last_error = Some(error),
                    Next::Stop => {
                        let error = attempts_failed(error, &recorder);
                        return Err(fail(recorder, error));
                    }
                },
            }
        }
        let error = last_error.map_or_else(ApiError::internal, |error| {
            attempts_failed(error, &recorder)
        });
        Err(fail(recorder, error))
    }

    fn recorder(&self, caller: Caller, request: &ChatRequest) -> Recorder {
        Recorder::start(
            caller.generation_id,
            caller.key.hash,
            request,
            caller.app,
            self.clock.now(),
            self.log_prompts,
            self.generations.clone(),
        )
    }
}

fn fail(recorder: Recorder, error: ApiError) -> ApiError {
    recorder.settle(Outcome::failed(error.status().as_u16(), error.message()));
    error
}

/// The last upstream error, with every attempt listed in `metadata` so callers can see why.
fn attempts_failed(error: UpstreamError, recorder: &Recorder) -> ApiError {
    let attempts = serde_json::to_value(recorder.attempts()).unwrap_or_default();
    ApiError::from(error).with_metadata(serde_json::json!({ "attempts": attempts }))
}
