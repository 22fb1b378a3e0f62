//! Chunk stream → SSE body. While the first upstream event is awaited the response head is held
//! back (so failures stay real HTTP errors); past `sse_keepalive` the head is committed and
//! `: keep-alive` comments flow until data does, and again whenever the stream goes quiet.
//! Every stream ends with `data: [DONE]`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use tokio::time::{Instant, Sleep, sleep};

use super::chat_completions::with_generation_id;
use crate::chat::{ChatStream, error_chunk};
use crate::error::ApiError;
use crate::openai::ChatChunk;

#[derive(Debug, Clone, Copy)]
pub struct SseSettings {
    pub keepalive: Duration,
}

type Opening = Pin<Box<dyn Future<Output = Result<ChatStream, ApiError>> + Send>>;

enum Phase {
    Waiting(Opening),
    Streaming(Box<ChatStream>),
    Done,
}

struct SseBody {
    phase: Phase,
    id: Arc<str>,
    keepalive: Duration,
    timer: Pin<Box<Sleep>>,
}

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

pub async fn respond(
    id: Arc<str>,
    opening: impl Future<Output = Result<ChatStream, ApiError>> + Send + 'static,
    settings: SseSettings,
) -> Response {
    let mut opening: Opening = Box::pin(opening);
    let phase = match tokio::time::timeout(settings.keepalive, &mut opening).await {
        Ok(Ok(stream)) => Phase::Streaming(Box::new(stream)),
        Ok(Err(error)) => {
            let mut response = error.into_response();
            with_generation_id(&mut response, &id);
            return response;
        }
        Err(_) => Phase::Waiting(opening),
    };
    let body = SseBody {
        phase,
        id: id.clone(),
        keepalive: settings.keepalive,
        timer: Box::pin(sleep(settings.keepalive)),
    };
    let frames = futures_util::stream::unfold(body, |mut body| async move {
        let frame = body.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), body))
    });
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_generation_id(&mut response, &id);
    response
}

impl SseBody {
    async fn next_frame(&mut self) -> Option<Bytes> {
        self.timer.as_mut().reset(Instant::now() + self.keepalive);
        loop {
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Waiting(opening) => {
                    tokio::select! {
                        opened = opening => match opened {
                            Ok(stream) => self.phase = Phase::Streaming(Box::new(stream)),
                            Err(error) => {
                                let chunk = ChatChunk::empty(&self.id, chrono::Utc::now().timestamp(), "", None);
                                self.phase = Phase::Done;
                                return Some(frame_with_done(&error_chunk(chunk, &error)));
                            }
                        },
                        () = &mut self.timer => return Some(Bytes::from_static(KEEP_ALIVE)),
                    }
                }
                Phase::Streaming(stream) => {
                    tokio::select! {
                        chunk = stream.next() => return Some(match chunk {
                            Some(chunk) => frame(&chunk),
                            None => {
                                self.phase = Phase::Done;
                                Bytes::from_static(DONE)
                            }
                        }),
                        () = &mut self.timer => return Some(Bytes::from_static(KEEP_ALIVE)),
                    }
                }
            }
        }
    }
}

fn frame(chunk: &ChatChunk) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut out, chunk).is_err() {
        return Bytes::new();
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn frame_with_done(chunk: &ChatChunk) -> Bytes {
    let mut out = frame(chunk).to_vec();
    out.extend_from_slice(DONE);
    Bytes::from(out)
}
