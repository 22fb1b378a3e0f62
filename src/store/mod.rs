//! The only module with SQL: one [`Store`] over SQLite or Postgres, migrations for both, one file
//! per table; and the Redis rate counters that can stand in for one of them. It knows rows, not
//! requests: no HTTP, routing or pricing here.

mod api_keys;
mod credits;
mod generations;
mod key_usage;
mod rate_counters;
mod redis_counters;
mod settlement;
mod sqlite_write;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use api_keys::{ApiKeyRow, KeyUpdate, NewApiKey};
pub use credits::NewHold;
pub use generations::{GenerationContent, GenerationRow};
pub use key_usage::{CreditTotalsRow, KeyPage, KeyUsageRow, UsageWindows};
pub use rate_counters::{RateCheck, RateCounters, RateCounts, RateOutcome, RateScope};
pub use redis_counters::RedisCounters;
use sqlite_write::WriteConnection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the database write did not complete")]
    WriteFailed,
    #[error("cannot start the SQLite writer thread: {0}")]
    WriterThread(std::io::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the ephemeral database: {0}")]
    Ephemeral(String),
    #[error("unsupported database url {0:?}: use sqlite://FILE or postgres://...")]
    UnsupportedUrl(String),
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

impl StoreError {
    /// Whether trying again later may succeed: the database is busy, locked, restarting,
    /// unreachable or timed out, as opposed to refusing the statement itself.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            StoreError::Database(sqlx::Error::Database(error)) => {
                let code = error.code().unwrap_or_default();
                if error
                    .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                    .is_some()
                {
                    // SQLite's (extended) result codes: the primary code is the low byte.
                    let primary = code.parse::<i32>().unwrap_or_default() & 0xff;
                    primary == SQLITE_BUSY || primary == SQLITE_LOCKED
                } else {
                    // Postgres SQLSTATE classes: 08 connection, 40 serialization or deadlock,
                    // 53 resources, 57 shutdown or statement timeout.
                    ["08", "40", "53", "57"]
                        .iter()
                        .any(|class| code.starts_with(class))
                }
            }
            StoreError::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_),
            )
            | StoreError::WriteFailed
            | StoreError::Redis(_) => true,
            _ => false,
        }
    }
}

/// A connection pool to the configured database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

#[derive(Clone)]
enum Pool {
    Sqlite {
        /// Reads, migrations and key administration.
        pool: sqlx::SqlitePool,
        /// Credit holds and settled generation batches (see `sqlite_write`).
        writer: WriteConnection,
        /// The directory of an ephemeral (`sqlite::memory:`) database, removed with the last clone.
        _ephemeral: Option<Arc<tempfile::TempDir>>,
    },
    Postgres {
        pool: sqlx::PgPool,
        /// Credit holds only, on connections with `synchronous_commit = off`: a hold is then one
        /// round trip that does not wait for a WAL flush, and the key's row lock is held for a
        /// round trip rather than a disk write, which is what bounds holds per second on one
        /// key. A database crash may forget the holds of its last moments; their requests then
        /// settle as unheld, and the books stay consistent. Settlements keep full durability.
        holds: sqlx::PgPool,
    },
}

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend is configured.
///
/// Each query is written once and compiled once per backend, so the two never drift apart.
/// Placeholders are `$1`, `$2`, …: Postgres requires them and sqlx-sqlite maps `$N` to the N-th bind.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite { pool: $pool, .. } => $body,
            $crate::store::Pool::Postgres { pool: $pool, .. } => $body,
        }
    };
}
use on_pool;

/// Long enough to ride out a checkpoint or a burst of batched writes, short enough that a wedged
/// database surfaces as an error instead of a hung request.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite serialises writers anyway; a few connections keep readers off the writer's back.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;
/// Holds on one key queue on its row anyway; a few connections serve many keys at once.
const POSTGRES_HOLD_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.pool {
            Pool::Sqlite { .. } => "sqlite",
            Pool::Postgres { .. } => "postgres",
        };
        f.debug_struct("Store").field("backend", &backend).finish()
    }
}

impl Store {
    /// Connects to `sqlite://FILE` (created when missing), `sqlite::memory:` or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(Store {
                pool: connect_sqlite(url).await?,
            });
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let options = postgres_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let holds = PgPoolOptions::new()
            .max_connections(POSTGRES_HOLD_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.options([("synchronous_commit", "off")]));
        Ok(Store {
            pool: Pool::Postgres { pool, holds },
        })
    }

    /// Applies every embedded migration not yet recorded in the database; a no-op when up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite { pool, .. } => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Pool::Postgres { pool, .. } => {
                // Without the statement timeout, which a schema change on a large table may
                // outlast; the connection is closed afterwards rather than pooled without it.
                let mut connection = pool.acquire().await?.detach();
                sqlx::query("SET statement_timeout = 0")
                    .execute(&mut connection)
                    .await?;
                sqlx::migrate!("migrations/postgres")
                    .run(&mut connection)
                    .await?;
            }
        }
        Ok(())
    }

    /// Readiness: one round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop)?);
        Ok(())
    }
}

async fn connect_sqlite(url: &str) -> Result<Pool, StoreError> {
    // An in-memory database would live inside one connection, out of reach of the write
    // connection; an ephemeral file in a private directory behaves the same and is removed with
    // the store.
    let (options, ephemeral) = if is_sqlite_memory(url) {
        let directory = tempfile::Builder::new()
            .prefix("switchyard-")
            .tempdir()
            .map_err(|error| StoreError::Ephemeral(error.to_string()))?;
        let options = SqliteConnectOptions::new().filename(directory.path().join("memory.db"));
        (options, Some(Arc::new(directory)))
    } else {
        (SqliteConnectOptions::from_str(url)?, None)
    };
    // WAL lets readers (dashboards, `GET generation`) proceed while the writer commits; NORMAL
    // sync is durable across application crashes in WAL mode, which is what we need.
    let options = options
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // The default 2 MiB page cache is smaller than the generation table's indexes, so every
        // batch re-read index pages with a syscall each; 64 MiB keeps them in memory, and mmap
        // serves the rest without copying.
        .pragma("cache_size", "-65536")
        .pragma("mmap_size", "268435456")
        .pragma("temp_store", "memory");
    let path = options.get_filename().to_owned();
    let pool = SqlitePoolOptions::new()
        .max_connections(SQLITE_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(Pool::Sqlite {
        pool,
        writer: WriteConnection::open(&path)?,
        _ephemeral: ephemeral,
    })
}

/// Every Postgres session bounds its statements, so a lock or a stalled server cannot hold a
/// connection, and the requests or usage batches waiting on it, for good.
fn postgres_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url)?
        .options([("statement_timeout", POSTGRES_STATEMENT_TIMEOUT)]))
}

/// Longer than any statement the gateway makes should take, even a large settlement batch.
const POSTGRES_STATEMENT_TIMEOUT: &str = "30s";

/// Postgres keeps microseconds; truncating before writing makes SQLite store the very same instant.
fn at_microseconds(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

fn is_sqlite_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    rest.split('?').next() == Some(":memory:") || rest.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_locked_and_unreachable_databases_are_worth_retrying_refusals_are_not() {
        let sqlite = |code| {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(sqlite(5).is_transient(), "busy");
        assert!(sqlite(6).is_transient(), "locked");
        assert!(
            !sqlite(1).is_transient(),
            "a plain error, such as a missing table"
        );
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::Database(sqlx::Error::Io(io)).is_transient());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
    }

    #[test]
    fn postgres_sessions_bound_their_statements_and_keep_the_urls_own_options() {
        let options = postgres_options("postgres://u@h/db?options=-c%20search_path%3Dx").unwrap();
        let sent = options.get_options().unwrap();
        assert!(sent.contains("statement_timeout=30s"), "{sent}");
        assert!(sent.contains("search_path"), "{sent}");
    }

    #[test]
    fn both_spellings_of_an_in_memory_sqlite_url_are_recognised() {
        assert!(is_sqlite_memory("sqlite::memory:"));
        assert!(is_sqlite_memory("sqlite://:memory:"));
        assert!(is_sqlite_memory("sqlite://:memory:?cache=shared"));
        assert!(!is_sqlite_memory("sqlite://switchyard.db"));
        assert!(!is_sqlite_memory("sqlite:memory.db"));
    }

    #[tokio::test]
    async fn an_unknown_url_scheme_is_refused_without_connecting() {
        let err = Store::connect("mysql://localhost/db").await.err();
        assert!(
            matches!(err, Some(StoreError::UnsupportedUrl(_))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_in_memory_database_keeps_its_tables_between_queries() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        assert!(store.list_keys().await.unwrap().is_empty());
    }
}
