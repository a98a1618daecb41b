//! Queue status of one organization (contract: "Queue status").

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::runs;
use crate::machines;
use crate::status::RunStatus;

#[derive(Clone, Debug, PartialEq)]
pub struct QueueStatus {
    /// Runs in status `queued` now.
    pub jobs_queued: i64,
    /// Runs in status `running` now.
    pub jobs_running: i64,
    /// How long the oldest queued run has waited; `None` when nothing is queued.
    pub oldest_queued_seconds: Option<f64>,
    /// Mean of `started_at − created_at` over runs started in the last 60 minutes; `None` when none did.
    pub avg_wait_seconds: Option<f64>,
    /// The 95th percentile of the same waits.
    pub p95_wait_seconds: Option<f64>,
    /// Machines Online or Busy now.
    pub active_drivers: i64,
    /// Machines Busy now.
    pub busy_drivers: i64,
}

impl QueueStatus {
    pub fn load(
        conn: &mut DbConnection,
        organization_id: i64,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> QueryResult<Self> {
        let count_in = |conn: &mut DbConnection, status: RunStatus| -> QueryResult<i64> {
            runs::table
                .filter(runs::organization_id.eq(organization_id))
                .filter(runs::status.eq(status))
                .count()
                .get_result(conn)
        };
        let jobs_queued = count_in(conn, RunStatus::Queued)?;
        let jobs_running = count_in(conn, RunStatus::Running)?;
        let oldest_queued: Option<NaiveDateTime> = runs::table
            .filter(runs::organization_id.eq(organization_id))
            .filter(runs::status.eq(RunStatus::Queued))
            .select(diesel::dsl::min(runs::created_at))
            .first(conn)?;
        let oldest_queued_seconds = oldest_queued.map(|t| (now - t).as_seconds_f64().max(0.0));
        let started: Vec<(NaiveDateTime, Option<NaiveDateTime>)> = runs::table
            .filter(runs::organization_id.eq(organization_id))
            .filter(runs::started_at.gt(now - chrono::Duration::minutes(60)))
            .select((runs::created_at, runs::started_at))
            .load(conn)?;
        let mut waits: Vec<f64> = started
            .into_iter()
            .filter_map(|(created, started)| {
                started.map(|s| (s - created).as_seconds_f64().max(0.0))
            })
            .collect();
        let avg_wait_seconds =
            (!waits.is_empty()).then(|| waits.iter().sum::<f64>() / waits.len() as f64);
        waits.sort_by(f64::total_cmp);
        let p95_wait_seconds = percentile(&waits, 0.95);
        let machines = machines::count_by_status(conn, Some(organization_id), now, offline_after)?;
        Ok(Self {
            jobs_queued,
            jobs_running,
            oldest_queued_seconds,
            avg_wait_seconds,
            p95_wait_seconds,
            active_drivers: machines.online + machines.busy,
            busy_drivers: machines.busy,
        })
    }

    /// Avg Wait Time as admins read it: `—` without data, else seconds, minutes or hours.
    pub fn avg_wait_display(&self) -> String {
        seconds_display(self.avg_wait_seconds)
    }
}

/// A number of seconds as admins read it: `—` without data, else seconds, minutes or hours.
pub fn seconds_display(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if s < 60.0 => format!("{s:.1}s"),
        Some(s) if s < 3600.0 => format!("{}m {}s", (s / 60.0).floor(), (s % 60.0).floor()),
        Some(s) => format!(
            "{}h {}m",
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

/// Queue depth, one point a minute over the last hour, rebuilt from the runs themselves.
pub fn depth_last_hour(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
) -> QueryResult<Vec<(NaiveDateTime, i64)>> {
    let since = now - chrono::Duration::minutes(60);
    let rows: Vec<(NaiveDateTime, Option<NaiveDateTime>, Option<NaiveDateTime>)> = runs::table
        .filter(runs::organization_id.eq(organization_id))
        .filter(
            runs::created_at
                .gt(since)
                .or(runs::status.eq(RunStatus::Queued))
                .or(runs::started_at.gt(since)),
        )
        .select((runs::created_at, runs::started_at, runs::finished_at))
        .limit(DEPTH_ROWS_LIMIT)
        .load(conn)?;
    Ok((1..=60)
        .map(|minute| {
            let at = since + chrono::Duration::minutes(minute);
            let depth = rows
                .iter()
                .filter(|(created, started, finished)| {
                    let left_queue = started.or(*finished);
                    *created <= at && left_queue.is_none_or(|left| left > at)
                })
                .count() as i64;
            (at, depth)
        })
        .collect())
}

/// The depth chart reads at most this many runs; beyond it the chart undercounts (a sampled table
/// would be the next step for very busy queues).
const DEPTH_ROWS_LIMIT: i64 = 50_000;

/// Queued runs that no machine in contact can take: their `requires` are not all among the
/// capabilities of any Online or Busy machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrunnable {
    pub requires: Vec<String>,
    pub count: i64,
}

pub fn unrunnable(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
    offline_after: chrono::Duration,
) -> QueryResult<Vec<Unrunnable>> {
    let waiting: Vec<(String, i64)> = runs::table
        .filter(runs::organization_id.eq(organization_id))
        .filter(runs::status.eq(RunStatus::Queued))
        .group_by(runs::requires)
        .select((runs::requires, diesel::dsl::count_star()))
        .load(conn)?;
    if waiting.is_empty() {
        return Ok(Vec::new());
    }
    let capability_sets: Vec<Vec<String>> =
        machines::capabilities_in_contact(conn, organization_id, now, offline_after)?;
    Ok(waiting
        .into_iter()
        .filter_map(|(requires, count)| {
            let requires: Vec<String> = serde_json::from_str(&requires).unwrap_or_default();
            let runnable = capability_sets
                .iter()
                .any(|caps| requires.iter().all(|r| caps.contains(r)));
            (!runnable).then_some(Unrunnable { requires, count })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_wait(s: Option<f64>) -> QueueStatus {
        QueueStatus {
            jobs_queued: 0,
            jobs_running: 0,
            oldest_queued_seconds: None,
            avg_wait_seconds: s,
            p95_wait_seconds: None,
            active_drivers: 0,
            busy_drivers: 0,
        }
    }

    #[test]
    fn avg_wait_reads_naturally() {
        assert_eq!(with_wait(None).avg_wait_display(), "—");
        assert_eq!(with_wait(Some(2.345)).avg_wait_display(), "2.3s");
        assert_eq!(with_wait(Some(125.0)).avg_wait_display(), "2m 5s");
        assert_eq!(with_wait(Some(7260.0)).avg_wait_display(), "2h 1m");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.95), Some(95.0));
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[], 0.95), None);
    }
}
