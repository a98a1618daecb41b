//! Runs: the jobs of the public API ("agent runs"). Queued by an API key, claimed by exactly one machine
//! of the same organization whose capabilities cover the run's `requires`, completed by that machine.

pub mod answers;
pub mod attempts;
pub mod claim;
pub mod claims;
pub mod dispatch;
pub mod group_commit;
pub mod intake;
pub mod leases;
pub mod retention;
mod store;

pub use store::{store_queued, store_queued_telling};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::Value;

use crate::db::schema::{machines, runs};
use crate::db::{DbConnection, write_transaction};
use crate::status::{AttemptOutcome, RunStatus};
use crate::wire::driver::{CompleteRequest, Completion};
use crate::wire::{RunErrorBody, RunObject};

/// A run is handed out at most this many times; after that, losing its machine fails it.
pub const MAX_ATTEMPTS: i32 = 3;

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = runs)]
pub struct Run {
    pub id: i64,
    pub public_id: String,
    pub organization_id: i64,
    pub api_key_id: Option<i64>,
    pub endpoint: String,
    pub parameters: String,
    pub requires: String,
    pub priority: i32,
    pub status: RunStatus,
    pub result: Option<String>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub machine_id: Option<i64>,
    pub attempts: i32,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub cancel_requested_at: Option<NaiveDateTime>,
    /// The run this one retries.
    pub retried_from_run_id: Option<i64>,
}

impl Run {
    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    pub fn requires_list(&self) -> Vec<String> {
        serde_json::from_str(&self.requires).unwrap_or_default()
    }

    /// The contract's run object.
    pub fn to_wire(&self) -> RunObject {
        let error = match (&self.error_type, &self.error_message) {
            (None, None) => None,
            (kind, message) => Some(RunErrorBody {
                kind: kind.clone().unwrap_or_default(),
                message: message.clone().unwrap_or_default(),
            }),
        };
        RunObject {
            run_id: self.public_id.clone(),
            endpoint: self.endpoint.clone(),
            status: self.status,
            parameters: serde_json::from_str(&self.parameters).unwrap_or(Value::Null),
            requires: self.requires_list(),
            priority: self.priority,
            result: self
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null),
            error,
            machine_id: self.machine_id,
            created_at: self.created_at.and_utc(),
            started_at: self.started_at.map(|t| t.and_utc()),
            finished_at: self.finished_at.map(|t| t.and_utc()),
            duration: match (self.started_at, self.finished_at) {
                (Some(started), Some(finished)) => {
                    Some((finished - started).num_milliseconds().max(0))
                }
                _ => None,
            },
        }
    }
}

/// An automation's name in `POST /api/{org}/{endpoint}`: 1–100 characters of `a-z0-9-`.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 100
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("The endpoint must be 1–100 characters of a-z, 0-9 and -.".into())
    }
}

/// What a caller asks to run.
pub struct NewRun {
    pub endpoint: String,
    pub parameters: Value,
    pub requires: Vec<String>,
    pub priority: i32,
}

/// A queued run ready to store, with its public id: everything is worked out before it reaches the
/// writer ([`intake`]), which then only stores rows (in the statements of [`store`]).
pub struct QueuedRow {
    public_id: String,
    organization_id: i64,
    api_key_id: Option<i64>,
    endpoint: String,
    parameters: String,
    requires: String,
    priority: i32,
    status: RunStatus,
    created_at: NaiveDateTime,
    retried_from_run_id: Option<i64>,
}

impl QueuedRow {
    /// A run a caller asked for with this API key.
    pub fn new(organization_id: i64, api_key_id: i64, new: NewRun) -> Self {
        let now = chrono::Utc::now();
        Self {
            public_id: new_public_id(now),
            organization_id,
            api_key_id: Some(api_key_id),
            endpoint: new.endpoint,
            parameters: new.parameters.to_string(),
            requires: serde_json::to_string(&new.requires).expect("strings serialize"),
            priority: new.priority,
            status: RunStatus::Queued,
            created_at: now.naive_utc(),
            retried_from_run_id: None,
        }
    }

    /// The same work again, as a new run linked to `old`.
    fn retry_of(old: &Run) -> Self {
        let now = chrono::Utc::now();
        Self {
            public_id: new_public_id(now),
            organization_id: old.organization_id,
            api_key_id: old.api_key_id,
            endpoint: old.endpoint.clone(),
            parameters: old.parameters.clone(),
            requires: old.requires.clone(),
            priority: old.priority,
            status: RunStatus::Queued,
            created_at: now.naive_utc(),
            retried_from_run_id: Some(old.id),
        }
    }

    pub fn public_id(&self) -> &str {
        &self.public_id
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What the run needs, as stored (a JSON list of capabilities).
    pub fn requires(&self) -> &str {
        &self.requires
    }

    pub fn organization_id(&self) -> i64 {
        self.organization_id
    }
}

/// A new run id: `run_`, the time in milliseconds as 8 base62 digits, then 16 random ones (95 bits:
/// ids stay unguessable). Ids made one after another sort, and sit in the unique index, next to each
/// other, so a batch of new runs touches one index page rather than one page per run.
pub fn new_public_id(at: chrono::DateTime<chrono::Utc>) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    format!(
        "run_{}{}",
        crate::secret::base62_fixed(millis, 8),
        crate::secret::random_base62(16)
    )
}

/// One run of the organization by its public id; another organization's run is not found.
pub fn find(
    conn: &mut DbConnection,
    organization_id: i64,
    public_id: &str,
) -> QueryResult<Option<Run>> {
    // No run id holds a NUL character, and PostgreSQL could not even compare one.
    if !crate::text::storable(public_id) {
        return Ok(None);
    }
    runs::table
        .filter(runs::public_id.eq(public_id))
        .filter(runs::organization_id.eq(organization_id))
        .select(Run::as_select())
        .first(conn)
        .optional()
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("No such run.")]
    NotFound,
    #[error("The run has already finished.")]
    AlreadyFinished,
    #[error("Only a failed or cancelled run can be retried.")]
    NotRetryable,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Cancels a queued run at once; a running one is marked cancelled and its machine is told on its next
/// heartbeat or claim.
pub fn cancel(
    conn: &mut DbConnection,
    organization_id: i64,
    public_id: &str,
) -> Result<Run, RunError> {
    write_transaction(conn, |conn| cancel_in(conn, organization_id, public_id))
}

/// [`cancel`] inside the caller's write transaction.
fn cancel_in(
    conn: &mut DbConnection,
    organization_id: i64,
    public_id: &str,
) -> Result<Run, RunError> {
    // The update names the status it read, so a claim or a completion at the same instant (on
    // another PostgreSQL connection) is not overwritten; then the run is read again.
    for _ in 0..3 {
        let run = find(conn, organization_id, public_id)?.ok_or(RunError::NotFound)?;
        let now = chrono::Utc::now().naive_utc();
        let cancel_requested = match run.status {
            RunStatus::Queued => None,
            RunStatus::Running => Some(now),
            _ => return Err(RunError::AlreadyFinished),
        };
        let cancelled = diesel::update(runs::table.find(run.id))
            .filter(runs::status.eq(run.status))
            .set((
                runs::status.eq(RunStatus::Cancelled),
                runs::finished_at.eq(now),
                runs::cancel_requested_at.eq(cancel_requested),
            ))
            .returning(runs::all_columns)
            .get_result::<Run>(conn)
            .optional()?;
        if let Some(run) = cancelled {
            attempts::end(conn, run.id, AttemptOutcome::Cancelled, now)?;
            return Ok(run);
        }
    }
    Err(RunError::AlreadyFinished)
}

/// An admin cancels a run from the dashboard: as the public API does, and audited.
pub fn cancel_by(
    conn: &mut DbConnection,
    organization_id: i64,
    public_id: &str,
    actor: &crate::audit::Actor,
) -> Result<Run, RunError> {
    write_transaction(conn, |conn| {
        let run = cancel_in(conn, organization_id, public_id)?;
        crate::audit::record(
            conn,
            actor.event(
                organization_id,
                crate::audit::Action::RunCancelled,
                "run",
                &run.public_id,
                serde_json::json!({ "endpoint": run.endpoint }),
            ),
        )?;
        Ok(run)
    })
}

/// Queues a failed or cancelled run again, as a new run linked to it (`retried_from_run_id`). Audited.
pub fn retry(
    conn: &mut DbConnection,
    organization_id: i64,
    public_id: &str,
    actor: &crate::audit::Actor,
) -> Result<Run, RunError> {
    write_transaction(conn, |conn| {
        let old = find(conn, organization_id, public_id)?.ok_or(RunError::NotFound)?;
        if !old.status.can_retry() {
            return Err(RunError::NotRetryable);
        }
        let row = QueuedRow::retry_of(&old);
        store_queued(conn, std::slice::from_ref(&row))?;
        let new =
            find(conn, organization_id, row.public_id())?.ok_or(diesel::result::Error::NotFound)?;
        crate::audit::record(
            conn,
            actor.event(
                organization_id,
                crate::audit::Action::RunRetried,
                "run",
                &old.public_id,
                serde_json::json!({ "endpoint": old.endpoint, "retry": new.public_id }),
            ),
        )?;
        Ok(new)
    })
}

/// The runs made by retrying this one, oldest first.
pub fn retries_of(conn: &mut DbConnection, run_id: i64) -> QueryResult<Vec<String>> {
    runs::table
        .filter(runs::retried_from_run_id.eq(run_id))
        .order(runs::id)
        .select(runs::public_id)
        .load(conn)
}

/// The public id of a run by its internal id.
pub fn public_id_of(conn: &mut DbConnection, run_id: i64) -> QueryResult<Option<String>> {
    runs::table
        .find(run_id)
        .select(runs::public_id)
        .first(conn)
        .optional()
}

/// A run a machine is letting go of (finished or given back).
enum Held {
    Running(Run),
    /// Cancelled while it ran: the machine acknowledges, the run stays cancelled.
    Cancelled(Run),
}

/// The machine stops holding the run: it is free again. The run must be this machine's and not finished.
fn let_go(conn: &mut DbConnection, machine_id: i64, public_id: &str) -> Result<Held, RunError> {
    let run = runs::table
        .filter(runs::public_id.eq(public_id))
        .filter(runs::machine_id.eq(machine_id))
        .select(Run::as_select())
        .first(conn)
        .optional()?
        .ok_or(RunError::NotFound)?;
    diesel::update(
        machines::table
            .find(machine_id)
            .filter(machines::current_run_id.eq(run.id)),
    )
    .set(machines::current_run_id.eq(None::<i64>))
    .execute(conn)?;
    match run.status {
        RunStatus::Running => Ok(Held::Running(run)),
        RunStatus::Cancelled => Ok(Held::Cancelled(run)),
        _ => Err(RunError::AlreadyFinished),
    }
}

/// The error type of a failure the machine gave no detail for: the status itself.
pub const UNSPECIFIED_FAILURE: &str = RunStatus::Failed.as_str();

/// How a machine says a run ended.
pub struct Outcome {
    pub succeeded: bool,
    pub result: Option<Value>,
    pub error: Option<(String, String)>,
}

impl Outcome {
    /// A driver's report, bounded: an error type of at most 100 characters (the status itself when
    /// empty) and a message of at most 4,000.
    pub fn from_wire(report: CompleteRequest) -> Self {
        let error = report.error.map(|e| {
            let kind = if e.kind.trim().is_empty() {
                UNSPECIFIED_FAILURE.to_owned()
            } else {
                e.kind.chars().take(100).collect()
            };
            (kind, e.message.chars().take(4000).collect())
        });
        Self {
            succeeded: report.status == Completion::Completed,
            result: report.result,
            error,
        }
    }

    /// The report a driver sends for this outcome.
    pub fn to_wire(&self) -> CompleteRequest {
        CompleteRequest {
            status: if self.succeeded {
                Completion::Completed
            } else {
                Completion::Failed
            },
            result: self.result.clone(),
            error: self.error.as_ref().map(|(kind, message)| RunErrorBody {
                kind: kind.clone(),
                message: message.clone(),
            }),
        }
    }
}

/// Records the end of a run the machine holds and frees the machine. A run cancelled while it ran is
/// acknowledged and stays cancelled.
pub fn complete(
    conn: &mut DbConnection,
    machine_id: i64,
    public_id: &str,
    outcome: &Outcome,
) -> Result<Run, RunError> {
    write_transaction(conn, |conn| {
        let run = match let_go(conn, machine_id, public_id)? {
            Held::Running(run) => run,
            Held::Cancelled(run) => return Ok(run),
        };
        let (error_type, error_message) = match &outcome.error {
            Some((kind, message)) => (Some(kind.clone()), Some(message.clone())),
            None if !outcome.succeeded => (
                Some(UNSPECIFIED_FAILURE.to_owned()),
                Some("The automation reported a failure.".to_owned()),
            ),
            None => (None, None),
        };
        let now = chrono::Utc::now().naive_utc();
        let finished = diesel::update(still_running(run.id))
            .set((
                runs::status.eq(RunStatus::from_outcome(outcome.succeeded)),
                runs::result.eq(outcome.result.as_ref().map(Value::to_string)),
                runs::error_type.eq(error_type),
                runs::error_message.eq(error_message),
                runs::finished_at.eq(now),
            ))
            .returning(runs::all_columns)
            .get_result::<Run>(conn)
            .optional()?;
        let Some(finished) = finished else {
            return changed_meanwhile(conn, run.id);
        };
        let ended = if outcome.succeeded {
            AttemptOutcome::Completed
        } else {
            AttemptOutcome::Failed
        };
        attempts::end(conn, finished.id, ended, now)?;
        Ok(finished)
    })
}

/// The run, if it is still running: updates through this do nothing to a run a cancel (on another
/// connection) ended a moment ago.
fn still_running(
    run_id: i64,
) -> diesel::dsl::Filter<
    diesel::dsl::Find<runs::table, i64>,
    diesel::dsl::Eq<runs::status, RunStatus>,
> {
    runs::table
        .find(run_id)
        .filter(runs::status.eq(RunStatus::Running))
}

/// After an update found the run no longer running: a cancel got there first, and the run is returned
/// as it is (the machine's report acknowledges it); anything else has finished it already.
fn changed_meanwhile(conn: &mut DbConnection, run_id: i64) -> Result<Run, RunError> {
    let run = runs::table
        .find(run_id)
        .select(Run::as_select())
        .first(conn)?;
    match run.status {
        RunStatus::Cancelled => Ok(run),
        _ => Err(RunError::AlreadyFinished),
    }
}

/// A machine gives back a run it holds but will not finish (its driver is stopping): the run is queued
/// again, and the attempt does not count against it.
pub fn release(conn: &mut DbConnection, machine_id: i64, public_id: &str) -> Result<Run, RunError> {
    write_transaction(conn, |conn| {
        let run = match let_go(conn, machine_id, public_id)? {
            Held::Running(run) => run,
            Held::Cancelled(run) => return Ok(run),
        };
        let released = diesel::update(still_running(run.id))
            .set((
                runs::status.eq(RunStatus::Queued),
                runs::machine_id.eq(None::<i64>),
                runs::started_at.eq(None::<NaiveDateTime>),
                runs::attempts.eq(runs::attempts - 1),
            ))
            .returning(runs::all_columns)
            .get_result::<Run>(conn)
            .optional()?;
        let Some(released) = released else {
            return changed_meanwhile(conn, run.id);
        };
        attempts::end(
            conn,
            released.id,
            AttemptOutcome::Released,
            chrono::Utc::now().naive_utc(),
        )?;
        Ok(released)
    })
}

/// A run as lists show it.
#[derive(Clone, Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = runs)]
pub struct RunSummary {
    pub id: i64,
    pub public_id: String,
    pub endpoint: String,
    pub status: RunStatus,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub error_message: Option<String>,
    pub machine_id: Option<i64>,
}

/// The newest runs a machine took, newest first.
pub fn history_of_machine(
    conn: &mut DbConnection,
    machine_id: i64,
    offset: i64,
    limit: i64,
) -> QueryResult<Vec<RunSummary>> {
    runs::table
        .filter(runs::machine_id.eq(machine_id))
        .order((runs::created_at.desc(), runs::id.desc()))
        .offset(offset)
        .limit(limit)
        .select(RunSummary::as_select())
        .load(conn)
}

/// The runs with these ids (the Current Job of a page of machines).
pub fn summaries(conn: &mut DbConnection, ids: &[i64]) -> QueryResult<Vec<RunSummary>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    runs::table
        .filter(runs::id.eq_any(ids))
        .select(RunSummary::as_select())
        .load(conn)
}

/// The jobs list counts matching runs up to this many and says "more" beyond (a count of a long
/// history would cost as much as reading it); pages go as deep.
pub const LIST_COUNT_CAP: i64 = 1_000;

/// How many runs a list matched, up to [`LIST_COUNT_CAP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matching {
    pub count: i64,
    pub more: bool,
}

/// One page of an organization's runs, newest first, optionally of one status; and how many match
/// (see [`Matching`]). Deeper pages than the count reaches are not served.
pub fn list(
    conn: &mut DbConnection,
    organization_id: i64,
    status: Option<RunStatus>,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<RunSummary>, Matching)> {
    let counted = count_up_to(conn, organization_id, status, LIST_COUNT_CAP + 1)?;
    let total = Matching {
        count: counted.min(LIST_COUNT_CAP),
        more: counted > LIST_COUNT_CAP,
    };
    let offset = offset.clamp(0, LIST_COUNT_CAP);
    let page = match status {
        Some(status) => runs::table
            .filter(runs::organization_id.eq(organization_id))
            .filter(runs::status.eq(status))
            .order((runs::created_at.desc(), runs::id.desc()))
            .offset(offset)
            .limit(limit)
            .select(RunSummary::as_select())
            .load(conn)?,
        None => newest_of_every_status(conn, organization_id, offset, limit)?,
    };
    Ok((page, total))
}

/// A page of an organization's runs of any status, newest first, read from the one index that
/// orders runs by organization, status and age: the newest `offset + limit` of each status (on
/// SQLite from the index alone), merged, then the page's rows. A run is indexed once for lists,
/// not once per way of listing it (one index entry fewer for every enqueue to write); a page costs
/// at most five bounded index ranges, whatever the history. A new status would not compile here
/// until it has its range.
fn newest_of_every_status(
    conn: &mut DbConnection,
    organization_id: i64,
    offset: i64,
    limit: i64,
) -> QueryResult<Vec<RunSummary>> {
    use crate::db::statement::statement;
    use diesel::sql_types::{BigInt, Text};
    /// The newest `$2` runs of the organization `$1` with the status bound at `$n`.
    macro_rules! newest_of {
        ($n:literal) => {
            concat!(
                "SELECT id, created_at FROM (SELECT id, created_at FROM runs \
                 WHERE organization_id = $1 AND status = $",
                $n,
                " ORDER BY created_at DESC, id DESC LIMIT $2) AS of_status_",
                $n
            )
        };
    }
    const SQL: &str = concat!(
        "SELECT id, public_id, endpoint, status, created_at, started_at, finished_at, \
         error_message, machine_id FROM runs WHERE id IN (SELECT id FROM (",
        newest_of!("5"),
        " UNION ALL ",
        newest_of!("6"),
        " UNION ALL ",
        newest_of!("7"),
        " UNION ALL ",
        newest_of!("8"),
        " UNION ALL ",
        newest_of!("9"),
        ") AS newest ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4) \
         ORDER BY created_at DESC, id DESC"
    );
    let [a, b, c, d, e] = RunStatus::ALL.map(RunStatus::as_str);
    let query = statement(SQL)
        .bind::<BigInt, _>(organization_id)
        .bind::<BigInt, _>(offset + limit)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(offset)
        .bind::<Text, _>(a)
        .bind::<Text, _>(b)
        .bind::<Text, _>(c)
        .bind::<Text, _>(d)
        .bind::<Text, _>(e);
    match conn {
        DbConnection::Sqlite(c) => query.load(c),
        DbConnection::Postgres(c) => query.load(c),
    }
}

/// How many of an organization's runs (of one status or any) there are, counting no further than
/// `cap`: the database counts index entries and answers one number.
fn count_up_to(
    conn: &mut DbConnection,
    organization_id: i64,
    status: Option<RunStatus>,
    cap: i64,
) -> QueryResult<i64> {
    use crate::db::statement::statement;
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct Counted {
        #[diesel(sql_type = BigInt)]
        runs: i64,
    }
    const ANY: &str = "SELECT COUNT(*) AS runs FROM \
         (SELECT 1 FROM runs WHERE organization_id = $1 LIMIT $2) AS some_runs";
    const OF_STATUS: &str = "SELECT COUNT(*) AS runs FROM \
         (SELECT 1 FROM runs WHERE organization_id = $1 AND status = $3 LIMIT $2) AS some_runs";
    let counted = match status {
        None => {
            let query = statement(ANY)
                .bind::<BigInt, _>(organization_id)
                .bind::<BigInt, _>(cap);
            match conn {
                DbConnection::Sqlite(c) => query.get_result::<Counted>(c)?,
                DbConnection::Postgres(c) => query.get_result::<Counted>(c)?,
            }
        }
        Some(status) => {
            let query = statement(OF_STATUS)
                .bind::<BigInt, _>(organization_id)
                .bind::<BigInt, _>(cap)
                .bind::<Text, _>(status.as_str());
            match conn {
                DbConnection::Sqlite(c) => query.get_result::<Counted>(c)?,
                DbConnection::Postgres(c) => query.get_result::<Counted>(c)?,
            }
        }
    };
    Ok(counted.runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_slugs() {
        assert!(parse_endpoint("invoice-sync-2").is_ok());
        for bad in ["", "Invoice", "a_b", "a b", "é", &"a".repeat(101)] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_ids_sort_by_time_and_stay_unguessable() {
        let at = chrono::Utc::now();
        let earlier = new_public_id(at);
        let later = new_public_id(at + chrono::Duration::milliseconds(1));
        assert!(
            earlier.starts_with("run_") && earlier.len() == 28,
            "{earlier}"
        );
        assert!(earlier < later, "{earlier} < {later}");
        assert_ne!(
            new_public_id(at),
            new_public_id(at),
            "random within one millisecond"
        );
        assert!(earlier[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
