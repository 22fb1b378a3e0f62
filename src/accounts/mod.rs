//! Who is calling and what they may spend: API keys (minting, hashing, the in-memory lookup
//! cache). Credit reservation and rate limits arrive with the accounts issue. No HTTP types here.

mod keys;
pub mod period;
mod rate_limit;

pub use keys::{AuthError, AuthedKey, CreatedKey, Keys, LimitReset};
pub use rate_limit::{
    RateAllowance, RateLimit, RateLimitError, RateLimited, RateLimiter, RateWindow,
};
