//! `GET /metrics` in Prometheus text format. Counters this replica kept since it started (HTTP requests,
//! the wait of every run it handed out, runs that finished through it), and gauges read from the
//! database at scrape time (queue depth, runs by status, drivers by status). No organization labels:
//! the endpoint is meant for operators and must not list tenants.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::runs;
use crate::machines::{self, StatusCounts};

/// Upper bounds of the wait-time histogram, in seconds.
const WAIT_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Default)]
struct Counters {
    http: BTreeMap<(String, u16), u64>,
    wait_buckets: [u64; WAIT_BUCKETS.len()],
    wait_count: u64,
    wait_sum: f64,
    finished: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters.http.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// A run was handed out after waiting `seconds` in the queue.
    pub fn observe_wait(&self, seconds: f64) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (bucket, bound) in counters.wait_buckets.iter_mut().zip(WAIT_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        counters.wait_count += 1;
        counters.wait_sum += seconds;
    }

    pub fn count_finished(&self, status: &str) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters.finished.entry(status.to_owned()).or_default() += 1;
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP granite_queue_depth Runs waiting in the queue, all organizations."
        );
        let _ = writeln!(out, "# TYPE granite_queue_depth gauge");
        let _ = writeln!(out, "granite_queue_depth {}", gauges.queued);
        let _ = writeln!(
            out,
            "# HELP granite_oldest_queued_seconds Age of the oldest queued run."
        );
        let _ = writeln!(out, "# TYPE granite_oldest_queued_seconds gauge");
        let _ = writeln!(
            out,
            "granite_oldest_queued_seconds {:.3}",
            gauges.oldest_queued_seconds.unwrap_or(0.0)
        );
        let _ = writeln!(
            out,
            "# HELP granite_runs Runs by status now (queued, running)."
        );
        let _ = writeln!(out, "# TYPE granite_runs gauge");
        let _ = writeln!(out, "granite_runs{{status=\"queued\"}} {}", gauges.queued);
        let _ = writeln!(out, "granite_runs{{status=\"running\"}} {}", gauges.running);
        let _ = writeln!(
            out,
            "# HELP granite_runs_finished_total Runs finished through this replica, by outcome."
        );
        let _ = writeln!(out, "# TYPE granite_runs_finished_total counter");
        for status in ["completed", "failed", "cancelled"] {
            let _ = writeln!(
                out,
                "granite_runs_finished_total{{status=\"{status}\"}} {}",
                counters.finished.get(status).unwrap_or(&0)
            );
        }
        let _ = writeln!(
            out,
            "# HELP granite_run_wait_seconds Time runs waited in the queue before a machine took them."
        );
        let _ = writeln!(out, "# TYPE granite_run_wait_seconds histogram");
        for (count, bound) in counters.wait_buckets.iter().zip(WAIT_BUCKETS) {
            let _ = writeln!(
                out,
                "granite_run_wait_seconds_bucket{{le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "granite_run_wait_seconds_bucket{{le=\"+Inf\"}} {}",
            counters.wait_count
        );
        let _ = writeln!(out, "granite_run_wait_seconds_sum {:.6}", counters.wait_sum);
        let _ = writeln!(
            out,
            "granite_run_wait_seconds_count {}",
            counters.wait_count
        );
        let _ = writeln!(out, "# HELP granite_drivers Driver machines by status.");
        let _ = writeln!(out, "# TYPE granite_drivers gauge");
        let _ = writeln!(
            out,
            "granite_drivers{{status=\"online\"}} {}",
            gauges.drivers.online
        );
        let _ = writeln!(
            out,
            "granite_drivers{{status=\"busy\"}} {}",
            gauges.drivers.busy
        );
        let _ = writeln!(
            out,
            "granite_drivers{{status=\"offline\"}} {}",
            gauges.drivers.offline
        );
        let _ = writeln!(
            out,
            "# HELP granite_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE granite_http_requests_total counter");
        for ((route, status), count) in &counters.http {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "granite_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out
    }
}

/// What the database says now.
pub struct Gauges {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_seconds: Option<f64>,
    pub drivers: StatusCounts,
}

impl Gauges {
    pub fn load(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> QueryResult<Self> {
        let count = |conn: &mut DbConnection, status: &str| -> QueryResult<i64> {
            runs::table
                .filter(runs::status.eq(status))
                .count()
                .get_result(conn)
        };
        let oldest: Option<NaiveDateTime> = runs::table
            .filter(runs::status.eq("queued"))
            .select(diesel::dsl::min(runs::created_at))
            .first(conn)?;
        Ok(Self {
            queued: count(conn, "queued")?,
            running: count(conn, "running")?,
            oldest_queued_seconds: oldest.map(|t| (now - t).as_seconds_f64().max(0.0)),
            drivers: machines::count_by_status(conn, None, now, offline_after)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.observe_wait(0.02);
        metrics.observe_wait(2.0);
        metrics.count_request("/api/me", 200);
        metrics.count_request("/api/me", 200);
        let text = metrics.render(&Gauges {
            queued: 3,
            running: 1,
            oldest_queued_seconds: Some(4.0),
            drivers: StatusCounts::default(),
        });
        assert!(text.contains("granite_run_wait_seconds_bucket{le=\"0.01\"} 0"));
        assert!(text.contains("granite_run_wait_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("granite_run_wait_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("granite_run_wait_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("granite_run_wait_seconds_count 2"));
        assert!(text.contains("granite_http_requests_total{route=\"/api/me\",status=\"200\"} 2"));
        assert!(text.contains("granite_queue_depth 3"));
    }
}
