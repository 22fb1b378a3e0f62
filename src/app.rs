//! [`App`]: builds everything from a config, binds the listener (port 0 works), and runs until a
//! shutdown signal, then drains in-flight requests and queued usage rows.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::accounts::Keys;
use crate::api::json::BodyLimit;
use crate::api::models::ModelList;
use crate::api::routes;
use crate::api::sse::SseSettings;
use crate::chat::Chat;
use crate::config::LoadedConfig;
use crate::providers::Registry;
use crate::routing::Catalog;
use crate::state::AppState;
use crate::store::Store;
use crate::usage::writer::{WriterHandle, spawn_writer};

pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
    writer: WriterHandle,
    max_body: usize,
}

impl App {
    pub async fn build(loaded: LoadedConfig) -> anyhow::Result<App> {
        let config = loaded.config;
        let store = Store::connect(&config.database.url)
            .await
            .context("cannot open the database")?;
        store
            .migrate()
            .await
            .context("cannot apply database migrations")?;
        let registry = Registry::build(&config.providers)?;
        let catalog = Catalog::build(&config)?;
        let (generations, writer) = spawn_writer(
            store.clone(),
            config.database.batch_size,
            config.database.flush_interval.0,
        );
        let max_body = config.server.max_body.0;
        let state = AppState {
            models: ModelList::render(&catalog),
            chat: Chat::new(Arc::new(catalog), Arc::new(registry), generations.clone()),
            keys: Arc::new(Keys::new(store.clone())),
            store,
            generations,
            sse: SseSettings {
                keepalive: config.server.sse_keepalive.0,
            },
            body_limit: BodyLimit(max_body),
        };
        let listener = TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let address = listener.local_addr()?;
        Ok(App {
            listener,
            address,
            state,
            writer,
            max_body,
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Shared state, for tests that create keys or wait for usage rows.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            address,
            state,
            writer,
            max_body,
        } = self;
        tracing::info!(%address, "switchyard listening");
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
        });
        let router = routes(state, max_body);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        writer.shutdown().await;
        tracing::info!("stopped; every usage row is written");
        Ok(())
    }
}
