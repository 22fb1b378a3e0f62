//! Credit holds: before a request on a key with a limit is sent upstream, its worst-case cost is
//! held against the limit in the database (so replicas sharing it can never overspend together);
//! the generation writer later settles it. A living gateway renews its holds; the holds of a
//! dead one expire and are refunded. Keys without a limit never touch the database here.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::task::JoinHandle;

use super::AuthedKey;
use super::period::period_start;
use crate::clock::WallClock;
use crate::openai::MicroUsd;
use crate::store::{NewHold, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error(
        "insufficient credit: this request may cost up to ${worst_case} (prompt estimate and \
         max_tokens at the endpoint's prices), more than is left of this key's limit of {limit}; \
         lower max_tokens or raise the key's limit"
    )]
    Insufficient {
        worst_case: String,
        /// The limit in USD, with its reset period: `$10` or `$10 (daily)`.
        limit: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Takes holds for requests and keeps this process's holds alive. Cheap to clone.
#[derive(Clone)]
pub struct Credits {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// This process, as `credit_holds.holder`: unique per start, so a restarted gateway does not
    /// renew the holds its previous life left behind.
    holder: String,
    /// How long a hold outlives its holder's last renewal.
    lease: Duration,
    clock: WallClock,
}

impl std::fmt::Debug for Credits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credits")
            .field("holder", &self.inner.holder)
            .field("lease", &self.inner.lease)
            .finish()
    }
}

impl Credits {
    pub fn new(store: Store, lease: Duration, clock: WallClock) -> Self {
        let suffix: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        let inner = Inner {
            store,
            holder: format!("{}-{suffix}", std::process::id()),
            lease,
            clock,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Holds `worst_case` of `key`'s limit for the generation `generation_id`, or refuses when
    /// what is left of the limit in this period cannot cover it. Unlimited keys and free
    /// requests pass without a database round trip. Returns whether a hold was taken.
    pub async fn hold(
        &self,
        key: &AuthedKey,
        generation_id: &str,
        worst_case: MicroUsd,
    ) -> Result<bool, CreditError> {
        let Some(limit) = key.limit else {
            return Ok(false);
        };
        if worst_case.0 <= 0 {
            return Ok(false);
        }
        let now = self.inner.clock.now();
        let hold = NewHold {
            generation_id,
            key_hash: &key.hash,
            amount: worst_case.0,
            limit: limit.0,
            period_start: period_start(key.limit_reset, now),
            holder: &self.inner.holder,
            expires_at: now + self.inner.lease,
        };
        if self.inner.store.take_hold(&hold).await? {
            return Ok(true);
        }
        let limit = match key.limit_reset {
            None => format!("${}", limit.to_usd_string()),
            Some(reset) => format!("${} ({})", limit.to_usd_string(), reset.as_str()),
        };
        Err(CreditError::Insufficient {
            worst_case: worst_case.to_usd_string(),
            limit,
        })
    }

    /// One round of upkeep: renews this process's holds, then refunds holds whose gateway
    /// stopped renewing them. Returns how many expired holds were released.
    pub async fn upkeep(&self) -> Result<usize, StoreError> {
        let now = self.inner.clock.now();
        let store = &self.inner.store;
        store
            .renew_holds(&self.inner.holder, now + self.inner.lease)
            .await?;
        store.release_expired_holds(now).await
    }

    /// Runs [`Credits::upkeep`] now and then three times per lease, until the handle is dropped.
    pub fn spawn_upkeep(&self) -> Upkeep {
        let credits = self.clone();
        let period = (self.inner.lease / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            // The first round ran when the app was built.
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match credits.upkeep().await {
                    Ok(0) => {}
                    Ok(released) => {
                        tracing::warn!(released, "refunded credit holds of a stopped gateway")
                    }
                    Err(error) => tracing::warn!(%error, "cannot renew or expire credit holds"),
                }
            }
        });
        Upkeep(task)
    }
}

/// The upkeep task; dropping it stops the task.
#[derive(Debug)]
pub struct Upkeep(JoinHandle<()>);

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.0.abort();
    }
}
