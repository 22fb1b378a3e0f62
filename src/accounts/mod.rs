//! Who is calling and what they may spend: API keys (minting, hashing, the in-memory lookup
//! cache), limit periods, and credit holds against spending limits. No HTTP types here.

mod credits;
mod keys;
pub mod period;

pub use credits::{CreditError, Credits, Upkeep};
pub use keys::{AuthError, AuthedKey, CreatedKey, Keys, LimitReset};
