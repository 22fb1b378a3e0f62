//! The `generations` table: one row per request, written in batches. No pricing or HTTP here.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError, on_pool};

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

/// Rows per SQLite statement, largest first. sqlx-sqlite hands every statement to its worker
/// thread, so one statement per row costs two thread switches per row; a few fixed sizes keep the
/// statement texts (and so the prepared-statement cache) to three, whatever the batch size.
const SQLITE_CHUNKS: [usize; 3] = [64, 8, 1];
const COLUMNS: usize = 22;

/// The multi-row insert for each chunk size, written once.
static SQLITE_INSERTS: LazyLock<[String; 3]> = LazyLock::new(|| SQLITE_CHUNKS.map(sqlite_insert));

fn sqlite_insert(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let placeholders: Vec<String> = (1..=COLUMNS)
                .map(|column| format!("${}", row * COLUMNS + column))
                .collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    format!(
        concat!(
            "INSERT INTO generations (",
            columns!(),
            ") VALUES {} ON CONFLICT (id) DO NOTHING"
        ),
        values.join(", ")
    )
}

/// The largest chunk statement that fits in `remaining` rows, with its size.
fn sqlite_insert_for(remaining: usize) -> Option<(&'static str, usize)> {
    let index = SQLITE_CHUNKS.iter().position(|size| *size <= remaining)?;
    Some((SQLITE_INSERTS[index].as_str(), SQLITE_CHUNKS[index]))
}

/// A whole batch as one array per column; Postgres runs it in one round trip whatever the batch
/// size, and the text never changes, so it is prepared once per connection.
const INSERT_UNNEST: &str = concat!(
    "INSERT INTO generations (",
    columns!(),
    ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::timestamptz[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], \
     $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int4[], $18::text[], $19::bool[], \
     $20::bool[], $21::text[], $22::text[]) ON CONFLICT (id) DO NOTHING"
);

impl Store {
    /// Inserts a batch in one transaction; a row whose id exists already is skipped.
    pub async fn insert_generations(&self, rows: &[GenerationRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut rest = rows;
                while let Some((sql, size)) = sqlite_insert_for(rest.len()) {
                    let (chunk, tail) = rest.split_at(size);
                    let mut insert = sqlx::query(sql);
                    for row in chunk {
                        insert = insert
                            .bind(&row.id)
                            .bind(&row.key_hash)
                            .bind(&row.model)
                            .bind(&row.provider)
                            .bind(&row.upstream_model)
                            .bind(&row.app_referer)
                            .bind(&row.app_title)
                            .bind(super::at_microseconds(row.created_at))
                            .bind(row.latency_ms)
                            .bind(row.ttft_ms)
                            .bind(row.prompt_tokens)
                            .bind(row.completion_tokens)
                            .bind(row.cached_tokens)
                            .bind(row.cache_write_tokens)
                            .bind(row.reasoning_tokens)
                            .bind(row.cost)
                            .bind(row.status)
                            .bind(&row.finish_reason)
                            .bind(row.streamed)
                            .bind(row.cancelled)
                            .bind(&row.attempts)
                            .bind(&row.error);
                    }
                    insert.execute(&mut *tx).await?;
                    rest = tail;
                }
                tx.commit().await?;
            }
            Pool::Postgres(pool) => {
                fn column<'a, T>(
                    rows: &'a [GenerationRow],
                    field: impl Fn(&'a GenerationRow) -> T,
                ) -> Vec<T> {
                    rows.iter().map(field).collect()
                }
                sqlx::query(INSERT_UNNEST)
                    .bind(column(rows, |row| row.id.as_str()))
                    .bind(column(rows, |row| row.key_hash.as_str()))
                    .bind(column(rows, |row| row.model.as_str()))
                    .bind(column(rows, |row| row.provider.as_deref()))
                    .bind(column(rows, |row| row.upstream_model.as_deref()))
                    .bind(column(rows, |row| row.app_referer.as_deref()))
                    .bind(column(rows, |row| row.app_title.as_deref()))
                    .bind(column(rows, |row| super::at_microseconds(row.created_at)))
                    .bind(column(rows, |row| row.latency_ms))
                    .bind(column(rows, |row| row.ttft_ms))
                    .bind(column(rows, |row| row.prompt_tokens))
                    .bind(column(rows, |row| row.completion_tokens))
                    .bind(column(rows, |row| row.cached_tokens))
                    .bind(column(rows, |row| row.cache_write_tokens))
                    .bind(column(rows, |row| row.reasoning_tokens))
                    .bind(column(rows, |row| row.cost))
                    .bind(column(rows, |row| row.status))
                    .bind(column(rows, |row| row.finish_reason.as_deref()))
                    .bind(column(rows, |row| row.streamed))
                    .bind(column(rows, |row| row.cancelled))
                    .bind(column(rows, |row| row.attempts.as_str()))
                    .bind(column(rows, |row| row.error.as_deref()))
                    .execute(pool)
                    .await?;
            }
        }
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
    fn every_insert_binds_one_parameter_per_column_and_row() {
        let columns = columns!().split(',').count();
        assert_eq!(columns, COLUMNS);
        assert_eq!(INSERT_UNNEST.matches('$').count(), columns);
        for (rows, sql) in SQLITE_CHUNKS.iter().zip(SQLITE_INSERTS.iter()) {
            assert_eq!(sql.matches('$').count(), rows * columns);
        }
        assert_eq!(sqlite_insert_for(70).map(|(_, size)| size), Some(64));
        assert_eq!(sqlite_insert_for(6).map(|(_, size)| size), Some(1));
        assert_eq!(sqlite_insert_for(0), None);
    }
}
