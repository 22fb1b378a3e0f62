//! AWS Bedrock Converse through the gateway: signed requests to `/model/{id}/converse` and
//! `/converse-stream`, Converse answers and binary event streams (framed here from
//! `tests/fixtures/bedrock/`) as OpenAI responses and chunks, and errors before and during a
//! stream.

use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Bytes;
use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{TestApp, spawn_app_with_tables, sse_events};
use crate::on_both_backends;
use crate::scripted_upstream::{Script, ScriptedUpstream};

on_both_backends!(
    a_completion_is_signed_mapped_and_billed_with_cache_tokens,
    a_text_stream_is_decoded_from_event_stream_frames,
    a_streamed_tool_call_arrives_as_openai_tool_call_deltas,
    a_throttled_request_is_a_429_and_the_next_one_streams,
    an_exception_during_the_stream_becomes_an_error_chunk,
    an_image_url_is_refused_with_a_400_before_anything_is_sent,
);

const MODEL: &str = "anthropic/claude-on-bedrock";
const UPSTREAM_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/bedrock/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing fixture {path}"))
}

/// One event-stream frame with the headers Bedrock sends.
fn frame(message_type: &str, name: &str, payload: &Value) -> Bytes {
    let name_header = if message_type == "exception" {
        ":exception-type"
    } else {
        ":event-type"
    };
    let string = |value: &str| HeaderValue::String(value.to_owned().into());
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(":message-type", string(message_type)))
        .add_header(Header::new(name_header, string(name)))
        .add_header(Header::new(":content-type", string("application/json")));
    let mut bytes = Vec::new();
    write_message_to(&message, &mut bytes).unwrap();
    Bytes::from(bytes)
}

/// A ConverseStream answer: each fixture line (`{"event"|"exception": name, "payload": ...}`)
/// framed and sent as its own piece.
fn event_stream(fixture_name: &str) -> Script {
    let pieces = fixture(fixture_name)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            let (kind, name) = match line.get("event") {
                Some(name) => ("event", name),
                None => ("exception", &line["exception"]),
            };
            let bytes = frame(kind, name.as_str().unwrap(), &line["payload"]);
            (Duration::from_millis(5), bytes)
        })
        .collect();
    Script {
        status: 200,
        headers: vec![(
            "content-type",
            "application/vnd.amazon.eventstream".to_owned(),
        )],
        pieces,
    }
}

async fn app_with(backend: Backend, script: Script) -> (TestApp, ScriptedUpstream) {
    let upstream = ScriptedUpstream::start(script).await;
    let tables = format!(
        r#"
[[providers]]
id = "bedrock"
kind = "bedrock"
base_url = "{base_url}"
region = "us-west-2"
access_key_id = "AKIDTESTBEDROCK"
secret_access_key = "bedrock-upstream-secret"
first_token_timeout = "2s"
idle_timeout = "2s"
request_timeout = "5s"

[[models]]
id = "{MODEL}"
context_length = 200000
  [[models.endpoints]]
  provider = "bedrock"
  upstream = "{UPSTREAM_MODEL}"
  prompt = "3"
  completion = "15"
  cache_read = "0.3"
  cache_write = "3.75"
  supports = ["tools", "tool_choice", "vision"]
"#,
        base_url = upstream.base_url,
    );
    (spawn_app_with_tables(backend, tables).await, upstream)
}

fn chat(stream: bool) -> Value {
    json!({
        "model": MODEL,
        "stream": stream,
        "max_tokens": 200,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    })
}

async fn a_completion_is_signed_mapped_and_billed_with_cache_tokens(backend: Backend) {
    let (app, upstream) = app_with(backend, Script::json(200, fixture("converse_text.json"))).await;
    let response = app.post_chat(&chat(false)).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "bedrock");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Paris is the capital of France."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 145);
    assert_eq!(usage["completion_tokens"], 9);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 20);

    let request = upstream.only_request();
    assert_eq!(
        request.uri,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    let authorization = request.header("authorization").unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTESTBEDROCK/"),
        "{authorization}"
    );
    assert!(authorization.contains("/us-west-2/bedrock/aws4_request"));
    assert!(request.header("x-amz-date").is_some());
    let sent = request.json();
    assert_eq!(sent["system"], json!([{"text": "Answer briefly."}]));
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"text": "What is the capital of France?"}]}])
    );
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 200);

    // 25 uncached at $3, 100 cached at $0.30, 20 written at $3.75, 9 out at $15 per million.
    let row = app.generation_row(&id).await;
    assert_eq!((row.cached_tokens, row.cache_write_tokens), (100, 20));
    assert_eq!(row.cost, 75 + 30 + 75 + 135);
}

async fn a_text_stream_is_decoded_from_event_stream_frames(backend: Backend) {
    let (app, upstream) = app_with(backend, event_stream("converse_stream_text.jsonl")).await;
    let response = app.post_chat(&chat(true)).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;

    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    assert!(
        events
            .iter()
            .any(|event| event["choices"][0]["finish_reason"] == "stop")
    );
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(usage["prompt_tokens"], 12);
    assert_eq!(usage["completion_tokens"], 3);

    let request = upstream.only_request();
    assert_eq!(
        request.uri,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    );
    assert_eq!(
        request.header("accept"),
        Some("application/vnd.amazon.eventstream")
    );
}

async fn a_streamed_tool_call_arrives_as_openai_tool_call_deltas(backend: Backend) {
    let (app, upstream) = app_with(backend, event_stream("converse_stream_tool_use.jsonl")).await;
    let mut request = chat(true);
    request["tools"] = json!([{"type": "function", "function": {
        "name": "top_song", "description": "The most popular song on a radio station",
        "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]},
    }}]);
    request["tool_choice"] = json!("required");
    let response = app.post_chat(&request).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;

    let calls: Vec<&Value> = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["id"], "tooluse_abc123");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "top_song");
    let arguments: String = calls
        .iter()
        .filter_map(|call| call["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"sign":"WZPZ"}"#);
    assert!(
        events
            .iter()
            .any(|event| event["choices"][0]["finish_reason"] == "tool_calls")
    );

    let sent = upstream.only_request().json();
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"],
        json!(["sign"])
    );
}

async fn a_throttled_request_is_a_429_and_the_next_one_streams(backend: Backend) {
    let script = Script::json(
        429,
        r#"{"message":"Too many requests, please wait before trying again."}"#,
    )
    .with_header("x-amzn-errortype", "ThrottlingException");
    let (app, upstream) = app_with(backend, script).await;
    let response = app.post_chat(&chat(true)).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);

    upstream.set(event_stream("converse_stream_text.jsonl"));
    let response = app.post_chat(&chat(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(sse_events(response).await.last().unwrap(), "[DONE]");
}

async fn an_exception_during_the_stream_becomes_an_error_chunk(backend: Backend) {
    let (app, _upstream) = app_with(backend, event_stream("converse_stream_throttled.jsonl")).await;
    let response = app.post_chat(&chat(true)).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;

    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hel");
    let error = events
        .iter()
        .find(|event| event.get("error").is_some())
        .expect("an error chunk");
    assert_eq!(error["error"]["code"], 429);
    assert_eq!(error["choices"][0]["finish_reason"], "error");
}

async fn an_image_url_is_refused_with_a_400_before_anything_is_sent(backend: Backend) {
    let (app, upstream) = app_with(backend, Script::json(200, fixture("converse_text.json"))).await;
    let request = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]}]});
    let response = app.post_chat(&request).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("data:"), "{message}");
    assert!(upstream.recorded().is_empty());
}

#[test]
fn check_names_each_missing_bedrock_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bedrock.toml");
    std::fs::write(
        &path,
        "[[providers]]\nid = \"bedrock\"\nkind = \"bedrock\"\n",
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.arg("check").arg("--config").arg(&path);
    for variable in [
        "SWITCHYARD_CONFIG",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        command.env_remove(variable);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check must fail: {stderr}");
    for key in ["region", "access_key_id", "secret_access_key"] {
        assert!(
            stderr.contains(&format!("{key} is required for kind \"bedrock\"")),
            "names {key}: {stderr}"
        );
    }
}
