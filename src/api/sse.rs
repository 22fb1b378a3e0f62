//! Chunk stream → SSE body. While the first upstream event is awaited the response head is held
//! back (so failures stay real HTTP errors); past `sse_keepalive` the head is committed and
//! `: keep-alive` comments flow until data does, and again whenever the stream goes quiet.
//! Every stream ends with `data: [DONE]`.
//!
//! A task of its own drives the stream and hands frames to the response body through a short
//! queue. hyper polls a body only while it can write, so a client that stops reading would
//! otherwise stop the stream with it, holding the upstream connection open and the generation
//! unsettled for as long as the client liked. The task stops reading the upstream while the queue
//! is full, and when the client has taken nothing for as long as the upstream may stay silent (the
//! provider's `idle_timeout`, within its `request_timeout`) it closes the upstream and the
//! generation is recorded as cancelled.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use http::{HeaderValue, header};
use tokio::sync::mpsc;
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

/// The stream's frames as they are produced.
struct Events {
    phase: Phase,
    id: Arc<str>,
    keepalive: Duration,
    /// The keep-alive interval while frames are produced, the client's deadline while the queue
    /// is full: one timer, reset, serves both.
    timer: Pin<Box<Sleep>>,
}

enum Frame {
    KeepAlive,
    Data(Bytes),
}

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

/// Frames that may wait for the client before the upstream is read no further: what an upstream
/// sent at once still goes out in one write, and a client that stops reading holds few.
const QUEUED: usize = 32;

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
    let events = Events {
        phase,
        id: id.clone(),
        keepalive: settings.keepalive,
        timer: Box::pin(sleep(settings.keepalive)),
    };
    let (queue, frames) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        pump: AtomicWaker::new(),
    });
    Pump {
        events,
        queue,
        shared: shared.clone(),
    }
    .start();
    let mut response = Body::new(Frames { frames, shared }).into_response();
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

impl Events {
    async fn next_frame(&mut self) -> Option<Frame> {
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
                                return Some(Frame::Data(frame_with_done(&error_chunk(chunk, &error))));
                            }
                        },
                        () = &mut self.timer => return Some(Frame::KeepAlive),
                    }
                }
                Phase::Streaming(stream) => {
                    tokio::select! {
                        chunk = stream.next() => return Some(Frame::Data(match chunk {
                            Some(chunk) => frame(&chunk),
                            None => {
                                self.phase = Phase::Done;
                                Bytes::from_static(DONE)
                            }
                        })),
                        () = &mut self.timer => return Some(Frame::KeepAlive),
                    }
                }
            }
        }
    }

    /// How long the client may take to make room in a full queue.
    fn hand_over_deadline(&self) -> Instant {
        let now = Instant::now();
        match &self.phase {
            Phase::Streaming(stream) => stream.idle_deadline(now),
            // Before the stream opens only keep-alive comments are queued, one at most; after it
            // ends nothing upstream is held. Neither waits on a full queue in practice.
            Phase::Waiting(_) | Phase::Done => now + self.keepalive,
        }
    }
}

/// What the pump and the body share.
struct Shared {
    /// Frames queued and not yet taken by the body.
    queued: AtomicUsize,
    /// The pump's task: woken when the body makes room in a full queue, or is dropped. Lock-free,
    /// unlike a bounded channel's permits, so each frame costs two atomic operations here.
    pump: AtomicWaker,
}

impl Shared {
    fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < QUEUED
    }
}

/// Drives [`Events`] and queues their frames for the body.
struct Pump {
    events: Events,
    queue: mpsc::UnboundedSender<Result<Bytes, Stalled>>,
    shared: Arc<Shared>,
}

impl Pump {
    /// Queues what is ready now, so that it goes out with the response head in one write, then
    /// drives the rest from a task of its own unless the stream has already ended.
    fn start(mut self) {
        while self.shared.has_room() {
            match self.events.next_frame().now_or_never() {
                Some(Some(frame)) => {
                    if !self.send(frame) {
                        return;
                    }
                }
                Some(None) => return,
                None => break,
            }
        }
        tokio::spawn(self.run());
    }

    async fn run(mut self) {
        loop {
            if !self.shared.has_room() {
                let deadline = self.events.hand_over_deadline();
                self.events.timer.as_mut().reset(deadline);
                tokio::select! {
                    biased;
                    () = wake_on(&self.shared, &self.queue, true) => {}
                    () = &mut self.events.timer => return self.give_up(),
                }
            }
            let frame = tokio::select! {
                biased;
                // The client hung up: dropping the stream cancels the upstream request now.
                () = wake_on(&self.shared, &self.queue, false) => return,
                frame = self.events.next_frame() => frame,
            };
            let Some(frame) = frame else { return };
            if !self.send(frame) {
                return;
            }
        }
    }

    /// Queues a frame; false once the client has gone. A keep-alive comment is left out while
    /// frames wait: the connection is not idle.
    fn send(&self, frame: Frame) -> bool {
        let bytes = match frame {
            Frame::Data(bytes) => bytes,
            Frame::KeepAlive if self.shared.queued.load(Ordering::Acquire) == 0 => {
                Bytes::from_static(KEEP_ALIVE)
            }
            Frame::KeepAlive => return !self.queue.is_closed(),
        };
        // Counted before it is sent, so the body never takes a frame not yet counted.
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        self.queue.send(Ok(bytes)).is_ok()
    }

    /// The client took nothing for as long as the upstream may stay silent. Dropping the stream
    /// closes the upstream and records the generation as cancelled; the body then fails rather
    /// than ends, so hyper cuts the connection instead of finishing it as if the answer were whole.
    fn give_up(self) {
        tracing::debug!(generation = %self.events.id, "the client stopped reading; stream cut");
        let _ = self.queue.send(Err(Stalled));
    }
}

/// Resolves once the body is gone, or (`for_room`) once a full queue has room again.
fn wake_on<'a>(
    shared: &'a Shared,
    queue: &'a mpsc::UnboundedSender<Result<Bytes, Stalled>>,
    for_room: bool,
) -> impl Future<Output = ()> + 'a {
    poll_fn(move |cx| {
        shared.pump.register(cx.waker());
        if queue.is_closed() || (for_room && shared.has_room()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// The response body: the queued frames, in order.
struct Frames {
    frames: mpsc::UnboundedReceiver<Result<Bytes, Stalled>>,
    shared: Arc<Shared>,
}

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Stalled;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Stalled>>> {
        let taken = std::task::ready!(self.frames.poll_recv(cx));
        if let Some(Ok(_)) = &taken
            && self.shared.queued.fetch_sub(1, Ordering::AcqRel) == QUEUED
        {
            self.shared.pump.wake();
        }
        Poll::Ready(taken.map(|frame| frame.map(hyper::body::Frame::data)))
    }
}

impl Drop for Frames {
    /// The client has gone (or the response was dropped): the pump hears of it at once.
    fn drop(&mut self) {
        self.frames.close();
        self.shared.pump.wake();
    }
}

/// Why a stream's body failed: the client stopped reading.
#[derive(Debug)]
struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client stopped reading the stream")
    }
}

impl std::error::Error for Stalled {}

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
