//! An in-process OpenAI-compatible upstream on a random port. It speaks the wire format of
//! https://platform.openai.com/docs/api-reference/chat (bodies, SSE chunks ending in
//! `data: [DONE]`, `{"error": {...}}` errors), and each test scripts how it behaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// How the upstream answers the next requests.
#[derive(Clone)]
pub enum Behaviour {
    /// A normal completion saying `text`, with usage 10 prompt / 5 completion (3 cached).
    Reply { text: &'static str },
    /// The given status with an OpenAI error body.
    Fail {
        status: u16,
        message: &'static str,
        retry_after: Option<&'static str>,
    },
    /// Never answers.
    Hang,
    /// A role chunk, these deltas, then a finish chunk, a usage chunk and `[DONE]`. Before each
    /// frame whose index is in `gates` (0 is the role chunk, 1 the first delta, ...), the
    /// upstream waits for [`MockUpstream::release`].
    Stream {
        deltas: Vec<&'static str>,
        gates: Vec<usize>,
    },
    /// A role chunk and one `"first"` delta, then (once released) a `"more"` delta every few
    /// milliseconds until the gateway hangs up.
    Endless,
    /// A role chunk, then 4 KiB content deltas as fast as the gateway takes them, until it hangs
    /// up.
    Flood,
    /// A completion whose content is `bytes` long (a multiple of 64 KiB), made piece by piece as
    /// the gateway reads it, so the test never holds it; `declared` sends its `Content-Length`.
    /// Streamed, the content is one event after the role chunk. Sent with `status`, even an error.
    Oversized {
        bytes: usize,
        declared: bool,
        status: u16,
    },
    /// A stream that sends these deltas, then breaks the connection.
    DieMidStream { deltas: Vec<&'static str> },
    /// A stream that sends these deltas, then an in-stream OpenAI error event.
    ErrorMidStream { deltas: Vec<&'static str> },
}

#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub authorization: Option<String>,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    gate: Semaphore,
    dropped: Notify,
    /// Body bytes handed to the server so far: what the gateway read, plus what the sockets and
    /// buffers between them hold.
    sent: AtomicU64,
}

#[derive(Clone)]
pub struct MockUpstream {
    shared: Arc<Shared>,
    pub base_url: String,
}

impl MockUpstream {
    pub async fn start(behaviour: Behaviour) -> MockUpstream {
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            received: Mutex::new(Vec::new()),
            gate: Semaphore::new(0),
            dropped: Notify::new(),
            sent: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(answer))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        MockUpstream {
            shared,
            base_url: format!("http://127.0.0.1:{port}/v1"),
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Lets a gated stream send its next chunk.
    pub fn release(&self) {
        self.shared.gate.add_permits(1);
    }

    pub fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Resolves when a stream's body was dropped before it finished: the gateway hung up.
    pub async fn stream_dropped(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.shared.dropped.notified())
            .await
            .expect("the upstream stream was never cancelled");
    }
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let authorization = headers
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_owned());
    shared.received.lock().unwrap().push(Received {
        body: body.clone(),
        authorization,
    });
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let behaviour = shared.behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::Reply { text } => axum::Json(json!({
            "id": "chatcmpl-123", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        }))
        .into_response(),
        Behaviour::Fail { status, message, retry_after } => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})),
            )
                .into_response();
            if let Some(retry_after) = retry_after {
                response.headers_mut().insert("retry-after", retry_after.parse().unwrap());
            }
            response
        }
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Stream { deltas, gates } => sse(stream_frames(shared, model, deltas, gates, Ending::Done)),
        Behaviour::Endless => sse(endless_frames(shared, model)),
        Behaviour::Flood => sse(flood_frames(shared, model)),
        Behaviour::Oversized { bytes, declared, status } => {
            let mut response = oversized(shared, &model, bytes, declared, body["stream"] == true);
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
        }
        Behaviour::DieMidStream { deltas } => sse(stream_frames(shared, model, deltas, vec![], Ending::Break)),
        Behaviour::ErrorMidStream { deltas } => sse(stream_frames(shared, model, deltas, vec![], Ending::Error)),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Done,
    Break,
    Error,
}

fn chunk(model: &str, delta: Value, finish_reason: Value) -> Bytes {
    let chunk = json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]});
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// Notifies the test when dropped before the stream completed (the gateway cancelled it).
struct DropAlarm {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for DropAlarm {
    fn drop(&mut self) {
        if self.armed {
            self.shared.dropped.notify_one();
        }
    }
}

fn stream_frames(
    shared: Arc<Shared>,
    model: String,
    deltas: Vec<&'static str>,
    gates: Vec<usize>,
    ending: Ending,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    async_stream(move |tx| async move {
        let mut alarm = DropAlarm {
            shared: shared.clone(),
            armed: true,
        };
        let gate = |index: usize| {
            let shared = shared.clone();
            let gated = gates.contains(&index);
            async move {
                if gated {
                    shared.gate.acquire().await.unwrap().forget();
                }
            }
        };
        gate(0).await;
        let role = chunk(
            &model,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        );
        tx.send(Ok(role)).await.ok();
        for (index, delta) in deltas.iter().enumerate() {
            gate(index + 1).await;
            if tx
                .send(Ok(chunk(&model, json!({"content": delta}), Value::Null)))
                .await
                .is_err()
            {
                return;
            }
        }
        match ending {
            Ending::Break => {
                alarm.armed = false;
                // hyper abandons frames it has not written yet when the body fails, so the deltas
                // are given time to go out first: the stream dies mid-way, not before it began.
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.send(Err(std::io::Error::other("upstream died")))
                    .await
                    .ok();
                return;
            }
            Ending::Error => {
                let error = json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}});
                tx.send(Ok(Bytes::from(format!("data: {error}\n\n"))))
                    .await
                    .ok();
                alarm.armed = false;
                return;
            }
            Ending::Done => {}
        }
        tx.send(Ok(chunk(&model, json!({}), json!("stop"))))
            .await
            .ok();
        let usage = json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": deltas.len(), "total_tokens": 10 + deltas.len()}});
        tx.send(Ok(Bytes::from(format!(
            "data: {usage}\n\ndata: [DONE]\n\n"
        ))))
        .await
        .ok();
        alarm.armed = false;
    })
}

fn endless_frames(
    shared: Arc<Shared>,
    model: String,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    async_stream(move |tx| async move {
        let _alarm = DropAlarm {
            shared: shared.clone(),
            armed: true,
        };
        tx.send(Ok(chunk(
            &model,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )))
        .await
        .ok();
        tx.send(Ok(chunk(&model, json!({"content": "first"}), Value::Null)))
            .await
            .ok();
        shared.gate.acquire().await.unwrap().forget();
        loop {
            if tx
                .send(Ok(chunk(&model, json!({"content": "more"}), Value::Null)))
                .await
                .is_err()
            {
                return;
            }
            // Paced like a real model, so the gateway's hang-up is noticed mid-stream.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn flood_frames(
    shared: Arc<Shared>,
    model: String,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    async_stream(move |tx| async move {
        let _alarm = DropAlarm {
            shared: shared.clone(),
            armed: true,
        };
        let role = chunk(
            &model,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        );
        let delta = chunk(&model, json!({"content": "x".repeat(4096)}), Value::Null);
        let mut frame = role;
        while tx.send(Ok(frame)).await.is_ok() {
            frame = delta.clone();
        }
    })
}

/// 64 KiB of content, shared by every piece of an oversized answer.
static FILLER: [u8; 64 << 10] = [b'a'; 64 << 10];

fn oversized(
    shared: Arc<Shared>,
    model: &str,
    bytes: usize,
    declared: bool,
    stream: bool,
) -> Response {
    let (head, tail) = if stream {
        let role = chunk(
            model,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        );
        let head = format!(
            r#"{}data: {{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1700000000,"model":"{model}","choices":[{{"index":0,"delta":{{"content":""#,
            std::str::from_utf8(&role).unwrap()
        );
        let finish = chunk(model, json!({}), json!("stop"));
        let tail = format!(
            "\"}},\"finish_reason\":null}}]}}\n\n{}data: [DONE]\n\n",
            std::str::from_utf8(&finish).unwrap()
        );
        (head, tail)
    } else {
        let head = format!(
            r#"{{"id":"chatcmpl-123","object":"chat.completion","created":1700000000,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":""#
        );
        let tail = r#""},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#.to_owned();
        (head, tail)
    };
    let length = head.len() + bytes + tail.len();
    let pieces = async_stream(move |tx| async move {
        let pieces = std::iter::once(Bytes::from(head))
            .chain(std::iter::repeat_n(
                Bytes::from_static(&FILLER),
                bytes / FILLER.len(),
            ))
            .chain(std::iter::once(Bytes::from(tail)));
        for piece in pieces {
            let len = piece.len() as u64;
            if tx.send(Ok(piece)).await.is_err() {
                return;
            }
            shared.sent.fetch_add(len, Ordering::Relaxed);
        }
    });
    let mut response = Body::from_stream(pieces).into_response();
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    if declared {
        response
            .headers_mut()
            .insert("content-length", length.into());
    }
    response
}

/// A stream fed by a task through a channel of capacity 1, so the task runs only as fast as
/// the gateway reads; the task (and its alarm) is dropped when the body is.
fn async_stream<F, Fut>(
    produce: F,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(produce(tx));
    let abort = AbortOnDrop(task);
    futures_util::stream::unfold((rx, abort), |(mut rx, abort)| async move {
        rx.recv().await.map(|item| (item, (rx, abort)))
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn sse(
    frames: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut response = Body::from_stream(frames).into_response();
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}
