//! Provider presets and unsupported parameters, through the gateway: what each upstream actually
//! receives, which endpoint `provider.require_parameters` and `reasoning` route to, and the 404
//! when no endpoint is left.

use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{TestApp, spawn_app_with_tables};
use crate::on_both_backends;
use crate::upstream::{Behaviour, MockUpstream};

on_both_backends!(
    a_preset_provider_never_receives_the_fields_it_refuses,
    unsupported_sampling_parameters_are_dropped_before_sending,
    require_parameters_moves_to_the_endpoint_that_supports_them,
    require_parameters_with_no_endpoint_left_is_a_404_naming_the_filter,
    reasoning_goes_only_to_endpoints_that_list_it_unless_switched_off,
    the_model_list_reports_explicit_sampling_lists,
);

/// `first` is a plain OpenAI-compatible provider; `mistral` uses the Mistral preset (its base
/// URL pointed at the mock). `test/pair` lists `first` (temperature only) before `mistral`
/// (temperature and seed); `test/thinker` lists `first` (implicit) before `mistral` (reasoning).
/// `first` is free, so the default weighted draw all but always tries it first (the inverse-square
/// weight of a free endpoint is 10^13 times that of `mistral`'s 3 USD per million).
struct Setup {
    app: TestApp,
    first: MockUpstream,
    mistral: MockUpstream,
}

async fn setup(backend: Backend) -> Setup {
    let first = MockUpstream::start(Behaviour::Reply { text: "from first" }).await;
    let mistral = MockUpstream::start(Behaviour::Reply {
        text: "from mistral",
    })
    .await;
    let endpoint = |provider: &str, supports: &str| {
        let (prompt, completion) = if provider == "first" { (0, 0) } else { (1, 2) };
        format!(
            "  [[models.endpoints]]\n  provider = \"{provider}\"\n  upstream = \"{provider}-model\"\n  prompt = \"{prompt}\"\n  completion = \"{completion}\"\n  supports = {supports}\n"
        )
    };
    let tables = format!(
        r#"
[[providers]]
id = "first"
kind = "openai-compatible"
base_url = "{first_url}"
api_key = "sk-first"

[[providers]]
id = "mistral"
kind = "openai-compatible"
preset = "mistral"
base_url = "{mistral_url}"
api_key = "sk-mistral"

[[models]]
id = "test/preset"
{preset}
[[models]]
id = "test/pair"
{pair_first}{pair_mistral}
[[models]]
id = "test/thinker"
{thinker_first}{thinker_mistral}
"#,
        first_url = first.base_url,
        mistral_url = mistral.base_url,
        preset = endpoint("mistral", "[]"),
        pair_first = endpoint("first", r#"["temperature"]"#),
        pair_mistral = endpoint("mistral", r#"["temperature", "seed"]"#),
        thinker_first = endpoint("first", "[]"),
        thinker_mistral = endpoint("mistral", r#"["reasoning"]"#),
    );
    let app = spawn_app_with_tables(backend, tables).await;
    Setup {
        app,
        first,
        mistral,
    }
}

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// Posts, expects a 200 and returns the provider that served.
async fn served_by(app: &TestApp, body: &Value) -> String {
    let response = app.post_chat(body).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["provider"].as_str().unwrap().to_owned()
}

async fn a_preset_provider_never_receives_the_fields_it_refuses(backend: Backend) {
    let Setup { app, mistral, .. } = setup(backend).await;
    let body = chat(
        "test/preset",
        json!({
            "user": "user-42", "logit_bias": {"50256": -100}, "logprobs": true, "top_logprobs": 2,
            "store": true, "metadata": {"team": "a"}, "service_tier": "auto",
            "max_completion_tokens": 30, "seed": 3, "temperature": 0.2, "safe_prompt": true,
        }),
    );
    assert_eq!(served_by(&app, &body).await, "mistral");
    let received = mistral.received();
    assert_eq!(received.len(), 1);
    let sent = &received[0].body;
    for refused in [
        "user",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "store",
        "metadata",
        "service_tier",
        "max_completion_tokens",
    ] {
        assert!(sent.get(refused).is_none(), "{refused} was sent: {sent}");
    }
    assert_eq!(
        sent["max_tokens"], 30,
        "Mistral takes the cap as max_tokens"
    );
    assert_eq!(sent["seed"], 3);
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["safe_prompt"], true, "its own fields pass through");
    assert_eq!(sent["model"], "mistral-model");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer sk-mistral")
    );
}

async fn unsupported_sampling_parameters_are_dropped_before_sending(backend: Backend) {
    let Setup { app, first, .. } = setup(backend).await;
    let body = chat(
        "test/pair",
        json!({"temperature": 0.5, "top_p": 0.9, "seed": 4, "top_k": 3}),
    );
    assert_eq!(served_by(&app, &body).await, "first");
    let sent = &first.received()[0].body;
    assert_eq!(sent["temperature"], 0.5, "the listed parameter is kept");
    for dropped in ["top_p", "seed", "top_k"] {
        assert!(sent.get(dropped).is_none(), "{dropped} was sent: {sent}");
    }
    assert_eq!(sent["messages"][0]["content"], "hi");
}

async fn require_parameters_moves_to_the_endpoint_that_supports_them(backend: Backend) {
    let Setup {
        app,
        first,
        mistral,
    } = setup(backend).await;
    let body = chat(
        "test/pair",
        json!({"seed": 4, "temperature": 0.1, "provider": {"require_parameters": true}}),
    );
    assert_eq!(served_by(&app, &body).await, "mistral");
    assert!(first.received().is_empty(), "the first endpoint is skipped");
    let sent = &mistral.received()[0].body;
    assert_eq!(
        (sent["seed"].clone(), sent["temperature"].clone()),
        (json!(4), json!(0.1))
    );
    assert!(sent.get("provider").is_none());

    let only_temperature = chat(
        "test/pair",
        json!({"temperature": 0.1, "provider": {"require_parameters": true}}),
    );
    assert_eq!(served_by(&app, &only_temperature).await, "first");
}

async fn require_parameters_with_no_endpoint_left_is_a_404_naming_the_filter(backend: Backend) {
    let Setup {
        app,
        first,
        mistral,
    } = setup(backend).await;
    // `first` lists temperature only; the Mistral preset refuses logprobs.
    let body = chat(
        "test/pair",
        json!({"logprobs": true, "provider": {"require_parameters": true}}),
    );
    let response = app.post_chat(&body).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], 404, "{body}");
    assert_eq!(
        error["metadata"]["filter"],
        "provider.require_parameters: a sampling parameter is not supported",
        "{body}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("test/pair"),
        "{body}"
    );
    assert!(first.received().is_empty() && mistral.received().is_empty());

    let without = chat("test/pair", json!({"logprobs": true}));
    assert_eq!(
        served_by(&app, &without).await,
        "first",
        "without require_parameters it is dropped instead"
    );
    assert!(first.received()[0].body.get("logprobs").is_none());
}

async fn reasoning_goes_only_to_endpoints_that_list_it_unless_switched_off(backend: Backend) {
    let Setup {
        app,
        first,
        mistral,
    } = setup(backend).await;
    let wants = chat("test/thinker", json!({"reasoning": {"effort": "high"}}));
    assert_eq!(served_by(&app, &wants).await, "mistral");
    assert_eq!(mistral.received()[0].body["reasoning_effort"], "high");
    assert!(first.received().is_empty());

    let off = chat("test/thinker", json!({"reasoning": {"effort": "none"}}));
    assert_eq!(served_by(&app, &off).await, "first");
    let disabled = chat("test/thinker", json!({"reasoning": {"enabled": false}}));
    assert_eq!(served_by(&app, &disabled).await, "first");

    let response = app
        .post_chat(&chat(
            "test/pair",
            json!({"reasoning": {"max_tokens": 500}}),
        ))
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["metadata"]["filter"], "reasoning is not supported",
        "{body}"
    );
}

async fn the_model_list_reports_explicit_sampling_lists(backend: Backend) {
    let Setup { app, .. } = setup(backend).await;
    let body: Value = app.get("/v1/models").await.json().await.unwrap();
    let supported = |id: &str| -> Vec<String> {
        let model = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|model| model["id"] == id)
            .unwrap();
        model["supported_parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap().to_owned())
            .collect()
    };
    let pair = supported("test/pair");
    for expected in ["max_tokens", "stream", "temperature", "seed"] {
        assert!(pair.contains(&expected.to_owned()), "{pair:?}");
    }
    for absent in ["top_p", "stop", "top_k"] {
        assert!(!pair.contains(&absent.to_owned()), "{pair:?}");
    }
    let implicit = supported("test/preset");
    for expected in ["temperature", "top_p", "stop"] {
        assert!(implicit.contains(&expected.to_owned()), "{implicit:?}");
    }
}
