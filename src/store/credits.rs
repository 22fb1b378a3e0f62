//! Credit holds and settlement in SQL: taking a hold against a key's limit in one atomic step,
//! renewing and expiring holds, and writing a settled batch (generations, ledger, rollups and
//! `key_credits`) in one transaction. What moves is decided in `settlement`; here it is applied.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::generations::{
    SettledRow, bind_unnest, insert_contents_postgres, insert_contents_sqlite, insert_sqlite,
    insert_unnest,
};
use super::settlement::{Movements, ReleasedHold};
use super::{GenerationRow, Pool, Store, StoreError};

/// A request's claim on a key's credit, taken before it is sent upstream.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    pub generation_id: &'a str,
    pub key_hash: &'a str,
    /// The request's worst-case cost, micro-USD.
    pub amount: i64,
    /// The key's spending limit per period, micro-USD.
    pub limit: i64,
    /// Unix seconds: the start of the key's current limit period.
    pub period_start: i64,
    /// The gateway process that renews the hold while the request runs.
    pub holder: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Moves the period forward when it has rolled over (forgetting the old period's spend) and takes
/// the hold only if the period's spend plus the hold stays within the limit. One statement, so
/// concurrent holds on one key queue on its row and can never overshoot together. A macro so that
/// both statements below are built from it with `concat!`.
macro_rules! take_hold {
    () => {
        "UPDATE key_credits SET \
         period_spent = CASE WHEN period_start = $3 THEN period_spent ELSE 0 END + $2, \
         period_start = $3, held = held + $2, balance = balance - $2 \
         WHERE key_hash = $1 \
         AND CASE WHEN period_start = $3 THEN period_spent ELSE 0 END + $2 <= $4"
    };
}

const TAKE_HOLD: &str = take_hold!();

/// Postgres: the hold, its row and its ledger charge in one round trip.
const TAKE_HOLD_POSTGRES: &str = concat!(
    "WITH held AS (",
    take_hold!(),
    " RETURNING key_hash), \
     hold AS (INSERT INTO credit_holds (generation_id, key_hash, amount, period_start, holder, \
     expires_at) SELECT $5, key_hash, $2, $3, $6, $7 FROM held) \
     INSERT INTO ledger (key_hash, kind, amount, generation_id, created_at) \
     SELECT key_hash, 'charge', -$2::int8, $5, $8 FROM held RETURNING id"
);

const INSERT_HOLD: &str = "INSERT INTO credit_holds (generation_id, key_hash, amount, \
     period_start, holder, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

const INSERT_LEDGER: &str = "INSERT INTO ledger (key_hash, kind, amount, generation_id, \
     created_at) VALUES ($1, $2, $3, $4, $5)";

/// A rollup row that exists already adds the new counts to its own. A macro so that both
/// statements below are built from it with `concat!`.
macro_rules! add_to_rollup {
    () => {
        " ON CONFLICT (day, key_hash, model, provider, app) DO UPDATE SET \
         requests = usage_rollups.requests + excluded.requests, \
         prompt_tokens = usage_rollups.prompt_tokens + excluded.prompt_tokens, \
         completion_tokens = usage_rollups.completion_tokens + excluded.completion_tokens, \
         cached_tokens = usage_rollups.cached_tokens + excluded.cached_tokens, \
         cache_write_tokens = usage_rollups.cache_write_tokens + excluded.cache_write_tokens, \
         reasoning_tokens = usage_rollups.reasoning_tokens + excluded.reasoning_tokens, \
         cost = usage_rollups.cost + excluded.cost"
    };
}

const UPSERT_ROLLUP: &str = concat!(
    "INSERT INTO usage_rollups (day, key_hash, model, provider, app, requests, prompt_tokens, \
     completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    add_to_rollup!()
);

const UPDATE_KEY: &str = "UPDATE key_credits SET balance = balance + $2, usage = usage + $3, \
     held = held + $4, period_spent = period_spent + $5 \
     + CASE WHEN period_start = $6 THEN $7 ELSE 0 END WHERE key_hash = $1";

/// Postgres: every movement of a batch in one round trip, one array per column.
const APPLY_POSTGRES: &str = concat!(
    "WITH ledger_rows AS (\
     INSERT INTO ledger (key_hash, kind, amount, generation_id, created_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::timestamptz[])), \
     rollups AS (INSERT INTO usage_rollups (day, key_hash, model, provider, app, requests, \
     prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost) \
     SELECT * FROM UNNEST($6::date[], $7::text[], $8::text[], $9::text[], $10::text[], \
     $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[])",
    add_to_rollup!(),
    ") UPDATE key_credits AS k SET balance = k.balance + d.balance, usage = k.usage + d.usage, \
     held = k.held + d.held, period_spent = k.period_spent + d.unheld \
     + CASE WHEN k.period_start = d.hold_period THEN d.hold_spent ELSE 0 END \
     FROM UNNEST($18::text[], $19::int8[], $20::int8[], $21::int8[], $22::int8[], $23::int8[], \
     $24::int8[]) AS d(key_hash, balance, usage, held, unheld, hold_period, hold_spent) \
     WHERE k.key_hash = d.key_hash"
);

/// Inserts the batch, and releases the holds of the generations that were new, in one round trip.
const SETTLE_POSTGRES: &str = concat!(
    "WITH inserted AS (",
    insert_unnest!(),
    " RETURNING id), released AS (DELETE FROM credit_holds h USING inserted i \
     WHERE h.generation_id = i.id RETURNING h.generation_id, h.key_hash, h.amount, h.period_start) \
     SELECT i.id, r.key_hash, r.amount, r.period_start FROM inserted i \
     LEFT JOIN released r ON r.generation_id = i.id"
);

const RELEASE_HOLD: &str =
    "DELETE FROM credit_holds WHERE generation_id = $1 RETURNING key_hash, amount, period_start";

const EXPIRE_HOLDS: &str = "DELETE FROM credit_holds WHERE expires_at < $1 \
     RETURNING generation_id, key_hash, amount, period_start";

const RENEW_HOLDS: &str = "UPDATE credit_holds SET expires_at = $1 WHERE holder = $2";

/// Rows a SQLite settlement writes before it looks for queued holds: a fraction of a millisecond,
/// the longest a hold waits behind a settlement. Without holds waiting a batch is one transaction,
/// which costs the writer about a fifth less per row than transactions of this size.
const SQLITE_SETTLE_STEP: usize = 64;

/// The statements above as SQLite runs them: rusqlite binds by position, and SQLite reads `$3`
/// as a named parameter numbered by first appearance, so each `$N` becomes `?N`.
static SQLITE: LazyLock<SqliteStatements> = LazyLock::new(|| SqliteStatements {
    take_hold: numbered(TAKE_HOLD),
    insert_hold: numbered(INSERT_HOLD),
    insert_ledger: numbered(INSERT_LEDGER),
    upsert_rollup: numbered(UPSERT_ROLLUP),
    update_key: numbered(UPDATE_KEY),
    release_hold: numbered(RELEASE_HOLD),
    expire_holds: numbered(EXPIRE_HOLDS),
    renew_holds: numbered(RENEW_HOLDS),
});

struct SqliteStatements {
    take_hold: String,
    insert_hold: String,
    insert_ledger: String,
    upsert_rollup: String,
    update_key: String,
    release_hold: String,
    expire_holds: String,
    renew_holds: String,
}

fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Store {
    /// Takes `hold` if the key's limit can cover it: the key's `key_credits` row, the hold's
    /// row and its ledger charge move together. Returns whether the hold was taken; `false`
    /// means the limit cannot cover it (or the key has no credit row: it was deleted).
    pub async fn take_hold(&self, hold: &NewHold<'_>) -> Result<bool, StoreError> {
        let now = super::at_microseconds(Utc::now());
        match &self.pool {
            Pool::Postgres { holds, .. } => {
                let taken = sqlx::query(TAKE_HOLD_POSTGRES)
                    .bind(hold.key_hash)
                    .bind(hold.amount)
                    .bind(hold.period_start)
                    .bind(hold.limit)
                    .bind(hold.generation_id)
                    .bind(hold.holder)
                    .bind(super::at_microseconds(hold.expires_at))
                    .bind(now)
                    .fetch_optional(holds)
                    .await?;
                Ok(taken.is_some())
            }
            Pool::Sqlite { writer, .. } => {
                let hold = OwnedHold::from(hold);
                writer
                    .run_shared(move |transaction| {
                        let taken =
                            transaction
                                .prepare_cached(&SQLITE.take_hold)?
                                .execute(params![
                                    hold.key_hash,
                                    hold.amount,
                                    hold.period_start,
                                    hold.limit
                                ])?
                                == 1;
                        if taken {
                            transaction
                                .prepare_cached(&SQLITE.insert_hold)?
                                .execute(params![
                                    hold.generation_id,
                                    hold.key_hash,
                                    hold.amount,
                                    hold.period_start,
                                    hold.holder,
                                    sqlite_time(hold.expires_at),
                                ])?;
                            transaction
                                .prepare_cached(&SQLITE.insert_ledger)?
                                .execute(params![
                                    hold.key_hash,
                                    "charge",
                                    -hold.amount,
                                    hold.generation_id,
                                    sqlite_time(now),
                                ])?;
                        }
                        Ok(taken)
                    })
                    .await
            }
        }
    }

    /// Extends every hold of `holder` to `expires_at`: the heartbeat of a living gateway.
    pub async fn renew_holds(
        &self,
        holder: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let expires_at = super::at_microseconds(expires_at);
        let renewed = match &self.pool {
            Pool::Postgres { pool, .. } => sqlx::query(RENEW_HOLDS)
                .bind(expires_at)
                .bind(holder)
                .execute(pool)
                .await?
                .rows_affected(),
            Pool::Sqlite { writer, .. } => {
                let holder = holder.to_owned();
                writer
                    .run(move |connection| {
                        connection
                            .prepare_cached(&SQLITE.renew_holds)?
                            .execute(params![sqlite_time(expires_at), holder])
                    })
                    .await? as u64
            }
        };
        Ok(renewed)
    }

    /// Refunds and deletes every hold that expired before `now` (its gateway stopped renewing it:
    /// it died). Returns how many were released.
    pub async fn release_expired_holds(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now = super::at_microseconds(now);
        match &self.pool {
            Pool::Postgres { pool, .. } => {
                let mut transaction = pool.begin().await?;
                let expired: Vec<ReleasedHold> = sqlx::query_as(EXPIRE_HOLDS)
                    .bind(now)
                    .fetch_all(&mut *transaction)
                    .await?
                    .into_iter()
                    .map(
                        |(generation_id, key_hash, amount, period_start)| ReleasedHold {
                            generation_id,
                            key_hash,
                            amount,
                            period_start,
                        },
                    )
                    .collect();
                apply_postgres(&mut transaction, &Movements::of(&[], &expired, now)).await?;
                transaction.commit().await?;
                Ok(expired.len())
            }
            Pool::Sqlite { writer, .. } => {
                writer
                    .run(move |connection| {
                        let transaction =
                            connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                        let expired = transaction
                            .prepare_cached(&SQLITE.expire_holds)?
                            .query_map(params![sqlite_time(now)], |row| {
                                Ok(ReleasedHold {
                                    generation_id: row.get(0)?,
                                    key_hash: row.get(1)?,
                                    amount: row.get(2)?,
                                    period_start: row.get(3)?,
                                })
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        apply_sqlite(&transaction, &Movements::of(&[], &expired, now))?;
                        transaction.commit()?;
                        Ok(expired.len())
                    })
                    .await
            }
        }
    }

    /// Writes a batch of finished requests in one transaction: their generation rows, and for
    /// each one that was new (a row whose id exists already is skipped, so a retried batch never
    /// charges twice) its hold's release, its ledger entry, its rollup and its key's credit.
    pub async fn settle_generations(&self, rows: Arc<[GenerationRow]>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        match &self.pool {
            Pool::Postgres { pool, .. } => {
                let mut transaction = pool.begin().await?;
                let settled: Vec<SettledRow> = bind_unnest(sqlx::query_as(SETTLE_POSTGRES), &rows)
                    .fetch_all(&mut *transaction)
                    .await?;
                let released: Vec<(&str, ReleasedHold)> = settled
                    .iter()
                    .filter_map(|(id, key_hash, amount, period_start)| {
                        let hold = ReleasedHold {
                            generation_id: id.clone(),
                            key_hash: key_hash.clone()?,
                            amount: (*amount)?,
                            period_start: (*period_start)?,
                        };
                        Some((id.as_str(), hold))
                    })
                    .collect();
                let inserted: Vec<&GenerationRow> = {
                    let ids: std::collections::HashSet<&str> =
                        settled.iter().map(|(id, ..)| id.as_str()).collect();
                    rows.iter()
                        .filter(|row| ids.contains(row.id.as_str()))
                        .collect()
                };
                insert_contents_postgres(&mut transaction, &inserted).await?;
                let pairs = pair_with_holds(&inserted, &released);
                apply_postgres(&mut transaction, &Movements::of(&pairs, &[], now)).await?;
                transaction.commit().await?;
                Ok(())
            }
            // One transaction for the batch, unless holds queue up meanwhile: the writer then
            // commits the steps it has settled, lets them in, and goes on in a new transaction.
            // Each transaction stands on its own: a retry skips the rows already written.
            Pool::Sqlite { writer, .. } => {
                let mut settled = 0;
                while settled < rows.len() {
                    let (rows, waiting) = (Arc::clone(&rows), writer.waiting());
                    settled = writer
                        .run(move |connection| {
                            let transaction = connection
                                .transaction_with_behavior(TransactionBehavior::Immediate)?;
                            let mut end = settled;
                            while end < rows.len() && (end == settled || !waiting.any()) {
                                let step = &rows[end..rows.len().min(end + SQLITE_SETTLE_STEP)];
                                settle_sqlite(&transaction, step, now)?;
                                end += step.len();
                            }
                            transaction.commit()?;
                            Ok(end)
                        })
                        .await?;
                }
                Ok(())
            }
        }
    }
}

/// Settles `rows` within `transaction`: inserts them, and moves the credit of those that were new.
fn settle_sqlite(
    transaction: &Transaction<'_>,
    rows: &[GenerationRow],
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let inserted = insert_sqlite(transaction, rows)?;
    insert_contents_sqlite(transaction, &inserted)?;
    let mut released = Vec::new();
    {
        let mut release = transaction.prepare_cached(&SQLITE.release_hold)?;
        for row in inserted.iter().filter(|row| row.held) {
            let hold = release
                .query_row(params![row.id], |found| {
                    Ok(ReleasedHold {
                        generation_id: row.id.clone(),
                        key_hash: found.get(0)?,
                        amount: found.get(1)?,
                        period_start: found.get(2)?,
                    })
                })
                .optional()?;
            if let Some(hold) = hold {
                released.push((row.id.as_str(), hold));
            }
        }
    }
    let pairs = pair_with_holds(&inserted, &released);
    apply_sqlite(transaction, &Movements::of(&pairs, &[], now))
}

/// Each inserted row with the hold its settlement released, if any.
fn pair_with_holds<'a>(
    inserted: &[&'a GenerationRow],
    released: &'a [(&str, ReleasedHold)],
) -> Vec<(&'a GenerationRow, Option<&'a ReleasedHold>)> {
    inserted
        .iter()
        .map(|&row| {
            let hold = released
                .iter()
                .find(|(id, _)| *id == row.id)
                .map(|(_, hold)| hold);
            (row, hold)
        })
        .collect()
}

fn apply_sqlite(transaction: &Transaction<'_>, movements: &Movements<'_>) -> rusqlite::Result<()> {
    let mut ledger = transaction.prepare_cached(&SQLITE.insert_ledger)?;
    for entry in &movements.ledger {
        ledger.execute(params![
            entry.key_hash,
            entry.kind,
            entry.amount,
            entry.generation_id,
            sqlite_time(entry.created_at),
        ])?;
    }
    let mut rollup = transaction.prepare_cached(&SQLITE.upsert_rollup)?;
    for delta in &movements.rollups {
        rollup.execute(params![
            delta.day.to_string(),
            delta.key_hash,
            delta.model,
            delta.provider,
            delta.app,
            delta.requests,
            delta.prompt_tokens,
            delta.completion_tokens,
            delta.cached_tokens,
            delta.cache_write_tokens,
            delta.reasoning_tokens,
            delta.cost,
        ])?;
    }
    let mut key = transaction.prepare_cached(&SQLITE.update_key)?;
    for delta in &movements.keys {
        key.execute(params![
            delta.key_hash,
            delta.balance,
            delta.usage,
            delta.held,
            delta.unheld_spent,
            delta.hold_period,
            delta.hold_period_spent,
        ])?;
    }
    Ok(())
}

async fn apply_postgres(
    transaction: &mut sqlx::PgConnection,
    movements: &Movements<'_>,
) -> Result<(), StoreError> {
    fn column<'a, T, U>(items: &'a [T], field: impl Fn(&'a T) -> U) -> Vec<U> {
        items.iter().map(field).collect()
    }
    let (ledger, rollups, keys) = (&movements.ledger, &movements.rollups, &movements.keys);
    if ledger.is_empty() && rollups.is_empty() && keys.is_empty() {
        return Ok(());
    }
    sqlx::query(APPLY_POSTGRES)
        .bind(column(ledger, |entry| entry.key_hash))
        .bind(column(ledger, |entry| entry.kind))
        .bind(column(ledger, |entry| entry.amount))
        .bind(column(ledger, |entry| entry.generation_id))
        .bind(column(ledger, |entry| {
            super::at_microseconds(entry.created_at)
        }))
        .bind(column(rollups, |delta| delta.day))
        .bind(column(rollups, |delta| delta.key_hash))
        .bind(column(rollups, |delta| delta.model))
        .bind(column(rollups, |delta| delta.provider))
        .bind(column(rollups, |delta| delta.app))
        .bind(column(rollups, |delta| delta.requests))
        .bind(column(rollups, |delta| delta.prompt_tokens))
        .bind(column(rollups, |delta| delta.completion_tokens))
        .bind(column(rollups, |delta| delta.cached_tokens))
        .bind(column(rollups, |delta| delta.cache_write_tokens))
        .bind(column(rollups, |delta| delta.reasoning_tokens))
        .bind(column(rollups, |delta| delta.cost))
        .bind(column(keys, |delta| delta.key_hash))
        .bind(column(keys, |delta| delta.balance))
        .bind(column(keys, |delta| delta.usage))
        .bind(column(keys, |delta| delta.held))
        .bind(column(keys, |delta| delta.unheld_spent))
        .bind(column(keys, |delta| delta.hold_period))
        .bind(column(keys, |delta| delta.hold_period_spent))
        .execute(transaction)
        .await?;
    Ok(())
}

/// Timestamps this module writes to SQLite: fixed-width microseconds, so that text comparison
/// (`expires_at < now`) orders them as instants.
fn sqlite_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// [`NewHold`] with owned text, to move onto the SQLite write thread.
struct OwnedHold {
    generation_id: String,
    key_hash: String,
    amount: i64,
    limit: i64,
    period_start: i64,
    holder: String,
    expires_at: DateTime<Utc>,
}

impl From<&NewHold<'_>> for OwnedHold {
    fn from(hold: &NewHold<'_>) -> Self {
        Self {
            generation_id: hold.generation_id.to_owned(),
            key_hash: hold.key_hash.to_owned(),
            amount: hold.amount,
            limit: hold.limit,
            period_start: hold.period_start,
            holder: hold.holder.to_owned(),
            expires_at: hold.expires_at,
        }
    }
}
