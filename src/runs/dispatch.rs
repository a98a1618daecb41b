//! Dispatch: every change to runs is announced through [`Dispatcher::run`], and every long-poll (a
//! driver's claim, a caller's `wait=true`) waits through [`Dispatcher::wait_until`]. Waiters sleep on a
//! `Notify`, holding no thread and no connection.
//! Within one server the wake-up is immediate; across PostgreSQL replicas it travels as a
//! [`Topic::Runs`] message, which every replica turns into the same local wake-up.
//!
//! A new run wakes only the machines that should take it, not every idle one: claims wait in line
//! ([`Dispatcher::wait_for_run`]) in the order runs are handed out (priority, then idle longest), and
//! each run queued wakes the first machines in line able to run it (one more than the runs, in case
//! the first cannot take it after all), on each replica. With thousands of machines idle, waking
//! them all sent each of them to the database for every run.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use futures_util::future::select;
use tokio::sync::Notify;

use crate::db::{DbConnection, DbError, Pool};
use crate::machines::Machine;
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
    /// New runs by organization and `requires` (as stored), with how many.
    needing: Vec<(i64, String, usize)>,
    finished: Vec<RunStatus>,
}

impl Changes {
    /// Runs of the organization may have become claimable for any machine: every waiting machine of
    /// the organization is woken (runs given back by the lease keeper, a machine resumed: rare).
    pub fn queued(&mut self, organization_id: i64) {
        self.signal(organization_id, Signal::Queued);
    }

    /// A run needing `requires` (its stored JSON list) became claimable: the first machines in line
    /// able to run it are woken.
    pub fn queued_needing(&mut self, organization_id: i64, requires: &str) {
        self.needing(organization_id, requires, 1);
    }

    fn needing(&mut self, organization_id: i64, requires: &str, runs: usize) {
        match self
            .needing
            .iter_mut()
            .find(|(org, needs, _)| *org == organization_id && needs == requires)
        {
            Some((_, _, counted)) => *counted += runs,
            None => self
                .needing
                .push((organization_id, requires.to_owned(), runs)),
        }
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
        for (organization_id, requires, runs) in other.needing {
            self.needing(organization_id, &requires, runs);
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
    /// Claims waiting for a run, by organization, in the order runs are handed out.
    line: Mutex<HashMap<i64, BTreeMap<Place, Waiting>>>,
    /// Names this replica in what it tells the others, so it does not act on its own news twice
    /// (PostgreSQL delivers a replica's notifications to itself too).
    replica: String,
    metrics: Arc<Metrics>,
}

/// A machine's place in its organization's line: highest priority first, then idle longest, then
/// enrolled first (the order `claim::RIVALS` ranks machines in; `idle_since` is set at enrollment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    priority: std::cmp::Reverse<i32>,
    idle_since: Option<chrono::NaiveDateTime>,
    machine_id: i64,
}

impl Place {
    fn of(machine: &Machine) -> Self {
        Self {
            priority: std::cmp::Reverse(machine.priority),
            idle_since: machine.idle_since,
            machine_id: machine.id,
        }
    }
}

/// A claim in line: what its machine can run, and how to wake it.
struct Waiting {
    capabilities: Vec<String>,
    /// Paused when the claim began: it can take no run, so runs queued pass it by, until the whole
    /// line is woken (a machine resumed, runs given back): then it may be able again.
    paused: bool,
    wake: Arc<Notify>,
}

/// Takes a claim out of line when it stops waiting, however it stops.
struct InLine<'a> {
    shared: &'a Shared,
    organization_id: i64,
    place: Place,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut line = self.shared.line.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = line.get_mut(&self.organization_id) {
            waiting.remove(&self.place);
            if waiting.is_empty() {
                line.remove(&self.organization_id);
            }
        }
    }
}

impl Dispatcher {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                signals: Mutex::default(),
                line: Mutex::default(),
                replica: crate::secret::random_base62(12),
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

    /// [`Dispatcher::run_blocking`] for work that tells the other replicas itself, in the statement
    /// that makes the `changes` (so the news costs no round trip or commit of its own, and is
    /// delivered only if the change commits): `work` gets the messages to send
    /// ([`crate::replicas::notify_sql`]); once it succeeds, this server's waiters hear of the
    /// changes.
    pub fn run_blocking_telling<T, E, F>(
        &self,
        conn: &mut DbConnection,
        changes: Changes,
        work: F,
    ) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection, &[String]) -> Result<T, E>,
    {
        let outcome = work(conn, &messages(&self.shared.replica, &changes));
        if outcome.is_ok() {
            self.shared.announce(&changes);
        }
        outcome
    }

    /// Waits until `check` finds what it looks for (`Some`), or until `deadline` (`None`). `check` runs
    /// at once, again whenever `signal` fires for the organization, and every few seconds regardless.
    /// Between checks the waiter holds no thread and no connection.
    pub async fn wait_until<T, E, F, Fut>(
        &self,
        organization_id: i64,
        signal: Signal,
        deadline: Instant,
        check: F,
    ) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        wait_on(&self.notify(organization_id, signal), deadline, check).await
    }

    /// [`Dispatcher::wait_until`] for a machine's claim: `check` runs at once, again when a run the
    /// machine is first in line for is queued (or any run given back to the queue), and every few
    /// seconds regardless.
    pub async fn wait_for_run<T, E, F, Fut>(
        &self,
        machine: &Machine,
        deadline: Instant,
        check: F,
    ) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let wake = Arc::new(Notify::new());
        let place = Place::of(machine);
        let _in_line = {
            let mut line = self.shared.line.lock().unwrap_or_else(|e| e.into_inner());
            line.entry(machine.organization_id).or_default().insert(
                place,
                Waiting {
                    capabilities: machine.capability_list(),
                    paused: machine.paused_at.is_some(),
                    wake: wake.clone(),
                },
            );
            InLine {
                shared: &self.shared,
                organization_id: machine.organization_id,
                place,
            }
        };
        wait_on(&wake, deadline, check).await
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

/// Runs `check` at once, again whenever `wake` is notified, and every [`RECHECK_EVERY`], until it
/// finds something or `deadline` passes.
async fn wait_on<T, E, F, Fut>(
    wake: &Notify,
    deadline: Instant,
    mut check: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    loop {
        // Interest is registered before the check, so a wake-up between the check and the wait is
        // not lost (`notify_waiters` reaches it; `notify_one` leaves a permit besides).
        let notified = wake.notified();
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

impl Shared {
    fn changing<T, E, F>(&self, conn: &mut DbConnection, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection, &mut Changes) -> Result<T, E>,
    {
        let mut changes = Changes::default();
        let outcome = work(conn, &mut changes);
        self.announce(&changes);
        // Failing to tell the other replicas must not fail the request (their waiters recheck on
        // their own), so it is only logged.
        if let Err(error) = publish(conn, &self.replica, &changes) {
            tracing::warn!(%error, "could not tell other replicas about changed runs");
        }
        outcome
    }

    fn announce(&self, changes: &Changes) {
        for (organization_id, signal) in &changes.signals {
            self.wake(*organization_id, *signal);
        }
        for (organization_id, requires, runs) in &changes.needing {
            self.wake_first_able(*organization_id, requires, *runs);
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
        drop(signals);
        if signal == Signal::Queued {
            let mut line = self.line.lock().unwrap_or_else(|e| e.into_inner());
            let waiting = line
                .get_mut(&organization_id)
                .into_iter()
                .flat_map(|l| l.values_mut());
            let mut woken = 0;
            for claim in waiting {
                claim.paused = false;
                claim.wake.notify_one();
                woken += 1;
            }
            self.metrics.count_claims_woken(woken);
        }
    }

    /// Wakes the first `runs` + 1 claims in line able to run what `requires` lists, passing paused
    /// machines by (one more, in case the first cannot take it after all: paused a moment ago, say);
    /// the rest keep waiting.
    fn wake_first_able(&self, organization_id: i64, requires: &str, runs: usize) {
        let Ok(requires) = serde_json::from_str::<Vec<String>>(requires) else {
            return self.wake(organization_id, Signal::Queued);
        };
        let line = self.line.lock().unwrap_or_else(|e| e.into_inner());
        let able = line
            .get(&organization_id)
            .into_iter()
            .flat_map(|l| l.values())
            .filter(|claim| {
                !claim.paused && requires.iter().all(|r| claim.capabilities.contains(r))
            })
            .take(runs.saturating_add(1));
        let mut woken = 0;
        for claim in able {
            claim.wake.notify_one();
            woken += 1;
        }
        self.metrics.count_claims_woken(woken);
    }
}

/// Tells the other replicas.
fn publish(conn: &mut DbConnection, replica: &str, changes: &Changes) -> QueryResult<()> {
    for message in messages(replica, changes) {
        replicas::publish(conn, Topic::Runs, &message)?;
    }
    Ok(())
}

/// What the other replicas are told of `changes`, one message per signal and per kind of new run.
fn messages(replica: &str, changes: &Changes) -> Vec<String> {
    let signals = changes
        .signals
        .iter()
        .map(|(organization_id, signal)| format!("{}:{replica}:{organization_id}", signal.tag()));
    let needing = changes
        .needing
        .iter()
        .map(|(organization_id, requires, runs)| {
            let message = format!("{NEEDING_TAG}:{replica}:{organization_id}:{runs}:{requires}");
            // A notification holds at most 8,000 bytes: a longer list wakes every waiting claim there.
            if message.len() <= MAX_PAYLOAD {
                message
            } else {
                format!("{}:{replica}:{organization_id}", Signal::Queued.tag())
            }
        });
    signals.chain(needing).collect()
}

/// The tag of "runs needing this were queued" between replicas:
/// `n:{replica}:{organization}:{runs}:{requires}`; a signal is `{tag}:{replica}:{organization}`.
/// The replica that sent a message has woken its own waiters already.
const NEEDING_TAG: &str = "n";
/// The longest payload sent (PostgreSQL's limit is 8,000 bytes, with the schema in front).
const MAX_PAYLOAD: usize = 7_000;

/// Other replicas' changes wake this server's waiters. A missed message costs a waiter at most
/// [`RECHECK_EVERY`].
impl Subscriber for Dispatcher {
    fn receive(&self, topic: Topic, payload: &str) {
        if topic != Topic::Runs {
            return;
        }
        let mut parts = payload.splitn(5, ':');
        let (Some(tag), Some(replica), Some(Ok(organization_id))) = (
            parts.next(),
            parts.next(),
            parts.next().map(str::parse::<i64>),
        ) else {
            return;
        };
        if replica == self.shared.replica {
            return;
        }
        if tag == NEEDING_TAG {
            if let (Some(Ok(runs)), Some(requires)) =
                (parts.next().map(str::parse::<usize>), parts.next())
            {
                self.shared.wake_first_able(organization_id, requires, runs);
            }
        } else if let Some(signal) = Signal::from_tag(tag) {
            self.wake(organization_id, signal);
        }
    }

    fn listening(&self, _live: bool) {}
}
