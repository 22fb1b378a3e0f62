//! One provider's upstream connections on one serving thread. HTTP/1.1 connections wait idle
//! between requests and are lent out one request at a time; when TLS negotiates HTTP/2, one
//! multiplexed connection carries every request to that host.
//!
//! hyper-util's general-purpose client does the same with a pool shared by any number of threads
//! and hosts: a hashed key, a lock, a lazily started connect raced against the checkout, and a
//! task spawned per request to put its connection back. A serving thread that owns its pools
//! needs none of that; an HTTP/1.1 connection goes back when its response body has been read.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

type Connector = HttpsConnector<HttpConnector>;
type Http1 = http1::SendRequest<Full<Bytes>>;
type Http2 = http2::SendRequest<Full<Bytes>>;

/// Idle HTTP/1.1 connections kept per host; more than this many at once are closed on return.
const MAX_IDLE: usize = 1024;

/// Why a request got no response.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be opened; the connector's error, for its cause.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed during the handshake or the exchange.
    Exchange,
    /// The URI names no scheme or host.
    Uri,
}

pub(super) struct Pool {
    connector: Connector,
    idle_timeout: Duration,
    hosts: Mutex<Vec<Host>>,
}

/// One origin's connections.
struct Host {
    scheme: Scheme,
    authority: Authority,
    /// Most recently returned last, so the warmest connection goes out first and surplus ones
    /// age out once the load drops.
    idle: Vec<Idle>,
    multiplexed: Option<Http2>,
}

/// An HTTP/1.1 connection and the `Host` header its requests carry, made once per connection.
struct Http1Connection {
    sender: Http1,
    host: HeaderValue,
}

struct Idle {
    connection: Http1Connection,
    since: Instant,
}

/// An HTTP/1.1 connection lent to one request. [`Lease::release`] returns it once the response
/// body has been read to its end; dropped instead (a cancelled or failed read), the connection
/// closes with it.
pub(super) struct Lease {
    pool: Arc<Pool>,
    scheme: Scheme,
    authority: Authority,
    connection: Http1Connection,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Lease {
    pub(super) fn release(self) {
        let Lease {
            pool,
            scheme,
            authority,
            connection,
        } = self;
        let idle_timeout = pool.idle_timeout;
        pool.with_host(&scheme, &authority, |host| {
            let now = Instant::now();
            // Returned in order, so the connections idle too long are the oldest, at the front:
            // closed here, they do not wait for a burst deep enough to reach them.
            let expired = host
                .idle
                .iter()
                .take_while(|idle| now.duration_since(idle.since) >= idle_timeout)
                .count();
            host.idle.drain(..expired);
            if host.idle.len() < MAX_IDLE {
                host.idle.push(Idle {
                    connection,
                    since: now,
                });
            }
        });
    }
}

/// A connection ready for one request.
enum Checkout {
    Http1 {
        connection: Http1Connection,
        reused: bool,
    },
    Http2 {
        sender: Http2,
        reused: bool,
    },
}

impl Pool {
    pub(super) fn new(connector: Connector, idle_timeout: Duration) -> Pool {
        Pool {
            connector,
            idle_timeout,
            hosts: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (an absolute URI) and waits for the response head. A request that never
    /// left because the pooled connection it was given had closed goes out on another one.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        let uri = request.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::Uri);
        };
        loop {
            let unsent = match self.checkout(scheme, authority, &uri).await? {
                Checkout::Http2 { mut sender, reused } => {
                    *request.uri_mut() = uri.clone();
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, None)),
                        Err(error) => unsent(error, reused),
                    }
                }
                Checkout::Http1 {
                    mut connection,
                    reused,
                } => {
                    to_origin_form(&mut request, &uri, &connection.host)?;
                    match connection.sender.try_send_request(request).await {
                        Ok(response) => {
                            let lease = Lease {
                                pool: Arc::clone(self),
                                scheme: scheme.clone(),
                                authority: authority.clone(),
                                connection,
                            };
                            return Ok((response, Some(lease)));
                        }
                        Err(error) => unsent(error, reused),
                    }
                }
            };
            request = unsent.ok_or(SendError::Exchange)?;
        }
    }

    async fn checkout(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        uri: &Uri,
    ) -> Result<Checkout, SendError> {
        let idle_timeout = self.idle_timeout;
        loop {
            let found = self.with_host(scheme, authority, |host| {
                if let Some(sender) = host.multiplexed.as_ref().filter(|s| !s.is_closed()) {
                    return Some(Checkout::Http2 {
                        sender: sender.clone(),
                        reused: true,
                    });
                }
                host.multiplexed = None;
                while let Some(idle) = host.idle.pop() {
                    if idle.since.elapsed() < idle_timeout && !idle.connection.sender.is_closed() {
                        return Some(Checkout::Http1 {
                            connection: idle.connection,
                            reused: true,
                        });
                    }
                }
                None
            });
            match found {
                // Returned just as its response ended, a connection may not have taken in that
                // end yet; it is ready once its task has run, or closed.
                Some(Checkout::Http1 {
                    mut connection,
                    reused,
                }) => {
                    if connection.sender.ready().await.is_ok() {
                        return Ok(Checkout::Http1 { connection, reused });
                    }
                }
                Some(found) => return Ok(found),
                // Boxed: the connect future (TLS included) is many kilobytes, which every
                // request's future would otherwise carry and copy for the rare connect.
                None => return Box::pin(self.connect(scheme, authority, uri)).await,
            }
        }
    }

    async fn connect(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        uri: &Uri,
    ) -> Result<Checkout, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let stream = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if stream.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(stream)
                .await
                .map_err(|_| SendError::Exchange)?;
            tokio::spawn(connection);
            self.with_host(scheme, authority, |host| {
                host.multiplexed = Some(sender.clone());
            });
            return Ok(Checkout::Http2 {
                sender,
                reused: false,
            });
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| SendError::Uri)?;
        // A request is small: head and body copied into one buffer and written at once cost
        // less than hyper's queue of buffers for `writev` (callgrind: -0.9% per request).
        let (sender, connection) = http1::Builder::new()
            .writev(false)
            .handshake(stream)
            .await
            .map_err(|_| SendError::Exchange)?;
        tokio::spawn(connection);
        Ok(Checkout::Http1 {
            connection: Http1Connection { sender, host },
            reused: false,
        })
    }

    fn with_host<T>(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        f: impl FnOnce(&mut Host) -> T,
    ) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let index = hosts
            .iter()
            .position(|host| host.authority == *authority && host.scheme == *scheme)
            .unwrap_or_else(|| {
                hosts.push(Host {
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                    idle: Vec::new(),
                    multiplexed: None,
                });
                hosts.len() - 1
            });
        f(&mut hosts[index])
    }
}

/// The request back when it was never written on a connection that had served before: a server
/// may close an idle connection just as it is reused, and the request is then safe to send again.
/// A fresh connection that fails is the upstream's failure.
fn unsent(
    mut error: TrySendError<Request<Full<Bytes>>>,
    reused: bool,
) -> Option<Request<Full<Bytes>>> {
    reused.then(|| error.take_message()).flatten()
}

/// HTTP/1.1 sends the path alone, with the host in a `Host` header (HTTP/2 carries both in the
/// URI's pseudo-headers instead).
fn to_origin_form(
    request: &mut Request<Full<Bytes>>,
    uri: &Uri,
    host: &HeaderValue,
) -> Result<(), SendError> {
    request.headers_mut().insert(HOST, host.clone());
    let path = uri.path_and_query().cloned();
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = path.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| SendError::Uri)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper_rustls::HttpsConnectorBuilder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::rustls;

    use super::*;

    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

    /// An HTTP/1.1 server that answers every request with `{}`, counts its connections and those
    /// the client closed, keeps each request's head, and (with `close_after_answer`) closes a
    /// connection after one answer without saying so, as a server whose keep-alive timer fired
    /// would.
    struct Server {
        uri: Uri,
        connections: Arc<AtomicUsize>,
        closed_by_client: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    /// A listener on a free local port, and the chat URI it serves under `scheme`.
    async fn listen(scheme: &str) -> (TcpListener, Uri) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let uri = format!("{scheme}://{address}/v1/chat/completions?x=1");
        (listener, uri.parse().unwrap())
    }

    async fn server(close_after_answer: bool) -> Server {
        let (listener, uri) = listen("http").await;
        let connections = Arc::new(AtomicUsize::new(0));
        let closed_by_client = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (counted, closed, kept) =
            (connections.clone(), closed_by_client.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let (closed, kept) = (closed.clone(), kept.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0; 4096];
                    loop {
                        let read = stream.read(&mut buffer).await.unwrap_or(0);
                        if read == 0 {
                            closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        let head = String::from_utf8_lossy(&buffer[..read]).into_owned();
                        kept.lock().unwrap().push(head);
                        stream.write_all(ANSWER).await.unwrap();
                        if close_after_answer {
                            return;
                        }
                    }
                });
            }
        });
        Server {
            uri,
            connections,
            closed_by_client,
            heads,
        }
    }

    fn pool() -> Arc<Pool> {
        pool_with_idle_timeout(Duration::from_secs(90))
    }

    fn pool_with_idle_timeout(idle_timeout: Duration) -> Arc<Pool> {
        let connector = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(HttpConnector::new());
        Arc::new(Pool::new(connector, idle_timeout))
    }

    /// Sends one request and reads its `{}` answer: the HTTP version it came in, and its lease.
    async fn answer_version(pool: &Arc<Pool>, uri: &Uri) -> (http::Version, Option<Lease>) {
        let request = Request::post(uri.clone())
            .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
            .unwrap();
        let (response, lease) = pool.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let version = response.version();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{}");
        (version, lease)
    }

    async fn exchange(pool: &Arc<Pool>, uri: &Uri) {
        let (_, lease) = answer_version(pool, uri).await;
        lease.unwrap().release();
    }

    #[tokio::test]
    async fn requests_read_to_the_end_share_one_connection_and_send_the_path_with_a_host() {
        let server = server(false).await;
        let pool = pool();
        for _ in 0..3 {
            exchange(&pool, &server.uri).await;
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        let heads = server.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 3);
        let authority = server.uri.authority().unwrap().as_str();
        assert!(
            heads[0].starts_with("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0].contains(&format!("host: {authority}\r\n")),
            "{}",
            heads[0]
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_reused() {
        let server = server(true).await;
        let pool = pool();
        exchange(&pool, &server.uri).await;
        // The server's close reaches the idle connection before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
        exchange(&pool, &server.uri).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_closed_unnoticed_is_replaced_when_taken() {
        let server = server(true).await;
        let pool = pool();
        exchange(&pool, &server.uri).await;
        // Blocks the runtime, so the idle connection's task has not yet seen the server's close
        // when the next request takes the connection from the pool.
        std::thread::sleep(Duration::from_millis(20));
        exchange(&pool, &server.uri).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_idle_too_long_are_closed_when_another_comes_back() {
        let server = server(false).await;
        // Real time, with wide margins: tokio's paused clock (test-util) would slow every
        // `Instant::now` in the builds that benches make.
        let pool = pool_with_idle_timeout(Duration::from_secs(1));
        let ((_, older), (_, newer)) = tokio::join!(
            answer_version(&pool, &server.uri),
            answer_version(&pool, &server.uri)
        );
        older.unwrap().release();
        tokio::time::sleep(Duration::from_millis(700)).await;
        newer.unwrap().release();
        // The older connection has now been idle for 1.1 s, the newer one for 0.4 s.
        tokio::time::sleep(Duration::from_millis(400)).await;
        exchange(&pool, &server.uri).await;
        for _ in 0..200 {
            if server.closed_by_client.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
        assert_eq!(server.closed_by_client.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_left_unread_closes_its_connection() {
        let server = server(false).await;
        let pool = pool();
        let request = Request::post(server.uri.clone())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (response, lease) = pool.send(request).await.unwrap();
        drop((response, lease));
        exchange(&pool, &server.uri).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }

    /// A TLS server on 127.0.0.1 that offers only HTTP/2 (ALPN `h2`) under a self-signed
    /// certificate, answers `{}`, and counts its connections and the requests it saw.
    struct Http2Server {
        uri: Uri,
        certificate: rustls::pki_types::CertificateDer<'static>,
        connections: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<(http::Version, String)>>>,
        /// Closes every connection open so far.
        close: Arc<tokio::sync::Notify>,
    }

    async fn http2_server() -> Http2Server {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let certificate = generated.cert.der().clone();
        let private =
            rustls::pki_types::PrivateKeyDer::try_from(generated.key_pair.serialize_der()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], private)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (listener, uri) = listen("https").await;
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let close = Arc::new(tokio::sync::Notify::new());
        let (counted, seen, closing) = (connections.clone(), requests.clone(), close.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let stream = acceptor.accept(stream).await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let (seen, closing) = (seen.clone(), closing.clone());
                tokio::spawn(async move {
                    let answer = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let path = request.uri().path_and_query().unwrap().to_string();
                        seen.lock().unwrap().push((request.version(), path));
                        async {
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                                b"{}",
                            ))))
                        }
                    });
                    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), answer);
                    tokio::select! {
                        _ = connection => {}
                        () = closing.notified() => {}
                    }
                });
            }
        });
        Http2Server {
            uri,
            certificate,
            connections,
            requests,
            close,
        }
    }

    /// A pool that trusts only `certificate`, built as the production one is otherwise.
    fn pool_trusting(certificate: &rustls::pki_types::CertificateDer<'static>) -> Arc<Pool> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certificate.clone()).unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Arc::new(Pool::new(connector, Duration::from_secs(90)))
    }

    async fn exchange_http2(pool: &Arc<Pool>, uri: &Uri) {
        let (version, lease) = answer_version(pool, uri).await;
        assert_eq!(version, http::Version::HTTP_2);
        assert!(
            lease.is_none(),
            "an HTTP/2 connection is shared, never lent"
        );
    }

    #[tokio::test]
    async fn tls_that_negotiates_http2_carries_every_request_on_one_connection() {
        let server = http2_server().await;
        let pool = pool_trusting(&server.certificate);
        exchange_http2(&pool, &server.uri).await;
        exchange_http2(&pool, &server.uri).await;
        let together = (0..8).map(|_| exchange_http2(&pool, &server.uri));
        futures_util::future::join_all(together).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        let requests = server.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 10);
        assert!(
            requests
                .iter()
                .all(|seen| *seen == (http::Version::HTTP_2, "/v1/chat/completions?x=1".to_owned())),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_http2_connection_is_replaced() {
        let server = http2_server().await;
        let pool = pool_trusting(&server.certificate);
        exchange_http2(&pool, &server.uri).await;
        server.close.notify_waiters();
        // The connection's task sees the close before the next request looks for it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        exchange_http2(&pool, &server.uri).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let request = Request::post(format!("http://{address}/v1/chat/completions"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let error = pool().send(request).await.unwrap_err();
        assert!(matches!(error, SendError::Connect(_)), "{error:?}");
    }
}
