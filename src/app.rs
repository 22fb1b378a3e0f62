//! [`App`]: builds everything from a config, binds the listener (port 0 works), and runs until a
//! shutdown signal, then drains in-flight requests and queued usage rows.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::accounts::{Credits, Keys, RateLimiter, Upkeep};
use crate::api::admin::AdminToken;
use crate::api::catalog_access::CatalogAccess;
use crate::api::endpoints::ModelEndpoints;
use crate::api::json::BodyLimit;
use crate::api::models::ModelList;
use crate::api::routes;
use crate::api::sse::SseSettings;
use crate::chat::Chat;
use crate::clock::WallClock;
use crate::config::LoadedConfig;
use crate::connection::ConnectionLimits;
use crate::providers::Registry;
use crate::routing::{Catalog, HealthTracker};
use crate::state::AppState;
use crate::store::{RateCounters, RedisCounters, Store};
use crate::usage::writer::{WriterHandle, spawn_writer};
use crate::workers::Workers;

pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    /// One state per serving thread: each has its own upstream connection pools.
    states: Vec<AppState>,
    writer: WriterHandle,
    /// Renews this gateway's credit holds until every request has settled.
    upkeep: Upkeep,
    max_body: usize,
    max_connections: usize,
    limits: ConnectionLimits,
    cors_origins: Vec<String>,
    tls: Option<TlsAcceptor>,
}

impl App {
    pub async fn build(loaded: LoadedConfig) -> anyhow::Result<App> {
        Self::build_with_clock(loaded, WallClock::system()).await
    }

    /// Like [`App::build`], judging limits, periods and expiry by `clock`: tests pin it so no
    /// outcome depends on the day they run.
    pub async fn build_with_clock(loaded: LoadedConfig, clock: WallClock) -> anyhow::Result<App> {
        let config = loaded.config;
        let store = Store::connect(&config.database.url)
            .await
            .context("cannot open the database")?;
        store
            .migrate()
            .await
            .context("cannot apply database migrations")?;
        let catalog = Arc::new(Catalog::build(&config)?);
        let (generations, writer) = spawn_writer(
            store.clone(),
            config.database.batch_size,
            config.database.flush_interval.0,
        );
        let max_body = config.server.max_body.0;
        let models = ModelList::render(&catalog);
        let keys = Arc::new(Keys::new(store.clone(), clock.clone()));
        let credits = Credits::new(store.clone(), config.credits.hold_lease.0, clock.clone());
        // Before serving: holds a previous life of this gateway left behind are refunded now if
        // their lease has run out, and by this task within one lease otherwise.
        credits
            .upkeep()
            .await
            .context("cannot release expired credit holds")?;
        let upkeep = credits.spawn_upkeep();
        let admin = AdminToken::new(config.server.admin_token.as_deref());
        let counters = match &config.redis {
            Some(redis) => RateCounters::Redis(
                RedisCounters::connect(&redis.url)
                    .await
                    .context("cannot connect to Redis")?,
            ),
            None => RateCounters::Database(store.clone()),
        };
        let limiter = RateLimiter::new(config.limits, counters, clock.clone());
        // One tracker for every serving thread: an endpoint that fails on one thread is avoided
        // on all of them.
        let health = Arc::new(HealthTracker::new(&catalog, &config.health));
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let states = (0..threads)
            .map(|_| {
                let registry = Arc::new(Registry::build(&config.providers)?);
                Ok(AppState {
                    models: models.clone(),
                    endpoints: ModelEndpoints {
                        catalog: catalog.clone(),
                        health: health.clone(),
                    },
                    chat: Arc::new(Chat::new(
                        catalog.clone(),
                        registry,
                        health.clone(),
                        credits.clone(),
                        generations.clone(),
                        config.database.log_prompts,
                        clock.clone(),
                    )),
                    keys: keys.clone(),
                    limiter: limiter.clone(),
                    store: store.clone(),
                    generations: generations.clone(),
                    sse: SseSettings {
                        keepalive: config.server.sse_keepalive.0,
                    },
                    body_limit: BodyLimit {
                        max: max_body,
                        read_timeout: config.server.body_read_timeout.0,
                    },
                    admin,
                    catalog_access: CatalogAccess {
                        public: config.server.public_catalog,
                    },
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let listener = TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let address = listener.local_addr()?;
        Ok(App {
            listener,
            address,
            states,
            writer,
            upkeep,
            max_body,
            max_connections: config.server.max_connections,
            cors_origins: config.server.cors_origins.clone(),
            tls,
            limits: ConnectionLimits {
                header_read_timeout: config.server.header_read_timeout.0,
                keepalive_timeout: config.server.keepalive_timeout.0,
                inflight_per_thread: config.server.max_inflight.div_ceil(threads),
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Shared state (keys, store, usage writer), for tests that create keys or wait for rows.
    pub fn state(&self) -> &AppState {
        &self.states[0]
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests and
    /// streams finish, writes every queued usage row, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            address,
            states,
            writer,
            upkeep,
            max_body,
            max_connections,
            limits,
            cors_origins,
            tls,
        } = self;
        let routers = states
            .into_iter()
            .map(|state| routes(state, max_body, &cors_origins))
            .collect();
        let mut workers =
            Workers::spawn(routers, limits, tls).context("cannot start the serving threads")?;
        tracing::info!(%address, "switchyard listening");
        tokio::pin!(shutdown);
        // One permit per open connection, given back when the connection ends: at the cap the
        // acceptor stops accepting, and new connections wait in the kernel's backlog.
        let slots = Arc::new(Semaphore::new(max_connections));
        loop {
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            tokio::select! {
                accepted = listener.accept() => match accepted.and_then(|(stream, _)| stream.into_std()) {
                    Ok(stream) => workers.hand(stream, slot),
                    Err(error) => {
                        // Usually out of file descriptors: pause instead of spinning on the error.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        let idle = workers.stop().await;
        writer.shutdown().await;
        drop(upkeep);
        idle.release();
        tracing::info!("stopped; every usage row is written");
        Ok(())
    }
}

const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
