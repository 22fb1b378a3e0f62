//! The only HTTP sender: a connection pool per provider and serving thread ([`super::pool`]),
//! every timeout, status → error, and the event stream (SSE or AWS event-stream framing) with its
//! idle timeout. Knows nothing of any provider's JSON.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::{Instant, timeout_at};

use super::eventstream::EventStreamParser;
use super::pool::{Lease, Pool, SendError};
use super::sse::{SseEvent, SseParser};
use super::{Framing, Provider, UpstreamError, UpstreamErrorKind, UpstreamRequest};
use crate::config::ProviderConfig;

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
            let body = upstream.bytes().await.unwrap_or_default();
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

    fn next_event(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        match self {
            EventParser::Sse(parser) => parser.next_event().map(Ok),
            EventParser::AwsEventStream(parser) => parser.next_event(),
        }
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

    /// The whole body, within the attempt's deadline.
    pub async fn bytes(self) -> Result<Bytes, UpstreamError> {
        match self.body {
            Body::Local(body) => Ok(body.unwrap_or_default()),
            Body::Http { response, lease } => {
                let body = timeout_at(self.deadline, response.into_body().collect())
                    .await
                    .map_err(|_| timed_out("reading the upstream's response"))?
                    .map_err(|_| broken())?;
                if let Some(lease) = lease {
                    lease.release();
                }
                Ok(body.to_bytes())
            }
        }
    }

    /// The next event, or `None` at the end of the body. The first event must arrive before
    /// the first-token deadline, each later one within the idle timeout, all before the deadline.
    pub async fn next_event(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        loop {
            if let Some(event) = self.parser.next_event() {
                self.seen_event = true;
                return Some(event);
            }
            let chunk = match &mut self.body {
                Body::Local(body) => body.take(),
                Body::Http { response, lease } => {
                    let wait_until = if self.seen_event {
                        self.deadline.min(Instant::now() + self.idle)
                    } else {
                        self.first_token_deadline
                    };
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
