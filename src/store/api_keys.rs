//! The `api_keys` table, with the `key_credits` row and `grant` ledger rows that move with a key's
//! limit. Never sees a plaintext key, only its hash; knows rows, not what a limit means.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, on_pool};

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    /// Hex SHA-256 of the full key; the key itself is never stored.
    pub hash: String,
    /// The first characters of the key, shown in listings so people can tell keys apart.
    pub prefix: String,
    /// Spending limit in micro-USD; `None` is unlimited.
    pub limit_micros: Option<i64>,
    /// `daily`, `weekly`, `monthly` or `None`.
    pub limit_reset: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A change to a key: `None` leaves a column as it is, so callers send only what changes.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub disabled: Option<bool>,
    /// `Some(None)` makes the key unlimited.
    pub limit_micros: Option<Option<i64>>,
    /// `Some(None)` makes the limit never reset.
    pub limit_reset: Option<Option<String>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: i64,
    pub name: String,
    pub hash: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// Last change through the provisioning API or the CLI; `None` if never changed.
    pub updated_at: Option<DateTime<Utc>>,
    pub disabled: bool,
    /// `limit` is reserved in SQL, hence the column's longer name.
    #[sqlx(rename = "credit_limit")]
    pub limit_micros: Option<i64>,
    pub limit_reset: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Per-key request rate limits; `None` falls back to the configured default.
    pub requests_per_minute: Option<i32>,
    pub requests_per_day: Option<i32>,
}

/// A macro rather than a `const` so that `concat!` builds each query as one `&'static str`.
/// Qualified with `api_keys.` so the same list serves queries that join other tables.
macro_rules! columns {
    () => {
        "api_keys.id, api_keys.name, api_keys.hash, api_keys.prefix, api_keys.created_at, \
         api_keys.updated_at, api_keys.disabled, api_keys.credit_limit, api_keys.limit_reset, \
         api_keys.expires_at, api_keys.requests_per_minute, api_keys.requests_per_day"
    };
}
pub(super) use columns;

/// Records a change of `$amount` to the key's limit, in the ledger and in the materialised
/// balance, inside the caller's transaction `$tx`. The upsert covers keys whose `key_credits` row
/// is missing, so the invariant holds for them too. A macro because the transaction's type differs
/// per backend.
macro_rules! grant {
    ($tx:expr, $hash:expr, $amount:expr, $at:expr) => {{
        sqlx::query(
            "INSERT INTO ledger (key_hash, kind, amount, created_at) VALUES ($1, 'grant', $2, $3)",
        )
        .bind($hash)
        .bind($amount)
        .bind($at)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(
            "INSERT INTO key_credits (key_hash, balance) VALUES ($1, $2) \
             ON CONFLICT (key_hash) DO UPDATE SET balance = key_credits.balance + $2",
        )
        .bind($hash)
        .bind($amount)
        .execute(&mut *$tx)
        .await?;
    }};
}

impl Store {
    /// Creates the key, its `key_credits` row and, when it has a limit, the `grant` that puts the
    /// limit in the ledger: all or nothing, so `balance = SUM(ledger.amount)` holds from the start.
    pub async fn insert_key(&self, key: &NewApiKey) -> Result<ApiKeyRow, StoreError> {
        let insert_key = concat!(
            "INSERT INTO api_keys (name, hash, prefix, created_at, credit_limit, limit_reset, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            columns!()
        );
        // The balance starts at zero; the grant below adds the limit to it.
        let insert_credits = "INSERT INTO key_credits (key_hash) VALUES ($1)";
        // Written by us rather than by a column default so both backends store the same instant
        // at the same (microsecond) precision.
        let created_at = super::at_microseconds(Utc::now());
        let row = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: ApiKeyRow = sqlx::query_as(insert_key)
                .bind(&key.name)
                .bind(&key.hash)
                .bind(&key.prefix)
                .bind(created_at)
                .bind(key.limit_micros)
                .bind(&key.limit_reset)
                .bind(key.expires_at.map(super::at_microseconds))
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(insert_credits)
                .bind(&key.hash)
                .execute(&mut *tx)
                .await?;
            if let Some(limit) = key.limit_micros {
                grant!(tx, &key.hash, limit, created_at);
            }
            tx.commit().await?;
            row
        });
        Ok(row)
    }

    /// Applies `update` in one transaction; a changed limit is granted (or taken back) as the
    /// difference, in the ledger and in `key_credits.balance`. `None` if no key has that hash.
    pub async fn update_key(
        &self,
        hash: &str,
        update: &KeyUpdate,
    ) -> Result<Option<ApiKeyRow>, StoreError> {
        // The first statement writes, so the transaction holds the row lock (Postgres) or the
        // database's write lock (SQLite) before it reads the old limit: two concurrent changes
        // cannot both grant from the same old value.
        let lock = "UPDATE api_keys SET updated_at = $2 WHERE hash = $1";
        let old_limit = "SELECT credit_limit FROM api_keys WHERE hash = $1";
        let apply = concat!(
            "UPDATE api_keys SET name = COALESCE($2, name), disabled = COALESCE($3, disabled), \
             credit_limit = CASE WHEN $4 THEN $5 ELSE credit_limit END, \
             limit_reset = CASE WHEN $6 THEN $7 ELSE limit_reset END \
             WHERE hash = $1 RETURNING ",
            columns!()
        );
        let now = super::at_microseconds(Utc::now());
        let row = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(lock)
                .bind(hash)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let old: Option<i64> = sqlx::query_scalar(old_limit)
                .bind(hash)
                .fetch_one(&mut *tx)
                .await?;
            let row: ApiKeyRow = sqlx::query_as(apply)
                .bind(hash)
                .bind(&update.name)
                .bind(update.disabled)
                .bind(update.limit_micros.is_some())
                .bind(update.limit_micros.flatten())
                .bind(update.limit_reset.is_some())
                .bind(update.limit_reset.clone().flatten())
                .fetch_one(&mut *tx)
                .await?;
            let difference = row.limit_micros.unwrap_or(0) - old.unwrap_or(0);
            if difference != 0 {
                grant!(tx, hash, difference, now);
            }
            tx.commit().await?;
            row
        });
        Ok(Some(row))
    }

    /// Removes the key and its `key_credits` row; its ledger rows and generations stay, as
    /// history. Returns whether a key with that hash existed.
    pub async fn delete_key(&self, hash: &str) -> Result<bool, StoreError> {
        let delete_key = "DELETE FROM api_keys WHERE hash = $1";
        let delete_credits = "DELETE FROM key_credits WHERE key_hash = $1";
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query(delete_key)
                .bind(hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(delete_credits).bind(hash).execute(&mut *tx).await?;
            tx.commit().await?;
            deleted
        });
        Ok(deleted > 0)
    }

    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = concat!("SELECT ", columns!(), " FROM api_keys WHERE hash = $1");
        let row =
            on_pool!(self, pool => sqlx::query_as(sql).bind(hash).fetch_optional(pool).await?);
        Ok(row)
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys ORDER BY created_at, id"
        );
        let rows = on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Returns whether a key with that hash existed.
    pub async fn set_key_disabled(&self, hash: &str, disabled: bool) -> Result<bool, StoreError> {
        let update = KeyUpdate {
            disabled: Some(disabled),
            ..KeyUpdate::default()
        };
        Ok(self.update_key(hash, &update).await?.is_some())
    }
}
