//! Retention: finished runs past `GRANITE_RUN_RETENTION_DAYS` go, with their attempts, and so do old
//! API key usage hours; nothing queued, running or still held by a machine goes, and a retry outlives
//! the run it was made from. Rows are seeded straight into each backend, with the ages the test needs.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DurationRound, NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use granite::db::DbConnection;
use granite::db::schema::{api_key_usage, machines, run_attempts, runs};
use granite::runs::retention::{self, BATCH_ROWS, RetentionDays, Swept};
use granite::status::{AttemptOutcome, RunStatus};

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    only_finished_runs_past_the_retention_go_with_their_attempts,
    a_backlog_larger_than_a_batch_goes_in_several_batches,
    the_server_sweeps_with_its_configured_retention,
);

fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

fn days_ago(days: i64) -> NaiveDateTime {
    now() - TimeDelta::days(days)
}

fn thirty_days() -> RetentionDays {
    RetentionDays::parse("30").unwrap()
}

/// A run as the lifecycle would have left it: started when not queued, finished when `finished` is
/// given. Returns (id, public id).
fn seed_run(
    conn: &mut DbConnection,
    status: RunStatus,
    created: NaiveDateTime,
    finished: Option<NaiveDateTime>,
    retried_from: Option<i64>,
) -> (i64, String) {
    let public_id = format!("run_{}", granite::secret::random_base62(24));
    let started = (status != RunStatus::Queued).then_some(created);
    let id = diesel::insert_into(runs::table)
        .values((
            runs::public_id.eq(&public_id),
            runs::organization_id.eq(1i64),
            runs::endpoint.eq("invoice-sync"),
            runs::status.eq(status),
            runs::attempts.eq(i32::from(started.is_some())),
            runs::created_at.eq(created),
            runs::started_at.eq(started),
            runs::finished_at.eq(finished),
            runs::retried_from_run_id.eq(retried_from),
        ))
        .returning(runs::id)
        .get_result(conn)
        .unwrap();
    (id, public_id)
}

fn seed_attempt(conn: &mut DbConnection, run_id: i64, machine_id: i64, at: NaiveDateTime) {
    diesel::insert_into(run_attempts::table)
        .values((
            run_attempts::run_id.eq(run_id),
            run_attempts::machine_id.eq(machine_id),
            run_attempts::started_at.eq(at),
            run_attempts::ended_at.eq(at),
            run_attempts::outcome.eq(AttemptOutcome::Completed),
        ))
        .execute(conn)
        .unwrap();
}

fn seed_machine(conn: &mut DbConnection) -> i64 {
    diesel::insert_into(machines::table)
        .values((
            machines::organization_id.eq(1i64),
            machines::name.eq("vm-01"),
            machines::credential_hash.eq(granite::secret::random_base62(32)),
            machines::enrolled_at.eq(days_ago(60)),
        ))
        .returning(machines::id)
        .get_result(conn)
        .unwrap()
}

fn seed_usage(conn: &mut DbConnection, key_id: i64, hour: NaiveDateTime) {
    diesel::insert_into(api_key_usage::table)
        .values((
            api_key_usage::api_key_id.eq(key_id),
            api_key_usage::hour_start.eq(hour.duration_trunc(TimeDelta::hours(1)).unwrap()),
            api_key_usage::success_count.eq(3i64),
            api_key_usage::rejected_count.eq(1i64),
        ))
        .execute(conn)
        .unwrap();
}

fn run_ids(conn: &mut DbConnection) -> BTreeSet<i64> {
    runs::table
        .select(runs::id)
        .load(conn)
        .unwrap()
        .into_iter()
        .collect()
}

fn attempts_of(conn: &mut DbConnection, run_id: i64) -> i64 {
    run_attempts::table
        .filter(run_attempts::run_id.eq(run_id))
        .count()
        .get_result(conn)
        .unwrap()
}

fn usage_hours(conn: &mut DbConnection) -> Vec<NaiveDateTime> {
    api_key_usage::table
        .select(api_key_usage::hour_start)
        .order(api_key_usage::hour_start)
        .load(conn)
        .unwrap()
}

fn only_finished_runs_past_the_retention_go_with_their_attempts(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("reader");
    let mut conn = app.pool.get().unwrap();
    let machine = seed_machine(&mut conn);
    let (old, recent) = (days_ago(40), days_ago(2));

    let (completed_old, completed_old_public) =
        seed_run(&mut conn, RunStatus::Completed, old, Some(old), None);
    seed_attempt(&mut conn, completed_old, machine, old);
    seed_attempt(&mut conn, completed_old, machine, old);
    let (failed_old, failed_old_public) =
        seed_run(&mut conn, RunStatus::Failed, old, Some(old), None);
    seed_attempt(&mut conn, failed_old, machine, old);
    let (retry, retry_public) =
        seed_run(&mut conn, RunStatus::Queued, recent, None, Some(failed_old));
    // Cancelled while it ran; the machine has not let go of it yet.
    let (held_old, _) = seed_run(&mut conn, RunStatus::Cancelled, old, Some(old), None);
    seed_attempt(&mut conn, held_old, machine, old);
    diesel::update(machines::table.find(machine))
        .set(machines::current_run_id.eq(held_old))
        .execute(&mut *conn)
        .unwrap();
    let (completed_recent, _) =
        seed_run(&mut conn, RunStatus::Completed, recent, Some(recent), None);
    seed_attempt(&mut conn, completed_recent, machine, recent);
    let just_inside = days_ago(30) + TimeDelta::hours(1);
    let (cancelled_inside, _) = seed_run(
        &mut conn,
        RunStatus::Cancelled,
        just_inside,
        Some(just_inside),
        None,
    );
    // Queued and running runs stay however old they are, even with a stray finish time: only the
    // status says a run is over.
    let (queued_old, queued_old_public) =
        seed_run(&mut conn, RunStatus::Queued, old, Some(old), None);
    let (running_old, _) = seed_run(&mut conn, RunStatus::Running, old, Some(old), None);
    seed_attempt(&mut conn, running_old, machine, old);
    for hour in [days_ago(41), days_ago(40), days_ago(29), now()] {
        seed_usage(&mut conn, key_id, hour);
    }

    let swept = retention::sweep_batch(&mut conn, now(), thirty_days()).unwrap();
    assert_eq!(
        swept,
        Swept {
            runs: 2,
            usage_hours: 2
        }
    );
    assert_eq!(
        run_ids(&mut conn),
        BTreeSet::from([
            retry,
            held_old,
            completed_recent,
            cancelled_inside,
            queued_old,
            running_old
        ])
    );
    assert_eq!(attempts_of(&mut conn, completed_old), 0);
    assert_eq!(attempts_of(&mut conn, failed_old), 0);
    for (kept, attempts) in [(held_old, 1), (completed_recent, 1), (running_old, 1)] {
        assert_eq!(attempts_of(&mut conn, kept), attempts);
    }
    assert_eq!(
        usage_hours(&mut conn)
            .iter()
            .filter(|hour| **hour < days_ago(30))
            .count(),
        0
    );
    assert_eq!(usage_hours(&mut conn).len(), 2);

    // Through the API and the dashboard: the deleted runs are gone, the retry and the rest read as before.
    let api = app.api(Some(&key));
    for gone in [&completed_old_public, &failed_old_public] {
        assert_eq!(api.error_of(&format!("/api/agent-runs/{gone}")).0, 404);
    }
    let retried = app.run_of(&key, &retry_public);
    assert_eq!(retried["status"], "queued", "{retried}");
    assert_eq!(app.run_of(&key, &queued_old_public)["status"], "queued");
    let page = admin.get(&format!("/api-management/jobs/{retry_public}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains(&failed_old_public));
    let analytics = admin.get(&format!("/api-management/api-keys/{key_id}/analytics"));
    assert_eq!(analytics.status, 200, "{}", analytics.body);

    // Nothing more to do until the machine lets go of the cancelled run; then it goes too.
    let again = retention::sweep_batch(&mut conn, now(), thirty_days()).unwrap();
    assert_eq!(again, Swept::default());
    diesel::update(machines::table.find(machine))
        .set(machines::current_run_id.eq(None::<i64>))
        .execute(&mut *conn)
        .unwrap();
    let released = retention::sweep_batch(&mut conn, now(), thirty_days()).unwrap();
    assert_eq!(released.runs, 1);
    assert!(!run_ids(&mut conn).contains(&held_old));
    assert_eq!(attempts_of(&mut conn, held_old), 0);
}

fn a_backlog_larger_than_a_batch_goes_in_several_batches(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, _) = admin.create_api_key("busy");
    let backlog = BATCH_ROWS as usize + 7;
    let mut conn = app.pool.get().unwrap();
    let machine = seed_machine(&mut conn);
    let mut kept = BTreeSet::new();
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        for i in 0..backlog {
            let finished = days_ago(31) - TimeDelta::minutes(i as i64);
            let (id, _) = seed_run(conn, RunStatus::Completed, finished, Some(finished), None);
            seed_attempt(conn, id, machine, finished);
            // One key used every hour for over a thousand hours, all of them past the retention.
            seed_usage(conn, key_id, days_ago(31) - TimeDelta::hours(i as i64));
        }
        for _ in 0..3 {
            let recent = days_ago(1);
            let (id, _) = seed_run(conn, RunStatus::Failed, recent, Some(recent), None);
            seed_attempt(conn, id, machine, recent);
            kept.insert(id);
        }
        seed_usage(conn, key_id, now());
        Ok(())
    })
    .unwrap();

    let first = retention::sweep_batch(&mut conn, now(), thirty_days()).unwrap();
    assert_eq!(
        first,
        Swept {
            runs: BATCH_ROWS as usize,
            usage_hours: BATCH_ROWS as usize
        },
        "one batch is bounded"
    );
    drop(conn);
    let rest = actix_web::rt::System::new()
        .block_on(retention::sweep(&app.pool, thirty_days()))
        .unwrap();
    assert_eq!(
        rest,
        Swept {
            runs: 7,
            usage_hours: 7
        }
    );
    let mut conn = app.pool.get().unwrap();
    assert_eq!(run_ids(&mut conn), kept);
    let attempts: i64 = run_attempts::table.count().get_result(&mut *conn).unwrap();
    assert_eq!(attempts, 3);
    assert_eq!(usage_hours(&mut conn).len(), 1);
}

fn the_server_sweeps_with_its_configured_retention(backend: Backend) {
    let db = TestDb::new(backend);
    let (old, recent) = {
        let app = TestApp::spawn(&db);
        let mut conn = app.pool.get().unwrap();
        let three_days_ago = days_ago(3);
        let (old, _) = seed_run(
            &mut conn,
            RunStatus::Completed,
            three_days_ago,
            Some(three_days_ago),
            None,
        );
        let yesterday = days_ago(1) + TimeDelta::hours(1);
        let (recent, _) = seed_run(
            &mut conn,
            RunStatus::Completed,
            yesterday,
            Some(yesterday),
            None,
        );
        (old, recent)
    };
    let app = TestApp::spawn_with(&db, |settings| {
        settings.admin_email = Some(ADMIN_EMAIL.into());
        settings.admin_password = Some(ADMIN_PASSWORD.into());
        settings.run_retention = RetentionDays::parse("2").unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ids = run_ids(&mut app.pool.get().unwrap());
        if !ids.contains(&old) {
            assert!(ids.contains(&recent), "a run finished a day ago stays");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not delete a run past its retention"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Zero days or not a number stops `granite serve` before it touches the database, naming the setting.
#[test]
fn a_retention_below_one_day_or_not_a_number_stops_the_start() {
    let dir = std::env::temp_dir().join(format!(
        "granite-retention-{}",
        granite::secret::random_base62(10)
    ));
    for value in ["0", "abc", "-3"] {
        let mut child = crate::driver::granite()
            .arg("serve")
            .env("GRANITE_RUN_RETENTION_DAYS", value)
            .env(
                "GRANITE_DATABASE_URL",
                format!("sqlite://{}/granite.db", dir.display()),
            )
            .env("GRANITE_BIND", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("granite serve started with GRANITE_RUN_RETENTION_DAYS={value}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "invalid value '{value}' for '--run-retention-days <DAYS>': GRANITE_RUN_RETENTION_DAYS: \
                 a retention must be a whole number of days from 1 to 36500"
            )),
            "{stderr}"
        );
        assert!(!dir.exists(), "nothing was created");
    }
}
