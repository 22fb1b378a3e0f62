//! The `api_keys` table: rows in and out. Never sees a plaintext key, only its hash.

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

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: i64,
    pub name: String,
    pub hash: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
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
macro_rules! columns {
    () => {
        "id, name, hash, prefix, created_at, disabled, credit_limit, limit_reset, expires_at, \
         requests_per_minute, requests_per_day"
    };
}

impl Store {
    /// Inserts the key with its `key_credits` row and, when it has a limit, the ledger grant of
    /// that limit: one transaction, so a key never exists without its credit.
    pub async fn insert_key(&self, key: &NewApiKey) -> Result<ApiKeyRow, StoreError> {
        let sql = concat!(
            "INSERT INTO api_keys (name, hash, prefix, created_at, credit_limit, limit_reset, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            columns!()
        );
        let credits = "INSERT INTO key_credits (key_hash, balance) VALUES ($1, $2)";
        let grant = "INSERT INTO ledger (key_hash, kind, amount, created_at) \
                     VALUES ($1, 'grant', $2, $3)";
        // Written by us rather than by a column default so both backends store the same instant
        // at the same (microsecond) precision.
        let created_at = super::at_microseconds(Utc::now());
        let row = on_pool!(self, pool => {
            let mut transaction = pool.begin().await?;
            let row: ApiKeyRow = sqlx::query_as(sql)
                .bind(&key.name)
                .bind(&key.hash)
                .bind(&key.prefix)
                .bind(created_at)
                .bind(key.limit_micros)
                .bind(&key.limit_reset)
                .bind(key.expires_at.map(super::at_microseconds))
                .fetch_one(&mut *transaction)
                .await?;
            sqlx::query(credits)
                .bind(&key.hash)
                .bind(key.limit_micros.unwrap_or(0))
                .execute(&mut *transaction)
                .await?;
            if let Some(limit) = key.limit_micros {
                sqlx::query(grant)
                    .bind(&key.hash)
                    .bind(limit)
                    .bind(created_at)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await?;
            row
        });
        Ok(row)
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
        let sql = "UPDATE api_keys SET disabled = $1 WHERE hash = $2";
        let updated = on_pool!(self, pool => sqlx::query(sql)
            .bind(disabled)
            .bind(hash)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(updated > 0)
    }
}
