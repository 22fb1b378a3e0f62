//! Who is calling and what they may spend: API keys (minting, hashing, the in-memory lookup
//! cache). Credit reservation and rate limits arrive with the accounts issue. No HTTP types here.

mod keys;
pub mod period;
mod statement;

pub use keys::{
    AuthError, AuthedKey, CreatedKey, KeyChange, KeyError, Keys, LimitReset, parse_expiry,
    parse_limit, parse_limit_reset,
};
pub use statement::{CreditTotals, KeyStatement, limit_remaining};
