//! Who is calling and what they may spend: API keys (minting, hashing, the in-memory lookup
//! cache), limit periods, and credit holds against spending limits. No HTTP types here.

mod credits;
mod keys;
pub mod period;
mod rate_limit;
mod statement;

pub use credits::{CreditError, Credits, Upkeep};
pub use keys::{
    AuthError, AuthedKey, CreatedKey, KeyChange, KeyError, Keys, LimitReset, parse_expiry,
    parse_limit, parse_limit_reset,
};
pub use rate_limit::{
    RateAllowance, RateLimit, RateLimitError, RateLimited, RateLimiter, RateWindow,
};
pub use statement::{CreditTotals, KeyStatement, limit_remaining};
