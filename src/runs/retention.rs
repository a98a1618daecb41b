//! Retention: finished runs older than `GRANITE_RUN_RETENTION_DAYS` are deleted together with their
//! attempts, and API key usage hours as old with them. Without it both tables grow with every call
//! forever, and so do the listings, counts and backups that read them.
//!
//! Deleting happens in the background, in bounded batches: each batch is one write transaction of at
//! most [`BATCH_ROWS`] rows, found through an index, with a pause before the next. On SQLite a write
//! transaction holds the database's one write lock, so one long delete would stall every enqueue, claim
//! and heartbeat behind it; short ones let them in between.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use crate::db::schema::{api_key_callers, api_key_usage, machines, run_attempts, runs};
use crate::db::{DbConnection, DbError, Pool, write_transaction};
use crate::status::RunStatus;

/// Most runs, or usage hours, deleted in one transaction.
pub const BATCH_ROWS: i64 = 1_000;
/// Between two batches of one sweep, so waiting writers get the lock.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(200);
/// How often each replica sweeps. Rows become old by the day; a few minutes late is nothing.
const SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);

/// How long finished runs and usage hours are kept: a whole number of days, at least one (a
/// retention of zero would delete a run the moment it finishes, before anyone could read its result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionDays(u32);

impl RetentionDays {
    /// A hundred years: anything longer is "keep everything" and would overflow date arithmetic.
    pub const MAX: u32 = 36_500;

    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().parse::<u32>() {
            Ok(days) if (1..=Self::MAX).contains(&days) => Ok(Self(days)),
            _ => Err(format!(
                "a retention must be a whole number of days from 1 to {}, e.g. 30",
                Self::MAX
            )),
        }
    }

    pub fn days(self) -> u32 {
        self.0
    }

    /// Rows older than this, at `now`, are past the retention.
    pub fn cutoff(self, now: NaiveDateTime) -> NaiveDateTime {
        now - TimeDelta::days(i64::from(self.0))
    }
}

/// What a sweep (or one batch of it) deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub runs: usize,
    pub usage_hours: usize,
}

impl Swept {
    /// A full batch of either kind means more old rows may be waiting.
    fn batch_was_full(self) -> bool {
        self.runs as i64 >= BATCH_ROWS || self.usage_hours as i64 >= BATCH_ROWS
    }

    fn add(&mut self, other: Swept) {
        self.runs += other.runs;
        self.usage_hours += other.usage_hours;
    }
}

/// One batch: up to [`BATCH_ROWS`] runs that finished before the retention's cutoff (with their
/// attempts), then up to as many usage hours, each in its own write transaction.
pub fn sweep_batch(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    retention: RetentionDays,
) -> QueryResult<Swept> {
    let cutoff = retention.cutoff(now);
    // Rate-limit windows matter for a minute; ten is plenty for a replica whose clock is behind.
    crate::api_keys::rate_limit::forget_windows(conn, now.and_utc().timestamp() - 600)?;
    Ok(Swept {
        runs: delete_finished_runs_before(conn, cutoff, BATCH_ROWS)?,
        usage_hours: delete_usage_before(conn, cutoff, BATCH_ROWS)?,
    })
}

/// Batches until nothing past the retention is left, pausing between them; a connection is taken for
/// each batch and given back during the pause.
pub async fn sweep(pool: &Pool, retention: RetentionDays) -> Result<Swept, DbError> {
    let mut total = Swept::default();
    loop {
        let batch = pool
            .run(move |conn| {
                sweep_batch(conn, chrono::Utc::now().naive_utc(), retention).map_err(DbError::from)
            })
            .await?;
        total.add(batch);
        if !batch.batch_was_full() {
            return Ok(total);
        }
        actix_web::rt::time::sleep(PAUSE_BETWEEN_BATCHES).await;
    }
}

/// Sweeps at start and every few minutes after, on every replica (batches of replicas sweeping at the
/// same moment delete each row once: the second finds it gone).
pub fn spawn(pool: Pool, retention: RetentionDays) {
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(SWEEP_EVERY);
        // A sweep through a large backlog may outlast the interval; the next one waits its turn.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match sweep(&pool, retention).await {
                Ok(swept) if swept != Swept::default() => tracing::info!(
                    runs = swept.runs,
                    usage_hours = swept.usage_hours,
                    retention_days = retention.days(),
                    "deleted finished runs and API key usage past the retention"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not delete old runs; trying again at the next sweep");
                }
            }
        }
    });
}

/// Up to `limit` runs that finished before `cutoff`, through `runs_by_status_finished`. In no particular
/// order: sorting by age would read every old run to return a thousand of them, and all of them go
/// anyway. A run a machine still holds (cancelled while it ran, its driver not heard from since) stays
/// until the machine lets go of it.
fn finished_runs_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<i64>> {
    let held = machines::table
        .filter(machines::current_run_id.is_not_null())
        .select(machines::current_run_id.assume_not_null());
    runs::table
        .filter(runs::finished_at.lt(cutoff))
        .filter(runs::status.eq_any(RunStatus::FINISHED))
        .filter(runs::id.ne_all(held))
        .limit(limit)
        .select(runs::id)
        .load(conn)
}

/// Deletes up to `limit` runs that finished before `cutoff`, with their attempts. A retry of a deleted
/// run stays and forgets where it came from (the foreign key would refuse the delete otherwise).
pub fn delete_finished_runs_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<usize> {
    // A read first: in the usual case there is nothing to delete, and then no write lock is taken.
    if finished_runs_before(conn, cutoff, 1)?.is_empty() {
        return Ok(0);
    }
    write_transaction(conn, |conn| {
        let ids = finished_runs_before(conn, cutoff, limit)?;
        if ids.is_empty() {
            return Ok(0);
        }
        diesel::update(runs::table.filter(runs::retried_from_run_id.eq_any(&ids)))
            .set(runs::retried_from_run_id.eq(None::<i64>))
            .execute(conn)?;
        diesel::delete(run_attempts::table.filter(run_attempts::run_id.eq_any(&ids)))
            .execute(conn)?;
        // The conditions again: a run found above cannot have changed (finished runs never do, and
        // on SQLite the lock is held), but the delete should say what it may delete on its own.
        diesel::delete(
            runs::table
                .filter(runs::id.eq_any(&ids))
                .filter(runs::status.eq_any(RunStatus::FINISHED))
                .filter(runs::finished_at.lt(cutoff)),
        )
        .execute(conn)
    })
}

/// Deletes up to `limit` API key usage hours that began before `cutoff`, oldest first (through
/// `api_key_usage_by_hour`, whose order the limit follows), and as many of the callers of those hours.
pub fn delete_usage_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<usize> {
    let usage = api_key_usage::table
        .filter(api_key_usage::hour_start.lt(cutoff))
        .select(api_key_usage::api_key_id)
        .first::<i64>(conn)
        .optional()?;
    let callers = api_key_callers::table
        .filter(api_key_callers::hour_start.lt(cutoff))
        .select(api_key_callers::api_key_id)
        .first::<i64>(conn)
        .optional()?;
    let mut deleted = 0;
    if usage.is_some() {
        deleted += delete_hours_before(conn, "api_key_usage", cutoff, limit)?;
    }
    if callers.is_some() {
        // Counted with the usage hours: both go in the same sweep, a batch at a time.
        deleted = deleted.max(delete_hours_before(conn, "api_key_callers", cutoff, limit)?);
    }
    Ok(deleted)
}

/// Deletes up to `limit` rows of `table` (one of the two hourly usage tables, a constant) whose hour
/// began before `cutoff`, oldest first.
fn delete_hours_before(
    conn: &mut DbConnection,
    table: &'static str,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<usize> {
    write_transaction(conn, |conn| {
        use diesel::sql_types::{BigInt, Timestamp};
        // The tables' keys have several columns, which a bounded delete would have to name together;
        // the row's own address (SQLite's rowid, PostgreSQL's ctid) is one, and each backend finds rows
        // by it directly. The shared query builder knows neither, so it is one statement per backend.
        match conn {
            DbConnection::Sqlite(conn) => diesel::sql_query(format!(
                "DELETE FROM {table} WHERE rowid IN \
                 (SELECT rowid FROM {table} WHERE hour_start < ? ORDER BY hour_start LIMIT ?)"
            ))
            .bind::<Timestamp, _>(cutoff)
            .bind::<BigInt, _>(limit)
            .execute(conn),
            DbConnection::Postgres(conn) => diesel::sql_query(format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY( \
                 SELECT ctid FROM {table} WHERE hour_start < $1 ORDER BY hour_start LIMIT $2))"
            ))
            .bind::<Timestamp, _>(cutoff)
            .bind::<BigInt, _>(limit)
            .execute(conn),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_whole_number_of_days_from_one() {
        assert_eq!(RetentionDays::parse("30").map(RetentionDays::days), Ok(30));
        assert_eq!(RetentionDays::parse(" 1 ").map(RetentionDays::days), Ok(1));
        assert_eq!(
            RetentionDays::parse("36500").map(RetentionDays::days),
            Ok(RetentionDays::MAX)
        );
        for bad in ["0", "-1", "abc", "", "1.5", "36501", "99999999999"] {
            let error = RetentionDays::parse(bad).expect_err(bad);
            assert!(error.contains("whole number of days from 1"), "{error}");
        }
    }

    #[test]
    fn the_cutoff_is_that_many_days_before_now() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let retention = RetentionDays::parse("30").unwrap();
        assert_eq!(retention.cutoff(now), now - TimeDelta::days(30));
        let longest = RetentionDays::parse("36500").unwrap();
        assert!(longest.cutoff(now) < now);
    }
}
