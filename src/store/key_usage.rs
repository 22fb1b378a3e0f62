//! What keys have spent, read for `/key`, `/keys` and `/credits`: each key with its `key_credits`
//! row and its cost summed from `usage_rollups`. Reads only; never scans `generations` or the
//! ledger's charges.

use chrono::NaiveDate;

use super::api_keys::{ApiKeyRow, columns};
use super::{Store, StoreError, on_pool};

/// A key with what it has spent. Amounts are micro-USD.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyUsageRow {
    #[sqlx(flatten)]
    pub key: ApiKeyRow,
    /// Settled cost, all time (`key_credits.usage`).
    pub usage: i64,
    /// `key_credits.period_start`: the limit period that `period_spent` belongs to.
    pub period_start: i64,
    pub period_spent: i64,
    /// Cost in the current UTC day, week and month, from the rollups.
    pub usage_daily: i64,
    pub usage_weekly: i64,
    pub usage_monthly: i64,
}

/// The first UTC days of the windows that `usage_daily`, `usage_weekly` and `usage_monthly` sum.
#[derive(Debug, Clone, Copy)]
pub struct UsageWindows {
    pub day: NaiveDate,
    pub week: NaiveDate,
    pub month: NaiveDate,
}

/// Which keys a listing returns.
#[derive(Debug, Clone, Copy)]
pub struct KeyPage {
    pub include_disabled: bool,
    pub offset: i64,
    /// `None` is every key from `offset` on.
    pub limit: Option<i64>,
}

/// Totals in micro-USD over one key or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct CreditTotalsRow {
    pub total_credits: i64,
    pub total_usage: i64,
}

/// The statement's select list and joins, up to the rollups subquery's `WHERE`, which each query
/// finishes: `$1`–`$3` are the window starts, `$4` the earliest of them.
macro_rules! usage_select {
    () => {
        concat!(
            "SELECT ",
            columns!(),
            ", CAST(COALESCE(c.usage, 0) AS BIGINT) AS usage, \
             CAST(COALESCE(c.period_start, 0) AS BIGINT) AS period_start, \
             CAST(COALESCE(c.period_spent, 0) AS BIGINT) AS period_spent, \
             CAST(COALESCE(u.usage_daily, 0) AS BIGINT) AS usage_daily, \
             CAST(COALESCE(u.usage_weekly, 0) AS BIGINT) AS usage_weekly, \
             CAST(COALESCE(u.usage_monthly, 0) AS BIGINT) AS usage_monthly \
             FROM api_keys \
             LEFT JOIN key_credits c ON c.key_hash = api_keys.hash \
             LEFT JOIN (SELECT key_hash, \
                 SUM(CASE WHEN day >= $1 THEN cost ELSE 0 END) AS usage_daily, \
                 SUM(CASE WHEN day >= $2 THEN cost ELSE 0 END) AS usage_weekly, \
                 SUM(CASE WHEN day >= $3 THEN cost ELSE 0 END) AS usage_monthly \
               FROM usage_rollups WHERE day >= $4 "
        )
    };
}

impl Store {
    /// One key with its usage; `None` if no key has that hash.
    pub async fn key_usage(
        &self,
        hash: &str,
        windows: UsageWindows,
    ) -> Result<Option<KeyUsageRow>, StoreError> {
        let sql = concat!(
            usage_select!(),
            "AND key_hash = $5 GROUP BY key_hash) u ON u.key_hash = api_keys.hash \
             WHERE api_keys.hash = $5"
        );
        let row = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(windows.day)
            .bind(windows.week)
            .bind(windows.month)
            .bind(windows.earliest())
            .bind(hash)
            .fetch_optional(pool)
            .await?);
        Ok(row)
    }

    /// Keys with their usage, oldest first.
    pub async fn keys_usage(
        &self,
        windows: UsageWindows,
        page: KeyPage,
    ) -> Result<Vec<KeyUsageRow>, StoreError> {
        let sql = concat!(
            usage_select!(),
            "GROUP BY key_hash) u ON u.key_hash = api_keys.hash \
             WHERE ($5 OR NOT api_keys.disabled) \
             ORDER BY api_keys.created_at, api_keys.id LIMIT $6 OFFSET $7"
        );
        let rows = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(windows.day)
            .bind(windows.week)
            .bind(windows.month)
            .bind(windows.earliest())
            .bind(page.include_disabled)
            .bind(page.limit.unwrap_or(i64::MAX))
            .bind(page.offset)
            .fetch_all(pool)
            .await?);
        Ok(rows)
    }

    /// The limits and settled usage of one key (`Some(hash)`) or of every existing key. A key's
    /// `grant` rows sum to its limit by construction; reading the limit spares a walk through
    /// every charge in the ledger.
    pub async fn credit_totals(&self, hash: Option<&str>) -> Result<CreditTotalsRow, StoreError> {
        let sql = "SELECT CAST(COALESCE(SUM(k.credit_limit), 0) AS BIGINT) AS total_credits, \
                   CAST(COALESCE(SUM(c.usage), 0) AS BIGINT) AS total_usage \
                   FROM api_keys k LEFT JOIN key_credits c ON c.key_hash = k.hash \
                   WHERE (CAST($1 AS TEXT) IS NULL OR k.hash = $1)";
        let row = on_pool!(self, pool => sqlx::query_as(sql).bind(hash).fetch_one(pool).await?);
        Ok(row)
    }
}

impl UsageWindows {
    /// The week can start in the previous month, so the earliest start is not always the month's.
    fn earliest(self) -> NaiveDate {
        self.week.min(self.month)
    }
}
