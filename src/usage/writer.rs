//! The batched generation writer: takes rows from requests without blocking them and persists them
//! in batches behind them. It must never block a caller, and never lose a row without logging it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{GenerationRow, Store};

/// Rows held in memory before producers spill into parked tasks: a few seconds of peak traffic,
/// enough to ride out a slow commit without any request noticing.
const QUEUE_CAPACITY: usize = 8192;
/// Rows waiting in parked tasks, at most: with the queue, about a minute of 1,000 requests a
/// second while the database does not answer, in about 120 MiB. Past it rows are shed, counted
/// and logged, and readiness fails, so memory stays bounded however long the outage.
const MAX_PARKED: usize = 65_536;
/// A batch the database cannot take for now (busy, locked, unreachable) is retried, with a
/// growing pause, for this long before it is logged as lost: long enough to outlast a lock or a
/// failover, short enough that a stuck database does not hold up shutdown for good.
const RETRY_BUDGET: Duration = Duration::from_secs(300);
/// A batch the database refuses outright (a missing table, a constraint) is tried this often.
const REFUSED_ATTEMPTS: u32 = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Shed rows are logged on the first and then every this many.
const SHED_LOG_EVERY: u64 = 1_000;

/// Starts the writer task. Rows recorded through the sink are inserted in batches of up to
/// `batch_size`, or `flush_interval` after the first row of a batch arrived, whichever is first.
/// Must be called inside a Tokio runtime.
pub fn spawn_writer(
    store: Store,
    batch_size: usize,
    flush_interval: Duration,
) -> (GenerationSink, WriterHandle) {
    let (queue, inbox) = mpsc::channel(QUEUE_CAPACITY);
    let (stop, stop_signal) = oneshot::channel();
    let parked = Arc::new(Parked::default());
    let urgent = Arc::new(Notify::new());
    let batch_size = batch_size.max(1);
    let writer = Writer {
        store,
        inbox,
        urgent: Arc::clone(&urgent),
        batch_size,
        flush_interval,
        received: Vec::new(),
        rows: Vec::new(),
        acks: Vec::new(),
        deadline: None,
    };
    let task = tokio::spawn(writer.run(stop_signal));
    let sink = GenerationSink {
        queue,
        urgent,
        batch_size,
        parked: Arc::clone(&parked),
        runtime: Handle::current(),
    };
    (sink, WriterHandle { stop, task, parked })
}

/// Where requests hand their [`GenerationRow`] to the writer. Cheap to clone.
#[derive(Clone)]
pub struct GenerationSink {
    queue: mpsc::Sender<Message>,
    /// Wakes the writer before its flush interval: a full batch is waiting, or a flush is asked.
    urgent: Arc<Notify>,
    batch_size: usize,
    parked: Arc<Parked>,
    /// Lets [`GenerationSink::record`] park a row from any thread, e.g. a guard's `Drop`.
    runtime: Handle,
}

/// Stops the writer; see [`WriterHandle::shutdown`]. Dropping it instead leaves the writer running
/// until every sink is gone.
pub struct WriterHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    parked: Arc<Parked>,
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a row; boxing it would cost an allocation per request"
)]
enum Message {
    Row(GenerationRow),
    /// Answered once every message queued before it has been written.
    Flush(oneshot::Sender<()>),
}

/// Counts rows waiting outside the queue because it was full, so that a flush or a shutdown can
/// wait for them to get in first, and the rows shed past [`MAX_PARKED`].
#[derive(Default)]
struct Parked {
    count: AtomicUsize,
    emptied: Notify,
    shed: AtomicU64,
}

impl std::fmt::Debug for GenerationSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationSink")
            .field("queued", &self.queued())
            .field("parked", &self.parked.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl GenerationSink {
    /// Queues a row for writing. Never blocks: when the queue is full the row waits in a task of
    /// its own, which is the backpressure, instead of being dropped.
    pub fn record(&self, row: GenerationRow) {
        match self.queue.try_send(Message::Row(row)) {
            // The writer sleeps through its flush interval instead of waking for every row;
            // only a full batch is worth waking it early.
            Ok(()) if self.queued() >= self.batch_size => self.urgent.notify_one(),
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                if !self.parked.enter() {
                    self.parked.shed(message);
                    return;
                }
                let queue = self.queue.clone();
                let parked = Arc::clone(&self.parked);
                self.runtime.spawn(async move {
                    if let Err(SendError(message)) = queue.send(message).await {
                        lost(message);
                    }
                    parked.leave();
                });
            }
            Err(TrySendError::Closed(message)) => lost(message),
        }
    }

    /// Resolves once every row recorded before the call is in the database (or logged as lost).
    /// Returns at once if the writer has stopped.
    pub async fn flush(&self) {
        self.parked.emptied().await;
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            self.urgent.notify_one();
            // An error means the writer is gone, and then there is nothing left to wait for.
            let _ = written.await;
        }
    }
}

impl GenerationSink {
    fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// How full the queue is, for readiness.
    pub fn backlog(&self) -> Backlog {
        let parked = self.parked.count.load(Ordering::Relaxed);
        Backlog {
            queued: self.queued() + parked,
            shed: self.parked.shed.load(Ordering::Relaxed),
            shedding: parked >= MAX_PARKED,
        }
    }
}

/// The rows waiting to be written and those given up since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub queued: usize,
    /// Rows dropped because the queue was full.
    pub shed: u64,
    /// Whether rows are being dropped now.
    pub shedding: bool,
}

impl WriterHandle {
    /// Closes the queue, writes every row already recorded, and returns once they are persisted.
    /// Rows recorded after this starts are logged as lost, so stop serving requests first.
    pub async fn shutdown(self) {
        // Parked rows need the writer still draining to get into the queue before it closes.
        self.parked.emptied().await;
        // An error means the writer already ended, which the join below reports.
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the generation writer crashed; queued generations are lost");
        }
    }
}

impl Parked {
    /// Takes a place for one more parked row; `false` when all [`MAX_PARKED`] are taken.
    fn enter(&self) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < MAX_PARKED).then_some(count + 1)
            })
            .is_ok()
    }

    fn shed(&self, message: Message) {
        let shed = self.shed.fetch_add(1, Ordering::Relaxed) + 1;
        if let Message::Row(row) = message
            && (shed == 1 || shed.is_multiple_of(SHED_LOG_EVERY))
        {
            tracing::error!(
                shed,
                id = %row.id,
                "the usage queue is full (the database is not keeping up); generations are \
                 being dropped, this one among them"
            );
        }
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
    }

    async fn emptied(&self) {
        loop {
            // Registered before the check, so a `leave` between the two still wakes us.
            let emptied = self.emptied.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    }
}

struct Writer {
    store: Store,
    inbox: mpsc::Receiver<Message>,
    urgent: Arc<Notify>,
    batch_size: usize,
    flush_interval: Duration,
    /// Reused between receives so a steady stream of batches does not allocate.
    received: Vec<Message>,
    rows: Vec<GenerationRow>,
    acks: Vec<oneshot::Sender<()>>,
    /// When the current batch is written even if not full; `None` while it is empty.
    deadline: Option<Instant>,
}

impl Writer {
    /// Idle, the writer waits for a first row; once a batch has begun it sleeps until the batch's
    /// deadline (or an urgent wake) and then takes everything queued at once, so a busy gateway
    /// wakes it a few times a second rather than once per request.
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut handle_dropped = false;
        loop {
            let room = self.batch_size.saturating_sub(self.rows.len()).max(1);
            match self.deadline {
                None => tokio::select! {
                    signal = &mut stop, if !handle_dropped => {
                        if signal.is_ok() {
                            break;
                        }
                        handle_dropped = true;
                    }
                    received = self.inbox.recv_many(&mut self.received, room) => {
                        if received == 0 {
                            // Every sink is gone and the queue is empty.
                            break;
                        }
                        self.sort_received();
                    }
                },
                Some(deadline) => tokio::select! {
                    signal = &mut stop, if !handle_dropped => {
                        if signal.is_ok() {
                            break;
                        }
                        handle_dropped = true;
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        self.take_ready();
                        self.write().await;
                        continue;
                    }
                    () = self.urgent.notified() => self.take_ready(),
                },
            }
            if self.rows.len() >= self.batch_size || !self.acks.is_empty() {
                self.write().await;
            }
        }
        self.drain().await;
    }

    /// Moves what is already queued into the batch, up to a full batch, without waiting.
    fn take_ready(&mut self) {
        while self.rows.len() < self.batch_size {
            match self.inbox.try_recv() {
                Ok(message) => self.received.push(message),
                Err(_) => break,
            }
        }
        self.sort_received();
    }

    /// Refuses new rows, then writes everything that was queued before.
    async fn drain(mut self) {
        self.inbox.close();
        while self
            .inbox
            .recv_many(&mut self.received, self.batch_size)
            .await
            > 0
        {
            self.sort_received();
            if self.rows.len() >= self.batch_size {
                self.write().await;
            }
        }
        self.write().await;
    }

    fn sort_received(&mut self) {
        for message in self.received.drain(..) {
            match message {
                Message::Row(row) => self.rows.push(row),
                Message::Flush(ack) => self.acks.push(ack),
            }
        }
        if !self.rows.is_empty() && self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.flush_interval);
        }
    }

    async fn write(&mut self) {
        if !self.rows.is_empty() {
            let batch: Arc<[GenerationRow]> = self.rows.drain(..).collect();
            persist(&self.store, batch).await;
        }
        self.deadline = None;
        for ack in self.acks.drain(..) {
            // The flusher may have given up waiting; nothing to do then.
            let _ = ack.send(());
        }
    }
}

/// Inserts with retries: the insert is one transaction that skips existing ids, so a retry after
/// an ambiguous failure cannot write a row twice.
async fn persist(store: &Store, rows: Arc<[GenerationRow]>) {
    let started = Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    for attempt in 1.. {
        let Err(error) = store.settle_generations(Arc::clone(&rows)).await else {
            return;
        };
        if started.elapsed() >= RETRY_BUDGET
            || (!error.is_transient() && attempt >= REFUSED_ATTEMPTS)
        {
            let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
            tracing::error!(
                %error,
                attempts = attempt,
                lost = rows.len(),
                ids = %ids.join(","),
                "could not write generations; giving up on this batch"
            );
            return;
        }
        tracing::error!(%error, attempt, rows = rows.len(), "could not write generations; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

fn lost(message: Message) {
    if let Message::Row(row) = message {
        tracing::error!(
            id = %row.id,
            key_hash = %row.key_hash,
            cost_micro_usd = row.cost,
            "the generation writer has stopped; this generation was not recorded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_max_parked_rows_are_shed_and_counted() {
        let parked = Parked::default();
        for _ in 0..MAX_PARKED {
            assert!(parked.enter());
        }
        assert!(!parked.enter(), "no room past the bound");
        parked.shed(Message::Flush(oneshot::channel().0));
        assert_eq!(parked.shed.load(Ordering::Relaxed), 1);
        parked.leave();
        assert!(
            parked.enter(),
            "a place comes back when a parked row gets in"
        );
    }
}
