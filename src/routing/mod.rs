//! Which endpoint serves a request: the resolved catalog, the hard filters, the ordering of what
//! is left, and the per-request plan. Pure selection — no HTTP types, no I/O.

mod catalog;
mod filter;
mod plan;
mod select;
mod status;

pub use catalog::{Catalog, CatalogError, Endpoint, Model};
pub use plan::{PlanError, PlannedAttempt, RoutePlan, plan};
pub use status::{AssumeHealthy, EndpointHealth, EndpointStatus};
