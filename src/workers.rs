//! Thread-per-core serving: one acceptor hands each connection to one of N single-threaded
//! runtimes, which serves it to its end. A request's tasks (the server connection, the handler,
//! the upstream connection from that runtime's own pools) then wake each other on one thread,
//! never across cores, which is most of what a proxy's CPU goes to on a small machine.

use std::net::TcpStream as StdTcpStream;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_rustls::TlsAcceptor;

use crate::connection::{ConnectionLimits, Guarded, InFlight, Watch, WatchedIo};

/// The serving threads, each fed connections through its own queue.
pub struct Workers {
    inboxes: Vec<mpsc::UnboundedSender<Accepted>>,
    finished: Vec<oneshot::Receiver<()>>,
    exits: Vec<oneshot::Sender<()>>,
    next: usize,
}

/// A connection and its slot among `server.max_connections`, held until the connection ends.
type Accepted = (StdTcpStream, OwnedSemaphorePermit);

/// Workers that serve no more but keep their runtimes alive: database connections a worker opened
/// are driven by its runtime, and the usage writer still needs them to flush.
pub struct Idle {
    exits: Vec<oneshot::Sender<()>>,
}

impl Idle {
    /// Lets the threads end.
    pub fn release(self) {
        drop(self.exits);
    }
}

impl Workers {
    /// Starts one thread with its own runtime per router, serving connections within `limits`,
    /// over TLS when given an acceptor.
    pub fn spawn(
        routers: Vec<Router>,
        limits: ConnectionLimits,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Workers> {
        let mut workers = Workers {
            inboxes: Vec::new(),
            finished: Vec::new(),
            exits: Vec::new(),
            next: 0,
        };
        for (index, router) in routers.into_iter().enumerate() {
            let tls = tls.clone();
            let (inbox, connections) = mpsc::unbounded_channel();
            let (done, finished) = oneshot::channel();
            let (exit, exited) = oneshot::channel::<()>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("switchyard-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        tokio::spawn(anchor_timers());
                        serve(router, connections, limits, tls).await;
                        let _ = done.send(());
                        // A release or a dropped sender: either way, time to end.
                        let _ = exited.await;
                    });
                })?;
            workers.inboxes.push(inbox);
            workers.finished.push(finished);
            workers.exits.push(exit);
        }
        Ok(workers)
    }

    /// Gives a freshly accepted connection to the next worker, round robin.
    pub fn hand(&mut self, stream: StdTcpStream, slot: OwnedSemaphorePermit) {
        let Some(inbox) = self.inboxes.get(self.next % self.inboxes.len().max(1)) else {
            return;
        };
        self.next = self.next.wrapping_add(1);
        if inbox.send((stream, slot)).is_err() {
            tracing::error!("a serving thread has stopped; connection dropped");
        }
    }

    /// Stops handing out connections and waits until every worker has finished the requests it
    /// was serving.
    pub async fn stop(self) -> Idle {
        drop(self.inboxes);
        for finished in self.finished {
            // An error means the thread ended early (it panicked), which is all we wait for.
            let _ = finished.await;
        }
        Idle { exits: self.exits }
    }
}

/// How often [`anchor_timers`] fires: sooner than the deadlines requests set (their timeouts are
/// seconds; one configured below this only costs the wake-up it would have cost anyway).
const TIMER_ANCHOR: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`TIMER_ANCHOR`] pending on this thread at all times. A thread that
/// went to sleep with no timer pending is woken through its reactor (an eventfd write, then one
/// more pass through epoll) by every timer set before it sleeps again, which under load was each
/// request's upstream deadlines. Behind a sooner timer, setting one is only a wheel insert.
async fn anchor_timers() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Serves connections until the acceptor stops, then lets in-flight requests finish.
async fn serve(
    router: Router,
    mut connections: mpsc::UnboundedReceiver<Accepted>,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
) {
    let graceful = GracefulShutdown::new();
    let in_flight = InFlight::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Answers and SSE events are small: one buffer and one `write` beat a `writev` queue.
    builder.http1().writev(false);
    while let Some((stream, slot)) = connections.recv().await {
        // Registers the socket with this thread's reactor, so its I/O is driven here.
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot adopt an accepted connection");
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        let watch = Watch::new();
        let service = Guarded::new(
            TowerToHyperService::new(router.clone()),
            watch.clone(),
            in_flight.clone(),
            limits,
            stream.peer_addr().ok(),
        );
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let io = WatchedIo::new(stream, watch.clone());
            tokio::select! {
                () = async {
                    let ended = match &tls {
                        None => serve_io(&builder, io, service, watcher).await,
                        // The handshake counts against the head timeout, like a slow head.
                        Some(tls) => match tls.accept(io).await {
                            Ok(io) => serve_io(&builder, io, service, watcher).await,
                            Err(error) => {
                                tracing::debug!(%error, "TLS handshake failed");
                                Ok(())
                            }
                        },
                    };
                    if let Err(error) = ended {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                } => {}
                // Dropping the connection closes it.
                overstayed = watch.expired(limits) => {
                    tracing::debug!(?overstayed, "closed a connection that outstayed its limit");
                }
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
}

/// Serves one connection's requests, plain or decrypted, until it ends or the server drains.
async fn serve_io<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: Guarded<TowerToHyperService<Router>>,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    watcher.watch(connection.into_owned()).await
}
