//! The admin token that guards key provisioning: [`Admin`] for routes only an operator may call,
//! [`Caller`] for routes that answer an operator and a key differently. A wrong admin token is
//! logged, with where it came from but never the token, and once they come often, answered late.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::request::Parts;
use sha2::{Digest, Sha256};

use super::auth::bearer;
use crate::accounts::{AuthError, AuthedKey, Keys};
use crate::error::ApiError;

/// The configured `[server] admin_token`, kept as its SHA-256 so that comparing a presented token
/// takes the same time whatever its length or how much of it matches.
#[derive(Clone, Copy)]
pub struct AdminToken(Option<[u8; 32]>);

/// Why a request is not the operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No `admin_token` is configured.
    Disabled,
    Missing,
    /// A token that is not the admin token: a guess, or an operator's typo.
    Wrong,
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Disabled => ApiError::forbidden(
                "the key-provisioning API is disabled: set [server] admin_token in the config",
            ),
            Refusal::Missing => ApiError::unauthorized(
                "missing admin token: send `Authorization: Bearer <admin_token>`",
            ),
            Refusal::Wrong => ApiError::unauthorized("invalid admin token"),
        }
    }
}

impl AdminToken {
    /// `None` leaves the provisioning API switched off.
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|token| Sha256::digest(token.as_bytes()).into()))
    }

    fn check(self, presented: Option<&str>) -> Result<(), Refusal> {
        let expected = self.0.ok_or(Refusal::Disabled)?;
        let presented = presented.ok_or(Refusal::Missing)?;
        if matches_in_constant_time(&expected, presented) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }

    fn matches(self, presented: &str) -> bool {
        self.0
            .is_some_and(|expected| matches_in_constant_time(&expected, presented))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.is_some() { "set" } else { "unset" };
        f.debug_tuple("AdminToken").field(&state).finish()
    }
}

/// Every byte is compared, with no early exit, so timing says nothing about how close a guess was.
fn matches_in_constant_time(expected: &[u8; 32], presented: &str) -> bool {
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    AdminToken: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match AdminToken::from_ref(state).check(bearer(parts)) {
            Ok(()) => Ok(Admin),
            Err(Refusal::Wrong) => {
                tokio::time::sleep(wrong_token(parts)).await;
                Err(Refusal::Wrong.into())
            }
            Err(refusal) => Err(refusal.into()),
        }
    }
}

/// Wrong admin tokens answered without delay within [`FAILURE_WINDOW_MS`] of one another.
const FREE_FAILURES: u32 = 10;
/// A pause this long between wrong tokens starts the count again.
const FAILURE_WINDOW_MS: u64 = 60_000;
/// The wait before answering the first wrong token past the free ones; it doubles with each
/// further one, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Long enough that guessing is slow even over many connections, short enough that an operator
/// with a stale token in a script is not locked out.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Wrong admin tokens seen by this process. One count for the whole process, because a guesser
/// spreads attempts over connections and serving threads; plain atomics, touched only when a
/// token is wrong, so a right one costs nothing.
static FAILURES: Throttle = Throttle::new();
static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

struct Throttle {
    /// Wrong tokens since the count last started again.
    failures: AtomicU32,
    /// When the latest one came, in milliseconds since [`STARTED`].
    latest_ms: AtomicU64,
}

impl Throttle {
    const fn new() -> Self {
        Self {
            failures: AtomicU32::new(0),
            latest_ms: AtomicU64::new(0),
        }
    }

    /// Counts a wrong token at `now_ms`: how many came in a row, and how long to wait before
    /// answering. Two racing in after a quiet spell may both start the count again, which gives
    /// a guesser one free try at most.
    fn fail(&self, now_ms: u64) -> (u32, Duration) {
        let previous = self.latest_ms.swap(now_ms, Ordering::Relaxed);
        let failures = if now_ms.saturating_sub(previous) > FAILURE_WINDOW_MS {
            self.failures.store(1, Ordering::Relaxed);
            1
        } else {
            self.failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        };
        (failures, delay_after(failures))
    }
}

fn delay_after(failures: u32) -> Duration {
    let Some(over) = failures.checked_sub(FREE_FAILURES + 1) else {
        return Duration::ZERO;
    };
    // 2^5 × FIRST_DELAY is past the cap already, so the exponent stops there and cannot overflow.
    FIRST_DELAY.saturating_mul(1 << over.min(5)).min(MAX_DELAY)
}

/// Logs a wrong admin token (where it came from, never what it was) and says how long to wait
/// before answering it.
fn wrong_token(parts: &Parts) -> Duration {
    let now_ms = u64::try_from(STARTED.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (failures, delay) = FAILURES.fail(now_ms);
    tracing::warn!(
        peer = peer(parts).map(tracing::field::display),
        path = %parts.uri.path(),
        failures,
        ?delay,
        "wrong admin token"
    );
    delay
}

/// The client's address, when the server recorded it for the request.
fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
}

/// The operator (admin token) or a key.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Key(AuthedKey),
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AdminToken: FromRef<S>,
    Arc<Keys>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let presented = bearer(parts).ok_or(AuthError::Missing)?;
        if AdminToken::from_ref(state).matches(presented) {
            return Ok(Caller::Admin);
        }
        let keys = Arc::<Keys>::from_ref(state);
        Ok(Caller::Key(keys.authenticate(presented).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_matches() {
        let admin = AdminToken::new(Some("s3cret"));
        assert!(admin.matches("s3cret"));
        assert!(!admin.matches("s3cret "));
        assert!(!admin.matches(""));
        assert_eq!(admin.check(Some("s3cret")), Ok(()));
        assert_eq!(admin.check(Some("nope")), Err(Refusal::Wrong));
        assert_eq!(admin.check(None), Err(Refusal::Missing));
        assert_eq!(ApiError::from(Refusal::Wrong).status(), 401);
        assert_eq!(ApiError::from(Refusal::Missing).status(), 401);
    }

    #[test]
    fn without_a_configured_token_nothing_matches_and_the_api_is_forbidden() {
        let off = AdminToken::new(None);
        assert!(!off.matches(""));
        assert_eq!(off.check(Some("anything")), Err(Refusal::Disabled));
        assert_eq!(ApiError::from(Refusal::Disabled).status(), 403);
    }

    #[test]
    fn wrong_tokens_past_ten_in_a_row_wait_longer_each_time_up_to_two_seconds() {
        let throttle = Throttle::new();
        let delays: Vec<Duration> = (0..18).map(|n| throttle.fail(1_000 + n).1).collect();
        assert!(delays[..10].iter().all(Duration::is_zero), "{delays:?}");
        let millis = |ms| Duration::from_millis(ms);
        assert_eq!(
            delays[10..],
            [100, 200, 400, 800, 1600, 2000, 2000, 2000].map(millis)
        );
    }

    #[test]
    fn a_quiet_minute_starts_the_count_again() {
        let throttle = Throttle::new();
        for n in 0..12 {
            throttle.fail(n * 1_000);
        }
        assert_eq!(throttle.fail(12_000), (13, Duration::from_millis(400)));
        assert_eq!(throttle.fail(12_000 + 60_001), (1, Duration::ZERO));
    }

    #[test]
    fn the_peer_is_the_address_the_server_recorded() {
        let address: SocketAddr = ([192, 0, 2, 7], 40_000).into();
        let request = http::Request::builder()
            .extension(ConnectInfo(address))
            .body(())
            .unwrap();
        assert_eq!(peer(&request.into_parts().0), Some(address));
        let request = http::Request::new(());
        assert_eq!(peer(&request.into_parts().0), None);
    }
}
