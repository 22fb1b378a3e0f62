//! The `gemini` provider kind through the gateway: requests translated to Google's
//! `generateContent` / `streamGenerateContent`, answers, streams, usage, cost and errors
//! translated back. The upstream replays the documented bodies in `tests/fixtures/gemini/`.

use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{TestApp, spawn_app_with_tables, sse_events};
use crate::on_both_backends;
use crate::scripted_upstream::{Script, ScriptedUpstream};

on_both_backends!(
    a_chat_is_sent_as_generate_content_and_answered_in_openai_shape,
    a_stream_is_sent_with_alt_sse_and_ends_with_usage_and_done,
    a_streamed_function_call_becomes_a_tool_call_delta,
    images_are_sent_as_inline_data_and_file_data,
    a_json_schema_response_format_becomes_a_response_json_schema,
    thoughts_become_reasoning_and_cached_and_thought_tokens_are_billed_exactly,
    a_prompt_blocked_for_safety_is_a_content_filtered_answer,
    an_answer_stopped_for_safety_in_a_stream_ends_with_content_filter,
    upstream_errors_before_the_stream_are_mapped_to_the_contracts_shape,
    an_error_during_the_stream_becomes_an_error_chunk_then_usage_and_done,
);

const API_KEY: &str = "AIza-upstream-secret";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../fixtures/gemini/", $name))
    };
}

/// The gateway with a `gemini` provider at `upstream` serving `google/gemini-test` at Gemini 2.5
/// Flash's list prices.
async fn app_with(backend: Backend, upstream: &ScriptedUpstream) -> TestApp {
    let tables = format!(
        r#"
[[providers]]
id = "google"
kind = "gemini"
base_url = "{base_url}/v1beta"
api_key = "{API_KEY}"
first_token_timeout = "2s"
idle_timeout = "2s"
request_timeout = "5s"

[[models]]
id = "google/gemini-test"
context_length = 1048576
  [[models.endpoints]]
  provider = "google"
  upstream = "gemini-2.5-flash"
  prompt = "0.3"
  completion = "2.5"
  cache_read = "0.03"
  max_output = 65536
  supports = ["tools", "tool_choice", "response_format", "reasoning", "vision"]
"#,
        base_url = upstream.base_url,
    );
    spawn_app_with_tables(backend, tables).await
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "google/gemini-test",
        "messages": [{"role": "user", "content": "Explain AI in one sentence."}],
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

fn generation_id(response: &reqwest::Response) -> String {
    response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn a_chat_is_sent_as_generate_content_and_answered_in_openai_shape(backend: Backend) {
    let upstream = ScriptedUpstream::start(Script::json(200, fixture!("text_response.json"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app
        .post_chat(&chat(json!({
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Explain AI in one sentence."},
            ],
            "temperature": 0.5,
            "max_tokens": 200,
        })))
        .await;
    assert_eq!(response.status(), 200);
    let id = generation_id(&response);
    let body: Value = response.json().await.unwrap();

    let sent = upstream.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some(API_KEY));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json(),
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Explain AI in one sentence."}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 200},
        })
    );

    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "google/gemini-test");
    assert_eq!(body["provider"], "google");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "AI learns patterns from data to make predictions."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert_eq!(body["usage"]["total_tokens"], 18);
    // 8 × 0.3 + 10 × 2.5 = 27.4 micro-USD, rounded once.
    assert_eq!(body["usage"]["cost"], json!(0.000027));
    let row = app.generation_row(&id).await;
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens, row.cost),
        (8, 10, 27)
    );
    assert_eq!(row.upstream_model.as_deref(), Some("gemini-2.5-flash"));
}

async fn a_stream_is_sent_with_alt_sse_and_ends_with_usage_and_done(backend: Backend) {
    let upstream = ScriptedUpstream::start(Script::sse(fixture!("text_stream.sse"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app.post_chat(&chat(json!({"stream": true}))).await;
    assert_eq!(response.status(), 200);
    let id = generation_id(&response);
    let events = sse_events(response).await;

    let sent = upstream.only_request();
    assert_eq!(
        sent.uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some(API_KEY));
    assert!(sent.json().get("stream").is_none());

    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage = &events[events.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 8);
    assert_eq!(usage["usage"]["completion_tokens"], 10);
    let chunks = &events[..events.len() - 2];
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "AI learns patterns from data to make predictions.");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    for chunk in chunks {
        assert_eq!(chunk["id"], id.as_str());
        assert_eq!(chunk["model"], "google/gemini-test");
    }
    let row = app.generation_row(&id).await;
    assert!(row.streamed);
    assert_eq!((row.completion_tokens, row.cost, row.status), (10, 27, 200));
    assert_eq!(row.finish_reason.as_deref(), Some("stop"));
}

async fn a_streamed_function_call_becomes_a_tool_call_delta(backend: Backend) {
    let upstream = ScriptedUpstream::start(Script::sse(fixture!("function_call_stream.sse"))).await;
    let app = app_with(backend, &upstream).await;
    let parameters = json!({"type": "object", "properties": {"location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]});
    let response = app
        .post_chat(&chat(json!({
            "stream": true,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Current weather", "parameters": parameters}}],
            "tool_choice": "required",
        })))
        .await;
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;

    let sent = upstream.only_request().json();
    assert_eq!(
        sent["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather",
            "description": "Current weather", "parametersJsonSchema": parameters}]}])
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );

    let call_chunk = events
        .iter()
        .find(|event| event["choices"][0]["delta"]["tool_calls"].is_array())
        .expect("a tool call delta");
    let call = &call_chunk["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"location": "Paris", "unit": "celsius"}));
    // As OpenAI streams it: the call, then the finish reason in a chunk of its own.
    assert_eq!(call_chunk["choices"][0]["finish_reason"], Value::Null);
    let finishes: Vec<&Value> = events
        .iter()
        .filter(|event| !event["choices"][0]["finish_reason"].is_null())
        .map(|event| &event["choices"][0])
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["finish_reason"], "tool_calls");
    assert!(finishes[0]["delta"]["tool_calls"].is_null());
    assert_eq!(
        events[0]["choices"][0]["delta"]["reasoning"],
        "The user wants the weather in Paris."
    );
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(usage["completion_tokens"], 58);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 40);

    // The call goes back with its thought signature and its result, named by the call's id.
    upstream.set(Script::json(200, fixture!("text_response.json")));
    let follow_up = app
        .post_chat(&chat(json!({"messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature\": 21}"},
        ]})))
        .await;
    assert_eq!(follow_up.status(), 200);
    let sent = upstream.recorded()[1].json();
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather",
            "args": {"location": "Paris", "unit": "celsius"}}, "thoughtSignature": "CiQBVKhc7sig1"}]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
            "response": {"temperature": 21}}}]})
    );
}

async fn images_are_sent_as_inline_data_and_file_data(backend: Backend) {
    let upstream = ScriptedUpstream::start(Script::json(200, fixture!("text_response.json"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app
        .post_chat(&chat(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these pictures?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
            {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
        ]}]})))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.only_request().json()["contents"][0]["parts"],
        json!([
            {"text": "What is in these pictures?"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.test/cat.png"}},
        ])
    );
}

async fn a_json_schema_response_format_becomes_a_response_json_schema(backend: Backend) {
    let answer = json!({"candidates": [{"content": {"parts": [{"text": "{\"answer\": 4}"}],
        "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}});
    let upstream = ScriptedUpstream::start(Script::json(200, answer.to_string())).await;
    let app = app_with(backend, &upstream).await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}},
        "required": ["answer"], "additionalProperties": false});
    let response = app
        .post_chat(&chat(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "answer", "strict": true, "schema": schema}}})))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "{\"answer\": 4}");
    assert_eq!(
        upstream.only_request().json()["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
    );
}

async fn thoughts_become_reasoning_and_cached_and_thought_tokens_are_billed_exactly(
    backend: Backend,
) {
    let upstream =
        ScriptedUpstream::start(Script::json(200, fixture!("thinking_response.json"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app
        .post_chat(&chat(json!({"reasoning": {"effort": "medium"}})))
        .await;
    assert_eq!(response.status(), 200);
    let id = generation_id(&response);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();

    assert_eq!(
        upstream.only_request().json()["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 8192, "includeThoughts": true})
    );
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "There are 4 primes below 10.");
    assert!(
        message["reasoning"]
            .as_str()
            .unwrap()
            .starts_with("**Counting the primes**")
    );
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 2000);
    assert_eq!(usage["completion_tokens"], 308, "answer and thoughts");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1500);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 300);
    // 500 × 0.3 + 1500 × 0.03 + 308 × 2.5 = 150 + 45 + 770 = 965 micro-USD.
    assert!(text.contains(r#""cost":0.000965"#), "{text}");
    let row = app.generation_row(&id).await;
    assert_eq!(
        (
            row.cached_tokens,
            row.reasoning_tokens,
            row.completion_tokens,
            row.cost
        ),
        (1500, 300, 308, 965)
    );
}

async fn a_prompt_blocked_for_safety_is_a_content_filtered_answer(backend: Backend) {
    let upstream =
        ScriptedUpstream::start(Script::json(200, fixture!("prompt_blocked.json"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app.post_chat(&chat(json!({}))).await;
    assert_eq!(response.status(), 200);
    let id = generation_id(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(body["choices"][0]["message"]["content"], "");
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    let row = app.generation_row(&id).await;
    assert_eq!(row.finish_reason.as_deref(), Some("content_filter"));
}

async fn an_answer_stopped_for_safety_in_a_stream_ends_with_content_filter(backend: Backend) {
    let upstream = ScriptedUpstream::start(Script::sse(fixture!("safety_stream.sse"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app.post_chat(&chat(json!({"stream": true}))).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let finish_reasons: Vec<&Value> = events
        .iter()
        .map(|event| &event["choices"][0]["finish_reason"])
        .filter(|reason| reason.is_string())
        .collect();
    assert_eq!(finish_reasons, [&json!("content_filter")]);
}

async fn upstream_errors_before_the_stream_are_mapped_to_the_contracts_shape(backend: Backend) {
    let upstream =
        ScriptedUpstream::start(Script::json(429, fixture!("error_resource_exhausted.json"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app.post_chat(&chat(json!({"stream": true}))).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "37");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);
    assert!(body["error"]["type"].is_string());
    // A fresh gateway after each Retry-After: the health tracker honours it by taking the
    // endpoint out, and this test is about how each error is mapped.
    upstream.set(
        Script::json(429, fixture!("error_resource_exhausted.json"))
            .with_header("retry-after", "5"),
    );
    let app = app_with(backend, &upstream).await;
    let response = app.post_chat(&chat(json!({}))).await;
    assert_eq!(
        response.headers()["retry-after"],
        "5",
        "a Retry-After header wins over the body's RetryInfo"
    );

    let google_error = |code: u16, status: &str, message: &str| {
        json!({"error": {"code": code, "message": message, "status": status}}).to_string()
    };
    let cases = [
        (
            400,
            "INVALID_ARGUMENT",
            "* GenerationConfig.temperature: out of range",
            400,
        ),
        (
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers",
            502,
        ),
        (
            404,
            "NOT_FOUND",
            "models/gemini-2.5-flash is not found",
            502,
        ),
        (500, "INTERNAL", "internal details of upstream", 502),
        (503, "UNAVAILABLE", "The model is overloaded.", 502),
        (504, "DEADLINE_EXCEEDED", "Deadline expired", 408),
    ];
    let app = app_with(backend, &upstream).await;
    for (code, status, message, expected) in cases {
        upstream.set(Script::json(code, google_error(code, status, message)));
        let response = app.post_chat(&chat(json!({}))).await;
        assert_eq!(response.status(), expected, "{status}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], expected, "{status}: {body}");
        let text = body.to_string();
        assert!(!text.contains(API_KEY), "{text}");
        if expected == 400 {
            assert!(text.contains("temperature: out of range"), "{text}");
        } else {
            assert!(!text.contains(message), "{status}: {text}");
        }
    }
}

async fn an_error_during_the_stream_becomes_an_error_chunk_then_usage_and_done(backend: Backend) {
    let upstream = ScriptedUpstream::start(Script::sse(fixture!("error_stream.sse"))).await;
    let app = app_with(backend, &upstream).await;
    let response = app.post_chat(&chat(json!({"stream": true}))).await;
    assert_eq!(response.status(), 200);
    let id = generation_id(&response);
    let events = sse_events(response).await;

    assert_eq!(events[0]["choices"][0]["delta"]["content"], "Once upon");
    let error_at = events
        .iter()
        .position(|event| event.get("error").is_some())
        .expect("an error chunk");
    let error = &events[error_at];
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    assert_eq!(error["error"]["code"], 502);
    assert!(!error.to_string().contains("overloaded"));
    let usage = &events[error_at + 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert_eq!(events[error_at + 2], "[DONE]");
    assert_eq!(events.len(), error_at + 3);
    let row = app.generation_row(&id).await;
    assert_eq!(row.status, 502);
    assert_eq!(row.completion_tokens, 2, "what was streamed is billed");
}
