//! Per-key request rate limits and the `:free` tier, counted in the shared database: 429 with
//! `Retry-After` and `X-RateLimit-*`, per-key overrides, and exact counting under concurrency.

use chrono::{DateTime, Timelike};
use futures_util::future::join_all;
use serde_json::{Value, json};
use switchyard::clock::WallClock;
use switchyard::store::RateScope;

use crate::db::Backend;
use crate::helpers::{Extra, TestApp, spawn_app, spawn_app_with, test_start};
use crate::on_both_backends;

on_both_backends!(
    chat_returns_429_with_rate_limit_headers_after_the_per_minute_limit,
    free_models_are_limited_to_20_per_minute_per_key,
    the_free_daily_limit_refuses_until_midnight_utc,
    a_per_key_limit_overrides_the_configured_default,
    concurrent_requests_admit_exactly_the_limit,
    a_refused_stream_is_a_plain_429_before_any_event,
    keys_without_limits_get_no_rate_limit_headers_and_no_counter,
    with_redis_configured_requests_are_counted_there_exactly,
);

/// A model whose only endpoint charges nothing, so `switchyard/gift:free` can serve.
const FREE_MODEL: &str = r#"
[[models]]
id = "switchyard/gift"
  [[models.endpoints]]
  provider = "mock"
  upstream = "echo"
  prompt = "0"
  completion = "0"
"#;

/// The app with `tables`, its clock pinned at the suite's start: a scenario never straddles a
/// minute or a day unless it moves the clock itself.
async fn spawn_pinned(backend: Backend, tables: String) -> TestApp {
    let extra = Extra {
        tables,
        clock: Some(WallClock::pinned(test_start())),
        ..Extra::default()
    };
    spawn_app_with(backend, extra).await
}

async fn spawn_app_with_limits(backend: Backend, limits: &str) -> TestApp {
    spawn_pinned(backend, format!("{FREE_MODEL}\n[limits]\n{limits}\n")).await
}

fn redis_url() -> String {
    std::env::var("SWITCHYARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// A new key with its own limits (`None` falls back to `[limits]`): each run of a scenario starts
/// from empty counters.
async fn new_key(app: &TestApp, per_minute: Option<u32>, per_day: Option<u32>) -> (String, String) {
    let created = app
        .state
        .keys
        .create("limited", None, None, None)
        .await
        .unwrap();
    let found = app
        .state
        .store
        .set_key_rate_limits(&created.row.hash, per_minute, per_day)
        .await
        .unwrap();
    assert!(found);
    (created.key, created.row.hash)
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

fn header_number(response: &reqwest::Response, name: &str) -> i64 {
    header(response, name).parse().unwrap()
}

async fn chat_returns_429_with_rate_limit_headers_after_the_per_minute_limit(backend: Backend) {
    let app = spawn_app_with_limits(backend, "requests_per_minute = 3").await;
    let (key, _) = new_key(&app, None, None).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.post_chat_as(&key, &chat("switchyard/echo")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), "3");
        remaining.push(header_number(&response, "x-ratelimit-remaining"));
    }
    let refused = app.post_chat_as(&key, &chat("switchyard/echo")).await;
    assert_eq!(remaining, [2, 1, 0]);
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("x-generation-id").is_none());
    let now = app.clock.now();
    let to_next_minute = 60 - i64::from(now.second());
    let retry_after = header_number(&refused, "retry-after");
    assert_eq!(
        retry_after, to_next_minute,
        "whole seconds to the next minute"
    );
    assert_eq!(header(&refused, "x-ratelimit-limit"), "3");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    let reset = header_number(&refused, "x-ratelimit-reset");
    let next_minute = (now.timestamp().div_euclid(60) + 1) * 60_000;
    assert_eq!(
        reset, next_minute,
        "the end of the UTC minute, in milliseconds"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        body["error"]["metadata"]["rate_limit"],
        "requests_per_minute"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("rate limit exceeded: 3 requests per minute for this key; retry after"),
        "{message}"
    );
}

async fn free_models_are_limited_to_20_per_minute_per_key(backend: Backend) {
    let app = spawn_app_with_limits(backend, "").await;
    let (key, _) = new_key(&app, None, None).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = app.post_chat_as(&key, &chat("switchyard/gift:free")).await;
        statuses.push(response.status().as_u16());
    }
    let refused = app.post_chat_as(&key, &chat("switchyard/gift:free")).await;
    assert_eq!(statuses, [200; 20]);
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-ratelimit-limit"), "20");
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("rate limit exceeded: 20 requests per minute for :free models;"),
        "{message}"
    );
    // A `:free` fallback counts too; the paid model and other keys are not held to it.
    let fallback = json!({"model": "switchyard/echo", "models": ["switchyard/gift:free"],
        "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(app.post_chat_as(&key, &fallback).await.status(), 429);
    let paid = app.post_chat_as(&key, &chat("switchyard/echo")).await;
    assert_eq!(paid.status(), 200);
    assert!(paid.headers().get("x-ratelimit-limit").is_none());
    let other = app.post_chat(&chat("switchyard/gift:free")).await;
    assert_eq!(other.status(), 200);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["model"], "switchyard/gift");
}

async fn the_free_daily_limit_refuses_until_midnight_utc(backend: Backend) {
    let app = spawn_app_with_limits(
        backend,
        "free_requests_per_minute = 100\nfree_requests_per_day = 5",
    )
    .await;
    for _ in 0..5 {
        let response = app.post_chat(&chat("switchyard/gift:free")).await;
        assert_eq!(response.status(), 200);
    }
    let refused = app.post_chat(&chat("switchyard/gift:free")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-ratelimit-limit"), "5");
    let now = app.clock.now();
    let midnight = (now.timestamp().div_euclid(86_400) + 1) * 86_400;
    let reset = header_number(&refused, "x-ratelimit-reset");
    assert_eq!(
        reset,
        midnight * 1_000,
        "the next midnight UTC, in milliseconds"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["metadata"]["rate_limit"],
        "free_requests_per_day"
    );
    // At midnight the day's count starts over.
    app.clock
        .set(DateTime::from_timestamp(midnight, 0).unwrap());
    let next_day = app.post_chat(&chat("switchyard/gift:free")).await;
    assert_eq!(next_day.status(), 200);
}

async fn a_per_key_limit_overrides_the_configured_default(backend: Backend) {
    let app = spawn_app_with_limits(backend, "requests_per_minute = 2").await;
    let (default_key, _) = new_key(&app, None, None).await;
    let (own_key, _) = new_key(&app, Some(5), None).await;
    let mut default = Vec::new();
    let mut own = Vec::new();
    for _ in 0..3 {
        let response = app
            .post_chat_as(&default_key, &chat("switchyard/echo"))
            .await;
        default.push(response.status().as_u16());
    }
    for _ in 0..6 {
        let response = app.post_chat_as(&own_key, &chat("switchyard/echo")).await;
        own.push((
            response.status().as_u16(),
            header(&response, "x-ratelimit-limit"),
        ));
    }
    assert_eq!(default, [200, 200, 429]);
    let statuses: Vec<u16> = own.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert!(own.iter().all(|(_, limit)| limit == "5"), "{own:?}");
}

async fn concurrent_requests_admit_exactly_the_limit(backend: Backend) {
    let app = spawn_app_with_limits(backend, "requests_per_minute = 10").await;
    let (admitted, refused) = thirty_at_once(&app).await;
    assert_eq!((admitted, refused), (10, 20));
}

/// Sends 30 requests at once with a fresh key; returns how many were admitted and refused.
async fn thirty_at_once(app: &TestApp) -> (usize, usize) {
    let (key, _) = new_key(app, None, None).await;
    let requests = (0..30).map(|_| {
        let key = &key;
        async move {
            app.post_chat_as(key, &chat("switchyard/echo"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = join_all(requests).await;
    let admitted = statuses.iter().filter(|status| **status == 200).count();
    let refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(admitted + refused, 30, "{statuses:?}");
    (admitted, refused)
}

async fn with_redis_configured_requests_are_counted_there_exactly(backend: Backend) {
    let tables = format!(
        "[limits]\nrequests_per_minute = 10\n[redis]\nurl = \"{}\"\n",
        redis_url()
    );
    let app = spawn_pinned(backend, tables).await;
    assert_eq!(thirty_at_once(&app).await, (10, 20));
    let (key, hash) = new_key(&app, Some(1), None).await;
    let admitted = app.post_chat_as(&key, &chat("switchyard/echo")).await;
    assert_eq!(admitted.status(), 200);
    let refused = app.post_chat_as(&key, &chat("switchyard/echo")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-ratelimit-limit"), "1");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert!(header_number(&refused, "retry-after") >= 1);
    let counted = app
        .state
        .store
        .rate_counts(&hash, RateScope::Key)
        .await
        .unwrap();
    assert_eq!(
        counted, None,
        "the database holds no counter when Redis does"
    );
}

async fn a_refused_stream_is_a_plain_429_before_any_event(backend: Backend) {
    let app = spawn_app_with_limits(backend, "requests_per_day = 1").await;
    let mut body = chat("switchyard/echo");
    body["stream"] = json!(true);
    let first = app.post_chat(&body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-remaining"), "0");
    first.text().await.unwrap();
    let refused = app.post_chat(&body).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "content-type"), "application/json");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["metadata"]["rate_limit"], "requests_per_day");
}

async fn keys_without_limits_get_no_rate_limit_headers_and_no_counter(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..3 {
        let response = app.post_chat(&chat("switchyard/echo")).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("x-ratelimit-limit").is_none());
    }
    let counted = app
        .state
        .store
        .rate_counts(&app.key_hash, RateScope::Key)
        .await
        .unwrap();
    assert_eq!(counted, None, "no limit, no database round trip");
}
