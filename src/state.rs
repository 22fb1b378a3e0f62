//! [`AppState`]: what handlers share, as narrow sub-states they extract with `State<T>`, so each
//! handler names exactly what it uses. The router holds it as a [`RouterState`].

use std::sync::Arc;

use axum::extract::FromRef;

use crate::accounts::{Keys, RateLimiter};
use crate::api::admin::AdminToken;
use crate::api::catalog_access::CatalogAccess;
use crate::api::endpoints::ModelEndpoints;
use crate::api::json::BodyLimit;
use crate::api::models::ModelList;
use crate::api::sse::SseSettings;
use crate::chat::Chat;
use crate::store::Store;
use crate::usage::writer::GenerationSink;

#[derive(Clone)]
pub struct AppState {
    pub chat: Arc<Chat>,
    pub keys: Arc<Keys>,
    pub limiter: RateLimiter,
    pub store: Store,
    pub generations: GenerationSink,
    pub models: ModelList,
    pub endpoints: ModelEndpoints,
    pub sse: SseSettings,
    pub body_limit: BodyLimit,
    pub admin: AdminToken,
    pub catalog_access: CatalogAccess,
}

/// One serving thread's [`AppState`] behind a reference count of that thread's own. axum clones
/// the router's state for every request: cloning `AppState` itself would bump the counters of
/// every part, which the other serving threads bump too, so their cache lines would bounce
/// between cores on every request.
#[derive(Clone)]
pub struct RouterState(Arc<AppState>);

impl RouterState {
    pub fn new(state: AppState) -> RouterState {
        RouterState(Arc::new(state))
    }
}

/// `State<T>` for each part of the state, cloned out of the thread's own [`AppState`].
macro_rules! sub_states {
    ($($field:ident: $part:ty),* $(,)?) => {
        $(
            impl FromRef<RouterState> for $part {
                fn from_ref(state: &RouterState) -> $part {
                    state.0.$field.clone()
                }
            }
        )*
    };
}

sub_states!(
    chat: Arc<Chat>,
    keys: Arc<Keys>,
    limiter: RateLimiter,
    store: Store,
    generations: GenerationSink,
    models: ModelList,
    endpoints: ModelEndpoints,
    sse: SseSettings,
    body_limit: BodyLimit,
    admin: AdminToken,
    catalog_access: CatalogAccess,
);
