//! The heartbeat is authoritative about what a driver holds: a run its machine no longer reports goes
//! back to the queue at once, and a driver reporting a run that is no longer its own is told to stop.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use granite::users::Role;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    a_run_its_machine_no_longer_reports_goes_back_at_once,
    a_driver_is_told_to_stop_a_run_that_is_no_longer_its_own,
    a_paused_machine_finishes_its_run_and_takes_no_new_one,
    a_driver_announces_itself_when_it_starts,
);

fn beat(app: &TestApp, credential: &str, running: Option<&str>) -> Value {
    let body = match running {
        Some(run) => json!({ "status": "busy", "current_run_id": run }),
        None => json!({ "status": "idle" }),
    };
    let reply = app.post_json("/api/v1/driver/heartbeat", &body, Some(credential));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// Past the grace that covers a claim's answer still on its way to the driver.
fn after_the_handover_grace() {
    std::thread::sleep(Duration::from_millis(3_200));
}

fn a_run_its_machine_no_longer_reports_goes_back_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    // Offline only after five minutes: what brings the run back here is the heartbeat alone.
    let app = TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.offline_after_secs = 300;
    });
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("vm");
    let (machine_id, credential) = app.enroll(&token, "vm-restarting");
    let id = app
        .start_run(&key, "default/handed-to-a-gone-long-poll", &json!({}))
        .json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The long-poll's answer never reached the driver: it restarts and heartbeats holding nothing.
    assert_eq!(app.claim(&credential, 0).json()["runId"], id.as_str());
    assert_eq!(beat(&app, &credential, None)["cancel"], json!([]));
    assert_eq!(
        app.run_of(&key, &id)["status"],
        "running",
        "a run handed out a moment ago is not taken back yet"
    );
    after_the_handover_grace();
    assert_eq!(beat(&app, &credential, None)["cancel"], json!([]));
    let run = app.run_of(&key, &id);
    assert_eq!(run["status"], "queued", "back in the queue at once: {run}");
    assert_eq!(run["machineId"], Value::Null);
    assert_eq!(
        admin.machine_list("").machine_status(machine_id).as_deref(),
        Some("online"),
        "the machine is free again, not removed"
    );
    // The same machine takes it again and finishes it; this was its second attempt.
    assert_eq!(app.claim(&credential, 0).json()["runId"], id.as_str());
    assert_eq!(beat(&app, &credential, Some(&id))["cancel"], json!([]));
    let done = app.complete(&credential, &id, &json!({ "status": "completed" }));
    assert_eq!(done.json()["status"], "completed", "{}", done.body);
}

fn a_driver_is_told_to_stop_a_run_that_is_no_longer_its_own(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, first_token) = admin.create_enrollment_token("a");
    let (_, second_token) = admin.create_enrollment_token("b");
    let (_, first) = app.enroll(&first_token, "vm-a");
    let (_, second) = app.enroll(&second_token, "vm-b");
    let id = app.start_run(&key, "default/contested", &json!({})).json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.claim(&first, 0).json()["runId"], id.as_str());
    after_the_handover_grace();
    // vm-a reports nothing (it lost the run); the run goes to vm-b.
    beat(&app, &first, None);
    assert_eq!(app.claim(&second, 0).json()["runId"], id.as_str());
    // vm-a comes back saying it runs the run: it is vm-b's now, so vm-a must stop.
    assert_eq!(beat(&app, &first, Some(&id))["cancel"], json!([id]));
    assert_eq!(beat(&app, &second, Some(&id))["cancel"], json!([]));
    assert_eq!(app.run_of(&key, &id)["status"], "running");
    // A run nobody knows is stopped too.
    let unknown = "run_000000000000000000000000";
    assert_eq!(
        beat(&app, &second, Some(unknown))["cancel"],
        json!([unknown])
    );
    // vm-b took its run a moment ago, so a heartbeat naming another run does not take it back yet.
    let run = app.run_of(&key, &id);
    assert_eq!(
        run["status"], "running",
        "within the grace it is kept: {run}"
    );
}

fn a_paused_machine_finishes_its_run_and_takes_no_new_one(backend: Backend) {
    let db = TestDb::new(backend);
    let app = std::sync::Arc::new(TestApp::spawn(&db));
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("vm");
    let (machine_id, credential) = app.enroll(&token, "vm-draining");
    let queue = |name: &str| {
        app.start_run(&key, &format!("default/{name}"), &json!({}))
            .json()["runId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = queue("first");
    let second = queue("second");
    assert_eq!(app.claim(&credential, 0).json()["runId"], first.as_str());

    // A viewer may not pause; an admin pauses from the row, which comes back marked Paused.
    app.add_user(
        "viewer@example.com",
        "viewer password 1",
        Role::Viewer,
        None,
    );
    let mut viewer = app.signed_in("viewer@example.com", "viewer password 1");
    let refused = viewer.htmx_post(&format!("/api-management/machines/{machine_id}/pause"), &[]);
    assert_eq!(refused.status, 403);
    let row = admin.htmx_post(&format!("/api-management/machines/{machine_id}/pause"), &[]);
    assert_eq!(row.status, 200, "{}", row.body);
    assert!(row.body.contains("data-paused=\"true\""), "{}", row.body);
    assert!(
        row.body.contains(">Paused<"),
        "Paused is shown as text: {}",
        row.body
    );
    assert!(
        row.body
            .contains("aria-label=\"Resume machine vm-draining\"")
    );
    assert!(
        admin.machine_list("").body.contains("data-paused=\"true\""),
        "the list shows it too"
    );

    // It finishes the run it has, hears that it is paused, and is handed nothing more.
    let heard = beat(&app, &credential, Some(&first));
    assert_eq!(heard["paused"], true);
    assert_eq!(heard["cancel"], json!([]));
    let done = app.complete(&credential, &first, &json!({ "status": "completed" }));
    assert_eq!(done.json()["status"], "completed");
    assert_eq!(app.claim(&credential, 0).status, 204, "paused: no new run");
    assert_eq!(app.run_of(&key, &second)["status"], "queued");

    // A claim waiting while paused is answered the moment the machine is resumed.
    let waiting = {
        let (app, credential) = (app.clone(), credential.clone());
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            (app.claim(&credential, 10), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let row = admin.htmx_post(
        &format!("/api-management/machines/{machine_id}/resume"),
        &[],
    );
    assert_eq!(row.status, 200, "{}", row.body);
    assert!(row.body.contains("data-paused=\"false\""));
    let (claimed, waited) = waiting.join().unwrap();
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    assert_eq!(claimed.json()["runId"], second.as_str());
    assert!(
        waited < Duration::from_secs(5),
        "woken by the resume, not the timeout: {waited:?}"
    );
    assert_eq!(beat(&app, &credential, Some(&second))["paused"], false);
    assert_eq!(app.audit_count("machine_paused"), 1);
    assert_eq!(app.audit_count("machine_resumed"), 1);
}

fn a_driver_announces_itself_when_it_starts(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("vm");
    let (machine_id, credential) = app.enroll(&token, "vm-announcing");
    let sap_run = app
        .start_run(&key, "default/post-invoice?requires=sap", &json!({}))
        .json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.claim(&credential, 0).status,
        204,
        "enrolled without sap"
    );

    // A bad announcement is refused whole, naming the field.
    let refused = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({ "status": "idle", "capabilities": ["sap", "has space"], "driver_version": "9.9.9" }),
        Some(&credential),
    );
    assert_eq!(refused.api_error(), (400, "invalid_request".to_owned()));
    assert_eq!(refused.json()["field"], "capabilities");
    let page = admin.get(&format!("/api-management/machines/{machine_id}"));
    assert!(!page.body.contains("9.9.9"), "nothing was recorded");

    let started = chrono::Utc::now() - chrono::Duration::minutes(5);
    let announced = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({
            "status": "idle", "capabilities": ["windows", "sap"], "os_version": "Windows Server 2022",
            "driver_version": "2.1.0", "started_at": started.to_rfc3339(),
        }),
        Some(&credential),
    );
    assert_eq!(announced.status, 200, "{}", announced.body);
    let page = admin.get(&format!("/api-management/machines/{machine_id}"));
    for shown in ["2.1.0", "Windows Server 2022", "5 minutes ago"] {
        assert!(page.body.contains(shown), "{shown} on the detail page");
    }
    let capabilities = admin.get(&format!(
        "/api-management/machines/{machine_id}?tab=capabilities"
    ));
    assert!(
        capabilities.body.contains(">sap</a>"),
        "sap on the Capabilities tab"
    );
    assert_eq!(
        app.claim(&credential, 0).json()["runId"],
        sap_run.as_str(),
        "the latest capabilities count"
    );
}
