//! The only HTTP sender: a connection pool per provider and serving thread ([`super::pool`]),
//! every timeout and size cap, status → error, and the event stream (SSE or AWS event-stream
//! framing) with its idle timeout. Knows nothing of any provider's JSON.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::{Instant, timeout_at};

use super::eventstream::EventStreamParser;
use super::pool::{Lease, Pool, SendError};
use super::sse::{SseEvent, SseParser};
use super::{Framing, Provider, UpstreamError, UpstreamErrorKind, UpstreamRequest};
use crate::config::ProviderConfig;

/// The largest answer read whole (a non-streaming completion). The large legitimate ones are
/// logprobs (`top_logprobs: 20` costs about 1.6 kB per token: 32k output tokens make ~52 MB) and
/// images passed through in base64; past this an upstream is not answering a chat completion.
/// The body is held once and, when it came in several reads, copied once into one buffer.
pub const MAX_BODY: usize = 64 << 20;

/// The largest error body read: any JSON error or HTML error page fits, and only the first 500
/// characters of a message are ever shown. A longer one is classified by its status alone.
const MAX_ERROR_BODY: usize = 1 << 20;

/// The largest single stream event: an SSE event with all its lines, or one event-stream message.
/// Text deltas are a few bytes; the large events are a whole tool call (bounded by the output
/// limit, well under 1 MiB) and inline images in base64 (a few MiB). It is also the message size
/// AWS's own event-stream runtime refused past for years. It bounds what one stream buffers.
pub const MAX_EVENT: usize = 16 << 20;

/// How long each phase of an attempt may take.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// Request sent → response head and, for streams, the first event.
    pub first_token: Duration,
    /// The longest gap between two stream events.
    pub idle: Duration,
    /// The whole attempt.
    pub request: Duration,
}

/// A provider's connection pool (of one serving thread) and timeouts.
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl Upstream {
    /// HTTPS with the bundled web PKI roots (so the binary runs on a bare image), HTTP/2 when the
    /// provider offers it, plain HTTP for local servers.
    pub fn new(config: &ProviderConfig) -> Result<Self, std::io::Error> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.0));
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let pool = Arc::new(Pool::new(https, Duration::from_secs(90)));
        let timeouts = Timeouts {
            first_token: config.first_token_timeout.0,
            idle: config.idle_timeout.0,
            request: config.request_timeout.0,
        };
        Ok(Self { pool, timeouts })
    }

    /// Sends the request and waits for the response head. A non-success status is turned into
    /// the provider's classified error here, so callers only ever see successful responses.
    pub async fn send(
        &self,
        request: UpstreamRequest,
        provider: &dyn Provider,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let started = Instant::now();
        let deadline = started + self.timeouts.request;
        let first_token_deadline = deadline.min(started + self.timeouts.first_token);
        let (status, body) = match request {
            UpstreamRequest::Local { status, body, .. } => (status, Body::Local(Some(body))),
            UpstreamRequest::Http {
                uri, headers, body, ..
            } => {
                let mut request = http::Request::post(uri);
                if let Some(map) = request.headers_mut() {
                    map.extend(headers);
                }
                let request = request.body(Full::new(body)).map_err(|_| {
                    UpstreamError::new(UpstreamErrorKind::Protocol, "invalid request")
                })?;
                let (response, lease) = timeout_at(first_token_deadline, self.pool.send(request))
                    .await
                    .map_err(|_| timed_out("waiting for the upstream's response"))?
                    .map_err(|error| connection_error(&error))?;
                (response.status(), Body::Http { response, lease })
            }
        };
        let upstream = UpstreamResponse {
            body,
            parser: EventParser::new(provider.framing()),
            deadline,
            first_token_deadline,
            idle: self.timeouts.idle,
            seen_event: false,
        };
        if !status.is_success() {
            let retry_after = upstream.retry_after();
            let body = upstream
                .read_to_end(MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            let error = provider.parse_error(status, &body);
            // The header wins; some providers say how long to wait only in their error body.
            let retry_after = retry_after.or(error.retry_after);
            return Err(error.with_retry_after(retry_after));
        }
        Ok(upstream)
    }
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per attempt, moved once; boxing the common variant would allocate per request"
)]
enum Body {
    /// `lease` is the HTTP/1.1 connection, released for the next request once the body has
    /// been read to its end.
    Http {
        response: http::Response<Incoming>,
        lease: Option<Lease>,
    },
    Local(Option<Bytes>),
}

/// Splits a streamed body into events by the provider's [`Framing`].
#[derive(Debug)]
enum EventParser {
    Sse(SseParser),
    AwsEventStream(EventStreamParser),
}

impl EventParser {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Sse => EventParser::Sse(SseParser::default()),
            Framing::AwsEventStream => EventParser::AwsEventStream(EventStreamParser::default()),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        match self {
            EventParser::Sse(parser) => parser.push(bytes),
            EventParser::AwsEventStream(parser) => parser.push(bytes),
        }
    }

    /// The next complete event; an error once the event in progress outgrows [`MAX_EVENT`],
    /// which is checked after every read, so no more than one read past it is ever held.
    fn next_event(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        let (event, pending) = match self {
            EventParser::Sse(parser) => (parser.next_event().map(Ok), parser.pending_len()),
            EventParser::AwsEventStream(parser) => (parser.next_event(), parser.pending_len()),
        };
        if event.is_none() && pending > MAX_EVENT {
            return Some(Err(too_large("stream event", MAX_EVENT)));
        }
        event
    }

    /// Lets go of everything buffered.
    fn clear(&mut self) {
        *self = EventParser::new(match self {
            EventParser::Sse(_) => Framing::Sse,
            EventParser::AwsEventStream(_) => Framing::AwsEventStream,
        });
    }

    fn finish(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        match self {
            EventParser::Sse(parser) => parser.finish().map(Ok),
            EventParser::AwsEventStream(parser) => parser.finish(),
        }
    }
}

/// A successful upstream response whose body has not been read yet.
#[derive(Debug)]
pub struct UpstreamResponse {
    body: Body,
    parser: EventParser,
    deadline: Instant,
    first_token_deadline: Instant,
    idle: Duration,
    seen_event: bool,
}

impl UpstreamResponse {
    fn retry_after(&self) -> Option<Duration> {
        let Body::Http { response, .. } = &self.body else {
            return None;
        };
        let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
        value.trim().parse::<u64>().ok().map(Duration::from_secs)
    }

    /// The whole body, within the attempt's deadline and [`MAX_BODY`].
    pub async fn bytes(self) -> Result<Bytes, UpstreamError> {
        self.read_to_end(MAX_BODY).await
    }

    /// The whole body, within the attempt's deadline. A body longer than `limit`, by its declared
    /// length or once counted, is an error, and its connection is closed instead of read on.
    async fn read_to_end(self, limit: usize) -> Result<Bytes, UpstreamError> {
        match self.body {
            Body::Local(body) => Ok(body.unwrap_or_default()),
            Body::Http { response, lease } => {
                let body = response.into_body();
                if body.size_hint().lower() > limit as u64 {
                    return Err(too_large("answer", limit));
                }
                let body = timeout_at(self.deadline, Limited::new(body, limit).collect())
                    .await
                    .map_err(|_| timed_out("reading the upstream's response"))?
                    .map_err(|error| {
                        if error.is::<LengthLimitError>() {
                            too_large("answer", limit)
                        } else {
                            broken()
                        }
                    })?;
                if let Some(lease) = lease {
                    lease.release();
                }
                Ok(body.to_bytes())
            }
        }
    }

    /// How long, from `now`, the next event may take: the idle timeout, within the attempt's
    /// deadline. Also what a stream may wait for its client to take an event.
    pub(crate) fn idle_deadline(&self, now: Instant) -> Instant {
        self.deadline.min(now + self.idle)
    }

    /// The next event, or `None` at the end of the body. The first event must arrive before
    /// the first-token deadline, each later one within the idle timeout, all before the deadline.
    pub async fn next_event(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        loop {
            if let Some(event) = self.parser.next_event() {
                self.seen_event = true;
                if event.is_err() {
                    // Nothing after a framing error can be read: the buffer and the connection
                    // go now, not when the stream that ends with this error is dropped.
                    self.parser.clear();
                    self.body = Body::Local(None);
                }
                return Some(event);
            }
            let wait_until = if self.seen_event {
                self.idle_deadline(Instant::now())
            } else {
                self.first_token_deadline
            };
            let chunk = match &mut self.body {
                Body::Local(body) => body.take(),
                Body::Http { response, lease } => {
                    match timeout_at(wait_until, response.body_mut().frame()).await {
                        Err(_) => return Some(Err(timed_out("waiting for the next stream event"))),
                        Ok(Some(Err(_))) => return Some(Err(broken())),
                        // Trailers carry no events.
                        Ok(Some(Ok(frame))) => Some(frame.into_data().unwrap_or_default()),
                        Ok(None) => {
                            if let Some(lease) = lease.take() {
                                lease.release();
                            }
                            None
                        }
                    }
                }
            };
            match chunk {
                Some(chunk) => self.parser.push(&chunk),
                None => return self.parser.finish(),
            }
        }
    }
}

/// `what` is a fixed phrase, never upstream text.
fn too_large(what: &str, limit: usize) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::Protocol,
        format!("the upstream's {what} is larger than {} MiB", limit >> 20),
    )
}

fn timed_out(phase: &str) -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::Timeout,
        format!("upstream timed out {phase}"),
    )
}

/// Transport errors can name the host; the message is rebuilt so nothing of it leaks.
fn connection_error(error: &SendError) -> UpstreamError {
    if let SendError::Connect(error) = error {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(cause) = source {
            if cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return timed_out("connecting");
            }
            source = cause.source();
        }
        return UpstreamError::new(UpstreamErrorKind::Connect, "cannot connect to the upstream");
    }
    broken()
}

fn broken() -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Connect, "the upstream connection failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::eventstream::tests::frame;

    const READ: usize = 1 << 20;

    /// Pushes `bytes` one read at a time, taking every event after each read as the reader does.
    /// Returns the events, and the error with how many bytes had been pushed when it came.
    fn feed(framing: Framing, bytes: &[u8]) -> (Vec<SseEvent>, Option<(UpstreamError, usize)>) {
        let mut parser = EventParser::new(framing);
        let mut events = Vec::new();
        let mut pushed = 0;
        for read in bytes.chunks(READ) {
            parser.push(read);
            pushed += read.len();
            while let Some(event) = parser.next_event() {
                match event {
                    Ok(event) => events.push(event),
                    Err(error) => return (events, Some((error, pushed))),
                }
            }
        }
        (events, None)
    }

    fn assert_cut_within_a_read_of_the_cap(framing: Framing, bytes: &[u8]) {
        let (events, error) = feed(framing, bytes);
        let (error, pushed) = error.expect("the event is refused");
        assert!(events.is_empty());
        assert_eq!(error.kind, UpstreamErrorKind::Protocol);
        assert!(error.message.contains("larger than 16 MiB"), "{error}");
        assert!(pushed <= MAX_EVENT + READ, "{pushed} bytes held");
    }

    #[test]
    fn an_sse_event_outgrowing_the_cap_fails_within_one_read_of_it() {
        let long_line = format!("data: {}", "a".repeat(MAX_EVENT + 2 * READ));
        assert_cut_within_a_read_of_the_cap(Framing::Sse, long_line.as_bytes());
        let many_lines = format!("data: {}\n", "a".repeat(READ / 2)).repeat(40);
        assert_cut_within_a_read_of_the_cap(Framing::Sse, many_lines.as_bytes());
    }

    #[test]
    fn an_event_stream_message_outgrowing_the_cap_fails_within_one_read_of_it() {
        let payload = "a".repeat(MAX_EVENT + 2 * READ);
        let message = frame("event", "contentBlockDelta", &payload);
        assert_cut_within_a_read_of_the_cap(Framing::AwsEventStream, &message);
    }

    #[test]
    fn small_events_pass_however_many_arrive_in_one_read() {
        let event = format!("data: {}\n\n", "a".repeat(1000));
        let count = 2 * MAX_EVENT / event.len();
        let mut parser = EventParser::new(Framing::Sse);
        parser.push(event.repeat(count).as_bytes());
        let mut events = 0;
        while let Some(event) = parser.next_event() {
            event.unwrap();
            events += 1;
        }
        assert_eq!(events, count);
    }
}
