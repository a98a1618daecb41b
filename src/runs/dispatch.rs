//! Dispatch: every change to runs is announced through [`Dispatcher::run`], and every long-poll (a
//! driver's claim, a caller's `wait=true`) waits through [`Dispatcher::wait_until`]. Waiters sleep on a
//! `Notify`, holding no thread and no connection.
//! Within one server the wake-up is immediate; across PostgreSQL replicas it travels as a
//! [`Topic::Runs`] message, which every replica turns into the same local wake-up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use futures_util::future::select;
use tokio::sync::Notify;

use crate::db::{DbConnection, DbError, Pool};
use crate::metrics::Metrics;
use crate::replicas::{self, Subscriber, Topic};
use crate::status::RunStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// A run became claimable in the organization.
    Queued,
    /// A run of the organization finished (or was cancelled).
    Finished,
}

impl Signal {
    fn tag(self) -> char {
        match self {
            Self::Queued => 'q',
            Self::Finished => 'f',
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        match tag {
            "q" => Some(Self::Queued),
            "f" => Some(Self::Finished),
            _ => None,
        }
    }
}

/// What a piece of work changed about runs, noted while it runs and announced once it has committed.
#[derive(Debug, Default)]
pub struct Changes {
    signals: Vec<(i64, Signal)>,
    finished: Vec<RunStatus>,
}

impl Changes {
    /// A run of the organization became claimable.
    pub fn queued(&mut self, organization_id: i64) {
        self.signal(organization_id, Signal::Queued);
    }

    /// A run of the organization ended with `status`.
    pub fn finished(&mut self, organization_id: i64, status: RunStatus) {
        self.signal(organization_id, Signal::Finished);
        self.finished.push(status);
    }

    /// Adds what other work noted (work that shared this one's transaction).
    pub fn absorb(&mut self, other: Changes) {
        for (organization_id, signal) in other.signals {
            self.signal(organization_id, signal);
        }
        self.finished.extend(other.finished);
    }

    fn signal(&mut self, organization_id: i64, signal: Signal) {
        if !self.signals.contains(&(organization_id, signal)) {
            self.signals.push((organization_id, signal));
        }
    }
}

/// Long-polls recheck the database this often even without a wake-up, in case one from another replica
/// was missed (a dropped listener connection).
const RECHECK_EVERY: Duration = Duration::from_secs(2);

pub struct Dispatcher {
    shared: Arc<Shared>,
}

/// What announcing needs, shared with the blocking work so it happens even if the request is gone.
struct Shared {
    signals: Mutex<HashMap<(i64, Signal), Arc<Notify>>>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                signals: Mutex::default(),
                metrics,
            }),
        }
    }

    /// The one way to change runs: `work` runs on a pooled connection and notes in [`Changes`] what it
    /// changed, each after the transaction that made it has committed. Then this server's waiters are
    /// woken and finished runs counted, and the other replicas are told through PostgreSQL;
    /// also when `work` fails after some of its changes committed, and even if the caller has gone.
    pub async fn run<T, E, F>(&self, pool: &Pool, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection, &mut Changes) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let shared = self.shared.clone();
        pool.run(move |conn| shared.changing(conn, work)).await
    }

    /// Where changes to runs are counted (also how writes were batched).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// [`Dispatcher::run`] for work already off the async executor, on a connection it holds.
    pub fn run_blocking<T, E, F>(&self, conn: &mut DbConnection, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection, &mut Changes) -> Result<T, E>,
    {
        self.shared.changing(conn, work)
    }

    /// Waits until `check` finds what it looks for (`Some`), or until `deadline` (`None`). `check` runs
    /// at once, again whenever `signal` fires for the organization, and every few seconds regardless.
    /// Between checks the waiter holds no thread and no connection.
    pub async fn wait_until<T, E, F, Fut>(
        &self,
        organization_id: i64,
        signal: Signal,
        deadline: Instant,
        mut check: F,
    ) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let notify = self.notify(organization_id, signal);
        loop {
            // Interest is registered before the check, so a wake-up between the check and the wait
            // is not lost.
            let notified = notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = check().await? {
                return Ok(Some(found));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            let sleep = std::pin::pin!(tokio::time::sleep(remaining.min(RECHECK_EVERY)));
            let _ = select(notified, sleep).await;
        }
    }

    fn notify(&self, organization_id: i64, signal: Signal) -> Arc<Notify> {
        let mut signals = self
            .shared
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        signals
            .entry((organization_id, signal))
            .or_default()
            .clone()
    }

    /// Wakes this server's waiters.
    fn wake(&self, organization_id: i64, signal: Signal) {
        self.shared.wake(organization_id, signal);
    }
}

impl Shared {
    fn changing<T, E, F>(&self, conn: &mut DbConnection, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection, &mut Changes) -> Result<T, E>,
    {
        let mut changes = Changes::default();
        let outcome = work(conn, &mut changes);
        // What is noted is stored. This server's waiters first (no round trip), then the other
        // replicas; failing to tell those must not fail the request (their waiters recheck on
        // their own), so it is only logged.
        self.announce(&changes);
        if let Err(error) = publish(conn, &changes) {
            tracing::warn!(%error, "could not tell other replicas about changed runs");
        }
        outcome
    }

    fn announce(&self, changes: &Changes) {
        for (organization_id, signal) in &changes.signals {
            self.wake(*organization_id, *signal);
        }
        for status in &changes.finished {
            self.metrics.count_finished(*status);
        }
    }

    fn wake(&self, organization_id: i64, signal: Signal) {
        let signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = signals.get(&(organization_id, signal)) {
            notify.notify_waiters();
        }
    }
}

/// Tells the other replicas.
fn publish(conn: &mut DbConnection, changes: &Changes) -> QueryResult<()> {
    for (organization_id, signal) in &changes.signals {
        replicas::publish(
            conn,
            Topic::Runs,
            &format!("{}:{organization_id}", signal.tag()),
        )?;
    }
    Ok(())
}

/// Other replicas' changes wake this server's waiters. A missed message costs a waiter at most
/// [`RECHECK_EVERY`].
impl Subscriber for Dispatcher {
    fn receive(&self, topic: Topic, payload: &str) {
        if topic != Topic::Runs {
            return;
        }
        let Some((tag, organization)) = payload.split_once(':') else {
            return;
        };
        if let (Some(signal), Ok(organization_id)) =
            (Signal::from_tag(tag), organization.parse::<i64>())
        {
            self.wake(organization_id, signal);
        }
    }

    fn listening(&self, _live: bool) {}
}
