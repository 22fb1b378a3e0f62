//! The one connection that writes the request path's SQLite rows: credit holds, and the
//! generation writer's settled batches.
//!
//! sqlx-sqlite sends every statement, and an owned copy of every bound value, to a worker thread
//! of its own. At thousands of generations a second that hand-off cost the gateway about a third
//! of its CPU per request (see the README's benchmark section). Here a batch is one transaction of
//! cached prepared statements, bound from borrowed rows on Tokio's blocking pool. SQLite admits one
//! writer at a time anyway; queueing on this connection's mutex is first come, first served,
//! where two connections would meet in SQLite's sleeping busy handler. WAL mode lets the sqlx pool
//! go on reading (and writing keys) meanwhile.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};

use super::{SQLITE_BUSY_TIMEOUT, StoreError};

#[derive(Clone)]
pub(super) struct WriteConnection(Arc<Mutex<Connection>>);

impl WriteConnection {
    /// Opens the database file the sqlx pool has already created and set to WAL mode.
    pub(super) fn open(path: &Path) -> Result<WriteConnection, StoreError> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        // The same durability and cache as the pool's connections (see `connect_sqlite`).
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "cache_size", -65536)?;
        Ok(WriteConnection(Arc::new(Mutex::new(connection))))
    }

    /// Runs `work` on the connection on a blocking thread, one at a time.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let connection = Arc::clone(&self.0);
        let joined = tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled its transaction back when the guard dropped, so the
            // connection is still usable.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await;
        joined
            .map_err(|_| StoreError::BatchPanicked)?
            .map_err(StoreError::from)
    }
}
