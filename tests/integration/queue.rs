//! Queue Status reads counts the database keeps (triggers on runs: runs queued and running, waits per
//! minute of start) and per-minute samples, not the runs themselves: these tests hold those counts to
//! the runs through every path that changes a run's status.

use diesel::prelude::*;
use serde_json::json;

use granite::db::schema::{run_waits, runs};
use granite::queue;
use granite::status::RunStatus;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    kept_counts_match_the_runs_through_every_change,
    the_depth_chart_reads_samples,
);

/// Queued and running runs per capability set, counted from the runs, as the kept counts say them.
fn counted(app: &TestApp) -> Vec<(String, i64, i64)> {
    let mut conn = app.pool.get().unwrap();
    let rows: Vec<(String, RunStatus)> = runs::table
        .filter(runs::status.eq_any([RunStatus::Queued, RunStatus::Running]))
        .select((runs::requires, runs::status))
        .load(&mut *conn)
        .unwrap();
    let mut by_set: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for (requires, status) in rows {
        let entry = by_set.entry(requires).or_default();
        if status == RunStatus::Queued {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    by_set.into_iter().map(|(r, (q, n))| (r, q, n)).collect()
}

fn kept(app: &TestApp) -> Vec<(String, i64, i64)> {
    let mut counts: Vec<_> = queue::counts(&mut app.pool.get().unwrap(), 1)
        .unwrap()
        .into_iter()
        .map(|c| (c.requires, c.queued, c.running))
        .collect();
    counts.sort();
    counts
}

/// Runs started (at their latest start) and their waits in all, counted from the runs.
fn counted_waits(app: &TestApp) -> (i64, i64) {
    let rows: Vec<(chrono::NaiveDateTime, Option<chrono::NaiveDateTime>)> = runs::table
        .select((runs::created_at, runs::started_at))
        .load(&mut *app.pool.get().unwrap())
        .unwrap();
    rows.into_iter()
        .filter_map(|(created, started)| started.map(|s| (s - created).num_milliseconds()))
        .fold((0, 0), |(n, ms), wait| (n + 1, ms + wait))
}

/// The same, as the per-minute waits kept for Avg Wait Time say them.
fn kept_waits(app: &TestApp) -> (i64, i64) {
    let rows: Vec<(i64, i64)> = run_waits::table
        .select((run_waits::started, run_waits::waited_ms))
        .load(&mut *app.pool.get().unwrap())
        .unwrap();
    rows.into_iter().fold((0, 0), |(n, ms), (started, waited)| {
        (n + started, ms + waited)
    })
}

fn kept_counts_match_the_runs_through_every_change(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("vm");
    let (_, credential) = app.enroll(&token, "vm-1");
    let check = |step: &str| {
        assert_eq!(kept(&app), counted(&app), "after {step}");
        let (kept_started, kept_ms) = kept_waits(&app);
        let (started, waited_ms) = counted_waits(&app);
        assert_eq!(kept_started, started, "starts kept after {step}");
        assert!(
            (kept_ms - waited_ms).abs() <= started,
            "waits kept after {step}: {kept_ms} ms, counted {waited_ms} ms"
        );
    };
    check("nothing");

    let plain: Vec<String> = (0..3)
        .map(|i| {
            app.start_run(&key, "default/plain", &json!({ "i": i }))
                .run_id()
        })
        .collect();
    let windows = app
        .start_run(&key, "default/win?requires=windows", &json!({}))
        .run_id();
    check("enqueues");
    assert_eq!(kept(&app).iter().map(|c| c.1).sum::<i64>(), 4);

    let claimed = app.claim(&credential, 0).json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    check("a claim");
    let done = app.complete(
        &credential,
        &claimed,
        &json!({ "status": "completed", "result": {} }),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    check("a completion");

    let next = app.claim(&credential, 0).json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = admin.htmx_post(&format!("/api-management/jobs/{next}/cancel"), &[]);
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    check("cancelling a running run");
    let queued = plain
        .iter()
        .find(|id| **id != claimed && **id != next)
        .unwrap();
    admin.htmx_post(&format!("/api-management/jobs/{queued}/cancel"), &[]);
    check("cancelling a queued run");
    let retried = admin.htmx_post(&format!("/api-management/jobs/{next}/retry"), &[]);
    assert!(retried.status < 400, "{}", retried.body);
    check("a retry");

    // A run taken back from a machine that stopped reporting it, and a deleted run.
    let heartbeat = app.heartbeat(&credential);
    assert_eq!(heartbeat.status, 200);
    diesel::delete(runs::table.filter(runs::public_id.eq(&windows)))
        .execute(&mut *app.pool.get().unwrap())
        .unwrap();
    check("a deletion");

    let status = app.api(Some(&key)).get("/api/queue").json();
    let queued_now: i64 = counted(&app).iter().map(|c| c.1).sum();
    assert_eq!(status["jobs_queued"], queued_now, "{status}");
}

fn the_depth_chart_reads_samples(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    for i in 0..5 {
        app.start_run(&key, "default/job", &json!({ "i": i }));
    }
    let now = chrono::Utc::now().naive_utc();
    let mut conn = app.pool.get().unwrap();
    queue::sample(&mut conn, now).unwrap();
    let depth = queue::depth_last_hour(&mut conn, 1, now).unwrap();
    assert_eq!(depth.len(), 60);
    assert_eq!(depth.last().unwrap().1, 5, "this minute's sample");
    assert_eq!(depth.first().unwrap().1, 0, "no sample an hour ago");
    // A later sample of the same minute replaces it.
    app.start_run(&key, "default/job", &json!({ "i": 6 }));
    queue::sample(&mut conn, now).unwrap();
    assert_eq!(
        queue::depth_last_hour(&mut conn, 1, now)
            .unwrap()
            .last()
            .unwrap()
            .1,
        6
    );
}
