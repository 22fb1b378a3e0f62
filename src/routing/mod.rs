//! Which endpoint serves a request: the resolved catalog, the hard filters, the ordering of what
//! is left, the per-request plan, and each endpoint's health. No HTTP types, no I/O.

mod catalog;
mod filter;
mod health;
mod plan;
mod select;
mod status;

pub use catalog::{Catalog, CatalogError, Endpoint, Model};
pub use health::{
    BreakerState, EndpointReport, HealthTracker, Measurement, Percentiles, Recent, Uptime,
};
pub use plan::{PlanError, PlannedAttempt, RoutePlan, UNBOUNDED_OUTPUT_CAP, plan};
pub use status::{EndpointHealth, EndpointStatus};
