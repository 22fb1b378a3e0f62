//! `server.cors_origins`: CORS is off by default and answers only the listed origins.

use reqwest::Method;
use serde_json::json;

use crate::db::Backend;
use crate::helpers::{Extra, TestApp, spawn_app, spawn_app_with};

const APP: &str = "https://app.example.com";

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}/v1/chat/completions", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

async fn chat_from(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&app.key)
        .header("origin", origin)
        .json(&json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

fn allowed_origin(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|value| value.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_origins_are_listed() {
    let app = spawn_app(Backend::Sqlite).await;
    let refused = preflight(&app, APP).await;
    assert_eq!(allowed_origin(&refused), None);
    assert_eq!(refused.status(), 405, "no CORS layer answers the preflight");
    let answered = chat_from(&app, APP).await;
    assert_eq!(answered.status(), 200);
    assert_eq!(allowed_origin(&answered), None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_get_preflights_and_headers_and_others_do_not() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Extra {
            server: r#"cors_origins = ["https://app.example.com"]"#,
            ..Extra::default()
        },
    )
    .await;
    let allowed = preflight(&app, APP).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed_origin(&allowed), Some(APP));
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    let answered = chat_from(&app, APP).await;
    assert_eq!(allowed_origin(&answered), Some(APP));
    let exposed = answered.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains("x-generation-id"), "{exposed}");

    let other = preflight(&app, "https://evil.example.com").await;
    assert_eq!(allowed_origin(&other), None);
    let other = chat_from(&app, "https://evil.example.com").await;
    assert_eq!(allowed_origin(&other), None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_allows_any_origin() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Extra {
            server: r#"cors_origins = ["*"]"#,
            ..Extra::default()
        },
    )
    .await;
    let allowed = preflight(&app, "https://anywhere.example").await;
    assert_eq!(allowed_origin(&allowed), Some("*"));
    app.stop().await;
}
