//! Secrets stay secret: credentials an upstream repeats in its errors reach no client, generation
//! row or log line; every type that holds a secret prints it masked; a short admin token is
//! refused at startup; wrong admin tokens are logged without the token and, once they come often,
//! answered late.

use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard::config::{ConfigSource, LoadedConfig};
use tokio::net::TcpListener;

use crate::db::Backend;
use crate::helpers::{Extra, TestApp, parse_sse, spawn_app_with, spawn_app_with_tables};
use crate::on_both_backends;
use crate::scripted_upstream::{Script, ScriptedUpstream};

on_both_backends!(
    an_upstream_that_repeats_its_credentials_shows_them_to_no_client_row_or_log,
    a_key_repeated_in_an_error_event_mid_stream_is_masked,
);

/// Everything the gateway logs in this test process, at every level. The server runs on its own
/// threads, so only a global subscriber sees it.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn captured() -> Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            tracing_subscriber::fmt()
                .with_env_filter("switchyard=trace")
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            log
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The credential headers an upstream receives, and the query that Gemini-style APIs can carry a
/// key in.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
];

/// An upstream that refuses every request with a 400 whose message repeats the request's URI and
/// credential headers, in a body every adapter reads its error message from (OpenAI's, Azure's,
/// Anthropic's and Gemini's `error.message`, Bedrock's `message`).
async fn start_echo_upstream() -> String {
    async fn echo(uri: Uri, headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
        let mut message = format!("invalid request to {uri};");
        for name in CREDENTIAL_HEADERS {
            if let Some(value) = headers.get(name) {
                message.push_str(&format!(" {name}: {};", value.to_str().unwrap()));
            }
        }
        let error = json!({"type": "invalid_request_error", "code": 400, "message": message});
        let body = json!({"type": "error", "error": error, "message": message});
        (StatusCode::BAD_REQUEST, axum::Json(body))
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().fallback(echo);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base_url
}

/// Every credential the echo test configures. None is shaped like a key the scrubber would find
/// by its shape alone except the OpenAI and Anthropic ones, so the configured values are what
/// masks the rest.
const SECRETS: [&str; 7] = [
    "sk-echo-openai-Q7xV2mR9sKd3",
    "sk-ant-echo-W4nB8tY1pLc6",
    "azureEchoKey0H5jF2gD9",
    "AIzaEchoKey3Mv8Nq1Rw6",
    "AKIAECHOKEY7T2UX",
    "echo/Secret+Access9Key",
    "EchoSessionToken4Zp0Lk",
];

fn echo_tables(base_url: &str) -> String {
    let [
        openai,
        anthropic,
        azure,
        gemini,
        access_key,
        secret_key,
        session,
    ] = SECRETS;
    let providers = [
        (
            "openai",
            "openai-compatible",
            format!("base_url = \"{base_url}/v1\"\napi_key = \"{openai}\""),
        ),
        (
            "anthropic",
            "anthropic",
            format!("base_url = \"{base_url}\"\napi_key = \"{anthropic}\""),
        ),
        (
            "azure",
            "azure",
            format!("base_url = \"{base_url}\"\napi_key = \"{azure}\""),
        ),
        (
            "gemini",
            "gemini",
            format!("base_url = \"{base_url}/v1beta\"\napi_key = \"{gemini}\""),
        ),
        (
            "bedrock",
            "bedrock",
            format!(
                "base_url = \"{base_url}\"\nregion = \"us-west-2\"\naccess_key_id = \"{access_key}\"\n\
                 secret_access_key = \"{secret_key}\"\nsession_token = \"{session}\""
            ),
        ),
    ];
    providers
        .into_iter()
        .map(|(name, kind, settings)| {
            format!(
                r#"
[[providers]]
id = "echo-{name}"
kind = "{kind}"
{settings}
request_timeout = "5s"

[[models]]
id = "echo/{name}"
context_length = 8192
  [[models.endpoints]]
  provider = "echo-{name}"
  upstream = "{name}-model"
  prompt = "1"
  completion = "2"
"#
            )
        })
        .collect()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

fn generation_id(response: &reqwest::Response) -> String {
    response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn an_upstream_that_repeats_its_credentials_shows_them_to_no_client_row_or_log(
    backend: Backend,
) {
    let log = Log::captured();
    let upstream = start_echo_upstream().await;
    let app = spawn_app_with_tables(backend, echo_tables(&upstream)).await;
    for provider in ["openai", "anthropic", "azure", "gemini", "bedrock"] {
        for stream in [false, true] {
            let request = json!({
                "model": format!("echo/{provider}"),
                "messages": [{"role": "user", "content": "hi"}],
                "stream": stream,
            });
            let response = app.post_chat(&request).await;
            assert_eq!(response.status(), 400, "{provider}");
            let id = generation_id(&response);
            let body = response.text().await.unwrap();
            assert!(
                body.contains("upstream rejected the request: invalid request to"),
                "{provider}: the upstream's own words are kept: {body}"
            );
            assert!(body.contains("***"), "{provider}: {body}");
            assert_no_secret(&format!("the answer from {provider}"), &body);
            let row = app.generation_row(&id).await;
            assert_no_secret("the generation's error", row.error.as_deref().unwrap());
            assert_no_secret("the generation's attempts", &row.attempts);
        }
    }
    let log = log.text();
    assert!(log.contains("upstream rejected the request"), "{log}");
    assert_no_secret("the log", &log);
}

async fn a_key_repeated_in_an_error_event_mid_stream_is_masked(backend: Backend) {
    const KEY: &str = "anthropic-key-in-the-stream-5Fh2Jk";
    let error = json!({"type": "error", "error": {"type": "invalid_request_error",
        "message": format!("request rejected; it was sent with x-api-key: {KEY}")}});
    let stream = format!(
        "event: message_start\ndata: {}\n\nevent: content_block_start\ndata: {}\n\n\
         event: content_block_delta\ndata: {}\n\nevent: error\ndata: {error}\n\n",
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude",
            "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"}}),
    );
    let upstream = ScriptedUpstream::start(Script::sse(&stream)).await;
    let tables = format!(
        r#"
[[providers]]
id = "anthropic"
kind = "anthropic"
base_url = "{base_url}"
api_key = "{KEY}"

[[models]]
id = "anthropic/claude"
  [[models.endpoints]]
  provider = "anthropic"
  upstream = "claude"
  prompt = "3"
  completion = "15"
"#,
        base_url = upstream.base_url,
    );
    let app = spawn_app_with_tables(backend, tables).await;
    let request = json!({"model": "anthropic/claude", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = app.post_chat(&request).await;
    assert_eq!(
        response.status(),
        200,
        "the first chunk had already gone out"
    );
    let id = generation_id(&response);
    let events = parse_sse(&response.text().await.unwrap());
    let error = events
        .iter()
        .find(|event| event.get("error").is_some())
        .unwrap_or_else(|| panic!("no error chunk: {events:?}"));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.ends_with("x-api-key: ***"), "{message}");
    let row = app.generation_row(&id).await;
    let stored = row.error.unwrap();
    assert!(!stored.contains(KEY), "{stored}");
    assert!(!row.attempts.contains(KEY), "{}", row.attempts);
}

const ADMIN_TOKEN: &str = "admin-token-for-the-secrets-tests-8Kd2";

async fn admin_app() -> TestApp {
    let server = format!("admin_token = \"{ADMIN_TOKEN}\"");
    spawn_app_with(
        Backend::Sqlite,
        Extra {
            server: &server,
            ..Extra::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_that_holds_a_secret_prints_it_masked() {
    let text = r#"
        [server]
        admin_token = "admin-secret-that-must-not-print-0001"
        [database]
        url = "postgres://app:db/pass#word@db/switchyard?sslmode=require"
        [redis]
        url = "redis://:redis-pass@cache:6379"
        [[providers]]
        id = "openai"
        kind = "openai"
        api_key = "openai-secret-value"
        [[providers]]
        id = "bedrock"
        kind = "bedrock"
        region = "us-east-1"
        access_key_id = "AKIAPRINTSECRET"
        secret_access_key = "aws-secret-value"
        session_token = "aws-session-value"
    "#;
    let config = switchyard::config::from_text(text, "secrets.toml", &|_| None).unwrap();
    let loaded = LoadedConfig {
        config,
        source: ConfigSource::EmbeddedDefault,
    };
    let app = admin_app().await;
    let created = app
        .state
        .keys
        .create("printed", None, None, None)
        .await
        .unwrap();
    let printed = [
        format!("{loaded:?}"),
        format!("{loaded:#?}"),
        format!("{:?}", app.state.admin),
        format!("{created:?}"),
        format!("{created:#?}"),
    ]
    .join("\n");
    for secret in [
        "admin-secret-that-must-not-print-0001",
        "db/pass#word",
        "pass#word",
        "redis-pass",
        "openai-secret-value",
        "AKIAPRINTSECRET",
        "aws-secret-value",
        "aws-session-value",
        ADMIN_TOKEN,
        created.key.as_str(),
    ] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
    assert!(printed.contains(&created.row.hash), "the row still prints");
}

/// `check` and `serve` both load the config, so both refuse a short admin token before anything
/// else happens.
#[test]
fn check_and_serve_refuse_an_admin_token_shorter_than_32_characters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"short-Tok3n\"\n",
    )
    .unwrap();
    for command in ["check", "serve"] {
        let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg(command)
            .arg("--config")
            .arg(&path)
            .env_remove("SWITCHYARD_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command} must fail: {stderr}");
        assert!(
            stderr.contains("short.toml:3:15: server.admin_token: must be at least 32 characters"),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains("short-Tok3n"), "{command}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_tokens_are_logged_without_the_token_and_answered_late_past_ten() {
    let log = Log::captured();
    let app = admin_app().await;
    let wrong = "wrong-admin-token-guess-0000000000000";
    let list = |token: &'static str| {
        app.client
            .request(Method::GET, format!("{}/v1/keys", app.base))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..10 {
        assert_eq!(list(wrong).await.unwrap().status(), 401);
    }
    for at_least in [100, 200] {
        let started = Instant::now();
        assert_eq!(list(wrong).await.unwrap().status(), 401);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(at_least),
            "answered after {waited:?}"
        );
    }
    assert_eq!(list(ADMIN_TOKEN).await.unwrap().status(), 200);
    let log = log.text();
    let warnings = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("wrong admin token"))
        .collect::<Vec<_>>();
    assert_eq!(warnings.len(), 12, "{log}");
    assert!(warnings[11].contains("failures=12"), "{}", warnings[11]);
    assert!(warnings[11].contains("path=/v1/keys"), "{}", warnings[11]);
    assert!(warnings[11].contains("peer=127.0.0.1:"), "{}", warnings[11]);
    assert!(!log.contains(wrong), "{log}");
    assert!(!log.contains(ADMIN_TOKEN), "{log}");
}
