//! One client connection's limits: how long it may take to send a request head
//! (`server.header_read_timeout`), how long it may sit idle between requests
//! (`server.keepalive_timeout`), and the serving thread's share of `server.max_inflight`.
//!
//! The socket and the service each note what happens in a few relaxed atomics (no clock read, no
//! timer per request); a watchdog beside the connection samples them a few times per timeout and
//! closes a connection that is too slow or too idle. hyper's own header timer cannot be used: it
//! runs from the end of the previous response, so it would also cut keep-alive connections idle
//! for longer than the head timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;

/// `[server]`'s connection settings, as the serving threads apply them.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// This serving thread's share of `server.max_inflight`.
    pub inflight_per_thread: usize,
}

impl ConnectionLimits {
    /// How often the watchdog samples a connection: a quarter of the shorter timeout, so a
    /// connection is closed at most a quarter late, and an idle one costs a wake-up only every
    /// few seconds.
    fn sample_every(&self) -> Duration {
        let shorter = self.header_read_timeout.min(self.keepalive_timeout);
        (shorter / 4).max(MIN_SAMPLE)
    }
}

const MIN_SAMPLE: Duration = Duration::from_millis(10);

/// What the socket and the service saw since the watchdog last looked.
#[derive(Debug)]
pub struct Watch {
    /// Requests whose handler has not answered yet.
    in_flight: AtomicU32,
    /// Bytes of a request head are awaited or arriving: set when the connection opens and when
    /// bytes come in between requests, cleared once a head is whole and the handler called.
    awaiting_head: AtomicBool,
    /// Bytes moved either way.
    active: AtomicBool,
}

impl Watch {
    pub fn new() -> Arc<Watch> {
        Arc::new(Watch {
            in_flight: AtomicU32::new(0),
            awaiting_head: AtomicBool::new(true),
            active: AtomicBool::new(false),
        })
    }

    /// Samples the connection until it outstays a limit; never returns while it is within them.
    pub async fn expired(&self, limits: ConnectionLimits) -> Overstayed {
        let every = limits.sample_every();
        let mut waiting_for_head = Duration::ZERO;
        let mut idle = Duration::ZERO;
        loop {
            tokio::time::sleep(every).await;
            let active = self.active.swap(false, Ordering::Relaxed);
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Upstream timeouts and the stream's own deadlines bound a request's time.
                (waiting_for_head, idle) = (Duration::ZERO, Duration::ZERO);
                continue;
            }
            if self.awaiting_head.load(Ordering::Relaxed) {
                waiting_for_head += every;
                if waiting_for_head >= limits.header_read_timeout {
                    return Overstayed::HeaderRead;
                }
            } else {
                waiting_for_head = Duration::ZERO;
            }
            idle = if active { Duration::ZERO } else { idle + every };
            if idle >= limits.keepalive_timeout {
                return Overstayed::KeepAlive;
            }
        }
    }
}

/// Which limit a closed connection outstayed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overstayed {
    HeaderRead,
    KeepAlive,
}

/// The client's socket, noting its traffic in a [`Watch`].
#[derive(Debug)]
pub struct WatchedIo<T> {
    io: T,
    watch: Arc<Watch>,
}

impl<T> WatchedIo<T> {
    pub fn new(io: T, watch: Arc<Watch>) -> Self {
        Self { io, watch }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let watch = &self.watch;
            watch.active.store(true, Ordering::Relaxed);
            if watch.in_flight.load(Ordering::Relaxed) == 0 {
                watch.awaiting_head.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.watch.active.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Requests being answered on one serving thread, against its share of `server.max_inflight`.
/// Each thread has its own, so admitting a request touches no cache line another core writes.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// A hyper service that counts each request in its connection's [`Watch`] and its thread's
/// [`InFlight`] until its response is sent, and refuses with 503 past the thread's share.
/// It also gives each request its client's address, as axum's `ConnectInfo`, for the logs.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    watch: Arc<Watch>,
    in_flight: InFlight,
    limit: usize,
    peer: Option<SocketAddr>,
}

impl<S> Guarded<S> {
    pub fn new(
        inner: S,
        watch: Arc<Watch>,
        in_flight: InFlight,
        limits: ConnectionLimits,
        peer: Option<SocketAddr>,
    ) -> Self {
        Self {
            inner,
            watch,
            in_flight,
            limit: limits.inflight_per_thread,
            peer,
        }
    }
}

/// One request counted in its connection's [`Watch`] and its thread's [`InFlight`], until it
/// is dropped: with the response body once that has been sent to its end, so a stream counts
/// for as long as it runs.
struct Slot {
    watch: Arc<Watch>,
    in_flight: InFlight,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.watch.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.in_flight.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handler's future, whose answer takes the request's [`Slot`] along in its body. Unpin, as
/// the router's future is: no pin projection, no box for the future.
pub struct Counted<F> {
    answer: F,
    slot: Option<Slot>,
}

impl<F> Future for Counted<F>
where
    F: Future<Output = Answered> + Unpin,
{
    type Output = Answered;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let Ok(response) = std::task::ready!(Pin::new(&mut self.answer).poll(cx));
        let slot = self.slot.take();
        Poll::Ready(Ok(
            response.map(|body| Body::new(CountedBody { body, slot }))
        ))
    }
}

/// A response body holding its request's [`Slot`] until it is sent or dropped.
struct CountedBody {
    body: Body,
    slot: Option<Slot>,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

type Answered = Result<Response<Body>, Infallible>;

impl<S> hyper::service::Service<Request<Incoming>> for Guarded<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Counted<S::Future>, Ready<Answered>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.watch.awaiting_head.store(false, Ordering::Relaxed);
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        if self.in_flight.0.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.in_flight.0.fetch_sub(1, Ordering::Relaxed);
            let busy = ApiError::unavailable(
                "the gateway is serving as many requests as it is configured to \
                 (server.max_inflight); retry shortly",
            )
            .with_retry_after(BUSY_RETRY_AFTER);
            return Either::Right(ready(Ok(busy.into_response())));
        }
        self.watch.in_flight.fetch_add(1, Ordering::Relaxed);
        Either::Left(Counted {
            answer: self.inner.call(request),
            slot: Some(Slot {
                watch: self.watch.clone(),
                in_flight: self.in_flight.clone(),
            }),
        })
    }
}

/// `Retry-After` for a request refused past `server.max_inflight`.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);
