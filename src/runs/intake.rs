//! Intake: runs enqueued at the same moment share one transaction, so a burst of callers pays for one
//! commit (one fsync) instead of one each. One writer thread takes whatever has arrived while it was
//! committing the previous batch — no waiting to fill a batch, so a lone caller is not slowed — and
//! answers each caller only after the commit: a 202 still means the run is stored.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};

use tokio::sync::oneshot;

use super::dispatch::Dispatcher;
use super::{NewRun, Run};
use crate::db::{DbConnection, DbError, Pool, write_transaction};

/// The most runs one transaction stores.
const MAX_BATCH: usize = 256;

struct Request {
    organization_id: i64,
    api_key_id: i64,
    run: NewRun,
    reply: oneshot::Sender<Result<Run, DbError>>,
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
    pub async fn enqueue(
        &self,
        organization_id: i64,
        api_key_id: i64,
        run: NewRun,
    ) -> Result<Run, DbError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                organization_id,
                api_key_id,
                run,
                reply,
            })
            .map_err(|_| DbError::Cancelled)?;
        answer.await.map_err(|_| DbError::Cancelled)?
    }
}

fn write_batches(pool: &Pool, dispatcher: &Dispatcher, incoming: &Receiver<Request>) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(request) => batch.push(request),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, runs = batch.len(), "no connection to store queued runs");
                for request in batch {
                    let _ = request.reply.send(Err(DbError::Cancelled));
                }
                continue;
            }
        };
        for (request, stored) in store(&mut conn, dispatcher, &batch).into_iter().zip(batch) {
            let _ = stored.reply.send(request);
        }
    }
}

/// Stores the batch in one transaction; if that fails, each run in its own, so one bad run does
/// not fail the others.
fn store(
    conn: &mut DbConnection,
    dispatcher: &Dispatcher,
    batch: &[Request],
) -> Vec<Result<Run, DbError>> {
    let together = dispatcher.run_blocking(conn, |conn, changes| {
        let runs = write_transaction(conn, |conn| {
            batch
                .iter()
                .map(|r| super::enqueue(conn, r.organization_id, r.api_key_id, &r.run))
                .collect::<Result<Vec<_>, _>>()
        })?;
        for request in batch {
            changes.queued(request.organization_id);
        }
        Ok::<_, DbError>(runs)
    });
    match together {
        Ok(runs) => runs.into_iter().map(Ok).collect(),
        Err(_) if batch.len() > 1 => batch
            .iter()
            .map(|r| {
                dispatcher.run_blocking(conn, |conn, changes| {
                    let run = write_transaction(conn, |conn| {
                        super::enqueue(conn, r.organization_id, r.api_key_id, &r.run)
                    })?;
                    changes.queued(r.organization_id);
                    Ok(run)
                })
            })
            .collect(),
        Err(error) => vec![Err(error)],
    }
}
