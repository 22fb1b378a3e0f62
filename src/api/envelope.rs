//! [`Data`]: the `{"data": ...}` wrapper OpenRouter puts around the objects of its own endpoints
//! (`key`, `keys`, `credits`). Shape only; no logic.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Data<T> {
    pub data: T,
}
