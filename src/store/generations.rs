//! The `generations` table: one row per request, written in batches. No pricing or HTTP here.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::{Store, StoreError, on_pool};

/// One request's record, as dashboards read it. `cost` is integer micro-USD.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GenerationRow {
    pub id: String,
    pub key_hash: String,
    pub model: String,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub app_referer: Option<String>,
    pub app_title: Option<String>,
    /// Stored to the microsecond; finer digits are dropped on insert.
    pub created_at: DateTime<Utc>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: i64,
    pub status: i32,
    pub finish_reason: Option<String>,
    pub streamed: bool,
    pub cancelled: bool,
    /// JSON array of every attempt: `[{"provider", "model", "status", "latency_ms", "error"}]`.
    pub attempts: String,
    /// The error message returned to the caller, when the request failed.
    pub error: Option<String>,
}

/// A macro rather than a `const` so that `concat!` builds each query as one `&'static str`.
macro_rules! columns {
    () => {
        "id, key_hash, model, provider, upstream_model, app_referer, app_title, created_at, \
         latency_ms, ttft_ms, prompt_tokens, completion_tokens, cached_tokens, \
         cache_write_tokens, reasoning_tokens, cost, status, finish_reason, streamed, cancelled, \
         attempts, error"
    };
}

const COLUMN_COUNT: usize = 22;
/// SQLite's default cap on bound parameters per statement (Postgres allows 65,535).
const MAX_BINDS: usize = 32_766;
const ROWS_PER_STATEMENT: usize = MAX_BINDS / COLUMN_COUNT;
// Typical batches (hundreds of rows) should take one statement, not several.
const _: () = assert!(ROWS_PER_STATEMENT >= 1_000);

impl Store {
    /// Inserts a batch in one transaction; a row whose id exists already is skipped.
    pub async fn insert_generations(&self, rows: &[GenerationRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut insert =
                    QueryBuilder::new(concat!("INSERT INTO generations (", columns!(), ") "));
                insert.push_values(chunk, |mut values, row| {
                    values
                        .push_bind(&row.id)
                        .push_bind(&row.key_hash)
                        .push_bind(&row.model)
                        .push_bind(&row.provider)
                        .push_bind(&row.upstream_model)
                        .push_bind(&row.app_referer)
                        .push_bind(&row.app_title)
                        .push_bind(super::at_microseconds(row.created_at))
                        .push_bind(row.latency_ms)
                        .push_bind(row.ttft_ms)
                        .push_bind(row.prompt_tokens)
                        .push_bind(row.completion_tokens)
                        .push_bind(row.cached_tokens)
                        .push_bind(row.cache_write_tokens)
                        .push_bind(row.reasoning_tokens)
                        .push_bind(row.cost)
                        .push_bind(row.status)
                        .push_bind(&row.finish_reason)
                        .push_bind(row.streamed)
                        .push_bind(row.cancelled)
                        .push_bind(&row.attempts)
                        .push_bind(&row.error);
                });
                insert.push(" ON CONFLICT (id) DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The generation with this id, only if it belongs to `key_hash`.
    pub async fn generation(
        &self,
        id: &str,
        key_hash: &str,
    ) -> Result<Option<GenerationRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM generations WHERE id = $1 AND key_hash = $2"
        );
        let row = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(id)
            .bind(key_hash)
            .fetch_optional(pool)
            .await?);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_list_has_one_entry_per_bound_field() {
        assert_eq!(columns!().split(',').count(), COLUMN_COUNT);
    }
}
