//! Which endpoint serves a request: the resolved catalog and the per-request plan. Pure
//! selection — no HTTP types, no I/O.

mod catalog;
mod plan;

pub use catalog::{Catalog, CatalogError, Endpoint, Model};
pub use plan::{PlanError, PlannedAttempt, RoutePlan, plan};
