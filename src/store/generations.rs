//! The `generations` table: one row per request, written in batches. No pricing or HTTP here.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Transaction, params};

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
    /// The request's messages and the answer's text, only when prompt logging is on; kept in
    /// `generation_contents`, not in this table.
    #[sqlx(skip)]
    pub content: Option<Box<GenerationContent>>,
    /// Whether a credit hold was taken for this request: only then does settlement look for one
    /// to release. Not stored.
    #[sqlx(skip)]
    pub held: bool,
}

/// A generation's prompt and answer, as prompt logging keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationContent {
    /// The `messages` array as JSON.
    pub prompt: String,
    /// The answer's text; `None` when no answer came.
    pub completion: Option<String>,
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
pub(super) use columns;

/// One row; a batch runs it once per row inside one transaction on the write connection, where a
/// statement costs no thread switch, so multi-row statements would buy nothing.
const INSERT_ONE: &str = concat!(
    "INSERT INTO generations (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22) ON CONFLICT (id) DO NOTHING"
);

/// A whole batch as one array per column; Postgres runs it in one round trip whatever the batch
/// size. A macro so that the settlement can build on it with `concat!`.
macro_rules! insert_unnest {
    () => {
        concat!(
            "INSERT INTO generations (",
            $crate::store::generations::columns!(),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::timestamptz[], $9::int8[], $10::int8[], $11::int8[], \
             $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int4[], \
             $18::text[], $19::bool[], $20::bool[], $21::text[], $22::text[]) \
             ON CONFLICT (id) DO NOTHING"
        )
    };
}
pub(super) use insert_unnest;

/// Inserts `rows` in `transaction` and returns those that were new (a row whose id exists already
/// is skipped). `created_at` is written as sqlx writes it (RFC 3339, UTC offset, only the
/// sub-second digits needed), so rows read back the same whichever connection wrote them.
pub(super) fn insert_sqlite<'a>(
    transaction: &Transaction<'_>,
    rows: &'a [GenerationRow],
) -> rusqlite::Result<Vec<&'a GenerationRow>> {
    let mut insert = transaction.prepare_cached(INSERT_ONE)?;
    let mut inserted = Vec::with_capacity(rows.len());
    for row in rows {
        let created_at =
            super::at_microseconds(row.created_at).to_rfc3339_opts(SecondsFormat::AutoSi, false);
        let changed = insert.execute(params![
            row.id,
            row.key_hash,
            row.model,
            row.provider,
            row.upstream_model,
            row.app_referer,
            row.app_title,
            created_at,
            row.latency_ms,
            row.ttft_ms,
            row.prompt_tokens,
            row.completion_tokens,
            row.cached_tokens,
            row.cache_write_tokens,
            row.reasoning_tokens,
            row.cost,
            row.status,
            row.finish_reason,
            row.streamed,
            row.cancelled,
            row.attempts,
            row.error,
        ])?;
        if changed > 0 {
            inserted.push(row);
        }
    }
    Ok(inserted)
}

/// Binds a batch to a query built on [`insert_unnest`]: one array per column.
pub(super) fn bind_unnest<'q>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, SettledRow, sqlx::postgres::PgArguments>,
    rows: &'q [GenerationRow],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, SettledRow, sqlx::postgres::PgArguments> {
    fn column<'a, T>(rows: &'a [GenerationRow], field: impl Fn(&'a GenerationRow) -> T) -> Vec<T> {
        rows.iter().map(field).collect()
    }
    query
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
}

const INSERT_CONTENT: &str =
    "INSERT INTO generation_contents (generation_id, prompt, completion) VALUES (?1, ?2, ?3)";

const INSERT_CONTENTS_UNNEST: &str = "INSERT INTO generation_contents (generation_id, prompt, \
     completion) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])";

/// Keeps the prompt and answer of each row that carries them (prompt logging is on).
pub(super) fn insert_contents_sqlite(
    transaction: &Transaction<'_>,
    rows: &[&GenerationRow],
) -> rusqlite::Result<()> {
    let mut insert = transaction.prepare_cached(INSERT_CONTENT)?;
    for row in rows {
        if let Some(content) = &row.content {
            insert.execute(params![row.id, content.prompt, content.completion])?;
        }
    }
    Ok(())
}

/// [`insert_contents_sqlite`] for Postgres: one statement for the whole batch.
pub(super) async fn insert_contents_postgres(
    transaction: &mut sqlx::PgConnection,
    rows: &[&GenerationRow],
) -> Result<(), StoreError> {
    let logged: Vec<(&str, &GenerationContent)> = rows
        .iter()
        .filter_map(|row| Some((row.id.as_str(), row.content.as_deref()?)))
        .collect();
    if logged.is_empty() {
        return Ok(());
    }
    sqlx::query(INSERT_CONTENTS_UNNEST)
        .bind(logged.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(
            logged
                .iter()
                .map(|(_, c)| c.prompt.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            logged
                .iter()
                .map(|(_, c)| c.completion.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(transaction)
        .await?;
    Ok(())
}

/// A generation the Postgres settlement inserted, with the hold it released, if it had one.
pub(super) type SettledRow = (String, Option<String>, Option<i64>, Option<i64>);

impl Store {
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
    fn every_insert_binds_one_parameter_per_column() {
        let columns = columns!().split(',').count();
        assert_eq!(columns, 22);
        assert_eq!(insert_unnest!().matches('$').count(), columns);
        assert_eq!(INSERT_ONE.matches('?').count(), columns);
    }
}
