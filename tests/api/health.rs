//! Endpoint health through the gateway: two mock upstreams serve one model, and the one that
//! fails is failed over, then taken out of rotation by its circuit breaker until its cool-down
//! (or its `Retry-After`) has passed; the endpoints API shows what the tracker saw.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{TestApp, spawn_app_with_tables};
use crate::on_both_backends;
use crate::upstream::{Behaviour, MockUpstream};

on_both_backends!(
    a_failing_endpoint_is_failed_over_then_left_out_once_its_breaker_opens,
    a_rate_limit_with_retry_after_keeps_the_endpoint_out_until_then,
    with_every_endpoint_open_the_gateway_answers_503_then_recovers_after_the_cool_down,
    the_endpoints_api_shows_status_uptime_and_latency_after_traffic,
    the_callers_mistakes_never_take_an_endpoint_out,
    a_stream_that_fails_after_its_first_chunk_counts_against_its_endpoint,
    a_hanging_endpoint_times_out_and_the_other_answers,
    a_connection_broken_mid_answer_fails_over,
    without_fallbacks_the_listed_endpoints_error_is_the_answer,
    no_failover_once_the_first_chunk_has_gone_out,
    a_refused_credential_is_the_answer_not_a_reason_to_fail_over,
);

const MODEL: &str = "test/pair";

/// `test/pair` served by providers `a` and `b` at the same price (each giving up on an answer after
/// 500 ms), with `health` as the `[health]` table.
async fn setup(backend: Backend, a: Behaviour, b: Behaviour, health: &str) -> Setup {
    let (a, b) = (MockUpstream::start(a).await, MockUpstream::start(b).await);
    let provider = |id: &str, upstream: &MockUpstream| {
        format!(
            "[[providers]]\nid = \"{id}\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\napi_key = \"sk-{id}\"\nfirst_token_timeout = \"500ms\"\n",
            upstream.base_url
        )
    };
    let endpoint = |id: &str| {
        format!(
            "  [[models.endpoints]]\n  provider = \"{id}\"\n  upstream = \"{id}-model\"\n  prompt = \"1\"\n  completion = \"2\"\n"
        )
    };
    let tables = [
        format!("[health]\n{health}\n"),
        provider("a", &a),
        provider("b", &b),
        format!("[[models]]\nid = \"{MODEL}\"\ncontext_length = 8192\n"),
        endpoint("a"),
        endpoint("b"),
    ]
    .join("\n");
    Setup {
        app: spawn_app_with_tables(backend, tables).await,
        a,
        b,
    }
}

struct Setup {
    app: TestApp,
    a: MockUpstream,
    b: MockUpstream,
}

fn chat(provider: Value) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "provider": provider})
}

fn failing(status: u16, retry_after: Option<&'static str>) -> Behaviour {
    Behaviour::Fail {
        status,
        message: "upstream trouble",
        retry_after,
    }
}

async fn served_by(app: &TestApp, provider: Value) -> String {
    let response = app.post_chat(&chat(provider)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["provider"].as_str().unwrap().to_owned()
}

/// Asks for `a` alone until it answers 200, for at most five seconds.
async fn until_a_answers(app: &TestApp) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = app.post_chat(&chat(json!({"only": ["a"]}))).await;
        if response.status() == 200 {
            return Instant::now();
        }
        assert_eq!(response.status(), 503, "only the breaker may refuse");
        assert!(Instant::now() < deadline, "endpoint a never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_failing_endpoint_is_failed_over_then_left_out_once_its_breaker_opens(backend: Backend) {
    let Setup { app, a, b } = setup(
        backend,
        failing(500, None),
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    let a_first = json!({"order": ["a", "b"]});
    assert_eq!(served_by(&app, a_first.clone()).await, "b", "failed over");
    for _ in 0..2 {
        let response = app.post_chat(&chat(json!({"only": ["a"]}))).await;
        assert_eq!(response.status(), 502);
    }
    assert_eq!(
        a.received().len(),
        3,
        "three failures in a row open the breaker"
    );
    for _ in 0..3 {
        assert_eq!(served_by(&app, a_first.clone()).await, "b");
    }
    assert_eq!(a.received().len(), 3, "an open endpoint is not even tried");
    assert_eq!(b.received().len(), 4);
}

async fn a_rate_limit_with_retry_after_keeps_the_endpoint_out_until_then(backend: Backend) {
    let Setup { app, a, .. } = setup(
        backend,
        failing(429, Some("1")),
        Behaviour::Reply { text: "from b" },
        "cool_down = \"100ms\"",
    )
    .await;
    let limited = Instant::now();
    assert_eq!(served_by(&app, json!({"order": ["a", "b"]})).await, "b");
    let response = app.post_chat(&chat(json!({"only": ["a"]}))).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    a.set(Behaviour::Reply { text: "from a" });
    let back = until_a_answers(&app).await;
    assert!(
        back.duration_since(limited) >= Duration::from_millis(900),
        "the endpoint came back before its Retry-After, not after the shorter cool-down"
    );
    assert_eq!(a.received().len(), 2, "one rate limit, then one probe");
}

async fn with_every_endpoint_open_the_gateway_answers_503_then_recovers_after_the_cool_down(
    backend: Backend,
) {
    let Setup { app, a, b } = setup(
        backend,
        failing(503, None),
        failing(500, None),
        "cool_down = \"300ms\"",
    )
    .await;
    for _ in 0..3 {
        let response = app.post_chat(&chat(json!({}))).await;
        assert_eq!(response.status(), 502);
    }
    let response = app.post_chat(&chat(json!({}))).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 503, "{body}");
    assert_eq!((a.received().len(), b.received().len()), (3, 3));

    a.set(Behaviour::Reply { text: "from a" });
    until_a_answers(&app).await;
    assert_eq!(
        served_by(&app, json!({"only": ["a"]})).await,
        "a",
        "closed again"
    );
}

async fn the_endpoints_api_shows_status_uptime_and_latency_after_traffic(backend: Backend) {
    let Setup { app, .. } = setup(
        backend,
        failing(500, None),
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    assert_eq!(served_by(&app, json!({"order": ["a", "b"]})).await, "b");
    for _ in 0..2 {
        app.post_chat(&chat(json!({"only": ["a"]}))).await;
    }
    for prefix in ["/v1", "/api/v1"] {
        let response = app.get(&format!("{prefix}/models/{MODEL}/endpoints")).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let data = &body["data"];
        assert_eq!(data["id"], MODEL);
        let [a, b] = data["endpoints"].as_array().unwrap().as_slice() else {
            panic!("{body}");
        };
        assert_eq!(a["provider_name"], "a");
        assert_eq!(a["status"], -3, "open: {a}");
        assert_eq!(a["uptime_last_5m"], 0.0);
        assert!(a["latency_last_30m"].is_null());
        assert_eq!(b["status"], 0, "{b}");
        assert_eq!(b["uptime_last_30m"], 100.0);
        assert_eq!(b["pricing"]["prompt"], "0.000001");
        assert_eq!(b["context_length"], 8192);
        assert!(b["latency_last_30m"]["p50"].as_f64().unwrap() > 0.0, "{b}");
        assert!(b["throughput_last_30m"]["p90"].is_number(), "{b}");
        assert!(b["uptime_last_1d"].is_number());
    }
    let missing = app.get("/v1/models/nobody/nothing/endpoints").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], 404);
}

async fn the_callers_mistakes_never_take_an_endpoint_out(backend: Backend) {
    let Setup { app, a, .. } = setup(
        backend,
        failing(400, None),
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    for _ in 0..5 {
        let response = app.post_chat(&chat(json!({"only": ["a"]}))).await;
        assert_eq!(response.status(), 400, "never 503");
    }
    assert_eq!(a.received().len(), 5);
}

async fn a_stream_that_fails_after_its_first_chunk_counts_against_its_endpoint(backend: Backend) {
    let Setup { app, a, .. } = setup(
        backend,
        // An error event rather than a broken connection, which the gateway's pool might
        // still hand to the next request as a connection failure before any chunk.
        Behaviour::ErrorMidStream {
            deltas: vec!["partial"],
        },
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    let streamed = |provider| {
        let mut request = chat(provider);
        request["stream"] = json!(true);
        request
    };
    for _ in 0..3 {
        let response = app.post_chat(&streamed(json!({"only": ["a"]}))).await;
        assert_eq!(response.status(), 200, "the first chunk had gone out");
        response.text().await.unwrap();
    }
    let response = app.post_chat(&streamed(json!({"only": ["a"]}))).await;
    assert_eq!(response.status(), 503);
    assert_eq!(a.received().len(), 3);
}

async fn a_hanging_endpoint_times_out_and_the_other_answers(backend: Backend) {
    let Setup { app, a, b } = setup(
        backend,
        Behaviour::Hang,
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    let started = Instant::now();
    assert_eq!(served_by(&app, json!({"order": ["a", "b"]})).await, "b");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "a was waited for first"
    );
    assert_eq!((a.received().len(), b.received().len()), (1, 1));
}

async fn a_connection_broken_mid_answer_fails_over(backend: Backend) {
    let Setup { app, a, b } = setup(
        backend,
        Behaviour::DieMidStream {
            deltas: vec!["half an"],
        },
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    // Non-streaming: nothing has reached the client when a's answer breaks, so b is tried.
    assert_eq!(served_by(&app, json!({"order": ["a", "b"]})).await, "b");
    assert_eq!((a.received().len(), b.received().len()), (1, 1));
}

async fn without_fallbacks_the_listed_endpoints_error_is_the_answer(backend: Backend) {
    let Setup { app, a, b } = setup(
        backend,
        failing(503, None),
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    let response = app
        .post_chat(&chat(json!({"order": ["a"], "allow_fallbacks": false})))
        .await;
    assert_eq!(response.status(), 502, "a's failure, mapped");
    let body: Value = response.json().await.unwrap();
    let attempts = &body["error"]["metadata"]["attempts"];
    assert_eq!(attempts.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(attempts[0]["provider"], "a");
    assert_eq!((a.received().len(), b.received().len()), (1, 0));
}

async fn no_failover_once_the_first_chunk_has_gone_out(backend: Backend) {
    let Setup { app, a, b } = setup(
        backend,
        Behaviour::ErrorMidStream {
            deltas: vec!["partial"],
        },
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    let mut request = chat(json!({"order": ["a", "b"]}));
    request["stream"] = json!(true);
    let response = app.post_chat(&request).await;
    assert_eq!(response.status(), 200);
    let events = crate::helpers::sse_events(response).await;
    assert!(
        events
            .iter()
            .any(|event| event["choices"][0]["delta"]["content"] == "partial"),
        "a's first chunks went out: {events:?}"
    );
    let error = events
        .iter()
        .find(|event| event.get("error").is_some())
        .expect("an error chunk");
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!((a.received().len(), b.received().len()), (1, 0));
}

async fn a_refused_credential_is_the_answer_not_a_reason_to_fail_over(backend: Backend) {
    let Setup { app, a, b } = setup(
        backend,
        failing(401, None),
        Behaviour::Reply { text: "from b" },
        "",
    )
    .await;
    let response = app.post_chat(&chat(json!({"order": ["a", "b"]}))).await;
    assert_eq!(
        response.status(),
        502,
        "the gateway's credential, not the caller's"
    );
    assert_eq!((a.received().len(), b.received().len()), (1, 0));
}
