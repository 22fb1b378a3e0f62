//! `GET /v1/models` and the health endpoints.

use crate::db::Backend;
use crate::helpers::{Extra, TestApp, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    models_list_openai_and_openrouter_fields,
    health_endpoints_answer,
    a_private_catalog_needs_a_key,
);

async fn a_private_catalog_needs_a_key(backend: Backend) {
    let anonymous =
        |app: &TestApp, path: &str| app.client.get(format!("{}{path}", app.base)).send();
    let public = spawn_app(backend).await;
    let paths = ["/v1/models", "/api/v1/models/switchyard/echo/endpoints"];
    for path in paths {
        let response = anonymous(&public, path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let private = spawn_app_with(
        backend,
        Extra {
            server: "public_catalog = false",
            ..Extra::default()
        },
    )
    .await;
    for path in paths {
        let refused = anonymous(&private, path).await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let error: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], 401);
        assert_eq!(private.get(path).await.status(), 200, "{path} with a key");
    }
}

async fn models_list_openai_and_openrouter_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let body: serde_json::Value = app.get("/v1/models").await.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let echo = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "switchyard/echo")
        .unwrap();
    assert_eq!(echo["object"], "model");
    assert_eq!(echo["owned_by"], "switchyard");
    assert!(echo["created"].is_i64());
    assert_eq!(echo["context_length"], 128000);
    assert_eq!(echo["pricing"]["prompt"], "0.000001");
    assert_eq!(echo["pricing"]["completion"], "0.000002");
    assert_eq!(echo["top_provider"]["max_completion_tokens"], 16384);
    assert!(
        echo["supported_parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "max_tokens")
    );
}

async fn health_endpoints_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let ready: serde_json::Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["usage_queue"]["shedding"], false);
    assert_eq!(ready["usage_queue"]["shed"], 0);
}
