//! Every bad input and upstream failure gets the contract's error shape and the right status,
//! and nothing of the upstream's body or keys leaks.

use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{
    Extra, TestApp, spawn_app, spawn_app_with, spawn_app_with_tables, upstream_tables,
};
use crate::on_both_backends;
use crate::upstream::{Behaviour, MockUpstream};

on_both_backends!(
    malformed_json_is_a_400,
    wrong_field_types_are_a_400,
    missing_messages_is_a_400,
    an_unknown_model_is_a_404,
    missing_invalid_and_disabled_keys_are_401,
    a_body_over_the_limit_is_a_413,
    upstream_errors_are_mapped_never_passed_raw,
    an_upstream_that_never_answers_times_out_with_408,
    a_refused_connection_is_a_502,
    an_unknown_path_is_a_404_in_the_error_shape,
    a_wrong_method_is_a_405_in_the_error_shape_with_allow,
    bad_query_strings_are_a_400_in_the_error_shape,
);

async fn post_raw(app: &TestApp, body: &'static str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Asserts the status and the contract's error shape; returns the error object.
async fn expect_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], status, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    error.clone()
}

async fn malformed_json_is_a_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let error = expect_error(
        post_raw(&app, r#"{"model": "switchyard/echo", "messages": ["#).await,
        400,
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("invalid request body")
    );
    expect_error(post_raw(&app, "").await, 400).await;
}

async fn wrong_field_types_are_a_400(backend: Backend) {
    let app = spawn_app(backend).await;
    for body in [
        r#"{"model": "switchyard/echo", "messages": "hello"}"#,
        r#"{"model": "switchyard/echo", "messages": [], "stream": "yes"}"#,
        r#"{"model": "switchyard/echo", "messages": [], "max_tokens": "ten"}"#,
        r#"{"model": 7, "messages": []}"#,
        r#"{"model": "switchyard/echo", "messages": [{"role": "wizard", "content": "hi"}]}"#,
    ] {
        expect_error(post_raw(&app, body).await, 400).await;
    }
}

async fn missing_messages_is_a_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let error = expect_error(post_raw(&app, r#"{"model": "switchyard/echo"}"#).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("messages"));
}

async fn an_unknown_model_is_a_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_chat(
            &json!({"model": "nope/nothing", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let error = expect_error(response, 404).await;
    assert!(error["message"].as_str().unwrap().contains("nope/nothing"));
}

async fn missing_invalid_and_disabled_keys_are_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/v1/chat/completions", app.base);
    let missing = app.client.post(&url).json(&body).send().await.unwrap();
    expect_error(missing, 401).await;
    let invalid = app
        .client
        .post(&url)
        .bearer_auth("sk-sy-not-a-real-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(invalid, 401).await;

    let disabled = app
        .state
        .keys
        .create("to-disable", None, None, None)
        .await
        .unwrap();
    app.state
        .store
        .set_key_disabled(&disabled.row.hash, true)
        .await
        .unwrap();
    let response = app
        .client
        .post(&url)
        .bearer_auth(&disabled.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let error = expect_error(response, 401).await;
    assert!(error["message"].as_str().unwrap().contains("disabled"));
}

async fn a_body_over_the_limit_is_a_413(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Extra {
            server: r#"max_body = "1KiB""#,
            ..Extra::default()
        },
    )
    .await;
    let big = "x".repeat(4096);
    let response = app
        .post_chat(
            &json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": big}]}),
        )
        .await;
    expect_error(response, 413).await;
}

async fn upstream_errors_are_mapped_never_passed_raw(backend: Backend) {
    let request = json!({"model": "acme/chat", "messages": [{"role": "user", "content": "hi"}]});
    let cases: [(u16, &str, u16); 5] = [
        (400, "Invalid value for 'temperature'", 400),
        (
            401,
            "Incorrect API key provided: sk-upstream-secret-acme",
            502,
        ),
        (500, "stack trace at db-primary-7", 502),
        (503, "overloaded cluster eu-3", 502),
        (429, "Rate limit reached for org-123", 429),
    ];
    for (upstream_status, message, expected) in cases {
        // A gateway per case: its health tracker honours the upstream's Retry-After by taking
        // the endpoint out, and this test is about how each error is mapped.
        let upstream = MockUpstream::start(Behaviour::Fail {
            status: upstream_status,
            message,
            retry_after: Some("7"),
        })
        .await;
        let app =
            spawn_app_with_tables(backend, upstream_tables(&upstream, "acme", "acme/chat")).await;
        let response = app.post_chat(&request).await;
        let retry_after = response.headers().get("retry-after").cloned();
        let error = expect_error(response, expected).await;
        let text = error.to_string();
        assert!(!text.contains("sk-upstream-secret"), "{text}");
        if expected >= 500 {
            assert!(
                !text.contains(message),
                "5xx must not carry the upstream body: {text}"
            );
        }
        if expected == 400 {
            assert!(
                text.contains("temperature"),
                "the caller's mistake is explained: {text}"
            );
        }
        if expected == 429 {
            assert_eq!(retry_after.unwrap(), "7");
        }
    }
}

async fn an_upstream_that_never_answers_times_out_with_408(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Hang).await;
    let tables = upstream_tables(&upstream, "acme", "acme/chat").replace(
        r#"first_token_timeout = "2s""#,
        r#"first_token_timeout = "200ms""#,
    );
    let app = spawn_app_with_tables(backend, tables).await;
    let response = app
        .post_chat(&json!({"model": "acme/chat", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    expect_error(response, 408).await;
}

async fn a_refused_connection_is_a_502(backend: Backend) {
    // Bind a port, then free it: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tables = format!(
        r#"
[[providers]]
id = "gone"
kind = "openai-compatible"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "sk-secret-gone"

[[models]]
id = "gone/model"
  [[models.endpoints]]
  provider = "gone"
  upstream = "m"
  prompt = "1"
  completion = "1"
"#
    );
    let app = spawn_app_with_tables(backend, tables).await;
    let response = app
        .post_chat(&json!({"model": "gone/model", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let error = expect_error(response, 502).await;
    let text = error.to_string();
    assert!(
        !text.contains("sk-secret-gone") && !text.contains(&port.to_string()),
        "{text}"
    );
}

async fn an_unknown_path_is_a_404_in_the_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    expect_error(app.get("/v1/nothing-here").await, 404).await;
}

async fn a_wrong_method_is_a_405_in_the_error_shape_with_allow(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/v1/chat/completions").await;
    assert_eq!(response.headers()["allow"], "POST");
    let error = expect_error(response, 405).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("GET is not allowed")
    );
    let delete = app
        .client
        .delete(format!("{}/v1/models", app.base))
        .send()
        .await
        .unwrap();
    expect_error(delete, 405).await;
}

async fn bad_query_strings_are_a_400_in_the_error_shape(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Extra {
            server: r#"admin_token = "admin-secret-for-tests-0123456789abcdef""#,
            ..Extra::default()
        },
    )
    .await;
    let listed = app
        .client
        .get(format!("{}/v1/keys?offset=minus-one", app.base))
        .bearer_auth("admin-secret-for-tests-0123456789abcdef")
        .send()
        .await
        .unwrap();
    let error = expect_error(listed, 400).await;
    assert!(
        error["message"].as_str().unwrap().contains("offset"),
        "{error}"
    );
    let generation = app
        .client
        .get(format!("{}/v1/generation?id=a&id=b&id", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    expect_error(generation, 400).await;
}
