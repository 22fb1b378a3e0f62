//! Switchyard: a self-hosted, OpenAI-compatible LLM gateway.
//!
//! # The request path
//! 1. [`api`] accepts `POST /v1/chat/completions`: [`api::auth`] turns the bearer key into an
//!    [`accounts::AuthedKey`] (from memory after the first hit), [`api::json`] decodes the body into
//!    the canonical [`openai::ChatRequest`], and [`accounts::RateLimiter`] admits it against the
//!    key's rate limits (in memory for keys without any; one shared count otherwise).
//! 2. [`chat`] runs the completion: [`routing`] resolves the model in the [`routing::Catalog`] and
//!    builds a [`routing::RoutePlan`] (the ordered endpoints to try), and [`accounts::Credits`]
//!    holds the plan's worst-case cost against the key's spending limit (no database round trip
//!    for keys without one) or refuses with 402 before anything is sent.
//! 3. [`chat`] tries each endpoint: the endpoint's [`providers::Provider`] translates the request
//!    (no I/O), [`providers::upstream`] sends it, and the provider's stream decoder turns the answer
//!    back into canonical chunks. Failover happens only before the first byte reaches the client.
//! 4. [`api::sse`] frames chunks as SSE (keep-alives while waiting, a usage chunk, `[DONE]`).
//! 5. [`usage`] prices the tokens exactly, and a [`usage::record::Recorder`] guard hands the
//!    generation row to the batched writer when the request ends or is dropped; [`store`] then
//!    settles each batch in one transaction (the row, its hold's release, the ledger, the usage
//!    rollups and the key's balance), off the request path.
//!
//! # Modules
//! - [`config`]: the TOML contract, `${VAR}` substitution, the embedded default and bundled catalog.
//! - [`app`], [`state`], [`shutdown`], [`telemetry`]: wiring, shared state, graceful stop, logs.
//! - [`clock`]: the calendar time that limits, periods and expiry are judged by; tests pin it.
//! - [`workers`]: thread-per-core serving, one single-threaded runtime per core.
//! - [`connection`]: one client connection's head and keep-alive timeouts and in-flight share.
//! - [`tls`]: the listener's certificate and key, for HTTPS.
//! - [`cli`]: the `switchyard` commands.
//! - [`error`]: [`error::ApiError`], the one client-facing error, in OpenAI's error shape.

pub mod accounts;
pub mod api;
pub mod app;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod error;
pub mod openai;
pub mod providers;
pub mod routing;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod usage;
pub mod workers;
