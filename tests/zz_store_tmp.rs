#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(dead_code, unused_imports)]
#[path = "api/db.rs"]
mod db;
#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/store.rs"]
mod store;
#[path = "api/upstream.rs"]
mod upstream;
