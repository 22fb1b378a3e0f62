//! The one connection that writes the request path's SQLite rows (credit holds) and the
//! generation writer's settled batches, owned by a thread of its own.
//!
//! sqlx-sqlite sends every statement, and an owned copy of every bound value, to a worker thread
//! of its own; at thousands of generations a second that hand-off cost the gateway about a third
//! of its CPU per request (see the README's benchmark section). Here each job runs on this thread
//! with cached prepared statements bound from borrowed rows. SQLite admits one writer at a time
//! anyway: jobs queue on a channel, first come first served, where two connections would meet in
//! SQLite's sleeping busy handler. Small jobs that arrive together (the credit holds of concurrent
//! requests) share one transaction, each in a savepoint of its own, so a burst of holds costs one
//! commit instead of one each. WAL mode lets the sqlx pool go on reading (and writing keys).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{SQLITE_BUSY_TIMEOUT, StoreError};

/// Commits between two nudges to the checkpointer; it also checkpoints at least once a second.
const COMMITS_PER_CHECKPOINT: u32 = 200;
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// How many shared jobs may ride one transaction: enough to absorb a burst, few enough that the
/// first of them does not wait long for the last.
const MAX_SHARED: usize = 64;

#[derive(Clone)]
pub(super) struct WriteConnection {
    jobs: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
}

/// Tells a running job whether others are queued behind it, so a long one can commit what it has
/// done and let them in before it goes on.
pub(super) struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    pub(super) fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// The writer's end of the job queue, keeping count of what is still queued.
struct Inbox {
    jobs: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
}

impl Inbox {
    fn recv(&self) -> Option<Job> {
        let job = self.jobs.recv().ok()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }

    fn try_recv(&self) -> Option<Job> {
        let job = self.jobs.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }
}

type Exclusive = Box<dyn FnOnce(&mut Connection) + Send>;
/// Runs inside the shared transaction and returns what to do once it has committed (`true`) or
/// failed to (`false`).
type Shared = Box<dyn FnOnce(&Transaction<'_>) -> Box<dyn FnOnce(bool) + Send> + Send>;

enum Job {
    Exclusive(Exclusive),
    Shared(Shared),
}

impl WriteConnection {
    /// Opens the database file the sqlx pool has already created and set to WAL mode, on a
    /// thread that lives as long as any clone of this handle.
    pub(super) fn open(path: &Path) -> Result<WriteConnection, StoreError> {
        let mut connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        // The same durability as the pool's connections (see `connect_sqlite`). A smaller page
        // cache: SQLite walks the cache's hash table on every commit, which at 64 MiB cost this
        // thread more than the pages it saved; mmap serves the pages that drop out of it.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "cache_size", -8192)?;
        connection.pragma_update(None, "mmap_size", 268_435_456)?;
        connection.pragma_update(None, "temp_store", "memory")?;
        // SQLite checkpoints in whichever connection's commit fills the WAL, which would stall
        // the request waiting on that commit (a hold) for milliseconds; a thread of its own does
        // it instead, beside the writer (a passive checkpoint never blocks it).
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        checkpoints.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        let (nudge, nudges) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("switchyard-sqlite-checkpoint".to_owned())
            .spawn(move || checkpoint(&checkpoints, &nudges))
            .map_err(StoreError::WriterThread)?;
        let (jobs, queue) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let inbox = Inbox {
            jobs: queue,
            queued: Arc::clone(&queued),
        };
        std::thread::Builder::new()
            .name("switchyard-sqlite-writer".to_owned())
            .spawn(move || serve(&mut connection, &inbox, &nudge))
            .map_err(StoreError::WriterThread)?;
        Ok(WriteConnection { jobs, queued })
    }

    /// Runs `work` alone on the connection; it manages its own transaction.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Exclusive = Box::new(move |connection| {
            let _ = reply.send(work(connection).map_err(StoreError::from));
        });
        self.submit(Job::Exclusive(job), answer).await
    }

    /// Runs `work` in a transaction it may share with other small jobs queued at the same time;
    /// its result is delivered only once that transaction has committed. An error in `work`
    /// undoes its own writes only.
    pub(super) async fn run_shared<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Shared = Box::new(move |transaction| {
            let result = in_savepoint(transaction, work);
            Box::new(move |committed| {
                let result = match result {
                    Ok(_) if !committed => Err(StoreError::WriteFailed),
                    other => other,
                };
                let _ = reply.send(result);
            })
        });
        self.submit(Job::Shared(job), answer).await
    }

    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::WriteFailed);
        }
        answer.await.map_err(|_| StoreError::WriteFailed)?
    }

    /// For a job to see whether others queued after it.
    pub(super) fn waiting(&self) -> Waiting {
        Waiting(Arc::clone(&self.queued))
    }
}

fn in_savepoint<T>(
    transaction: &Transaction<'_>,
    work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    // rusqlite's `Savepoint` needs `&mut` to its parent, which jobs sharing one transaction
    // cannot each have; the savepoint is opened and closed by name instead.
    transaction.execute_batch("SAVEPOINT job")?;
    match work(transaction) {
        Ok(value) => {
            transaction.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(error) => {
            transaction.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(error.into())
        }
    }
}

/// The writer thread: one job at a time, shared jobs in groups, until every handle is gone.
fn serve(connection: &mut Connection, queue: &Inbox, checkpointer: &mpsc::SyncSender<()>) {
    let mut commits = 0_u32;
    let mut next = queue.recv();
    while let Some(job) = next.take() {
        commits += 1;
        if commits >= COMMITS_PER_CHECKPOINT {
            commits = 0;
            // Full means a nudge is pending already.
            let _ = checkpointer.try_send(());
        }
        match job {
            // A job that panics loses its own answer (its caller sees `WriteFailed`), not the
            // thread that every later write needs.
            Job::Exclusive(work) => {
                let _ = catch_unwind(AssertUnwindSafe(|| work(connection)));
            }
            Job::Shared(first) => {
                let mut group = vec![first];
                while group.len() < MAX_SHARED {
                    match queue.try_recv() {
                        Some(Job::Shared(work)) => group.push(work),
                        Some(exclusive) => {
                            next = Some(exclusive);
                            break;
                        }
                        None => break,
                    }
                }
                run_group(connection, group);
            }
        }
        if next.is_none() {
            next = queue.recv();
        }
    }
}

/// Copies the WAL back into the database when nudged or once a second, until the writer is gone.
fn checkpoint(connection: &Connection, nudges: &mpsc::Receiver<()>) {
    loop {
        match nudges.recv_timeout(CHECKPOINT_INTERVAL) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(error) = connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    tracing::warn!(%error, "SQLite checkpoint failed; the WAL grows until one succeeds");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn run_group(connection: &mut Connection, group: Vec<Shared>) {
    let mut finishers = Vec::with_capacity(group.len());
    let committed = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => {
            finishers.extend(
                group
                    .into_iter()
                    .filter_map(|work| catch_unwind(AssertUnwindSafe(|| work(&transaction))).ok()),
            );
            transaction.commit().is_ok()
        }
        Err(_) => false,
    };
    for finish in finishers {
        finish(committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer() -> (WriteConnection, tempfile::TempDir) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("write.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER UNIQUE);")
            .unwrap();
        (WriteConnection::open(&path).unwrap(), directory)
    }

    fn insert(n: i64) -> impl FnOnce(&Transaction<'_>) -> rusqlite::Result<i64> + Send {
        move |transaction| {
            transaction.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_failing_shared_job_undoes_only_its_own_writes() {
        let (writer, _directory) = writer().await;
        let results =
            futures_util::future::join_all([1, 2, 2, 3].map(|n| writer.run_shared(insert(n))))
                .await;
        let ok: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(ok, [1, 2, 3], "{results:?}");
        let count: i64 = writer
            .run(|connection| connection.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)))
            .await
            .unwrap();
        assert_eq!(count, 3);
    }

    #[tokio::test]
    async fn a_job_that_panics_leaves_the_writer_serving() {
        let (writer, _directory) = writer().await;
        let panicked = writer
            .run(|_: &mut Connection| -> rusqlite::Result<()> { panic!("boom") })
            .await;
        assert!(matches!(panicked, Err(StoreError::WriteFailed)));
        assert_eq!(writer.run_shared(insert(7)).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_running_job_sees_the_jobs_queued_behind_it() {
        let (writer, _directory) = writer().await;
        let (started, running) = std::sync::mpsc::channel();
        let waiting = writer.waiting();
        let first = writer.run(move |_: &mut Connection| {
            let alone = !waiting.any();
            let _ = started.send(());
            // Long enough for the second job to be queued meanwhile; bounded either way.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !waiting.any() && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            Ok((alone, waiting.any()))
        });
        let second = async {
            tokio::task::spawn_blocking(move || running.recv())
                .await
                .unwrap()
                .unwrap();
            writer.run_shared(insert(1)).await
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.unwrap(), (true, true));
        assert_eq!(second.unwrap(), 1);
        assert!(!writer.waiting().any(), "nothing is left queued");
    }
}
