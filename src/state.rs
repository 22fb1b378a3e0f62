//! [`AppState`]: what handlers share, as narrow sub-states they extract with `State<T>`, so each
//! handler names exactly what it uses.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::accounts::{Keys, RateLimiter};
use crate::api::admin::AdminToken;
use crate::api::endpoints::ModelEndpoints;
use crate::api::json::BodyLimit;
use crate::api::models::ModelList;
use crate::api::sse::SseSettings;
use crate::chat::Chat;
use crate::store::Store;
use crate::usage::writer::GenerationSink;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub chat: Chat,
    pub keys: Arc<Keys>,
    pub limiter: RateLimiter,
    pub store: Store,
    pub generations: GenerationSink,
    pub models: ModelList,
    pub endpoints: ModelEndpoints,
    pub sse: SseSettings,
    pub body_limit: BodyLimit,
    pub admin: AdminToken,
}
