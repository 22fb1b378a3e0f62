//! `spawn_app()`: the gateway on a random port over a fresh database, with a key ready to use,
//! and the macro that runs a test against both SQLite and Postgres.

use chrono::{DateTime, Utc};
use serde_json::Value;
use switchyard::app::App;
use switchyard::clock::WallClock;
use switchyard::config::{ConfigSource, LoadedConfig};
use switchyard::state::AppState;
use switchyard::store::GenerationRow;
use tokio::sync::oneshot;

use crate::db::{Backend, fresh_database_url};
use crate::upstream::MockUpstream;

/// Runs each named `async fn name(backend: Backend)` once per database backend, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::db::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::db::Backend::Postgres).await;
            }
        }
    )*};
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// A valid key for the `Authorization` header.
    pub key: String,
    pub key_hash: String,
    /// The app's database, for tests that read or seed it with plain SQL.
    pub database_url: String,
    pub state: AppState,
    /// The clock the app judges limits, periods and expiry by.
    pub clock: WallClock,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Extra config: lines for `[server]` and whole tables appended after the defaults.
#[derive(Default)]
pub struct Extra<'a> {
    pub server: &'a str,
    /// Lines for `[database]`, after its `url` and `flush_interval`.
    pub database: &'a str,
    pub tables: String,
    /// The app's clock; [`test_clock`] when `None`.
    pub clock: Option<WallClock>,
}

/// The instant every test app's clock starts at, so no outcome depends on the day the suite
/// runs: `SWITCHYARD_TEST_NOW` (RFC 3339) when set, to run the suite at a chosen instant (a
/// midnight, a month end); otherwise a plain Wednesday noon.
pub fn test_start() -> DateTime<Utc> {
    let text = std::env::var("SWITCHYARD_TEST_NOW").unwrap_or_else(|_| DEFAULT_START.to_owned());
    DateTime::parse_from_rfc3339(&text)
        .unwrap_or_else(|error| panic!("SWITCHYARD_TEST_NOW={text:?} is not RFC 3339: {error}"))
        .to_utc()
}

const DEFAULT_START: &str = "2026-06-10T12:00:00Z";

/// A clock that reads [`test_start`] now and runs on at the system's pace.
pub fn test_clock() -> WallClock {
    WallClock::starting_at(test_start())
}

/// The mock provider and its `switchyard/echo` model at $1/M in and $2/M out, which every test
/// app serves.
pub const ECHO_TABLES: &str = r#"
[[providers]]
id = "mock"
kind = "mock"

[[models]]
id = "switchyard/echo"
context_length = 128000
  [[models.endpoints]]
  provider = "mock"
  upstream = "echo"
  prompt = "1"
  completion = "2"
  max_output = 16384
"#;

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Extra::default()).await
}

pub async fn spawn_app_with(backend: Backend, extra: Extra<'_>) -> TestApp {
    let database = fresh_database_url(backend).await;
    spawn_app_on(&database, extra).await
}

/// The app on an existing database: a second replica beside one already running, for example.
pub async fn spawn_app_on(database: &str, extra: Extra<'_>) -> TestApp {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[database]
url = "{database}"
flush_interval = "20ms"
{database_extra}

{echo}
{tables}
"#,
        server = extra.server,
        echo = ECHO_TABLES,
        database_extra = extra.database,
        tables = extra.tables,
    );
    let config = switchyard::config::from_text(&text, "test config", &|_| None)
        .expect("test config is valid");
    let loaded = LoadedConfig {
        config,
        source: ConfigSource::EmbeddedDefault,
    };
    let clock = extra.clock.unwrap_or_else(test_clock);
    let app = App::build_with_clock(loaded, clock.clone())
        .await
        .expect("the app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let created = state
        .keys
        .create("test", None, None, None)
        .await
        .expect("a key is created");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        key: created.key,
        key_hash: created.row.hash,
        database_url: database.to_owned(),
        state,
        clock,
        stop: Some(stop),
        server: Some(server),
    }
}

/// The app with extra config tables (providers, models) after the defaults.
pub async fn spawn_app_with_tables(backend: Backend, tables: String) -> TestApp {
    spawn_app_with(
        backend,
        Extra {
            tables,
            ..Extra::default()
        },
    )
    .await
}

/// Config tables for an `openai-compatible` provider at `upstream` serving `model`, with short
/// timeouts so failure tests finish quickly.
pub fn upstream_tables(upstream: &MockUpstream, provider: &str, model: &str) -> String {
    format!(
        r#"
[[providers]]
id = "{provider}"
kind = "openai-compatible"
base_url = "{base_url}"
api_key = "sk-upstream-secret-{provider}"
first_token_timeout = "2s"
idle_timeout = "2s"
request_timeout = "5s"

[[models]]
id = "{model}"
context_length = 8192
  [[models.endpoints]]
  provider = "{provider}"
  upstream = "{provider}-upstream-name"
  prompt = "3"
  completion = "15"
  cache_read = "0.3"
  max_output = 4096
"#,
        base_url = upstream.base_url,
    )
}

impl TestApp {
    pub async fn post_chat(&self, body: &Value) -> reqwest::Response {
        self.post_chat_as(&self.key, body).await
    }

    /// A chat completion with another key than the app's own.
    pub async fn post_chat_as(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("the gateway answers")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// Waits until every usage row recorded so far is in the database.
    pub async fn flush(&self) {
        self.state.generations.flush().await;
    }

    pub async fn generation_row(&self, id: &str) -> GenerationRow {
        self.flush().await;
        self.state
            .store
            .generation(id, &self.key_hash)
            .await
            .unwrap()
            .expect("the generation is recorded")
    }

    /// Stops the server the way SIGTERM does, and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// Reads an SSE body into its `data:` payloads (parsed JSON, or the literal `[DONE]`).
pub async fn sse_events(response: reqwest::Response) -> Vec<Value> {
    parse_sse(&response.text().await.unwrap())
}

pub fn parse_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|data| {
            if data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}
