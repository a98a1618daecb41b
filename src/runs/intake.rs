//! Intake: runs enqueued at the same moment share one transaction, so a burst of callers pays for one
//! commit (one fsync) instead of one each. One writer thread takes whatever has arrived while it was
//! committing the previous batch — no waiting to fill a batch, so a lone caller is not slowed — and
//! answers each caller only after the commit: a 202 still means the run is stored (the answers go to
//! each caller's worker thread in one hand-over, [`super::answers`]). On PostgreSQL the
//! statement that stores a batch also tells the other replicas of it (`NOTIFY`), so a batch costs
//! one round trip and one commit, news included.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::QueuedRow;
use super::answers::{Answers, Caller};
use super::dispatch::{Changes, Dispatcher};
use super::store::store_queued_telling;
use crate::db::{Checkout, DbConnection, DbError, Pool, write_transaction};

/// The most runs one transaction stores.
const MAX_BATCH: usize = 256;

struct Request {
    row: QueuedRow,
    caller: Caller,
    reply: oneshot::Sender<Result<(), DbError>>,
}

pub struct Intake {
    requests: Sender<Request>,
}

impl Intake {
    /// Starts the writer thread; it stops when the `Intake` is dropped.
    pub fn start(pool: Pool, dispatcher: Arc<Dispatcher>) -> Self {
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("granite-intake".into())
            .spawn(move || write_batches(&pool, &dispatcher, &incoming))
            .expect("a thread for the run intake");
        Self { requests }
    }

    /// Stores a queued run; resolves once it has committed.
    pub async fn enqueue(&self, row: QueuedRow) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                row,
                caller: Caller::here(),
                reply,
            })
            .map_err(|_| DbError::Cancelled)?;
        answer.await.map_err(|_| DbError::Cancelled)?
    }
}

/// Waits for the first item, then takes whatever else has arrived meanwhile, at most `max`: a lone
/// caller is not kept waiting for a batch to fill. `None` once every sender is gone. (Also the group
/// commit's, [`super::group_commit`].)
pub(super) fn next_batch<T>(incoming: &Receiver<T>, max: usize) -> Option<Vec<T>> {
    Some(rest_of_batch(incoming.recv().ok()?, incoming, max))
}

/// `first` and whatever else has arrived meanwhile, at most `max` in all.
fn rest_of_batch<T>(first: T, incoming: &Receiver<T>, max: usize) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match incoming.try_recv() {
            Ok(item) => batch.push(item),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        }
    }
    batch
}

/// The writer keeps its connection while batches follow each other this closely: under load no
/// batch pays for a checkout and a hand-back (on PostgreSQL a round trip), and an idle writer
/// holds none.
const KEEP_CONNECTION: Duration = Duration::from_millis(500);

/// The writer keeps a connection only from a pool at least this large, so that everything else
/// always has connections to use.
const KEEP_FROM_POOL_SIZE: u32 = 4;

fn write_batches(pool: &Pool, dispatcher: &Dispatcher, incoming: &Receiver<Request>) {
    let keep = pool.max_size() >= KEEP_FROM_POOL_SIZE;
    let mut held: Option<Checkout> = None;
    loop {
        let first = match held {
            Some(_) => match incoming.recv_timeout(KEEP_CONNECTION) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    held = None;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match incoming.recv() {
                Ok(first) => first,
                Err(_) => return,
            },
        };
        let batch = rest_of_batch(first, incoming, MAX_BATCH);
        dispatcher.metrics().observe_batch("intake", batch.len());
        let (rows, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|r| (r.row, (r.caller, r.reply)))
            .unzip();
        let mut conn = match held.take().map_or_else(|| pool.get(), Ok) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, runs = rows.len(), "no connection to store queued runs");
                // Dropping the replies tells their callers the work was cancelled.
                drop(replies);
                continue;
            }
        };
        let stored = store(&mut conn, dispatcher, &rows);
        let all_stored = stored.iter().all(Result::is_ok);
        let mut answers = Answers::new();
        for (stored, (caller, reply)) in stored.into_iter().zip(replies) {
            answers.add(caller, reply, stored);
        }
        answers.deliver();
        // A connection that failed a write goes back to the pool, which checks it.
        if keep && all_stored {
            held = Some(conn);
        }
    }
}

/// Stores the batch in one statement, its own transaction, which also tells the other replicas of
/// the new runs; if that fails, each run in its own, so one bad run does not fail the others.
fn store(
    conn: &mut DbConnection,
    dispatcher: &Dispatcher,
    rows: &[QueuedRow],
) -> Vec<Result<(), DbError>> {
    let stored = |conn: &mut DbConnection, rows: &[QueuedRow]| {
        let mut changes = Changes::default();
        for row in rows {
            changes.queued_needing(row.organization_id(), row.requires());
        }
        dispatcher.run_blocking_telling(conn, changes, |conn, messages| {
            match conn {
                // One statement is its own transaction: no BEGIN and COMMIT round trips.
                DbConnection::Postgres(_) => store_queued_telling(conn, rows, messages)?,
                // SQLite takes the write lock up front, as every writer does.
                DbConnection::Sqlite(_) => {
                    write_transaction(conn, |conn| store_queued_telling(conn, rows, messages))?
                }
            }
            Ok::<_, DbError>(())
        })
    };
    match stored(conn, rows) {
        Ok(()) => rows.iter().map(|_| Ok(())).collect(),
        Err(_) if rows.len() > 1 => rows
            .iter()
            .map(|row| stored(conn, std::slice::from_ref(row)))
            .collect(),
        Err(error) => vec![Err(error)],
    }
}
