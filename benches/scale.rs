//! The dashboard on its worst day: `cargo bench --bench scale`.
//!
//! One database seeded with bulk SQL (not through HTTP) with 1,000,000 finished runs (spread over the
//! last 23 days), 100,000 queued runs (10,000 of them needing a capability no machine has), 10,000
//! machines and a year of audit events (200,000); another left empty. Each dashboard request and
//! `/api/queue` is timed on both servers, one request at a time, and printed as a ratio seeded/empty
//! (goal: every one ≤ 3× and under 25 ms) and as a multiple of the favicon on the seeded server (the
//! bare cost of a request through every middleware: what is left is the route's own work). The audit
//! log is timed on its first page, filtered by action, filtered by actor, and a page a year back;
//! and the lease keeper's sweep, the background read every replica makes every 2 seconds.
//! Also the process's resident memory once the seeded server has served (goal ≤ 150 MB; the figure
//! includes this benchmark's own client).
//! `GRANITE_BENCH_SCALE=0.1` seeds a tenth of everything, for a quick look.

mod support;

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use granite::db::{DatabaseUrl, DbConnection};
use support::{Server, sign_in};

const REQUESTS: usize = 60;

fn scale() -> f64 {
    std::env::var("GRANITE_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

/// The actions of the seeded audit events, in turn (stored text).
const AUDIT_ACTIONS: [&str; 8] = [
    "signed_in",
    "api_key_created",
    "machine_paused",
    "machine_resumed",
    "run_cancelled",
    "enrollment_token_created",
    "api_key_revoked",
    "run_retried",
];

/// Bulk SQL: machines, finished runs, queued runs, the per-minute waits the triggers would have
/// kept for the runs started in the last two hours, and a year of audit events by 20 people (the
/// oldest has the smallest id, as when recorded one by one).
fn seed(conn: &mut DbConnection) {
    let n = |count: f64| ((count * scale()) as i64).max(1);
    let (machines, finished, queued) = (n(10_000.0), n(1_000_000.0), n(100_000.0));
    let audit = n(200_000.0);
    let audit_every_secs = 365 * 86_400 / audit;
    let audit_action = {
        let cases: String = AUDIT_ACTIONS
            .iter()
            .enumerate()
            .map(|(k, action)| format!(" WHEN {k} THEN '{action}'"))
            .collect();
        format!("CASE i % {}{cases} END", AUDIT_ACTIONS.len())
    };
    let started = Instant::now();
    let sql = match conn {
        DbConnection::Sqlite(_) => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {machines})
             INSERT INTO machines (organization_id, name, os_version, ip_address, capabilities,
                 driver_version, credential_hash, enrolled_at, last_seen_at, reported_status)
             SELECT 1, printf('vm-%05d', i), 'Windows 11', '10.0.0.1', '[\"windows\"]', '1.0',
                 'seed-' || i, datetime('now', '-1 day'),
                 strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d seconds', i % 60)), 'idle'
             FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {finished})
             INSERT INTO runs (public_id, organization_id, endpoint, parameters, requires, priority,
                 status, attempts, created_at, started_at, finished_at, result, machine_id)
             SELECT 'run_f' || i, 1, 'invoice-sync', '{{}}', '[]', 0, 'completed', 1,
                 strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d seconds', i * 2 + 60)),
                 strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d seconds', i * 2 + 30)),
                 strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d seconds', i * 2)),
                 '{{\"ok\":true}}', 1 + i % {machines}
             FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {queued})
             INSERT INTO runs (public_id, organization_id, endpoint, parameters, requires, priority,
                 status, attempts, created_at)
             SELECT 'run_q' || i, 1, 'invoice-sync', '{{}}',
                 CASE WHEN i % 10 = 0 THEN '[\"gpu\"]' ELSE '[]' END, i % 3, 'queued', 0,
                 strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d seconds', i % 3600))
             FROM n;
             INSERT INTO run_waits (organization_id, minute, started, waited_ms)
             SELECT organization_id, strftime('%Y-%m-%d %H:%M:00', started_at), COUNT(*),
                 SUM(CAST(ROUND((julianday(started_at) - julianday(created_at)) * 86400000) AS INTEGER))
             FROM runs WHERE started_at >= strftime('%Y-%m-%d %H:%M:%f', 'now', '-2 hours')
             GROUP BY 1, 2;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {audit})
             INSERT INTO audit_events (organization_id, actor, action, target_type, target_id,
                 source_ip, details, created_at)
             SELECT 1, printf('user-%d@example.com', i % 20), {audit_action}, 'machine',
                 CAST(1 + i % {machines} AS TEXT), '10.0.0.1', '{{\"name\":\"vm\"}}',
                 strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d seconds', ({audit} - i) * {audit_every_secs}))
             FROM n;
             ANALYZE;"
        ),
        DbConnection::Postgres(_) => format!(
            "INSERT INTO machines (organization_id, name, os_version, ip_address, capabilities,
                 driver_version, credential_hash, enrolled_at, last_seen_at, reported_status)
             SELECT 1, 'vm-' || lpad(i::text, 5, '0'), 'Windows 11', '10.0.0.1', '[\"windows\"]',
                 '1.0', 'seed-' || i, now() AT TIME ZONE 'utc' - interval '1 day',
                 now() AT TIME ZONE 'utc' - make_interval(secs => i % 60), 'idle'
             FROM generate_series(1, {machines}) AS i;
             INSERT INTO runs (public_id, organization_id, endpoint, parameters, requires, priority,
                 status, attempts, created_at, started_at, finished_at, result, machine_id)
             SELECT 'run_f' || i, 1, 'invoice-sync', '{{}}', '[]', 0, 'completed', 1,
                 now() AT TIME ZONE 'utc' - make_interval(secs => i * 2 + 60),
                 now() AT TIME ZONE 'utc' - make_interval(secs => i * 2 + 30),
                 now() AT TIME ZONE 'utc' - make_interval(secs => i * 2),
                 '{{\"ok\":true}}', 1 + i % {machines}
             FROM generate_series(1, {finished}) AS i;
             INSERT INTO runs (public_id, organization_id, endpoint, parameters, requires, priority,
                 status, attempts, created_at)
             SELECT 'run_q' || i, 1, 'invoice-sync', '{{}}',
                 CASE WHEN i % 10 = 0 THEN '[\"gpu\"]' ELSE '[]' END, i % 3, 'queued', 0,
                 now() AT TIME ZONE 'utc' - make_interval(secs => i % 3600)
             FROM generate_series(1, {queued}) AS i;
             INSERT INTO run_waits (organization_id, minute, started, waited_ms)
             SELECT organization_id, date_trunc('minute', started_at), COUNT(*),
                 SUM(ROUND(EXTRACT(EPOCH FROM started_at - created_at) * 1000))::bigint
             FROM runs WHERE started_at >= (now() AT TIME ZONE 'utc') - interval '2 hours'
             GROUP BY 1, 2;
             INSERT INTO audit_events (organization_id, actor, action, target_type, target_id,
                 source_ip, details, created_at)
             SELECT 1, 'user-' || (i % 20) || '@example.com', {audit_action}, 'machine',
                 (1 + i % {machines})::text, '10.0.0.1', '{{\"name\":\"vm\"}}',
                 now() AT TIME ZONE 'utc' - make_interval(secs => ({audit} - i) * {audit_every_secs})
             FROM generate_series(1, {audit}) AS i;
             ANALYZE;"
        ),
    };
    conn.batch_execute(&sql).expect("seeding");
    println!(
        "  seeded {machines} machines, {finished} finished and {queued} queued runs, {audit} audit events in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

struct Timing {
    median_ms: f64,
    p99_ms: f64,
}

/// One client, one request at a time: the latency of each route.
fn time(base: &str, path: &str, headers: &[(&str, String)]) -> Timing {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    sample(|| {
        let mut request = agent.get(format!("{base}{path}"));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let started = Instant::now();
        let mut response = request.call().expect("request sent");
        let _ = response.body_mut().read_to_vec();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        started.elapsed()
    })
}

/// The lease keeper's sweep, which every replica runs every 2 seconds whatever the dashboard does:
/// the machines that went quiet while holding a run.
fn time_lease_sweep(server: &Server) -> Timing {
    let mut conn = server.pool.get().unwrap();
    sample(|| {
        let started = Instant::now();
        granite::runs::leases::release_lost(
            &mut conn,
            chrono::Utc::now().naive_utc(),
            chrono::Duration::seconds(30),
            &mut Default::default(),
        )
        .expect("the sweep runs");
        started.elapsed()
    })
}

/// Median and p99 of [`REQUESTS`] runs of `once`, after 5 to warm up.
fn sample(mut once: impl FnMut() -> Duration) -> Timing {
    for _ in 0..5 {
        once();
    }
    let mut samples: Vec<Duration> = (0..REQUESTS).map(|_| once()).collect();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Timing {
        median_ms: ms(samples[samples.len() / 2]),
        p99_ms: ms(samples[(samples.len() * 99).div_ceil(100) - 1]),
    }
}

/// The first route is the baseline the others are compared with.
const ROUTES: [(&str, &str, bool); 14] = [
    ("favicon (baseline)", "/static/favicon.svg", false),
    ("dashboard page", "/api-management", false),
    ("Queue Status fragment", "/api-management/queue", true),
    (
        "VM Machines fragment",
        "/api-management/machines/list",
        true,
    ),
    (
        "VM Machines, capability every machine has",
        "/api-management/machines/list?capability=windows",
        true,
    ),
    (
        "VM Machines, capability no machine has",
        "/api-management/machines/list?capability=sap",
        true,
    ),
    (
        "enrollment tokens fragment",
        "/api-management/enrollment-tokens/list",
        true,
    ),
    ("jobs list", "/api-management/jobs", false),
    ("machine detail page", "/api-management/machines/1", false),
    ("/api/queue", "/api/queue", false),
    ("audit log, first page", "/api-management/audit-log", false),
    (
        "audit log, one action",
        "/api-management/audit-log?action=machine_paused",
        false,
    ),
    (
        "audit log, one actor",
        "/api-management/audit-log?actor=user-7%40example.com",
        false,
    ),
    // Ids are in recording order: the page before event 1,000 is a year back in the seeded log.
    (
        "audit log, a year back",
        "/api-management/audit-log?before=1000",
        false,
    ),
];

fn measure(url: DatabaseUrl, seeded: bool) -> Vec<Timing> {
    let server = Server::start(url);
    if seeded {
        seed(&mut server.pool.get().unwrap());
    } else {
        // The empty database has the same one machine the detail page shows.
        server
            .pool
            .get()
            .unwrap()
            .batch_execute(
                "INSERT INTO machines (organization_id, name, os_version, ip_address, capabilities,
                     driver_version, credential_hash, enrolled_at, reported_status)
                 VALUES (1, 'vm-00001', 'Windows 11', '10.0.0.1', '[]', '1.0', 'seed-1',
                     CURRENT_TIMESTAMP, 'idle')",
            )
            .unwrap();
    }
    let key = server.api_key("bench");
    let base = format!("http://{}", server.address);
    let (cookie, _) = sign_in(&base, "bench@example.com", "benchmark password");
    let mut timings: Vec<Timing> = ROUTES
        .iter()
        .map(|(_, path, fragment)| {
            let mut headers = vec![("Cookie", cookie.clone())];
            if *fragment {
                headers.push(("HX-Request", "true".into()));
            }
            if path.starts_with("/api/") {
                headers = vec![("X-Granite-API-Key", key.clone())];
            }
            time(&base, path, &headers)
        })
        .collect();
    timings.push(time_lease_sweep(&server));
    timings
}

/// What is timed besides the routes, after them.
const BACKGROUND: [&str; 1] = ["lease keeper sweep (no HTTP)"];

fn bench(label: &str, empty: DatabaseUrl, seeded: DatabaseUrl) {
    println!("\n{label}:");
    let before = measure(empty, false);
    let after = measure(seeded, true);
    println!(
        "  {:<28} {:>10} {:>10} {:>8} {:>10} {:>10}",
        "route", "empty ms", "seeded ms", "ratio", "seeded p99", "÷ favicon"
    );
    let baseline = after[0].median_ms;
    let names = ROUTES.iter().map(|(name, _, _)| *name).chain(BACKGROUND);
    for ((name, empty), seeded) in names.zip(&before).zip(&after) {
        println!(
            "  {name:<28} {:>10.2} {:>10.2} {:>7.2}× {:>10.2} {:>9.1}×",
            empty.median_ms,
            seeded.median_ms,
            seeded.median_ms / empty.median_ms,
            seeded.p99_ms,
            seeded.median_ms / baseline
        );
    }
    println!("  goal: every ratio ≤ 3× and every seeded median under 25 ms");
    println!(
        "  resident memory of this run's process (server and client): {:.0} MB (goal ≤ 150 MB)",
        support::resident_mb()
    );
}

/// Each backend runs in a process of its own, so the resident memory printed is that backend's
/// server (and its client) only.
fn main() {
    support::each_backend_in_its_own_process(
        "GRANITE_BENCH_SCALE_BACKEND",
        || bench("SQLite", support::sqlite_url(), support::sqlite_url()),
        || match (support::postgres_url(), support::postgres_url()) {
            (Some(empty), Some(seeded)) => bench("PostgreSQL", empty, seeded),
            _ => println!("\nPostgreSQL: not reachable (GRANITE_BENCH_POSTGRES_URL), skipped"),
        },
    );
}
