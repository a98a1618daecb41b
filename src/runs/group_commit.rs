//! Group commit for the writes machines make when a run ends (`complete`), on SQLite: reports that
//! arrive at the same moment share one transaction, so a fleet finishing runs together takes the
//! write lock once, instead of each report queueing for it in turn. Each report runs in its own
//! savepoint of that transaction, so one refused report (a run the machine does not hold, one already
//! finished) undoes only its own writes. One writer thread takes whatever has arrived while it was
//! committing the previous batch — no waiting to fill a batch, so a lone report is not slowed — and
//! answers each caller only after the commit: a 200 still means the outcome is stored.
//!
//! On PostgreSQL each report is its own transaction, run side by side on the pool. Concurrent commits
//! there share WAL flushes (the server's own group commit; nothing in a report sends a `NOTIFY`,
//! which would make commits flush one at a time: `db::machine_changes`), and a shared transaction
//! would hold the counter rows it touched (`queue_counts`, which claims also update) for the whole
//! batch: measured, claims then waited on them and a fleet of 32 machines was slower, not faster.
//!
//! Enqueue has its own, leaner batching on both backends ([`super::intake`]): its work is one
//! multi-row insert.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use diesel::Connection;
use tokio::sync::oneshot;

use super::dispatch::{Changes, Dispatcher};
use crate::db::{DatabaseUrl, DbConnection, DbError, Pool, write_transaction};

/// The most reports one transaction stores.
const MAX_BATCH: usize = 64;

/// Answers one caller once the batch's commit is known.
type Answer = Box<dyn FnOnce(Result<(), DbError>) + Send>;
/// One caller's work, run inside the batch's transaction; what it did waits for the commit.
type Job = Box<dyn FnOnce(&mut DbConnection, &mut Changes) -> Answer + Send>;

pub struct GroupCommit {
    pool: Pool,
    dispatcher: Arc<Dispatcher>,
    /// The writer thread's queue (SQLite); `None` when each report commits on its own (PostgreSQL).
    jobs: Option<Sender<Job>>,
}

impl GroupCommit {
    /// Starts the writer thread on SQLite; it stops when the `GroupCommit` is dropped.
    pub fn start(pool: Pool, dispatcher: Arc<Dispatcher>) -> Self {
        let jobs = matches!(pool.url(), DatabaseUrl::Sqlite(_)).then(|| {
            let (jobs, incoming) = mpsc::channel();
            let (pool, dispatcher) = (pool.clone(), dispatcher.clone());
            std::thread::Builder::new()
                .name("granite-reports".into())
                .spawn(move || write_batches(&pool, &dispatcher, &incoming))
                .expect("a thread for run reports");
            jobs
        });
        Self {
            pool,
            dispatcher,
            jobs,
        }
    }

    /// Runs `work` in a savepoint of the next batch's transaction (on PostgreSQL, on its own),
    /// noting in [`Changes`] what it changed (announced once it has committed); resolves with its
    /// result after the commit.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection, &mut Changes) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let Some(jobs) = &self.jobs else {
            return self.dispatcher.run(&self.pool, work).await;
        };
        let (reply, answer) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn, changes| {
            let mut noted = Changes::default();
            let done = savepoint(conn, |conn| work(conn, &mut noted));
            if done.is_ok() {
                changes.absorb(noted);
            }
            Box::new(move |committed| {
                let _ = reply.send(committed.map_err(E::from).and(done));
            })
        });
        jobs.send(job).map_err(|_| E::from(DbError::Cancelled))?;
        answer.await.map_err(|_| E::from(DbError::Cancelled))?
    }
}

/// A failure inside a savepoint: the work's own error, or the database's.
enum Failed<E> {
    Work(E),
    Database(diesel::result::Error),
}

impl<E> From<diesel::result::Error> for Failed<E> {
    fn from(error: diesel::result::Error) -> Self {
        Self::Database(error)
    }
}

/// Runs `work` in a savepoint of the open transaction: on failure its writes are undone, the rest of
/// the transaction's are kept.
fn savepoint<T, E: From<DbError>>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E> {
    conn.transaction(|conn| work(conn).map_err(Failed::Work))
        .map_err(|failed| match failed {
            Failed::Work(error) => error,
            Failed::Database(error) => E::from(DbError::Query(error)),
        })
}

fn write_batches(pool: &Pool, dispatcher: &Dispatcher, incoming: &Receiver<Job>) {
    while let Some(batch) = super::intake::next_batch(incoming, MAX_BATCH) {
        // A panic in one caller's work must not stop the thread: the batch is abandoned (its callers
        // hear that it was cancelled, and a connection dropped while unwinding is not reused).
        let batch_size = batch.len();
        let committed = catch_unwind(AssertUnwindSafe(|| commit(pool, dispatcher, batch)));
        match committed {
            Ok((answers, committed)) => {
                let committed = committed.map_err(Arc::new);
                for answer in answers {
                    answer(committed.clone().map_err(DbError::Shared));
                }
            }
            Err(_) => tracing::error!(reports = batch_size, "a run report panicked"),
        }
    }
}

/// Runs the batch in one transaction; returns each caller's answer and whether the batch committed.
fn commit(
    pool: &Pool,
    dispatcher: &Dispatcher,
    batch: Vec<Job>,
) -> (Vec<Answer>, Result<(), DbError>) {
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(error) => {
            tracing::warn!(%error, reports = batch.len(), "no connection to store run reports");
            // Dropping the jobs tells their callers the work was cancelled.
            return (Vec::new(), Err(error));
        }
    };
    dispatcher.metrics().observe_batch("reports", batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    let committed = dispatcher.run_blocking(&mut conn, |conn, changes| {
        let mut noted = Changes::default();
        let committed = write_transaction(conn, |conn| {
            for job in batch {
                answers.push(job(conn, &mut noted));
                // A failure SQLite answers by ending the whole transaction (disk full, I/O) leaves
                // no transaction for the next report's savepoint: it would commit on its own. The
                // batch stops; the reports not run are answered as cancelled, the rest as failed.
                if !crate::db::in_transaction(conn)? {
                    return Err(DbError::Cancelled);
                }
            }
            Ok::<_, DbError>(())
        });
        // Only what was stored is announced.
        if committed.is_ok() {
            changes.absorb(noted);
        }
        committed
    });
    if let Err(error) = &committed {
        tracing::warn!(%error, reports = answers.len(), "could not store run reports");
    }
    (answers, committed)
}
