//! The Anthropic adapter through the gateway: OpenAI requests reach a scripted Anthropic upstream
//! as Messages API requests, and its documented bodies, streams and errors come back as OpenAI
//! responses, chunks and errors, billed at the catalog's prices.

use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{TestApp, parse_sse, spawn_app_with_tables};
use crate::on_both_backends;
use crate::scripted_upstream::{Script, ScriptedUpstream};

on_both_backends!(
    a_completion_is_sent_as_a_messages_request_and_translated_back,
    a_stream_is_translated_into_chunks_then_usage_and_done,
    a_streamed_tool_call_is_reassembled_into_complete_arguments,
    images_are_sent_as_image_blocks,
    a_json_schema_response_format_is_sent_as_output_config,
    reasoning_is_sent_as_thinking_and_returned_as_reasoning,
    cache_reads_and_writes_are_billed_at_the_catalog_cache_prices,
    upstream_errors_before_the_answer_are_mapped_to_the_contract,
    an_error_event_mid_stream_becomes_an_error_chunk_then_usage_and_done,
);

const MODEL: &str = "anthropic/claude-test";
const UPSTREAM_MODEL: &str = "claude-sonnet-4-5-20250929";
const API_KEY: &str = "sk-ant-test-secret";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The gateway with one `anthropic` provider at the scripted upstream, priced like Claude
/// Sonnet 4.5.
async fn app_with(backend: Backend, upstream: &ScriptedUpstream) -> TestApp {
    let tables = format!(
        r#"
[[providers]]
id = "anthropic"
kind = "anthropic"
base_url = "{base_url}"
api_key = "{API_KEY}"
first_token_timeout = "2s"
idle_timeout = "2s"
request_timeout = "5s"

[[models]]
id = "{MODEL}"
context_length = 200000
  [[models.endpoints]]
  provider = "anthropic"
  upstream = "{UPSTREAM_MODEL}"
  prompt = "3"
  completion = "15"
  cache_read = "0.3"
  cache_write = "3.75"
  max_output = 8192
  supports = ["tools", "tool_choice", "response_format", "reasoning", "vision"]
"#,
        base_url = upstream.base_url,
    );
    spawn_app_with_tables(backend, tables).await
}

async fn start(backend: Backend, script: Script) -> (ScriptedUpstream, TestApp) {
    let upstream = ScriptedUpstream::start(script).await;
    let app = app_with(backend, &upstream).await;
    (upstream, app)
}

fn ask(text: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": text}]})
}

fn with(mut request: Value, extra: Value) -> Value {
    let fields = request.as_object_mut().unwrap();
    fields.extend(extra.as_object().unwrap().clone());
    request
}

fn generation_id(response: &reqwest::Response) -> String {
    response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn a_completion_is_sent_as_a_messages_request_and_translated_back(backend: Backend) {
    let (upstream, app) = start(backend, Script::json(200, fixture("response_text.json"))).await;
    let request = json!({"model": MODEL, "temperature": 0.5, "stop": ["END"], "messages": [
        {"role": "system", "content": "You are Claude."},
        {"role": "user", "content": "What is your name?"},
    ]});
    let response = app.post_chat(&request).await;
    assert_eq!(response.status(), 200);
    let id = generation_id(&response);
    let body: Value = response.json().await.unwrap();

    let sent = upstream.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.uri.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(sent.header("x-api-key"), Some(API_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json(),
        json!({
            "model": UPSTREAM_MODEL,
            "max_tokens": 8192,
            "system": [{"type": "text", "text": "You are Claude."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What is your name?"}]}],
            "temperature": 0.5,
            "stop_sequences": ["END"],
        })
    );

    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["provider"], "anthropic");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hi! My name is Claude."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 2095);
    assert_eq!(body["usage"]["completion_tokens"], 503);
    // 2095 × 3 + 503 × 15 micro-USD.
    assert_eq!(body["usage"]["cost"], json!(0.01383));
    let row = app.generation_row(&id).await;
    assert_eq!(
        (row.upstream_model.as_deref(), row.cost),
        (Some(UPSTREAM_MODEL), 13_830)
    );
}

async fn a_stream_is_translated_into_chunks_then_usage_and_done(backend: Backend) {
    let (upstream, app) = start(backend, Script::sse(&fixture("stream_text.sse"))).await;
    let response = app
        .post_chat(&with(ask("Hello"), json!({"stream": true})))
        .await;
    assert_eq!(response.status(), 200);
    let id = generation_id(&response);
    let events = parse_sse(&response.text().await.unwrap());

    assert_eq!(upstream.only_request().json()["stream"], true);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello!");
    let finish = &events[events.len() - 3];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &events[events.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 25);
    assert_eq!(usage["usage"]["completion_tokens"], 15);
    for event in &events[..events.len() - 1] {
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["model"], MODEL);
        assert_eq!(event["provider"], "anthropic");
    }
    let row = app.generation_row(&id).await;
    assert!(row.streamed);
    assert_eq!(
        (
            row.prompt_tokens,
            row.completion_tokens,
            row.cost,
            row.finish_reason.as_deref()
        ),
        (25, 15, 25 * 3 + 15 * 15, Some("stop"))
    );
}

async fn a_streamed_tool_call_is_reassembled_into_complete_arguments(backend: Backend) {
    let (upstream, app) = start(backend, Script::sse(&fixture("stream_tool_use.sse"))).await;
    let request = with(
        ask("What's the weather like in San Francisco?"),
        json!({
            "stream": true,
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}, "required": ["location"]},
            }}],
            "tool_choice": "required",
        }),
    );
    let response = app.post_chat(&request).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.unwrap());

    let sent = upstream.only_request().json();
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["location"])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));

    let calls: Vec<&Value> = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|call| call["index"] == 0));
    let arguments: String = calls
        .iter()
        .filter_map(|call| call["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    let finish = events
        .iter()
        .find_map(|event| event["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
}

async fn images_are_sent_as_image_blocks(backend: Backend) {
    let (upstream, app) = start(backend, Script::json(200, fixture("response_text.json"))).await;
    let request = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/ant.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
    ]}]});
    assert_eq!(app.post_chat(&request).await.status(), 200);
    assert_eq!(
        upstream.only_request().json()["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is in these images?"},
            {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/ant.jpg"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
        ])
    );
}

async fn a_json_schema_response_format_is_sent_as_output_config(backend: Backend) {
    let answer = json!({
        "id": "msg_01Structured", "type": "message", "role": "assistant", "model": UPSTREAM_MODEL,
        "content": [{"type": "text", "text": "{\"name\":\"John Smith\",\"email\":\"john@example.com\"}"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 120, "output_tokens": 20},
    });
    let (upstream, app) = start(backend, Script::json(200, answer.to_string())).await;
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
        "required": ["name", "email"],
        "additionalProperties": false,
    });
    let request = with(
        ask("Extract: John Smith (john@example.com) wants a demo."),
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "contact", "strict": true, "schema": schema}}}),
    );
    let body: Value = app.post_chat(&request).await.json().await.unwrap();
    assert_eq!(
        upstream.only_request().json()["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    let content: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["email"], "john@example.com");
}

async fn reasoning_is_sent_as_thinking_and_returned_as_reasoning(backend: Backend) {
    let (upstream, app) = start(
        backend,
        Script::json(200, fixture("response_thinking.json")),
    )
    .await;
    let request = with(
        ask("Is there an infinite number of primes p with p mod 4 == 3?"),
        json!({"max_tokens": 6000, "reasoning": {"max_tokens": 4000}}),
    );
    let body: Value = app.post_chat(&request).await.json().await.unwrap();
    let sent = upstream.only_request().json();
    assert_eq!(sent["max_tokens"], 6000);
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 4000})
    );
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning"], "Let me analyze this step by step...");
    assert_eq!(message["content"], "Based on my analysis...");
}

async fn cache_reads_and_writes_are_billed_at_the_catalog_cache_prices(backend: Backend) {
    let (upstream, app) = start(backend, Script::json(200, fixture("response_cached.json"))).await;
    let request = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "<the whole of Pride and Prejudice>", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Analyze the major themes."},
    ]}]});
    let response = app.post_chat(&request).await;
    let id = generation_id(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        upstream.only_request().json()["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 102_050);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 100_000);
    assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 2000);
    assert_eq!(usage["completion_tokens"], 400);
    // 50 × 3 + 100,000 × 0.3 + 2,000 × 3.75 + 400 × 15 micro-USD = 43,650 micro-USD.
    assert_eq!(usage["cost"], json!(0.04365));
    let row = app.generation_row(&id).await;
    assert_eq!(
        (
            row.prompt_tokens,
            row.cached_tokens,
            row.cache_write_tokens,
            row.cost
        ),
        (102_050, 100_000, 2000, 43_650)
    );
}

async fn upstream_errors_before_the_answer_are_mapped_to_the_contract(backend: Backend) {
    let anthropic_error = |kind: &str, message: &str| {
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
    };
    let cases = [
        (
            Script::json(529, fixture("error_overloaded.json")),
            502,
            None,
        ),
        (
            Script::json(
                400,
                anthropic_error("invalid_request_error", "messages: roles must alternate"),
            ),
            400,
            Some("roles must alternate"),
        ),
        (
            Script::json(
                401,
                anthropic_error("authentication_error", "invalid x-api-key"),
            ),
            502,
            None,
        ),
        (
            Script::json(
                429,
                anthropic_error(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
            )
            .with_header("retry-after", "7"),
            429,
            None,
        ),
        (
            Script::json(
                500,
                anthropic_error("api_error", "internal details of anthropic"),
            ),
            502,
            None,
        ),
    ];
    for stream in [false, true] {
        for (script, status, kept) in cases.clone() {
            let retry_after = script
                .headers
                .iter()
                .find(|(name, _)| *name == "retry-after")
                .map(|(_, value)| value.clone());
            // A gateway per case: after the overloads and the rate limit its health tracker
            // would take the endpoint out, and this test is about how each error is mapped.
            let (_upstream, app) = start(backend, script).await;
            let response = app
                .post_chat(&with(ask("hi"), json!({"stream": stream})))
                .await;
            assert_eq!(response.status(), status, "stream: {stream}");
            if let Some(retry_after) = retry_after {
                assert_eq!(response.headers()["retry-after"], retry_after.as_str());
            }
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], status, "{body}");
            assert!(body["error"]["type"].is_string(), "{body}");
            let text = body.to_string();
            match kept {
                Some(detail) => assert!(text.contains(detail), "{text}"),
                None => assert!(
                    !text.contains("Overloaded") && !text.contains("internal details"),
                    "{text}"
                ),
            }
            assert!(!text.contains(API_KEY));
        }
    }
}

async fn an_error_event_mid_stream_becomes_an_error_chunk_then_usage_and_done(backend: Backend) {
    let (_upstream, app) = start(backend, Script::sse(&fixture("stream_error.sse"))).await;
    let response = app
        .post_chat(&with(ask("Hello"), json!({"stream": true})))
        .await;
    assert_eq!(
        response.status(),
        200,
        "the first chunk had already gone out"
    );
    let id = generation_id(&response);
    let events = parse_sse(&response.text().await.unwrap());
    assert_eq!(events[0]["choices"][0]["delta"]["content"], "Hello");
    let [error, usage, done] = &events[events.len() - 3..] else {
        panic!("{events:?}");
    };
    assert_eq!(done, "[DONE]");
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    assert_eq!(error["error"]["code"], 502);
    assert!(!error.to_string().contains("Overloaded"));
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["cost"].is_number());
    // Billed for the prompt Anthropic counted at message_start and the one delta that went out.
    assert_eq!(usage["usage"]["prompt_tokens"], 25);
    assert_eq!(usage["usage"]["completion_tokens"], 1);
    let row = app.generation_row(&id).await;
    assert_eq!(
        (row.status, row.finish_reason.as_deref()),
        (502, Some("error"))
    );
    assert_eq!((row.prompt_tokens, row.completion_tokens), (25, 1));
}
