//! Queue status of one organization (contract: "Queue status").

use chrono::{DurationRound, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::db::schema::{queue_counts, queue_samples, run_waits, runs};
use crate::db::statement::statement;
use crate::db::{DbConnection, write_transaction};
use crate::machines::fleet::OrgFleet;
use crate::status::RunStatus;

#[derive(Clone, Debug, PartialEq)]
pub struct QueueStatus {
    /// Runs in status `queued` now.
    pub jobs_queued: i64,
    /// Runs in status `running` now.
    pub jobs_running: i64,
    /// How long the oldest queued run has waited; `None` when nothing is queued.
    pub oldest_queued_seconds: Option<f64>,
    /// Mean of `started_at − created_at` over runs started in the last 60 minutes (by minute of
    /// start); `None` when none did.
    pub avg_wait_seconds: Option<f64>,
    /// Machines Online or Busy now.
    pub active_drivers: i64,
    /// Machines Busy now.
    pub busy_drivers: i64,
    /// The queued and running runs per capability set the totals above add up.
    pub by_requirement: Vec<Counts>,
}

impl QueueStatus {
    /// Reads a bounded number of rows whatever the size of the queue and its history: the counts kept
    /// by the database ([`counts`]), one index step for the oldest queued run, the waits kept per
    /// minute (at most 61 rows), and the fleet census.
    pub fn load(
        conn: &mut DbConnection,
        organization_id: i64,
        now: NaiveDateTime,
        fleet: &OrgFleet,
    ) -> QueryResult<Self> {
        let counts = counts(conn, organization_id)?;
        let oldest_queued: Option<NaiveDateTime> = runs::table
            .filter(runs::organization_id.eq(organization_id))
            .filter(runs::status.eq(RunStatus::Queued))
            .order(runs::created_at.asc())
            .select(runs::created_at)
            .first(conn)
            .optional()?;
        let oldest_queued_seconds = oldest_queued.map(|t| (now - t).as_seconds_f64().max(0.0));
        let minutes: Vec<(i64, i64)> = run_waits::table
            .filter(run_waits::organization_id.eq(organization_id))
            .filter(run_waits::minute.ge(minute_of(now - WAIT_WINDOW)))
            .select((run_waits::started, run_waits::waited_ms))
            .load(conn)?;
        let (started, waited_ms) = minutes.iter().fold((0, 0), |(n, ms), (started, waited)| {
            (n + started, ms + waited)
        });
        let avg_wait_seconds =
            (started > 0).then(|| (waited_ms as f64 / started as f64 / 1000.0).max(0.0));
        Ok(Self {
            jobs_queued: counts.iter().map(|c| c.queued).sum(),
            jobs_running: counts.iter().map(|c| c.running).sum(),
            oldest_queued_seconds,
            avg_wait_seconds,
            active_drivers: fleet.counts.online + fleet.counts.busy,
            busy_drivers: fleet.counts.busy,
            by_requirement: counts,
        })
    }

    /// Avg Wait Time as admins read it: `—` without data, else seconds, minutes or hours.
    pub fn avg_wait_display(&self) -> String {
        seconds_display(self.avg_wait_seconds)
    }
}

/// A number of seconds as admins read it: `—` without data, else "2.3 s", "2 min 5 s" or
/// "1 h 4 min" (written the same way as every other duration on the dashboard).
pub fn seconds_display(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if s < 60.0 => format!("{s:.1} s"),
        Some(s) if s < 3600.0 => format!("{} min {} s", (s / 60.0).floor(), (s % 60.0).floor()),
        Some(s) => format!(
            "{} h {} min",
            (s / 3600.0).floor(),
            ((s % 3600.0) / 60.0).floor()
        ),
    }
}

/// The value below which `share` of the sorted values fall (nearest rank).
fn percentile(sorted: &[f64], share: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (share * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The window of Avg Wait Time.
const WAIT_WINDOW: chrono::Duration = chrono::Duration::minutes(60);

/// The waits the p95 is taken from: the most recent starts of the last hour, at most this many (its
/// 13th-highest wait, when the hour had as many; reading more would make every dashboard refresh
/// cost more on a busy queue).
const WAIT_SAMPLE: i64 = 250;

/// The 95th percentile of the waits of the most recent starts of the last hour (at most
/// [`WAIT_SAMPLE`]); `None` when none started.
pub fn p95_wait_seconds(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Option<f64>> {
    let started: Vec<(NaiveDateTime, Option<NaiveDateTime>)> = runs::table
        .filter(runs::organization_id.eq(organization_id))
        .filter(runs::started_at.gt(now - WAIT_WINDOW))
        .order(runs::started_at.desc())
        .limit(WAIT_SAMPLE)
        .select((runs::created_at, runs::started_at))
        .load(conn)?;
    let mut waits: Vec<f64> = started
        .into_iter()
        .filter_map(|(created, started)| started.map(|s| (s - created).as_seconds_f64().max(0.0)))
        .collect();
    waits.sort_by(f64::total_cmp);
    Ok(percentile(&waits, 0.95))
}

fn minute_of(at: NaiveDateTime) -> NaiveDateTime {
    at.duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(at)
}

/// Queued and running runs of one capability set, as the database keeps them (exact: triggers on
/// `runs` maintain them in the transaction that changes a run's status).
#[derive(Clone, Debug, PartialEq, Eq, QueryableByName)]
pub struct Counts {
    #[diesel(sql_type = Text)]
    pub requires: String,
    #[diesel(sql_type = BigInt)]
    pub queued: i64,
    #[diesel(sql_type = BigInt)]
    pub running: i64,
}

/// The organization's counts per capability set, summed over the rows each is kept in (on
/// PostgreSQL up to 16 per set, so concurrent changes do not wait for one row: migration
/// `counter_slots`).
const COUNTS: &str = "SELECT requires, CAST(SUM(queued) AS BIGINT) AS queued, \
       CAST(SUM(running) AS BIGINT) AS running \
     FROM queue_counts WHERE organization_id = $1 \
     GROUP BY requires HAVING SUM(queued) > 0 OR SUM(running) > 0";

pub fn counts(conn: &mut DbConnection, organization_id: i64) -> QueryResult<Vec<Counts>> {
    let counts = statement(COUNTS).bind::<BigInt, _>(organization_id);
    match conn {
        DbConnection::Sqlite(c) => counts.load(c),
        DbConnection::Postgres(c) => counts.load(c),
    }
}

/// Queued runs of one `requires` set, the set read once: what a machine's queue depth is summed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub requires: Vec<String>,
    pub queued: i64,
}

/// The organization's queued runs by `requires` set, from `queue_counts` (a handful of rows).
pub fn waiting(conn: &mut DbConnection, organization_id: i64) -> QueryResult<Vec<Waiting>> {
    Ok(counts(conn, organization_id)?
        .into_iter()
        .filter(|c| c.queued > 0)
        .map(|c| Waiting {
            requires: serde_json::from_str(&c.requires).unwrap_or_default(),
            queued: c.queued,
        })
        .collect())
}

/// A machine's queue depth: the queued runs it could take, those whose `requires` are all among its
/// capabilities.
pub fn depth_for(waiting: &[Waiting], capabilities: &[String]) -> i64 {
    waiting
        .iter()
        .filter(|w| w.requires.iter().all(|r| capabilities.contains(r)))
        .map(|w| w.queued)
        .sum()
}

/// How often a replica samples queue depth. A sample is per minute, so several a minute only keep
/// the newest (and cover for a replica that stopped).
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
/// Samples older than this are deleted as new ones are written.
const KEEP_SAMPLES_FOR: chrono::Duration = chrono::Duration::hours(2);

/// Records every organization's queue depth for the current minute. Several replicas may do it at
/// once: the last write of a minute wins, and each is the truth at its moment.
pub fn sample(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    let minute = minute_of(now);
    let mut depths: std::collections::BTreeMap<i64, i64> = Default::default();
    let rows: Vec<(i64, i64)> = queue_counts::table
        .select((queue_counts::organization_id, queue_counts::queued))
        .load(conn)?;
    for (organization_id, queued) in rows {
        *depths.entry(organization_id).or_default() += queued;
    }
    write_transaction(conn, |conn| {
        diesel::delete(
            queue_samples::table.filter(queue_samples::minute.lt(minute - KEEP_SAMPLES_FOR)),
        )
        .execute(conn)?;
        diesel::delete(run_waits::table.filter(run_waits::minute.lt(minute - KEEP_SAMPLES_FOR)))
            .execute(conn)?;
        for (organization_id, queued) in &depths {
            upsert_sample(conn, *organization_id, minute, *queued)?;
        }
        Ok(depths.len())
    })
}

/// Upserts do not go through `MultiConnection`, so the one statement is run on whichever backend
/// this is.
fn upsert_sample(
    conn: &mut DbConnection,
    organization_id: i64,
    minute: NaiveDateTime,
    queued: i64,
) -> QueryResult<()> {
    use queue_samples::dsl as s;
    macro_rules! upsert {
        ($conn:expr) => {
            diesel::insert_into(s::queue_samples)
                .values((
                    s::organization_id.eq(organization_id),
                    s::minute.eq(minute),
                    s::queued.eq(queued),
                ))
                .on_conflict((s::organization_id, s::minute))
                .do_update()
                .set(s::queued.eq(queued))
                .execute($conn)
        };
    }
    match conn {
        DbConnection::Sqlite(conn) => upsert!(conn)?,
        DbConnection::Postgres(conn) => upsert!(conn)?,
    };
    Ok(())
}

/// Queue depth, one point a minute over the last hour, from the samples (at most 60 rows). A minute
/// without a sample (no server was running) repeats the one before.
pub fn depth_last_hour(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Vec<(NaiveDateTime, i64)>> {
    let minute = minute_of(now);
    let first = minute - chrono::Duration::minutes(59);
    let samples: Vec<(NaiveDateTime, i64)> = queue_samples::table
        .filter(queue_samples::organization_id.eq(organization_id))
        .filter(queue_samples::minute.ge(first))
        .order(queue_samples::minute.asc())
        .select((queue_samples::minute, queue_samples::queued))
        .limit(60)
        .load(conn)?;
    let mut known = samples.into_iter().peekable();
    let mut depth = 0;
    Ok((0..60)
        .map(|i| {
            let at = first + chrono::Duration::minutes(i);
            while let Some((_, queued)) = known.next_if(|(m, _)| *m <= at) {
                depth = queued;
            }
            (at, depth)
        })
        .collect())
}

/// Queued runs that no machine in contact can take: their `requires` are not all among the
/// capabilities of any Online or Busy machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrunnable {
    pub requires: Vec<String>,
    pub count: i64,
}

/// From the counts the status was loaded with and the fleet census: no further read.
pub fn unrunnable(status: &QueueStatus, fleet: &OrgFleet) -> Vec<Unrunnable> {
    status
        .by_requirement
        .iter()
        .filter(|counts| counts.queued > 0)
        .filter_map(|counts| {
            let requires: Vec<String> = serde_json::from_str(&counts.requires).unwrap_or_default();
            let runnable = fleet
                .in_contact()
                .any(|caps| requires.iter().all(|r| caps.contains(r)));
            (!runnable).then_some(Unrunnable {
                requires,
                count: counts.queued,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_counts_only_the_runs_it_could_take() {
        let w = |requires: &[&str], queued| Waiting {
            requires: requires.iter().map(|r| r.to_string()).collect(),
            queued,
        };
        let waiting = [
            w(&[], 2),
            w(&["sap"], 3),
            w(&["sap", "excel"], 5),
            w(&["gpu"], 7),
        ];
        let caps = |c: &[&str]| c.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(depth_for(&waiting, &caps(&[])), 2);
        assert_eq!(depth_for(&waiting, &caps(&["sap"])), 5);
        assert_eq!(depth_for(&waiting, &caps(&["excel", "sap"])), 10);
        assert_eq!(depth_for(&waiting, &caps(&["gpu", "sap", "excel"])), 17);
    }

    fn with_wait(s: Option<f64>) -> QueueStatus {
        QueueStatus {
            jobs_queued: 0,
            jobs_running: 0,
            oldest_queued_seconds: None,
            avg_wait_seconds: s,
            active_drivers: 0,
            busy_drivers: 0,
            by_requirement: Vec::new(),
        }
    }

    #[test]
    fn avg_wait_reads_naturally() {
        assert_eq!(with_wait(None).avg_wait_display(), "—");
        assert_eq!(with_wait(Some(2.345)).avg_wait_display(), "2.3 s");
        assert_eq!(with_wait(Some(125.0)).avg_wait_display(), "2 min 5 s");
        assert_eq!(with_wait(Some(7260.0)).avg_wait_display(), "2 h 1 min");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.95), Some(95.0));
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[], 0.95), None);
    }
}
