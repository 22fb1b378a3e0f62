#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod chat_completions;
mod config_check;
mod db;
mod errors;
mod helpers;
mod models;
mod streaming;
mod upstream;
