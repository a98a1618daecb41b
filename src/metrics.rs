//! What `GET /metrics` reports, kept in a Prometheus registry. Counters this replica kept since it
//! started (HTTP requests, the wait of every run it handed out, runs that finished through it), and
//! gauges read from the database at scrape time (queue depth, runs by status, drivers by status). No
//! organization labels: the endpoint is meant for operators and must not list tenants.

use std::sync::Mutex;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::DbConnection;
use crate::db::schema::{queue_counts, runs};
use crate::machines::StatusCounts;
use crate::status::{MachineStatus, RunStatus};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the wait-time histogram, in seconds.
const WAIT_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

/// Upper bounds of the group-commit histogram: how many writes shared a transaction.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriterLabel {
    writer: &'static str,
}

type BatchSizes = Family<WriterLabel, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<RouteLabels, Counter>,
    run_wait: Histogram,
    runs_finished: Family<StatusLabel, Counter>,
    batch_sizes: BatchSizes,
    queue_depth: Gauge,
    oldest_queued: Gauge<f64, std::sync::atomic::AtomicU64>,
    runs: Family<StatusLabel, Gauge>,
    drivers: Family<StatusLabel, Gauge>,
    fleet_censuses: Counter,
    claims_woken: Counter,
    /// Scrapes set the gauges and then encode them; one at a time, so no scrape shows another's mix.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "granite_http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let run_wait = Histogram::new(WAIT_BUCKETS);
        registry.register(
            "granite_run_wait_seconds",
            "Time runs waited in the queue before a machine took them",
            run_wait.clone(),
        );
        let runs_finished = Family::<StatusLabel, Counter>::default();
        registry.register(
            "granite_runs_finished",
            "Runs finished through this replica, by outcome",
            runs_finished.clone(),
        );
        let batch_sizes: BatchSizes =
            Family::new_with_constructor(|| Histogram::new(BATCH_BUCKETS));
        registry.register(
            "granite_group_commit_size",
            "How many writes shared one transaction, by writer (intake: enqueues; reports: completes)",
            batch_sizes.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "granite_queue_depth",
            "Runs waiting in the queue, all organizations",
            queue_depth.clone(),
        );
        let oldest_queued = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "granite_oldest_queued_seconds",
            "Age of the oldest queued run",
            oldest_queued.clone(),
        );
        let runs = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "granite_runs",
            "Runs by status now (queued, running)",
            runs.clone(),
        );
        let drivers = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "granite_drivers",
            "Driver machines by status",
            drivers.clone(),
        );
        let fleet_censuses = Counter::default();
        registry.register(
            "granite_fleet_censuses",
            "Counts of every machine taken by this replica (at most one at a time, shared by readers)",
            fleet_censuses.clone(),
        );
        let claims_woken = Counter::default();
        registry.register(
            "granite_claims_woken",
            "Waiting claims woken by runs queued (the first machines in line able to run each)",
            claims_woken.clone(),
        );
        // Every outcome is listed from the start, at zero, so a dashboard's rate() has a series to read.
        for status in RunStatus::FINISHED {
            runs_finished
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .inc_by(0);
        }
        Self {
            registry,
            http_requests,
            run_wait,
            runs_finished,
            batch_sizes,
            queue_depth,
            oldest_queued,
            runs,
            drivers,
            fleet_censuses,
            claims_woken,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// A run was handed out after waiting `seconds` in the queue.
    pub fn observe_wait(&self, seconds: f64) {
        self.run_wait.observe(seconds);
    }

    /// A run finished: completed, failed or cancelled.
    pub fn count_finished(&self, status: RunStatus) {
        self.runs_finished
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .inc();
    }

    /// `claims` waiting claims were woken to look for a run.
    pub fn count_claims_woken(&self, claims: u64) {
        self.claims_woken.inc_by(claims);
    }

    /// `size` writes of `writer` shared one transaction.
    pub fn observe_batch(&self, writer: &'static str, size: usize) {
        self.batch_sizes
            .get_or_create(&WriterLabel { writer })
            .observe(size as f64);
    }

    /// The OpenMetrics text of everything, with the gauges set from `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.queue_depth.set(gauges.queued);
        self.oldest_queued
            .set(gauges.oldest_queued_seconds.unwrap_or(0.0));
        for (status, value) in [
            (RunStatus::Queued, gauges.queued),
            (RunStatus::Running, gauges.running),
        ] {
            self.runs
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(value);
        }
        for status in MachineStatus::ALL {
            self.drivers
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(gauges.drivers.of(&status));
        }
        // The fleet counts its censuses itself; the counter catches up with it.
        self.fleet_censuses.inc_by(
            gauges
                .fleet_censuses
                .saturating_sub(self.fleet_censuses.get()),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// What the database says now.
pub struct Gauges {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_seconds: Option<f64>,
    pub drivers: StatusCounts,
    /// Censuses of the fleet taken by this replica so far.
    pub fleet_censuses: u64,
}

impl Gauges {
    /// `drivers` and `fleet_censuses`: from the fleet census ([`crate::machines::fleet`]).
    pub fn load(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        drivers: StatusCounts,
        fleet_censuses: u64,
    ) -> QueryResult<Self> {
        // The counts the database keeps (see `queue::counts`), not a scan of the runs.
        let counts: Vec<(i64, i64)> = queue_counts::table
            .select((queue_counts::queued, queue_counts::running))
            .load(conn)?;
        let oldest: Option<NaiveDateTime> = runs::table
            .filter(runs::status.eq(RunStatus::Queued))
            .select(diesel::dsl::min(runs::created_at))
            .first(conn)?;
        Ok(Self {
            queued: counts.iter().map(|c| c.0).sum(),
            running: counts.iter().map(|c| c.1).sum(),
            oldest_queued_seconds: oldest.map(|t| (now - t).as_seconds_f64().max(0.0)),
            drivers,
            fleet_censuses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_gauges_reach_the_text() {
        let metrics = Metrics::default();
        metrics.observe_wait(0.02);
        metrics.observe_wait(2.0);
        metrics.count_request("/api/me", 200);
        metrics.count_request("/api/me", 200);
        metrics.count_finished(RunStatus::Cancelled);
        let text = metrics.render(&Gauges {
            queued: 3,
            running: 1,
            oldest_queued_seconds: Some(4.0),
            drivers: StatusCounts {
                online: 2,
                busy: 1,
                offline: 0,
            },
            fleet_censuses: 7,
        });
        for line in [
            "granite_run_wait_seconds_bucket{le=\"0.01\"} 0",
            "granite_run_wait_seconds_bucket{le=\"0.05\"} 1",
            "granite_run_wait_seconds_bucket{le=\"5.0\"} 2",
            "granite_run_wait_seconds_bucket{le=\"+Inf\"} 2",
            "granite_run_wait_seconds_count 2",
            "granite_fleet_censuses_total 7",
            "granite_http_requests_total{route=\"/api/me\",status=\"200\"} 2",
            "granite_runs_finished_total{status=\"cancelled\"} 1",
            "granite_runs_finished_total{status=\"failed\"} 0",
            "granite_queue_depth 3",
            "granite_runs{status=\"running\"} 1",
            "granite_drivers{status=\"online\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
