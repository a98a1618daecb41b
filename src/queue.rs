//! Queue status of one organization (contract: "Queue status").

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::runs;
use crate::machines;

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
        let count_in = |conn: &mut DbConnection, status: &str| -> QueryResult<i64> {
            runs::table
                .filter(runs::organization_id.eq(organization_id))
                .filter(runs::status.eq(status))
                .count()
                .get_result(conn)
        };
        let jobs_queued = count_in(conn, "queued")?;
        let jobs_running = count_in(conn, "running")?;
        let oldest_queued: Option<NaiveDateTime> = runs::table
            .filter(runs::organization_id.eq(organization_id))
            .filter(runs::status.eq("queued"))
            .select(diesel::dsl::min(runs::created_at))
            .first(conn)?;
        let oldest_queued_seconds = oldest_queued.map(|t| (now - t).as_seconds_f64().max(0.0));
        let started: Vec<(NaiveDateTime, Option<NaiveDateTime>)> = runs::table
            .filter(runs::organization_id.eq(organization_id))
            .filter(runs::started_at.gt(now - chrono::Duration::minutes(60)))
            .select((runs::created_at, runs::started_at))
            .load(conn)?;
        let waits: Vec<f64> = started
            .into_iter()
            .filter_map(|(created, started)| started.map(|s| (s - created).as_seconds_f64()))
            .collect();
        let avg_wait_seconds = (!waits.is_empty()).then(|| waits.iter().sum::<f64>() / waits.len() as f64);
        let machines = machines::count_by_status(conn, Some(organization_id), now, offline_after)?;
        Ok(Self {
            jobs_queued,
            jobs_running,
            oldest_queued_seconds,
            avg_wait_seconds,
            active_drivers: machines.online + machines.busy,
            busy_drivers: machines.busy,
        })
    }

    /// Avg Wait Time as admins read it: `—` without data, else seconds, minutes or hours.
    pub fn avg_wait_display(&self) -> String {
        match self.avg_wait_seconds {
            None => "—".into(),
            Some(s) if s < 60.0 => format!("{s:.1}s"),
            Some(s) if s < 3600.0 => format!("{}m {}s", (s / 60.0).floor(), (s % 60.0).round()),
            Some(s) => format!("{}h {}m", (s / 3600.0).floor(), ((s % 3600.0) / 60.0).round()),
        }
    }
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
}
