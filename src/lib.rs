//! Switchyard: a self-hosted, OpenAI-compatible LLM gateway.
//!
//! # The request path
//! 1. [`api`] accepts `POST /v1/chat/completions`: [`api::auth`] turns the bearer key into an
//!    [`accounts::AuthedKey`] (from memory after the first hit), [`api::json`] decodes the body into
//!    the canonical [`openai::ChatRequest`], and [`accounts::RateLimiter`] admits it against the
//!    key's rate limits (in memory for keys without any; one shared count otherwise).
//! 2. [`routing`] resolves the model in the [`routing::Catalog`] and builds a [`routing::RoutePlan`]:
//!    the ordered endpoints to try.
//! 3. [`routing::dispatch`] tries each endpoint: the endpoint's [`providers::Provider`] translates the
//!    request (no I/O), [`providers::upstream`] sends it, and the provider's stream decoder turns the
//!    answer back into canonical chunks. Failover happens only before the first byte reaches the client.
//! 4. [`api::sse`] frames chunks as SSE (keep-alives while waiting, a usage chunk, `[DONE]`).
//! 5. [`usage`] prices the tokens exactly and hands a [`usage::Generation`] to the batched writer,
//!    which [`store`] persists off the request path. A guard settles streams that end or are dropped.
//!
//! # Modules
//! - [`config`]: the TOML contract, `${VAR}` substitution, the embedded default and bundled catalog.
//! - [`app`], [`state`], [`shutdown`], [`telemetry`]: wiring, shared state, graceful stop, logs.
//! - [`workers`]: thread-per-core serving, one single-threaded runtime per core.
//! - [`cli`]: the `switchyard` commands.
//! - [`error`]: [`error::ApiError`], the one client-facing error, in OpenAI's error shape.

pub mod accounts;
pub mod api;
pub mod app;
pub mod chat;
pub mod cli;
pub mod config;
pub mod error;
pub mod openai;
pub mod providers;
pub mod routing;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod usage;
pub mod workers;
