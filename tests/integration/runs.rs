//! Runs end to end: the public API queues them, drivers claim and complete them, exactly once, within
//! their organization; leases bring back the runs of machines that went quiet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use granite::db::schema::{machines, runs};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, TestApp, TestDb};

both_backends!(
    runs_are_queued_read_and_cancelled_with_contract_answers,
    bad_run_requests_are_refused_and_change_nothing,
    claims_follow_priority_age_and_capabilities,
    a_long_polling_driver_gets_a_new_run_at_once,
    wait_true_returns_the_outcome,
    cancelling_a_running_run_tells_its_driver,
    twenty_drivers_complete_two_thousand_runs_exactly_once,
    a_quiet_machine_loses_its_run_to_another,
    organizations_never_see_each_others_runs,
    queue_numbers_and_metrics_follow_the_work,
    a_run_refers_to_an_organization_and_key_that_exist,
);

struct Setup {
    app: Arc<TestApp>,
    admin: Client,
    key: String,
    key_id: i64,
}

fn setup(db: &TestDb, offline_after_secs: u64) -> Setup {
    let app = Arc::new(TestApp::spawn_with(db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.offline_after_secs = offline_after_secs;
        s.db_pool_size = 8;
    }));
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("runner");
    Setup {
        app,
        admin,
        key,
        key_id,
    }
}

/// Enrolls a machine with these capabilities; returns (id, credential).
fn machine(setup: &mut Setup, name: &str, capabilities: &[&str]) -> (i64, String) {
    let (_, token) = setup.admin.create_enrollment_token(name);
    let reply = setup.app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": name, "capabilities": capabilities }),
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    (
        body["machine_id"].as_i64().unwrap(),
        body["credential"].as_str().unwrap().to_owned(),
    )
}

fn runs_are_queued_read_and_cancelled_with_contract_answers(backend: Backend) {
    let db = TestDb::new(backend);
    let s = setup(&db, 30);
    let started = s.app.start_run(
        &s.key,
        "default/invoice-sync?priority=3&requires=windows",
        &json!({ "invoice": 42 }),
    );
    assert_eq!(started.status, 202, "{}", started.body);
    let body = started.json();
    assert_eq!(body["status"], "queued");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let id = started.run_id();
    assert!(id.starts_with("run_"));

    let run = s
        .app
        .api(Some(&s.key))
        .get(&format!("/api/agent-runs/{id}"));
    assert_eq!(run.status, 200);
    let run = run.json();
    assert_eq!(run["runId"], id.as_str());
    assert_eq!(run["endpoint"], "invoice-sync");
    assert_eq!(run["status"], "queued");
    assert_eq!(run["parameters"], json!({ "invoice": 42 }));
    assert_eq!(run["requires"], json!(["windows"]));
    assert_eq!(run["priority"], 3);
    for absent in [
        "result",
        "error",
        "machineId",
        "startedAt",
        "finishedAt",
        "duration",
    ] {
        assert_eq!(run[absent], Value::Null, "{absent}");
    }
    let created = run["createdAt"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z'),
        "{created}"
    );

    let cancelled = s.app.post_json_with(
        &format!("/api/agent-runs/{id}/cancel"),
        &json!({}),
        &[("X-Granite-API-Key", &s.key)],
    );
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert!(cancelled.json()["finishedAt"].is_string());
    let again = s.app.post_json_with(
        &format!("/api/agent-runs/{id}/cancel"),
        &json!({}),
        &[("X-Granite-API-Key", &s.key)],
    );
    assert_eq!(again.api_error(), (409, "run_finished".into()));
    assert_eq!(
        s.app.api(Some(&s.key)).error_of("/api/agent-runs/run_nope"),
        (404, "not_found".into())
    );

    // An empty body is an empty set of parameters.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut empty = agent
        .post(s.app.url("/api/default/nightly-report"))
        .header("X-Granite-API-Key", &s.key)
        .send_empty()
        .unwrap();
    assert_eq!(empty.status().as_u16(), 202);
    let empty_id = serde_json::from_str::<Value>(&empty.body_mut().read_to_string().unwrap())
        .unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.app
            .api(Some(&s.key))
            .get(&format!("/api/agent-runs/{empty_id}"))
            .json()["parameters"],
        json!({})
    );
}

fn bad_run_requests_are_refused_and_change_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let s = setup(&db, 30);
    let key = s.key.as_str();
    let refused = |path: &str, body: &Value| s.app.start_run(key, path, body).api_error();
    assert_eq!(
        refused("default/Bad_Endpoint", &json!({})),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused(&format!("default/{}", "a".repeat(101)), &json!({})),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused("default/ok", &json!([1, 2])),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused("default/ok", &json!("text")),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused("default/ok?priority=high", &json!({})),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused("default/ok?requires=has%20space", &json!({})),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused("default/ok?wait=true&timeout=301", &json!({})),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused("other-org/ok", &json!({})),
        (404, "not_found".into())
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = s.app.url("/api/default/ok");
    let text = agent
        .post(&url)
        .header("X-Granite-API-Key", key)
        .header("Content-Type", "text/plain")
        .send("{}")
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);
    let huge = format!("{{\"blob\":\"{}\"}}", "x".repeat(1_100_000));
    let big = agent
        .post(&url)
        .header("X-Granite-API-Key", key)
        .header("Content-Type", "application/json")
        .send(huge)
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    let broken = agent
        .post(&url)
        .header("X-Granite-API-Key", key)
        .header("Content-Type", "application/json")
        .send("{nope")
        .unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    assert_eq!(
        s.app
            .start_run("gk_live_nope", "default/ok", &json!({}))
            .api_error(),
        (401, "malformed_api_key".into())
    );
    let count: i64 = runs::table
        .count()
        .get_result(&mut *s.app.pool.get().unwrap())
        .unwrap();
    assert_eq!(count, 0, "nothing was queued");
}

fn claims_follow_priority_age_and_capabilities(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let (linux_id, linux) = machine(&mut s, "linux-1", &["linux", "chrome"]);
    let start = |path: &str| s.app.start_run(&s.key, path, &json!({})).run_id();
    let low = start("default/low");
    let windows = start("default/win-only?priority=9&requires=windows");
    let high_old = start("default/high-old?priority=5");
    let high_new = start("default/high-new?priority=5&requires=chrome");
    let plain = start("default/plain");

    let mut order = Vec::new();
    for _ in 0..4 {
        let claimed = s.app.claim(&linux, 0);
        assert_eq!(claimed.status, 200, "{}", claimed.body);
        let run = claimed.json();
        assert_eq!(run["status"], "running");
        assert_eq!(run["machineId"], linux_id);
        assert!(run["startedAt"].is_string());
        let id = run["runId"].as_str().unwrap().to_owned();
        // Busy with it, then Online again once completed.
        let list = s.admin.machine_list("");
        assert_eq!(list.machine_status(linux_id).as_deref(), Some("busy"));
        assert!(list.body.contains(&id), "the Current Job is shown");
        let done = s.app.complete(
            &linux,
            &id,
            &json!({ "status": "completed", "result": { "ok": true } }),
        );
        assert_eq!(done.status, 200, "{}", done.body);
        assert_eq!(done.json()["status"], "completed");
        assert_eq!(done.json()["result"], json!({ "ok": true }));
        assert!(done.json()["duration"].is_number());
        assert_eq!(
            s.admin.machine_list("").machine_status(linux_id).as_deref(),
            Some("online")
        );
        order.push(id);
    }
    assert_eq!(
        order,
        [high_old, high_new, low, plain],
        "priority first, then age; never a run it cannot do"
    );
    assert_eq!(
        s.app.claim(&linux, 0).status,
        204,
        "only the windows run is left"
    );
    let still = s
        .app
        .api(Some(&s.key))
        .get(&format!("/api/agent-runs/{windows}"))
        .json();
    assert_eq!(still["status"], "queued");

    let (_, windows_machine) = machine(&mut s, "win-1", &["windows"]);
    let claimed = s.app.claim(&windows_machine, 0).json();
    assert_eq!(claimed["runId"], windows.as_str());
    let failed = s.app.complete(
        &windows_machine,
        &windows,
        &json!({ "status": "failed", "error": { "type": "timeout", "message": "took too long" } }),
    );
    assert_eq!(failed.json()["status"], "failed");
    assert_eq!(
        failed.json()["error"],
        json!({ "type": "timeout", "message": "took too long" })
    );
    assert_eq!(
        s.app
            .complete(
                &windows_machine,
                &windows,
                &json!({ "status": "completed" })
            )
            .api_error(),
        (409, "run_finished".into())
    );
    assert_eq!(
        s.app
            .complete(&linux, &windows, &json!({ "status": "completed" }))
            .api_error(),
        (404, "not_found".into())
    );
    assert_eq!(
        s.app
            .complete(&linux, &order[0], &json!({ "status": "done" }))
            .api_error(),
        (400, "invalid_request".into())
    );

    let history = s
        .admin
        .get(&format!("/api-management/machines/{linux_id}?tab=jobs"));
    for (id, endpoint) in order.iter().zip(["high-old", "high-new", "low", "plain"]) {
        assert!(
            history.body.contains(id) && history.body.contains(endpoint),
            "history lacks {endpoint}"
        );
    }
    assert!(history.body.contains("outcome-completed"));
    let jobs = s.admin.get("/api-management/jobs?status=failed");
    assert_eq!(jobs.status, 200);
    assert!(
        jobs.body.contains(&windows) && !jobs.body.contains(&order[0]),
        "the jobs list filters by status"
    );
}

fn a_long_polling_driver_gets_a_new_run_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let (_, credential) = machine(&mut s, "poller", &[]);
    let idle = Instant::now();
    assert_eq!(s.app.claim(&credential, 1).status, 204);
    assert!(
        idle.elapsed() >= Duration::from_millis(950),
        "it waited for its wait_seconds"
    );

    let waiting = {
        let (app, credential) = (s.app.clone(), credential.clone());
        std::thread::spawn(move || {
            let reply = app.claim(&credential, 20);
            (reply, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let queued_at = Instant::now();
    let id = s
        .app
        .start_run(&s.key, "default/urgent", &json!({}))
        .run_id();
    let (reply, received_at) = waiting.join().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["runId"], id.as_str());
    let latency = received_at - queued_at;
    assert!(
        latency < Duration::from_millis(500),
        "woken at once, not at the next poll: {latency:?}"
    );
    assert_eq!(
        s.app.claim(&credential, 31).api_error(),
        (400, "invalid_request".into())
    );
}

fn wait_true_returns_the_outcome(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let (_, credential) = machine(&mut s, "worker", &[]);
    let caller = {
        let (app, key) = (s.app.clone(), s.key.clone());
        std::thread::spawn(move || {
            app.start_run(
                &key,
                "default/quick?wait=true&timeout=20",
                &json!({ "n": 2 }),
            )
        })
    };
    let claimed = s.app.claim(&credential, 10).json();
    let id = claimed["runId"].as_str().unwrap().to_owned();
    assert_eq!(claimed["parameters"], json!({ "n": 2 }));
    s.app.complete(
        &credential,
        &id,
        &json!({ "status": "completed", "result": { "square": 4 } }),
    );
    let answer = caller.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["runId"], id.as_str());
    assert_eq!(answer.json()["result"], json!({ "square": 4 }));

    let timed_out = s.app.start_run(
        &s.key,
        "default/nobody-takes-this?wait=true&timeout=1&requires=gpu",
        &json!({}),
    );
    assert_eq!(timed_out.status, 202);
    assert_eq!(timed_out.json()["status"], "queued");
    assert!(
        timed_out.json()["runId"].is_string(),
        "the run object, still queued"
    );
}

fn cancelling_a_running_run_tells_its_driver(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let (machine_id, credential) = machine(&mut s, "worker", &[]);
    let id = s
        .app
        .start_run(&s.key, "default/long-job", &json!({}))
        .run_id();
    assert_eq!(s.app.claim(&credential, 0).json()["runId"], id.as_str());
    let cancelled = s.app.post_json_with(
        &format!("/api/agent-runs/{id}/cancel"),
        &json!({}),
        &[("X-Granite-API-Key", &s.key)],
    );
    assert_eq!(cancelled.json()["status"], "cancelled");
    let beat = s
        .app
        .post_json(
            "/api/v1/driver/heartbeat",
            &json!({ "status": "busy", "current_run_id": id }),
            Some(&credential),
        )
        .json();
    assert_eq!(
        beat["cancel"],
        json!([id]),
        "the driver hears of it on its next heartbeat"
    );
    let acknowledged = s
        .app
        .complete(&credential, &id, &json!({ "status": "completed" }));
    assert_eq!(acknowledged.status, 200);
    assert_eq!(
        acknowledged.json()["status"],
        "cancelled",
        "a cancelled run stays cancelled"
    );
    assert_eq!(s.app.heartbeat(&credential).json()["cancel"], json!([]));
    assert_eq!(
        s.admin
            .machine_list("")
            .machine_status(machine_id)
            .as_deref(),
        Some("online")
    );
}

/// Two thousand runs in seconds are more than the default rate limit allows: the key is made
/// unlimited first, as an admin would for such a caller.
fn unlimited(s: &mut Setup) {
    let reply = s.admin.set_rate_limit(s.key_id, "0");
    assert_eq!(reply.status, 303, "{}", reply.body);
}

fn exactly_once(apps: &[Arc<TestApp>], key: &str, credentials: &[String], total: usize) {
    // Queue the runs from four callers at once.
    let callers: Vec<_> = (0..4)
        .map(|c| {
            let (app, key) = (apps[c % apps.len()].clone(), key.to_owned());
            std::thread::spawn(move || {
                (0..total / 4)
                    .map(|i| {
                        let reply = app.start_run(
                            &key,
                            &format!("default/job-{}", c * 1000 + i),
                            &json!({ "i": i }),
                        );
                        assert_eq!(reply.status, 202, "{}", reply.body);
                        reply.run_id()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let completions: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let drivers: Vec<_> = credentials
        .iter()
        .enumerate()
        .map(|(d, credential)| {
            let (app, credential, completions) = (
                apps[d % apps.len()].clone(),
                credential.clone(),
                completions.clone(),
            );
            std::thread::spawn(move || {
                let mut idle_claims = 0;
                while idle_claims < 3 {
                    let claimed = app.claim(&credential, 1);
                    if claimed.status == 204 {
                        idle_claims += 1;
                        continue;
                    }
                    assert_eq!(claimed.status, 200, "{}", claimed.body);
                    idle_claims = 0;
                    let id = claimed.json()["runId"].as_str().unwrap().to_owned();
                    let done = app.complete(
                        &credential,
                        &id,
                        &json!({ "status": "completed", "result": { "by": d } }),
                    );
                    assert_eq!(done.status, 200, "{}", done.body);
                    *completions.lock().unwrap().entry(id).or_default() += 1;
                }
            })
        })
        .collect();
    let queued: Vec<String> = callers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    for driver in drivers {
        driver.join().unwrap();
    }
    let completions = completions.lock().unwrap();
    assert_eq!(queued.len(), total);
    assert_eq!(completions.len(), total, "every run was completed");
    assert!(
        completions.values().all(|&n| n == 1),
        "no run was handed out twice"
    );
    for id in &queued {
        assert!(completions.contains_key(id), "{id} was lost");
    }
    let mut conn = apps[0].pool.get().unwrap();
    let completed: i64 = runs::table
        .filter(runs::status.eq("completed"))
        .count()
        .get_result(&mut *conn)
        .unwrap();
    let attempts: Vec<i32> = runs::table.select(runs::attempts).load(&mut *conn).unwrap();
    assert_eq!(completed as usize, total);
    assert!(
        attempts.iter().all(|&a| a == 1),
        "each run was claimed once"
    );
}

fn twenty_drivers_complete_two_thousand_runs_exactly_once(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let credentials: Vec<String> = (0..20)
        .map(|i| machine(&mut s, &format!("driver-{i}"), &[]).1)
        .collect();
    unlimited(&mut s);
    exactly_once(&[s.app.clone()], &s.key, &credentials, 2000);
}

#[test]
fn two_replicas_on_one_postgres_hand_out_each_run_once() {
    let db = TestDb::new(Backend::Postgres);
    let mut s = setup(&db, 30);
    let second = Arc::new(TestApp::spawn_with(&db, |settings| {
        settings.db_pool_size = 8
    }));
    let credentials: Vec<String> = (0..20)
        .map(|i| machine(&mut s, &format!("driver-{i}"), &[]).1)
        .collect();
    unlimited(&mut s);
    exactly_once(&[s.app.clone(), second.clone()], &s.key, &credentials, 2000);

    // A driver waiting on one replica is woken by a run queued on the other. It ranks first (the
    // twenty drivers above are idle and online, though no longer claiming), so what is measured is
    // the wake-up, not the wait for better machines.
    let (listener, credential) = machine(&mut s, "listener", &[]);
    {
        use diesel::prelude::*;
        use granite::db::schema::machines;
        diesel::update(machines::table.find(listener))
            .set(machines::priority.eq(1))
            .execute(&mut *s.app.pool.get().unwrap())
            .unwrap();
    }
    let waiting = {
        let (second, credential) = (second.clone(), credential.clone());
        std::thread::spawn(move || (second.claim(&credential, 20), Instant::now()))
    };
    std::thread::sleep(Duration::from_millis(500));
    let queued_at = Instant::now();
    let id = s
        .app
        .start_run(&s.key, "default/cross-replica", &json!({}))
        .run_id();
    let (reply, received_at) = waiting.join().unwrap();
    assert_eq!(reply.json()["runId"], id.as_str());
    assert!(
        received_at - queued_at < Duration::from_millis(500),
        "NOTIFY reached the other replica: {:?}",
        received_at - queued_at
    );
}

fn a_quiet_machine_loses_its_run_to_another(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 1);
    let (quiet_id, quiet) = machine(&mut s, "quiet", &[]);
    let (_, steady) = machine(&mut s, "steady", &[]);
    let id = s
        .app
        .start_run(&s.key, "default/fragile", &json!({}))
        .run_id();
    assert_eq!(s.app.claim(&quiet, 0).json()["runId"], id.as_str());
    // The quiet machine stops talking; the steady one keeps heartbeating and asks for work.
    let deadline = Instant::now() + Duration::from_secs(15);
    let taken = loop {
        assert!(
            Instant::now() < deadline,
            "the run never came back to the queue"
        );
        assert_eq!(s.app.heartbeat(&steady).status, 200);
        let claimed = s.app.claim(&steady, 1);
        if claimed.status == 200 {
            break claimed.json();
        }
    };
    assert_eq!(
        taken["runId"],
        id.as_str(),
        "the same run, now on another machine"
    );
    let attempts: i32 = runs::table
        .filter(runs::public_id.eq(&id))
        .select(runs::attempts)
        .first(&mut *s.app.pool.get().unwrap())
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(
        s.app
            .complete(&steady, &id, &json!({ "status": "completed" }))
            .json()["status"],
        "completed"
    );
    assert_eq!(
        s.app
            .complete(&quiet, &id, &json!({ "status": "completed" }))
            .api_error(),
        (404, "not_found".into()),
        "it no longer holds the run"
    );
    let current: Option<i64> = machines::table
        .find(quiet_id)
        .select(machines::current_run_id)
        .first(&mut *s.app.pool.get().unwrap())
        .unwrap();
    assert_eq!(current, None, "the quiet machine holds nothing");

    // After its third lost lease, a run fails with a clear error.
    let doomed = s
        .app
        .start_run(&s.key, "default/doomed", &json!({}))
        .run_id();
    diesel::update(runs::table.filter(runs::public_id.eq(&doomed)))
        .set(runs::attempts.eq(2))
        .execute(&mut *s.app.pool.get().unwrap())
        .unwrap();
    assert_eq!(s.app.claim(&quiet, 0).json()["runId"], doomed.as_str());
    let deadline = Instant::now() + Duration::from_secs(15);
    let failed = loop {
        assert!(Instant::now() < deadline, "the run never failed");
        let run = s
            .app
            .api(Some(&s.key))
            .get(&format!("/api/agent-runs/{doomed}"))
            .json();
        if run["status"] == "failed" {
            break run;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(failed["error"]["type"], "lease_lost");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 times")
    );
}

fn organizations_never_see_each_others_runs(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let mut rival = s.app.rival();
    let (_, rival_key) = rival.create_api_key("rival");
    let (_, rival_token) = rival.create_enrollment_token("rival vm");
    let rival_machine = s
        .app
        .post_json(
            "/api/v1/driver/enroll",
            &json!({ "token": rival_token, "name": "rival-vm" }),
            None,
        )
        .json();
    let rival_credential = rival_machine["credential"].as_str().unwrap().to_owned();

    let ours = s
        .app
        .start_run(&s.key, "default/secret-work", &json!({ "salary": 1 }))
        .run_id();
    assert_eq!(
        s.app
            .api(Some(&rival_key))
            .error_of(&format!("/api/agent-runs/{ours}")),
        (404, "not_found".into())
    );
    let cancel = s.app.post_json_with(
        &format!("/api/agent-runs/{ours}/cancel"),
        &json!({}),
        &[("X-Granite-API-Key", &rival_key)],
    );
    assert_eq!(cancel.api_error(), (404, "not_found".into()));
    assert_eq!(
        s.app
            .start_run(&rival_key, "default/sneaky", &json!({}))
            .api_error(),
        (404, "not_found".into())
    );
    assert_eq!(
        s.app.claim(&rival_credential, 0).status,
        204,
        "a rival machine never claims our run"
    );
    assert_eq!(
        s.app.api(Some(&rival_key)).get("/api/queue").json()["jobs_queued"],
        0
    );
    assert_eq!(
        s.app
            .api(Some(&s.key))
            .get(&format!("/api/agent-runs/{ours}"))
            .json()["status"],
        "queued"
    );
    let theirs = s
        .app
        .start_run(&rival_key, "rival-corp/their-work", &json!({}))
        .run_id();
    assert_eq!(
        s.app.claim(&rival_credential, 0).json()["runId"],
        theirs.as_str()
    );
    assert!(!rival.get("/api-management/jobs").body.contains(&ours));
    let (_, ours_machine) = machine(&mut s, "ours", &[]);
    assert_eq!(s.app.claim(&ours_machine, 0).json()["runId"], ours.as_str());
}

fn queue_numbers_and_metrics_follow_the_work(backend: Backend) {
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let (_, worker) = machine(&mut s, "worker", &["linux"]);
    for i in 0..3 {
        s.app
            .start_run(&s.key, &format!("default/job-{i}"), &json!({}));
    }
    s.app
        .start_run(&s.key, "default/needs-gpu?requires=gpu", &json!({}));
    let queue = s.app.api(Some(&s.key)).get("/api/queue").json();
    assert_eq!(queue["jobs_queued"], 4);
    assert_eq!(queue["jobs_running"], 0);
    assert_eq!(queue["avg_wait_seconds"], Value::Null);
    assert!(queue["oldest_queued_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(queue["active_drivers"], 1);
    assert_eq!(queue["busy_drivers"], 0);

    let section = s
        .admin
        .get_with("/api-management/queue", &[("HX-Request", "true")]);
    assert!(
        section.body.contains("data-metric=\"jobs-queued\">4<"),
        "{}",
        section.body
    );
    assert!(
        section.body.contains("1 queued job cannot run:"),
        "a run no online machine can do is flagged: {}",
        section.body
    );
    assert!(section.body.contains("1 requiring <code>gpu</code>"));

    std::thread::sleep(Duration::from_millis(50));
    let claimed = s.app.claim(&worker, 0).json();
    let queue = s.app.api(Some(&s.key)).get("/api/queue").json();
    assert_eq!(queue["jobs_queued"], 3);
    assert_eq!(queue["jobs_running"], 1);
    assert_eq!(queue["busy_drivers"], 1);
    assert!(
        queue["avg_wait_seconds"].as_f64().unwrap() >= 0.05,
        "{queue}"
    );
    let section = s
        .admin
        .get_with("/api-management/queue", &[("HX-Request", "true")]);
    assert!(
        !section.body.contains("data-metric=\"avg-wait\">—<"),
        "Avg Wait Time has data now"
    );
    s.app.complete(
        &worker,
        claimed["runId"].as_str().unwrap(),
        &json!({ "status": "completed" }),
    );

    // A queued run cancelled counts as finished too.
    let gpu_run = s
        .app
        .start_run(&s.key, "default/cancel-me", &json!({}))
        .run_id();
    let cancelled = s.app.post_json_with(
        &format!("/api/agent-runs/{gpu_run}/cancel"),
        &json!({}),
        &[("X-Granite-API-Key", &s.key)],
    );
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);

    let metrics = s.app.client().get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "Prometheus reads OpenMetrics text"
    );
    assert!(metrics.body.ends_with("# EOF\n"));
    for line in [
        "granite_queue_depth 3",
        "granite_runs{status=\"running\"} 0",
        "granite_run_wait_seconds_count 1",
        "granite_runs_finished_total{status=\"completed\"} 1",
        "granite_runs_finished_total{status=\"cancelled\"} 1",
        "granite_runs_finished_total{status=\"failed\"} 0",
        "granite_drivers{status=\"online\"} 1",
        "granite_http_requests_total{route=\"/api/{org}/{endpoint}\",status=\"202\"} 5",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "metrics lack {line}:\n{}",
            metrics.body
        );
    }
}

/// A run names an organization and API key that exist: a batch with one that does not is refused as
/// a whole (the foreign-key error, nothing stored), and neither can be deleted while a run refers to
/// it. (On PostgreSQL this is checked once per statement, not by a foreign key per run.)
fn a_run_refers_to_an_organization_and_key_that_exist(backend: Backend) {
    use diesel::result::{DatabaseErrorKind, Error};
    use granite::runs::{NewRun, QueuedRow, store_queued};
    let foreign_key_refused = |result: QueryResult<usize>, what: &str| match result {
        Err(Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {}
        other => panic!("{what}: expected a foreign-key refusal, got {other:?}"),
    };
    let db = TestDb::new(backend);
    let mut s = setup(&db, 30);
    let (spare_key_id, _) = s.admin.create_api_key("spare");
    let ours = s.app.start_run(&s.key, "default/kept", &json!({})).run_id();
    let mut conn = s.app.pool.get().unwrap();
    let organization_id: i64 = runs::table
        .filter(runs::public_id.eq(&ours))
        .select(runs::organization_id)
        .first(&mut *conn)
        .unwrap();
    let stored =
        |conn: &mut granite::db::DbConnection| runs::table.count().get_result::<i64>(conn).unwrap();
    let before = stored(&mut conn);
    let new = || NewRun {
        endpoint: "default/orphan".into(),
        parameters: json!({}),
        requires: Vec::new(),
        priority: 0,
    };
    for (organization, key) in [
        (organization_id + 1_000, s.key_id),
        (organization_id, spare_key_id + 1_000),
    ] {
        let batch = [
            QueuedRow::new(organization_id, s.key_id, new()),
            QueuedRow::new(organization, key, new()),
        ];
        foreign_key_refused(
            store_queued(&mut conn, &batch).map(|()| batch.len()),
            &format!("organization {organization}, key {key}"),
        );
    }
    // A finished run is not counted in the queue (whose counts refer to organizations too), so
    // here only the rule for runs answers.
    let finished_in = |organization: i64| {
        format!(
            "INSERT INTO runs (public_id, organization_id, endpoint, parameters, requires, \
             priority, status, created_at, finished_at) VALUES ('run_orphan', {organization}, \
             'default/orphan', '{{}}', '[]', 0, 'cancelled', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    };
    foreign_key_refused(
        diesel::sql_query(finished_in(organization_id + 1_000)).execute(&mut *conn),
        "a finished run of a missing organization",
    );
    assert_eq!(
        stored(&mut conn),
        before,
        "nothing of a refused batch is stored"
    );
    foreign_key_refused(
        diesel::update(runs::table.filter(runs::public_id.eq(&ours)))
            .set(runs::api_key_id.eq(spare_key_id + 1_000))
            .execute(&mut *conn),
        "a run moved to a missing key",
    );

    // A run of a new organization (no users, machines or keys) and one of the spare key (never
    // used), both finished (nothing counted as queued): only the runs hold them, and only until the
    // runs are gone.
    diesel::sql_query(
        "INSERT INTO organizations (id, slug, name, created_at) \
         VALUES (424242, 'bare', 'Bare', CURRENT_TIMESTAMP)",
    )
    .execute(&mut *conn)
    .unwrap();
    for (id, organization, key) in [
        ("run_bare", 424242, None),
        ("run_spare", organization_id, Some(spare_key_id)),
    ] {
        diesel::sql_query(format!(
            "INSERT INTO runs (public_id, organization_id, api_key_id, endpoint, parameters, \
             requires, priority, status, created_at, finished_at) VALUES ('{id}', {organization}, \
             {}, 'default/held', '{{}}', '[]', 0, 'cancelled', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            key.map_or("NULL".to_owned(), |k: i64| k.to_string())
        ))
        .execute(&mut *conn)
        .unwrap();
    }
    let deletes = [
        (
            "run_bare",
            "DELETE FROM organizations WHERE id = 424242".to_owned(),
        ),
        (
            "run_spare",
            format!("DELETE FROM api_keys WHERE id = {spare_key_id}"),
        ),
    ];
    for (run, delete) in &deletes {
        foreign_key_refused(diesel::sql_query(delete).execute(&mut *conn), delete);
        diesel::delete(runs::table.filter(runs::public_id.eq(run)))
            .execute(&mut *conn)
            .unwrap();
        assert_eq!(
            diesel::sql_query(delete).execute(&mut *conn).unwrap(),
            1,
            "{delete}"
        );
    }
    drop(conn);
    assert_eq!(s.app.run_of(&s.key, &ours)["status"], "queued");
}

/// On PostgreSQL a batch of queued runs tells the other replicas in the statement that stores it:
/// the message arrives (on the runs channel, this installation's schema in front) once the runs
/// have committed, and a refused batch sends none.
#[test]
fn a_stored_batch_is_told_to_the_other_replicas_and_a_refused_one_is_not() {
    use granite::runs::{NewRun, QueuedRow, store_queued_telling};
    let db = TestDb::new(Backend::Postgres);
    let s = setup(&db, 30);
    let mut listener = diesel::PgConnection::establish(&db.url_text).unwrap();
    diesel::sql_query("LISTEN granite_runs")
        .execute(&mut listener)
        .unwrap();
    let schema: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_schema()",
    ))
    .get_result(&mut listener)
    .unwrap();
    let organization_id: i64 = runs::table
        .filter(
            runs::public_id.eq(s
                .app
                .start_run(&s.key, "default/first", &json!({}))
                .run_id()),
        )
        .select(runs::organization_id)
        .first(&mut *s.app.pool.get().unwrap())
        .unwrap();
    let batch = |organization: i64| {
        let new = NewRun {
            endpoint: "default/told".into(),
            parameters: json!({}),
            requires: Vec::new(),
            priority: 0,
        };
        [QueuedRow::new(organization, s.key_id, new)]
    };
    let mut conn = s.app.pool.get().unwrap();
    let refused = store_queued_telling(
        &mut conn,
        &batch(organization_id + 1_000),
        &["refused batch".to_owned()],
    );
    assert!(
        refused.is_err(),
        "a run of a missing organization is refused"
    );
    store_queued_telling(
        &mut conn,
        &batch(organization_id),
        &["stored batch".to_owned(), "and more".to_owned()],
    )
    .unwrap();

    // Notifications arrive in commit order: anything the refused batch sent would come first. The
    // run queued through the API above was told in its own words (`n:…`), which are left aside.
    let ours = |heard: &[String]| -> Vec<String> {
        heard
            .iter()
            .filter(|payload| !payload.contains(':'))
            .cloned()
            .collect()
    };
    let mut heard = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ours(&heard).len() < 2 && Instant::now() < deadline {
        for notification in listener.notifications_iter() {
            let notification = notification.unwrap();
            if notification.channel == "granite_runs" {
                heard.push(notification.payload);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        ours(&heard),
        [
            format!("{schema}/stored batch"),
            format!("{schema}/and more")
        ],
        "all heard: {heard:?}"
    );
}
