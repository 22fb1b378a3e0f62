//! What a request cost and the record of it: exact pricing, the generation record, and the
//! batched writer that persists records off the request path. No HTTP types here.

pub mod pricing;
pub mod record;
pub mod writer;

pub use pricing::{InvalidPrice, Price, Pricing};
pub use writer::{GenerationSink, WriterHandle, spawn_writer};
