#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod anthropic;
mod azure;
mod bedrock;
mod chat_completions;
mod cli;
mod config_check;
mod connections;
mod cors;
mod credits;
mod dashboard;
mod db;
mod errors;
mod gateway_process;
mod gemini;
mod health;
mod helpers;
mod keys;
mod models;
mod params;
mod rate_limits;
mod routing;
mod scripted_upstream;
mod store;
mod streaming;
mod upstream;
mod usage_outage;
