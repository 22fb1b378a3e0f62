//! Azure OpenAI through the gateway: deployment URLs with `api-version`, the `api-key` header,
//! content-filter results passed through, and Azure's errors, replayed by a scripted upstream
//! from `tests/fixtures/azure/`.

use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{TestApp, spawn_app_with_tables, sse_events};
use crate::on_both_backends;
use crate::scripted_upstream::{Script, ScriptedUpstream};

on_both_backends!(
    a_completion_goes_to_the_deployment_with_the_api_key_and_keeps_filter_results,
    a_stream_keeps_the_prompt_filter_results_and_ends_with_usage,
    a_content_filter_rejection_is_a_400_with_azures_explanation,
);

const MODEL: &str = "contoso/gpt-4o";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/azure/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing fixture {path}"))
}

async fn app_with(backend: Backend, script: Script) -> (TestApp, ScriptedUpstream) {
    let upstream = ScriptedUpstream::start(script).await;
    let tables = format!(
        r#"
[[providers]]
id = "azure"
kind = "azure"
base_url = "{base_url}"
api_key = "azure-upstream-secret"
first_token_timeout = "2s"
idle_timeout = "2s"
request_timeout = "5s"

[[models]]
id = "{MODEL}"
context_length = 128000
  [[models.endpoints]]
  provider = "azure"
  upstream = "gpt-4o-prod"
  prompt = "2.5"
  completion = "10"
"#,
        base_url = upstream.base_url,
    );
    (spawn_app_with_tables(backend, tables).await, upstream)
}

fn chat(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
}

async fn a_completion_goes_to_the_deployment_with_the_api_key_and_keeps_filter_results(
    backend: Backend,
) {
    let script = Script::json(200, fixture("chat_completion_filtered.json"));
    let (app, upstream) = app_with(backend, script).await;
    let response = app.post_chat(&chat(false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "azure");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        body["choices"][0]["content_filter_results"]["violence"]["filtered"],
        true
    );
    assert_eq!(
        body["prompt_filter_results"][0]["content_filter_results"]["hate"]["severity"],
        "safe"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 12);

    let request = upstream.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.uri,
        "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(request.header("api-key"), Some("azure-upstream-secret"));
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.json()["messages"][0]["content"], "Say hello");
}

async fn a_stream_keeps_the_prompt_filter_results_and_ends_with_usage(backend: Backend) {
    let script = Script::sse(&fixture("chat_stream.sse"));
    let (app, upstream) = app_with(backend, script).await;
    let response = app.post_chat(&chat(true)).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;

    assert_eq!(events.last().unwrap(), "[DONE]");
    let first = &events[0];
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        first["prompt_filter_results"][0]["content_filter_results"]["violence"]["filtered"],
        false
    );
    let text: String = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello there.");
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(9), Some(3))
    );
    assert_eq!(
        upstream.only_request().json()["stream_options"]["include_usage"],
        true
    );
}

async fn a_content_filter_rejection_is_a_400_with_azures_explanation(backend: Backend) {
    let script = Script::json(400, fixture("content_filter_error.json"));
    let (app, _upstream) = app_with(backend, script).await;
    let response = app.post_chat(&chat(false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("content management policy"), "{message}");
    assert!(!body.to_string().contains("azure-upstream-secret"));
}
