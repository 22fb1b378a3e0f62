//! What a key has spent and has left (the statement `/key` and `/keys` show) and the credit
//! totals of `/credits`. Reads and arithmetic only: no SQL, no HTTP types.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::keys::{Keys, LimitReset};
use super::period::{PeriodStarts, period_start};
use crate::openai::MicroUsd;
use crate::store::{ApiKeyRow, KeyPage, KeyUsageRow, StoreError, UsageWindows};

/// One key, its limit and its usage. The field names are OpenRouter's, so the API serializes a
/// statement as it is; amounts are exact USD numbers.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatement {
    /// The id in `/keys/{hash}`: hex SHA-256 of the key.
    pub hash: String,
    pub name: String,
    /// The key's first characters, to tell keys apart; never enough to use it.
    pub label: String,
    pub disabled: bool,
    /// Per period; `None` is unlimited.
    pub limit: Option<MicroUsd>,
    /// What is left of `limit` in the current period (open holds count as spent); `None` when
    /// unlimited, never below zero.
    pub limit_remaining: Option<MicroUsd>,
    pub limit_reset: Option<LimitReset>,
    /// Settled cost, all time.
    pub usage: MicroUsd,
    /// Cost in the current UTC day, week (from Monday) and month.
    pub usage_daily: MicroUsd,
    pub usage_weekly: MicroUsd,
    pub usage_monthly: MicroUsd,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Micro-USD totals over one key or all keys: their limits and their settled usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CreditTotals {
    pub total_credits: MicroUsd,
    pub total_usage: MicroUsd,
}

impl KeyStatement {
    fn of(row: KeyUsageRow, now: DateTime<Utc>) -> Self {
        let key = row.key;
        let limit = key.limit_micros.map(MicroUsd);
        let limit_reset = key.limit_reset.as_deref().and_then(|r| r.parse().ok());
        KeyStatement {
            limit_remaining: limit_remaining(
                limit,
                limit_reset,
                row.period_start,
                row.period_spent,
                now,
            ),
            hash: key.hash,
            name: key.name,
            label: key.prefix,
            disabled: key.disabled,
            limit,
            limit_reset,
            usage: MicroUsd(row.usage),
            usage_daily: MicroUsd(row.usage_daily),
            usage_weekly: MicroUsd(row.usage_weekly),
            usage_monthly: MicroUsd(row.usage_monthly),
            created_at: key.created_at,
            updated_at: key.updated_at,
            expires_at: key.expires_at,
        }
    }

    /// A key that has spent nothing yet, e.g. one just created, as of `now`.
    pub fn opening(key: ApiKeyRow, now: DateTime<Utc>) -> Self {
        let row = KeyUsageRow {
            key,
            usage: 0,
            period_start: 0,
            period_spent: 0,
            usage_daily: 0,
            usage_weekly: 0,
            usage_monthly: 0,
        };
        Self::of(row, now)
    }
}

/// `limit` minus what was spent in the current period. `period_spent` counts only when it was
/// recorded for the period `now` falls in: after 00:00 UTC a daily limit is whole again even if
/// no request has rolled the stored period over yet.
pub fn limit_remaining(
    limit: Option<MicroUsd>,
    reset: Option<LimitReset>,
    period_started: i64,
    period_spent: i64,
    now: DateTime<Utc>,
) -> Option<MicroUsd> {
    let limit = limit?;
    let spent = if period_started == period_start(reset, now) {
        period_spent
    } else {
        0
    };
    Some(MicroUsd(limit.0.saturating_sub(spent).max(0)))
}

fn windows(now: DateTime<Utc>) -> UsageWindows {
    let starts = PeriodStarts::at(now);
    UsageWindows {
        day: starts.day,
        week: starts.week,
        month: starts.month,
    }
}

impl Keys {
    /// The statement of one key; `None` if no key has that hash.
    pub async fn statement(&self, hash: &str) -> Result<Option<KeyStatement>, StoreError> {
        let now = self.now();
        let row = self.store().key_usage(hash, windows(now)).await?;
        Ok(row.map(|row| KeyStatement::of(row, now)))
    }

    /// Statements of the keys in `page`, oldest first.
    pub async fn statements(&self, page: KeyPage) -> Result<Vec<KeyStatement>, StoreError> {
        let now = self.now();
        let rows = self.store().keys_usage(windows(now), page).await?;
        Ok(rows
            .into_iter()
            .map(|row| KeyStatement::of(row, now))
            .collect())
    }

    /// Totals of one key (`Some(hash)`) or of every key.
    pub async fn credits(&self, hash: Option<&str>) -> Result<CreditTotals, StoreError> {
        let row = self.store().credit_totals(hash).await?;
        Ok(CreditTotals {
            total_credits: MicroUsd(row.total_credits),
            total_usage: MicroUsd(row.total_usage),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn spending_in_the_current_period_counts_against_the_limit() {
        let now = at("2026-11-25T12:00:00Z");
        let today = period_start(Some(LimitReset::Daily), now);
        let remaining = limit_remaining(
            Some(MicroUsd(5_000_000)),
            Some(LimitReset::Daily),
            today,
            1_250_000,
            now,
        );
        assert_eq!(remaining, Some(MicroUsd(3_750_000)));
    }

    #[test]
    fn spending_recorded_for_an_earlier_period_does_not_count() {
        let now = at("2026-11-25T00:00:01Z");
        let yesterday = period_start(Some(LimitReset::Daily), at("2026-11-24T23:00:00Z"));
        let remaining = limit_remaining(
            Some(MicroUsd(5_000_000)),
            Some(LimitReset::Daily),
            yesterday,
            4_000_000,
            now,
        );
        assert_eq!(remaining, Some(MicroUsd(5_000_000)));
    }

    #[test]
    fn a_limit_that_never_resets_counts_everything_and_never_goes_below_zero() {
        let now = at("2026-11-25T12:00:00Z");
        let remaining = limit_remaining(Some(MicroUsd(1_000_000)), None, 0, 3_000_000, now);
        assert_eq!(remaining, Some(MicroUsd(0)));
        assert_eq!(limit_remaining(None, None, 0, 3_000_000, now), None);
    }
}
