//! API keys: minting (`sk-sy-…`), SHA-256 hashing, changing and deleting them, and the lookup
//! cache that serves authentication from memory after the first hit. Never stores or logs a
//! plaintext key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use rand::distr::Alphanumeric;
use rand::rngs::OsRng;
use rand::{Rng, TryRngCore};
use sha2::{Digest, Sha256};

use super::KeyStatement;
use crate::clock::WallClock;
use crate::openai::MicroUsd;
use crate::store::{ApiKeyRow, KeyUpdate, NewApiKey, Store, StoreError};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LimitReset {
    Daily,
    Weekly,
    Monthly,
}

impl LimitReset {
    /// The spelling stored in `api_keys.limit_reset` and shown on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitReset::Daily => "daily",
            LimitReset::Weekly => "weekly",
            LimitReset::Monthly => "monthly",
        }
    }
}

impl std::str::FromStr for LimitReset {
    type Err = ();

    /// The spellings of [`LimitReset::as_str`], so the two can never disagree.
    fn from_str(text: &str) -> Result<Self, ()> {
        [LimitReset::Daily, LimitReset::Weekly, LimitReset::Monthly]
            .into_iter()
            .find(|reset| reset.as_str() == text)
            .ok_or(())
    }
}

/// The caller, once authenticated, with what it may spend and how often it may ask: read from
/// the cache, so a change reaches every replica within the cache's one-second window.
#[derive(Debug, Clone)]
pub struct AuthedKey {
    /// Hex SHA-256 of the key: the id in `/keys/{hash}` and on every generation.
    pub hash: Arc<str>,
    pub name: Arc<str>,
    /// Spending limit per period; `None` is unlimited.
    pub limit: Option<MicroUsd>,
    pub limit_reset: Option<LimitReset>,
    /// Per-key request rate limits; `None` falls back to the configured default.
    pub requests_per_minute: Option<u32>,
    pub requests_per_day: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer sk-sy-…`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key is disabled")]
    Disabled,
    #[error("this API key has expired")]
    Expired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a key could not be created, changed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`name` must not be empty")]
    EmptyName,
    #[error("`name` must be at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("`name` must not contain control characters (newlines, tabs, escapes)")]
    NameWithControlCharacters,
    #[error(
        "`limit` must be a non-negative amount of USD with at most six decimals, e.g. 25 or 0.5"
    )]
    InvalidLimit,
    #[error("`limit_reset` must be daily, weekly, monthly or null")]
    InvalidLimitReset,
    #[error("`expires_at` must be an RFC 3339 timestamp, e.g. 2027-12-31T23:59:59Z")]
    InvalidExpiry,
    #[error("no key with hash {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change to a key; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub name: Option<String>,
    pub disabled: Option<bool>,
    /// `Some(None)` makes the key unlimited.
    pub limit: Option<Option<MicroUsd>>,
    /// `Some(None)` makes the limit never reset.
    pub limit_reset: Option<Option<LimitReset>>,
}

/// Parses a limit in USD as people write it (`25`, `0.50`), exactly.
pub fn parse_limit(text: &str) -> Result<MicroUsd, KeyError> {
    MicroUsd::parse_usd(text).ok_or(KeyError::InvalidLimit)
}

pub fn parse_limit_reset(text: &str) -> Result<LimitReset, KeyError> {
    text.parse().map_err(|()| KeyError::InvalidLimitReset)
}

/// Any RFC 3339 offset is accepted and kept as the same instant in UTC.
pub fn parse_expiry(text: &str) -> Result<DateTime<Utc>, KeyError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.to_utc())
        .map_err(|_| KeyError::InvalidExpiry)
}

/// A freshly minted key: the plaintext is here and nowhere else, ever.
pub struct CreatedKey {
    pub key: String,
    pub row: ApiKeyRow,
}

/// The row only: the plaintext goes to whoever created the key, never into a log.
impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &format_args!("***"))
            .field("row", &self.row)
            .finish()
    }
}

const KEY_PREFIX: &str = "sk-sy-";
/// 48 base62 characters carry ~285 bits: far beyond guessing, and SHA-256 without a salt or a slow
/// KDF is then safe to store.
const KEY_RANDOM_CHARS: usize = 48;
const KEY_LEN: usize = KEY_PREFIX.len() + KEY_RANDOM_CHARS;
/// Enough of the key to tell keys apart in a listing, too little to help guess the rest.
const DISPLAY_PREFIX_CHARS: usize = 10;
/// How long a cached verdict (valid, disabled or unknown) is trusted before the store is asked
/// again: disabling a key in another replica, or creating one, takes effect within this delay.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Past this many entries, stale ones are swept before another miss is cached; if the map is still
/// full, misses go uncached so a flood of random keys cannot grow memory without bound.
const CACHE_SOFT_CAP: usize = 100_000;

/// Key administration and authentication over the store, with an in-memory cache. Cheap to clone:
/// every clone shares one cache.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Keyed by the raw digest so the hot path hashes into a stack array and allocates nothing.
    /// Sharded, so concurrent requests do not contend on one lock.
    cache: DashMap<[u8; 32], Cached>,
    cache_clock: CacheClock,
    /// Judges expiry and the periods of statements.
    clock: WallClock,
}

/// Where the cache reads the time; tests move a clock by hand instead of sleeping.
type CacheClock = Arc<dyn Fn() -> Instant + Send + Sync>;

struct Cached {
    checked_at: Instant,
    verdict: Verdict,
}

/// What the store said about a hash. Expiry is not part of it: it is judged on every request, so
/// a key that expires while cached is refused at once.
enum Verdict {
    Active {
        key: AuthedKey,
        expires_at: Option<DateTime<Utc>>,
    },
    Disabled,
    Unknown,
}

impl Verdict {
    fn of(row: Option<ApiKeyRow>) -> Verdict {
        match row {
            None => Verdict::Unknown,
            Some(row) if row.disabled => Verdict::Disabled,
            Some(row) => Verdict::Active {
                key: AuthedKey {
                    limit: row.limit_micros.map(MicroUsd),
                    limit_reset: row.limit_reset.as_deref().and_then(|r| r.parse().ok()),
                    requests_per_minute: row
                        .requests_per_minute
                        .and_then(|n| u32::try_from(n).ok()),
                    requests_per_day: row.requests_per_day.and_then(|n| u32::try_from(n).ok()),
                    hash: row.hash.into(),
                    name: row.name.into(),
                },
                expires_at: row.expires_at,
            },
        }
    }

    fn judge(&self, clock: &WallClock) -> Result<AuthedKey, AuthError> {
        match self {
            Verdict::Active {
                expires_at: Some(at),
                ..
            } if *at <= clock.now() => Err(AuthError::Expired),
            Verdict::Active { key, .. } => Ok(key.clone()),
            Verdict::Disabled => Err(AuthError::Disabled),
            Verdict::Unknown => Err(AuthError::Invalid),
        }
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("store", &self.inner.store)
            .field("cached", &self.inner.cache.len())
            .finish()
    }
}

impl Keys {
    /// Keys judged by `clock`: expiry, and the periods their statements sum.
    pub fn new(store: Store, clock: WallClock) -> Self {
        Self::with_cache_clock(store, clock, Instant::now)
    }

    /// Like [`Keys::new`], with the cache reading its time from `cache_clock`: tests use it to
    /// expire cache entries without sleeping.
    pub fn with_cache_clock(
        store: Store,
        clock: WallClock,
        cache_clock: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        let inner = Inner {
            store,
            cache: DashMap::new(),
            cache_clock: Arc::new(cache_clock),
            clock,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub async fn create(
        &self,
        name: &str,
        limit: Option<MicroUsd>,
        limit_reset: Option<LimitReset>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CreatedKey, KeyError> {
        let name = valid_name(name)?;
        let key = mint();
        let digest = digest(&key);
        let prefix: String = key
            .chars()
            .take(DISPLAY_PREFIX_CHARS)
            .chain(['…'])
            .collect();
        let new = NewApiKey {
            name,
            hash: hex::encode(digest),
            prefix,
            limit_micros: limit.map(|limit| limit.0),
            limit_reset: limit_reset.map(|reset| reset.as_str().to_owned()),
            expires_at,
        };
        let row = self.inner.store.insert_key(&new).await?;
        // A miss cached for this exact key (presented before it existed) would hide it for up to a
        // second; practically impossible with random keys, and free to rule out.
        self.inner.cache.remove(&digest);
        Ok(CreatedKey { key, row })
    }

    /// Changes a key and returns its statement as it is afterwards. This process sees the change
    /// at once; other processes within the cache's one-second window.
    pub async fn update(&self, hash: &str, change: KeyChange) -> Result<KeyStatement, KeyError> {
        let update = KeyUpdate {
            name: change.name.as_deref().map(valid_name).transpose()?,
            disabled: change.disabled,
            limit_micros: change.limit.map(|limit| limit.map(|limit| limit.0)),
            limit_reset: change
                .limit_reset
                .map(|reset| reset.map(|reset| reset.as_str().to_owned())),
        };
        let found = self.inner.store.update_key(hash, &update).await?;
        self.forget(hash);
        let statement = match found {
            Some(_) => self.statement(hash).await?,
            None => None,
        };
        statement.ok_or_else(|| KeyError::NotFound(hash.to_owned()))
    }

    /// Disables or re-enables a key, like [`Keys::update`]. Returns whether the key exists.
    pub async fn set_disabled(&self, hash: &str, disabled: bool) -> Result<bool, StoreError> {
        let found = self.inner.store.set_key_disabled(hash, disabled).await?;
        self.forget(hash);
        Ok(found)
    }

    /// Deletes a key; its ledger rows and generations stay. This process refuses it at once,
    /// other processes within the cache's one-second window.
    pub async fn delete(&self, hash: &str) -> Result<(), KeyError> {
        let found = self.inner.store.delete_key(hash).await?;
        self.forget(hash);
        if found {
            Ok(())
        } else {
            Err(KeyError::NotFound(hash.to_owned()))
        }
    }

    pub(super) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The calendar time keys are judged by.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Drops this process's cached verdict for `hash`, so its next request asks the store.
    fn forget(&self, hash: &str) {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(hash, &mut digest).is_ok() {
            self.inner.cache.remove(&digest);
        }
    }

    /// `presented` is the bearer token as the caller sent it.
    pub async fn authenticate(&self, presented: &str) -> Result<AuthedKey, AuthError> {
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        // Anything we could not have minted is refused without hashing or asking the store.
        if presented.len() != KEY_LEN || !presented.starts_with(KEY_PREFIX) {
            return Err(AuthError::Invalid);
        }
        let digest = digest(presented);
        let now = (self.inner.cache_clock)();
        if let Some(cached) = self.inner.cache.get(&digest)
            && now.saturating_duration_since(cached.checked_at) < CACHE_TTL
        {
            return cached.verdict.judge(&self.inner.clock);
        }
        // The map guard is released above: nothing may hold a shard lock across this await.
        let row = self.inner.store.key_by_hash(&hex::encode(digest)).await?;
        let verdict = Verdict::of(row);
        let outcome = verdict.judge(&self.inner.clock);
        self.remember(
            digest,
            Cached {
                checked_at: now,
                verdict,
            },
        );
        outcome
    }

    fn remember(&self, digest: [u8; 32], cached: Cached) {
        let cache = &self.inner.cache;
        if matches!(cached.verdict, Verdict::Unknown) && cache.len() >= CACHE_SOFT_CAP {
            cache.retain(|_, entry| {
                cached
                    .checked_at
                    .saturating_duration_since(entry.checked_at)
                    < CACHE_TTL
            });
            if cache.len() >= CACHE_SOFT_CAP {
                return;
            }
        }
        cache.insert(digest, cached);
    }
}

/// Names are trimmed; an empty one would leave the key nameless in every listing.
/// The longest key name: enough for a team and a purpose, short enough for a listing's line.
pub const MAX_NAME_CHARS: usize = 128;

fn valid_name(name: &str) -> Result<String, KeyError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(KeyError::EmptyName);
    }
    // Counting stops past the limit, so a huge name costs no more than a long one.
    if name.chars().nth(MAX_NAME_CHARS).is_some() {
        return Err(KeyError::NameTooLong);
    }
    // Names are printed by `keys list` and shown in logs and pages, where these would forge
    // lines or move the cursor.
    if name.chars().any(char::is_control) {
        return Err(KeyError::NameWithControlCharacters);
    }
    Ok(name.to_owned())
}

fn mint() -> String {
    // The OS generator directly: a key is a long-lived secret, worth a syscall. `unwrap_err`
    // panics only if the OS cannot produce randomness at all, and then no key should be minted.
    let mut rng = OsRng.unwrap_err();
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(KEY_PREFIX);
    key.extend(
        (&mut rng)
            .sample_iter(Alphanumeric)
            .take(KEY_RANDOM_CHARS)
            .map(char::from),
    );
    key
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_the_prefix_and_48_base62_characters() {
        let key = mint();
        assert_eq!(key.len(), KEY_LEN);
        let random = key.strip_prefix(KEY_PREFIX).unwrap();
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
        assert_ne!(mint(), key);
    }

    #[test]
    fn the_digest_is_sha256_of_the_whole_key() {
        assert_eq!(
            hex::encode(digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn limits_are_exact_non_negative_usd_and_expiry_is_rfc_3339_in_utc() {
        assert_eq!(parse_limit("12.5").unwrap(), MicroUsd(12_500_000));
        for bad in ["-1", "1e3", "0.0000001", "", "ten"] {
            assert!(
                matches!(parse_limit(bad), Err(KeyError::InvalidLimit)),
                "{bad}"
            );
        }
        let at = parse_expiry("2027-01-01T02:00:00+02:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(matches!(
            parse_expiry("tomorrow"),
            Err(KeyError::InvalidExpiry)
        ));
        assert!(matches!(
            parse_limit_reset("yearly"),
            Err(KeyError::InvalidLimitReset)
        ));
    }

    #[test]
    fn names_are_trimmed_never_empty_bounded_and_free_of_control_characters() {
        assert_eq!(valid_name("  ci ").unwrap(), "ci");
        assert!(matches!(valid_name(" \t"), Err(KeyError::EmptyName)));
        let longest = "é".repeat(MAX_NAME_CHARS);
        assert_eq!(valid_name(&longest).unwrap(), longest);
        let too_long = "x".repeat(MAX_NAME_CHARS + 1);
        assert!(matches!(valid_name(&too_long), Err(KeyError::NameTooLong)));
        assert!(matches!(
            valid_name(&"x".repeat(1 << 20)),
            Err(KeyError::NameTooLong)
        ));
        for forged in ["a\nb", "a\rb", "a\u{1b}[2Jb", "a\tb", "a\u{7f}b"] {
            assert!(
                matches!(valid_name(forged), Err(KeyError::NameWithControlCharacters)),
                "{forged:?}"
            );
        }
    }

    #[test]
    fn limit_reset_is_stored_in_the_same_spelling_as_its_json() {
        for reset in [LimitReset::Daily, LimitReset::Weekly, LimitReset::Monthly] {
            let json = serde_json::to_string(&reset).unwrap();
            assert_eq!(json, format!("\"{}\"", reset.as_str()));
        }
    }
}
