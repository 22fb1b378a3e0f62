//! Non-streaming chat completions through the mock provider and an OpenAI-compatible upstream.

use serde_json::json;

use crate::db::Backend;
use crate::helpers::{spawn_app, spawn_app_with_tables, upstream_tables};
use crate::on_both_backends;
use crate::upstream::{Behaviour, MockUpstream};

on_both_backends!(
    the_mock_model_answers_with_a_generation_id_usage_and_cost,
    an_openai_upstream_gets_the_mapped_model_and_unknown_fields_untouched,
    the_generation_is_recorded_and_readable_by_its_own_key_only,
    the_api_is_also_served_under_api_v1,
);

async fn the_mock_model_answers_with_a_generation_id_usage_and_cost(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_chat(&json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "hello switchyard"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["id"], header.as_str());
    assert!(header.starts_with("gen-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "switchyard/echo");
    assert_eq!(body["provider"], "mock");
    assert_eq!(body["choices"][0]["message"]["content"], "hello switchyard");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );
    // 2 tokens at $1/M + 2 tokens at $2/M = 6 micro-USD, printed exactly.
    assert!(text.contains(r#""cost":0.000006,"#), "{text}");
}

async fn an_openai_upstream_gets_the_mapped_model_and_unknown_fields_untouched(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Reply { text: "Hi there" }).await;
    let app = spawn_app_with_tables(backend, upstream_tables(&upstream, "acme", "acme/chat")).await;
    let response = app
        .post_chat(&json!({
            "model": "acme/chat",
            "messages": [{"role": "user", "content": "hi", "x_custom_part": 1}],
            "seed": 42,
            "logit_bias": {"50256": -100},
            "provider": {"order": ["acme"]},
            "models": ["acme/chat"],
        }))
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["model"], "acme/chat");
    assert_eq!(body["provider"], "acme");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(
        body["system_fingerprint"], "fp_44709d6fcb",
        "unknown response fields pass through"
    );
    // The upstream's choices go back as it wrote them, fields the gateway does not know included.
    assert!(
        text.contains(r#""choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hi there","refusal":null,"role":"assistant"}}]"#),
        "{text}"
    );
    // 7 uncached prompt tokens at $3/M + 3 cached at $0.30/M + 5 completion at $15/M
    // = 21 + 0.9 + 75 = 96.9 micro-USD, rounded once to 97.
    assert!(text.contains(r#""cost":0.000097,"#), "{text}");
    // The parts: 21.9 rounds to 22 for the prompt, and the completion is the rest, 75.
    assert!(
        text.contains(
            r#""cost_details":{"upstream_inference_cost":0.000097,"upstream_inference_prompt_cost":0.000022,"upstream_inference_completions_cost":0.000075}"#
        ),
        "{text}"
    );
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

    let sent = &upstream.received()[0];
    assert_eq!(sent.body["model"], "acme-upstream-name");
    assert_eq!(sent.body["seed"], 42);
    assert_eq!(sent.body["logit_bias"]["50256"], -100);
    assert_eq!(sent.body["messages"][0]["x_custom_part"], 1);
    assert!(sent.body.get("provider").is_none() && sent.body.get("models").is_none());
    assert_eq!(
        sent.authorization.as_deref(),
        Some("Bearer sk-upstream-secret-acme")
    );
}

async fn the_generation_is_recorded_and_readable_by_its_own_key_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&app.key)
        .header("HTTP-Referer", "https://example.app")
        .header("X-Title", "Example App")
        .json(&json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "one two three"}]}))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let row = app.generation_row(&id).await;
    assert_eq!(row.model, "switchyard/echo");
    assert_eq!(row.provider.as_deref(), Some("mock"));
    assert_eq!(row.upstream_model.as_deref(), Some("echo"));
    assert_eq!(row.app_referer.as_deref(), Some("https://example.app"));
    assert_eq!(row.app_title.as_deref(), Some("Example App"));
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens, row.cost),
        (3, 3, 9)
    );
    assert_eq!(
        (row.status, row.streamed, row.cancelled),
        (200, false, false)
    );
    assert_eq!(row.finish_reason.as_deref(), Some("stop"));

    let text = app
        .get(&format!("/v1/generation?id={id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#""total_cost":0.000009,"#), "{text}");
    let generation: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(generation["data"]["id"], id.as_str());
    assert_eq!(generation["data"]["tokens_prompt"], 3);
    assert_eq!(generation["data"]["attempts"][0]["provider"], "mock");

    let other = app
        .state
        .keys
        .create("other", None, None, None)
        .await
        .unwrap();
    let response = app
        .client
        .get(format!("{}/v1/generation?id={id}", app.base))
        .bearer_auth(&other.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

async fn the_api_is_also_served_under_api_v1(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .post(format!("{}/api/v1/chat/completions", app.base))
        .bearer_auth(&app.key)
        .json(&json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.get("/api/v1/models").await.status(), 200);
}
