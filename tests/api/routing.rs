//! Endpoint selection through the gateway: three mock upstreams serve one model at different
//! prices, and the caller's `provider` preferences, the `:floor` suffix and the `models` list
//! decide which of them answers (and at which price it is billed).

use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{TestApp, spawn_app_with_tables};
use crate::on_both_backends;
use crate::scripted_upstream::{Script, ScriptedUpstream};
use crate::upstream::{Behaviour, MockUpstream};

on_both_backends!(
    provider_order_sends_the_request_to_the_listed_provider,
    sort_by_price_picks_the_cheapest_endpoint,
    max_price_leaves_only_cheap_endpoints_or_is_a_404_naming_the_filter,
    the_floor_suffix_picks_the_cheapest_and_answers_with_the_plain_model_id,
    data_collection_deny_avoids_providers_that_collect,
    the_models_list_falls_through_to_the_next_model_and_bills_its_price,
    a_prompt_too_long_for_one_model_moves_on_to_a_model_with_more_context,
);

/// `test/routed` is served by `cheap` (1 + 2 USD per million), `mid` (2 + 4, and the only
/// provider that collects no data) and `pricey` (10 + 20). `test/backup` is `mid` at 5 + 10;
/// `test/broken` is served only by `broken`, whose upstream always fails.
struct Setup {
    app: TestApp,
    cheap: MockUpstream,
    mid: MockUpstream,
    pricey: MockUpstream,
    broken: MockUpstream,
}

async fn setup(backend: Backend) -> Setup {
    let reply = |text| MockUpstream::start(Behaviour::Reply { text });
    let (cheap, mid, pricey) = (
        reply("cheap").await,
        reply("mid").await,
        reply("pricey").await,
    );
    let broken = MockUpstream::start(Behaviour::Fail {
        status: 500,
        message: "upstream is down",
        retry_after: None,
    })
    .await;
    let provider = |id: &str, upstream: &MockUpstream, policy: &str| {
        format!(
            "[[providers]]\nid = \"{id}\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\napi_key = \"sk-{id}\"\ndata_collection = \"{policy}\"\n",
            upstream.base_url
        )
    };
    let endpoint = |provider: &str, prompt: &str, completion: &str| {
        format!(
            "  [[models.endpoints]]\n  provider = \"{provider}\"\n  upstream = \"{provider}-model\"\n  prompt = \"{prompt}\"\n  completion = \"{completion}\"\n"
        )
    };
    let tables = [
        provider("cheap", &cheap, "allow"),
        provider("mid", &mid, "deny"),
        provider("pricey", &pricey, "allow"),
        provider("broken", &broken, "allow"),
        "[[models]]\nid = \"test/routed\"\n".to_owned(),
        endpoint("cheap", "1", "2"),
        endpoint("mid", "2", "4"),
        endpoint("pricey", "10", "20"),
        "[[models]]\nid = \"test/backup\"\n".to_owned(),
        endpoint("mid", "5", "10"),
        "[[models]]\nid = \"test/broken\"\n".to_owned(),
        endpoint("broken", "1", "1"),
    ]
    .join("\n");
    Setup {
        app: spawn_app_with_tables(backend, tables).await,
        cheap,
        mid,
        pricey,
        broken,
    }
}

fn chat(model: &str, provider: Value) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "provider": provider,
    })
}

/// Posts, expects a 200 and returns the response body.
async fn answer(app: &TestApp, body: &Value) -> Value {
    let response = app.post_chat(body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn provider_order_sends_the_request_to_the_listed_provider(backend: Backend) {
    let Setup {
        app, cheap, pricey, ..
    } = setup(backend).await;
    let body = chat("test/routed", json!({"order": ["pricey", "cheap"]}));
    for _ in 0..3 {
        assert_eq!(answer(&app, &body).await["provider"], "pricey");
    }
    assert_eq!(pricey.received().len(), 3);
    assert!(cheap.received().is_empty());
}

async fn sort_by_price_picks_the_cheapest_endpoint(backend: Backend) {
    let Setup {
        app, cheap, mid, ..
    } = setup(backend).await;
    let body = chat("test/routed", json!({"sort": "price"}));
    for _ in 0..3 {
        assert_eq!(answer(&app, &body).await["provider"], "cheap");
    }
    assert_eq!(cheap.received().len(), 3);
    assert!(mid.received().is_empty());
}

async fn max_price_leaves_only_cheap_endpoints_or_is_a_404_naming_the_filter(backend: Backend) {
    let Setup { app, pricey, .. } = setup(backend).await;
    let capped = chat(
        "test/routed",
        json!({"max_price": {"prompt": 2, "completion": 4}, "order": ["pricey"]}),
    );
    let served = answer(&app, &capped).await["provider"].clone();
    assert!(served == "cheap" || served == "mid", "{served}");
    assert!(
        pricey.received().is_empty(),
        "over the cap, even when ordered"
    );

    let response = app
        .post_chat(&chat("test/routed", json!({"max_price": {"prompt": 0.5}})))
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["metadata"]["filter"], "provider.max_price",
        "{body}"
    );
}

async fn the_floor_suffix_picks_the_cheapest_and_answers_with_the_plain_model_id(backend: Backend) {
    let Setup { app, cheap, .. } = setup(backend).await;
    let body = json!({
        "model": "test/routed:floor",
        "messages": [{"role": "user", "content": "hi"}],
    });
    for _ in 0..3 {
        let answer = answer(&app, &body).await;
        assert_eq!(answer["provider"], "cheap");
        assert_eq!(answer["model"], "test/routed");
    }
    assert_eq!(cheap.received()[0].body["model"], "cheap-model");
}

async fn data_collection_deny_avoids_providers_that_collect(backend: Backend) {
    let Setup { app, mid, .. } = setup(backend).await;
    let body = chat(
        "test/routed",
        json!({"data_collection": "deny", "sort": "price"}),
    );
    assert_eq!(answer(&app, &body).await["provider"], "mid");
    assert_eq!(mid.received().len(), 1);
}

async fn the_models_list_falls_through_to_the_next_model_and_bills_its_price(backend: Backend) {
    let Setup {
        app, mid, broken, ..
    } = setup(backend).await;
    let body = json!({
        "model": "test/broken",
        "models": ["test/backup"],
        "messages": [{"role": "user", "content": "hi"}],
    });
    let answer = answer(&app, &body).await;
    assert_eq!(answer["model"], "test/backup");
    assert_eq!(answer["provider"], "mid");
    assert_eq!(broken.received().len(), 1, "the primary was tried first");
    assert_eq!(mid.received()[0].body["model"], "mid-model");
    // 10 prompt tokens at 5 USD/M plus 5 completion tokens at 10 USD/M: 0.0001 USD.
    assert_eq!(answer["usage"]["cost"], json!(0.0001), "{answer}");
    let row = app.generation_row(answer["id"].as_str().unwrap()).await;
    assert_eq!(row.model, "test/backup");
}

async fn a_prompt_too_long_for_one_model_moves_on_to_a_model_with_more_context(backend: Backend) {
    // OpenAI's answer to a prompt over the context window.
    let too_long = ScriptedUpstream::start(Script::json(
        400,
        r#"{"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
    ))
    .await;
    let roomy = MockUpstream::start(Behaviour::Reply { text: "roomy" }).await;
    let provider = |id: &str, base_url: &str| {
        format!(
            "[[providers]]\nid = \"{id}\"\nkind = \"openai-compatible\"\nbase_url = \"{base_url}\"\n"
        )
    };
    let model = |id: &str, context: u32, providers: &[&str]| {
        let endpoints: String = providers
            .iter()
            .map(|provider| {
                format!(
                    "  [[models.endpoints]]\n  provider = \"{provider}\"\n  upstream = \"m\"\n  prompt = \"1\"\n  completion = \"1\"\n"
                )
            })
            .collect();
        format!("[[models]]\nid = \"{id}\"\ncontext_length = {context}\n{endpoints}")
    };
    let tables = [
        provider("short-a", &format!("{}/v1", too_long.base_url)),
        provider("short-b", &format!("{}/v1", too_long.base_url)),
        provider("same", &format!("{}/v1", too_long.base_url)),
        provider("roomy", &roomy.base_url),
        model("test/short", 8_192, &["short-a", "short-b"]),
        model("test/same", 8_192, &["same"]),
        model("test/long", 200_000, &["roomy"]),
    ]
    .join("\n");
    let app = spawn_app_with_tables(backend, tables).await;
    let body = json!({
        "model": "test/short",
        "models": ["test/same", "test/long"],
        "messages": [{"role": "user", "content": "a long prompt"}],
        "provider": {"sort": "price"},
    });
    let answer = answer(&app, &body).await;
    assert_eq!(answer["model"], "test/long");
    assert_eq!(
        too_long.recorded().len(),
        1,
        "neither the same model's other endpoint nor a model as small is tried"
    );
    assert_eq!(roomy.received().len(), 1);
}
