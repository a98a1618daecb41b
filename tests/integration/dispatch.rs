//! Which machine gets a run when several idle machines can take it: the highest machine priority, and
//! among equals the one idle the longest (round-robin). Drivers long-poll as the reference driver
//! does, on one server and on two PostgreSQL replicas.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(priority_first_then_round_robin);

fn priority_first_then_round_robin(backend: Backend) {
    let db = TestDb::new(backend);
    let app = Arc::new(TestApp::spawn(&db));
    dispatch_in_order(std::slice::from_ref(&app), &app);
}

#[test]
fn priority_first_then_round_robin_across_two_replicas() {
    let db = TestDb::new(Backend::Postgres);
    let first = Arc::new(TestApp::spawn(&db));
    let second = Arc::new(TestApp::spawn_with(&db, |_| {}));
    dispatch_in_order(&[first.clone(), second], &first);
}

/// What each driver thread reports: the machine's name and the run it was given.
type Given = (&'static str, String);

/// Three idle machines that can run anything — `fast` (priority 1), `left` and `right` (priority
/// 0) — each long-polling on one of `servers` in turn. Thirty runs are queued one after the other,
/// each once the previous one was claimed (and, except for `fast`'s in the second half, completed).
fn dispatch_in_order(servers: &[Arc<TestApp>], admin_app: &Arc<TestApp>) {
    let mut admin = admin_app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("dispatch");
    assert_eq!(admin.set_rate_limit(key_id, "0").status, 303);

    let names = ["fast", "left", "right"];
    let mut credentials = Vec::new();
    for name in names {
        let (_, token) = admin.create_enrollment_token(name);
        credentials.push(admin_app.enroll(&token, name).1);
    }
    // An admin gives `fast` priority 1 in its Settings tab.
    let fast = machine_id(admin_app, "fast");
    let token = admin.page_csrf_token();
    let set = admin.post_form(
        &format!("/api-management/machines/{fast}/priority"),
        &[("priority", "1"), ("csrf_token", &token)],
    );
    assert_eq!(set.status, 303, "{}", set.body);

    let (given_tx, given) = mpsc::channel::<Given>();
    let mut go_on = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let (server, credential) = (servers[i % servers.len()].clone(), credentials[i].clone());
        let (go_tx, go_rx) = mpsc::channel::<()>();
        go_on.push(go_tx);
        let given_tx = given_tx.clone();
        std::thread::spawn(move || {
            loop {
                let reply = server.claim(&credential, 10);
                match reply.status {
                    200 => {
                        let run = reply.json()["runId"].as_str().unwrap().to_owned();
                        if given_tx.send((name, run)).is_err() {
                            return;
                        }
                        // Holds the run until told to claim again (a claim gives back what the
                        // machine held).
                        if go_rx.recv().is_err() {
                            return;
                        }
                    }
                    204 => {}
                    other => panic!("{name}: claim answered {other}: {}", reply.body),
                }
                if given_tx.send(("tick", String::new())).is_err() {
                    return;
                }
            }
        });
    }
    let next_given = || loop {
        let (name, run) = given
            .recv_timeout(Duration::from_secs(20))
            .expect("a machine was given the run");
        if name != "tick" {
            return (name, run);
        }
    };
    let complete = |name: &str, run: &str| {
        let i = names.iter().position(|n| *n == name).unwrap();
        let server = &servers[i % servers.len()];
        let done = server.complete(&credentials[i], run, &json!({ "status": "completed" }));
        assert_eq!(done.status, 200, "{}", done.body);
    };

    // While `fast` is idle, it gets every run.
    for n in 0..10 {
        let queued = admin_app.start_run(&key, &format!("default/job-{n}"), &json!({}));
        assert_eq!(queued.status, 202);
        let (name, run) = next_given();
        assert_eq!(name, "fast", "run {n} went to {name}");
        assert_eq!(run, queued.run_id());
        complete(name, &run);
        go_on[0].send(()).unwrap();
    }

    // `fast` busy with a long run: the two others alternate.
    let long = admin_app.start_run(&key, "default/long", &json!({}));
    let (name, held) = next_given();
    assert_eq!((name, held.as_str()), ("fast", long.run_id().as_str()));
    let mut order = Vec::new();
    for n in 0..20 {
        let queued = admin_app.start_run(&key, &format!("default/rr-{n}"), &json!({}));
        let (name, run) = next_given();
        assert_eq!(run, queued.run_id());
        order.push(name);
        complete(name, &run);
        let i = names.iter().position(|n| *n == name).unwrap();
        go_on[i].send(()).unwrap();
    }
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "round-robin: {order:?}");
    }
    assert!(order.iter().all(|name| *name != "fast"), "{order:?}");
    assert_eq!(order.iter().filter(|n| **n == "left").count(), 10);
}

fn machine_id(app: &TestApp, name: &str) -> i64 {
    use diesel::prelude::*;
    use granite::db::schema::machines;
    machines::table
        .filter(machines::name.eq(name))
        .select(machines::id)
        .first(&mut *app.pool.get().unwrap())
        .unwrap()
}

both_backends!(a_queued_run_wakes_the_first_machines_able_to_run_it);

/// Twelve idle machines long-poll, and a thirteenth, last in line, is the only one that can run
/// `gpu` work. Each run queued wakes two waiting claims (the first in line able to run it, and one
/// more), not all thirteen; the `gpu` run wakes the one machine able to run it, which takes it.
fn a_queued_run_wakes_the_first_machines_able_to_run_it(backend: Backend) {
    let db = TestDb::new(backend);
    let app = Arc::new(TestApp::spawn(&db));
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("herd");
    assert_eq!(admin.set_rate_limit(key_id, "0").status, 303);
    let mut machines: Vec<(String, String)> = (0..12)
        .map(|i| {
            let name = format!("vm-{i:02}");
            let (_, token) = admin.create_enrollment_token(&name);
            let credential = app.enroll(&token, &name).1;
            (name, credential)
        })
        .collect();
    let (_, token) = admin.create_enrollment_token("gpu");
    let gpu = app.post_json(
        "/api/v1/driver/enroll",
        &json!({
            "token": token, "name": "gpu", "os_version": "Ubuntu 24.04",
            "capabilities": ["linux", "gpu"], "driver_version": "1.0.0",
        }),
        None,
    );
    assert_eq!(gpu.status, 201, "{}", gpu.body);
    machines.push((
        "gpu".into(),
        gpu.json()["credential"].as_str().unwrap().into(),
    ));

    // `None` after a claim that found nothing: the thread stops once no one listens.
    let (given_tx, given) = mpsc::channel::<Option<(String, String)>>();
    for (name, credential) in machines {
        let (app, given_tx) = (app.clone(), given_tx.clone());
        std::thread::spawn(move || {
            loop {
                let reply = app.claim(&credential, 20);
                match reply.status {
                    200 => {
                        let run = reply.json()["runId"].as_str().unwrap().to_owned();
                        let done =
                            app.complete(&credential, &run, &json!({ "status": "completed" }));
                        assert_eq!(done.status, 200, "{}", done.body);
                        if given_tx.send(Some((name.clone(), run))).is_err() {
                            return;
                        }
                    }
                    204 => {
                        if given_tx.send(None).is_err() {
                            return;
                        }
                    }
                    other => panic!("{name}: claim answered {other}: {}", reply.body),
                }
            }
        });
    }
    // Every claim in line.
    std::thread::sleep(Duration::from_millis(500));

    for (path, able) in [
        ("default/anything-1", None),
        ("default/anything-2", None),
        ("default/render?requires=gpu", Some("gpu")),
        ("default/anything-3", None),
    ] {
        let woken = claims_woken(&app);
        let queued = app.start_run(&key, path, &json!({}));
        assert_eq!(queued.status, 202, "{}", queued.body);
        let (name, run) = given_run(&given);
        assert_eq!(run, queued.run_id());
        if let Some(able) = able {
            assert_eq!(name, able, "only {able} can run {path}");
        }
        // The first in line and one more; for `gpu` work, the one machine able to do it.
        let woken = claims_woken(&app) - woken;
        let expected = if able.is_some() { 1 } else { 2 };
        assert_eq!(woken, expected, "{path}: waiting claims woken, of 13");
    }
}

/// The next run a driver thread was given (skipping claims that found nothing).
fn given_run<T>(given: &mpsc::Receiver<Option<T>>) -> T {
    loop {
        if let Some(run) = given
            .recv_timeout(Duration::from_secs(20))
            .expect("a machine was given the run")
        {
            return run;
        }
    }
}

/// The waiting claims `/metrics` says runs queued have woken on this server.
fn claims_woken(app: &TestApp) -> u64 {
    let metrics = app.client().get("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("granite_claims_woken_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of claims woken: {}", metrics.body))
}

both_backends!(a_paused_machine_first_in_line_holds_no_run_back);

/// `first` has priority and would be first in line, but it is paused while its driver keeps
/// long-polling: a run queued wakes `second` alone, which takes it. Once `first` is resumed, the next
/// run wakes it.
fn a_paused_machine_first_in_line_holds_no_run_back(backend: Backend) {
    let db = TestDb::new(backend);
    let app = Arc::new(TestApp::spawn(&db));
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("paused");
    assert_eq!(admin.set_rate_limit(key_id, "0").status, 303);
    let mut credentials = Vec::new();
    for name in ["first", "second"] {
        let (_, token) = admin.create_enrollment_token(name);
        credentials.push((name, app.enroll(&token, name).1));
    }
    let first = machine_id(&app, "first");
    let token = admin.page_csrf_token();
    let set = admin.post_form(
        &format!("/api-management/machines/{first}/priority"),
        &[("priority", "1"), ("csrf_token", &token)],
    );
    assert_eq!(set.status, 303, "{}", set.body);
    let paused = admin.htmx_post(&format!("/api-management/machines/{first}/pause"), &[]);
    assert_eq!(paused.status, 200, "{}", paused.body);

    let (given_tx, given) = mpsc::channel::<Option<&'static str>>();
    for (name, credential) in credentials {
        let (app, given_tx) = (app.clone(), given_tx.clone());
        std::thread::spawn(move || {
            loop {
                let reply = app.claim(&credential, 20);
                if reply.status == 200 {
                    let _ = given_tx.send(Some(name));
                    return;
                }
                assert_eq!(reply.status, 204, "{name}: {}", reply.body);
                if given_tx.send(None).is_err() {
                    return;
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let woken = claims_woken(&app);
    let queued = app.start_run(&key, "default/job", &json!({}));
    assert_eq!(queued.status, 202, "{}", queued.body);
    assert_eq!(given_run(&given), "second");
    assert_eq!(claims_woken(&app) - woken, 1, "only second is in line");

    // Resumed, `first` is woken with the whole line, and the next run wakes it alone.
    let woken = claims_woken(&app);
    let resumed = admin.htmx_post(&format!("/api-management/machines/{first}/resume"), &[]);
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(claims_woken(&app) - woken, 1, "first's waiting claim");
    let woken = claims_woken(&app);
    let queued = app.start_run(&key, "default/next", &json!({}));
    assert_eq!(queued.status, 202, "{}", queued.body);
    assert_eq!(given_run(&given), "first");
    assert_eq!(claims_woken(&app) - woken, 1, "first, no longer passed by");
}
