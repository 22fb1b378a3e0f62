//! An in-process upstream for any provider's wire format: it records every request (method, path
//! with query, headers, body) and answers with scripted bytes, so each adapter's tests replay that
//! provider's documented bodies and streams (usually from `tests/fixtures/<provider>/`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::net::TcpListener;

/// One scripted answer: status, headers and a body sent in pieces.
#[derive(Clone)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Sent in order, each after its pause; a stream is several pieces.
    pub pieces: Vec<(Duration, Bytes)>,
}

impl Script {
    /// A whole body at once with this content type.
    pub fn body(status: u16, content_type: &str, body: impl Into<Bytes>) -> Script {
        Script {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            pieces: vec![(Duration::ZERO, body.into())],
        }
    }

    /// A JSON body.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Script {
        Script::body(status, "application/json", body)
    }

    /// An SSE stream sent one event (`\n\n`-terminated block) at a time, with a short pause
    /// between events so the gateway sees them arrive separately.
    pub fn sse(text: &str) -> Script {
        let pieces = split_events(text)
            .into_iter()
            .map(|event| (Duration::from_millis(5), Bytes::from(event)))
            .collect();
        Script {
            status: 200,
            headers: vec![("content-type", "text/event-stream".to_owned())],
            pieces,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Script {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Splits SSE text into its events, each keeping its terminating blank line.
fn split_events(text: &str) -> Vec<String> {
    let normalized = text.replace("\r\n", "\n");
    normalized
        .split_inclusive("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

struct Shared {
    script: Mutex<Script>,
    recorded: Mutex<Vec<Recorded>>,
}

#[derive(Clone)]
pub struct ScriptedUpstream {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:{port}`, without a path.
    pub base_url: String,
}

impl ScriptedUpstream {
    pub async fn start(script: Script) -> ScriptedUpstream {
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            recorded: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(answer).with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        ScriptedUpstream {
            shared,
            base_url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn set(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// The one request received so far.
    pub fn only_request(&self) -> Recorded {
        let recorded = self.recorded();
        assert_eq!(recorded.len(), 1, "expected exactly one upstream request");
        recorded.into_iter().next().unwrap()
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    shared.recorded.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    let script = shared.script.lock().unwrap().clone();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for (pause, piece) in script.pieces {
            tokio::time::sleep(pause).await;
            if sender.send(Ok(piece)).await.is_err() {
                return;
            }
        }
    });
    let pieces = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    });
    let body = Body::from_stream(pieces);
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(script.status).unwrap();
    for (name, value) in script.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
