//! Jobs in the dashboard: each run's page with every attempt and its machine's name (removed machines
//! included), and Cancel and Retry for admins, audited.

use serde_json::json;

use granite::users::Role;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    a_run_page_shows_every_attempt_with_machine_names,
    admins_cancel_and_retry_runs_from_the_dashboard,
    the_list_counts_each_status_up_to_a_thousand,
    the_list_of_every_status_pages_newest_first,
);

/// The jobs list counts the runs of each status, of this organization only, and says "more than"
/// past a thousand rather than counting a long history.
fn the_list_counts_each_status_up_to_a_thousand(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("caller");
    assert_eq!(admin.set_rate_limit(key_id, "0").status, 303, "unlimited");
    let (_, token) = admin.create_enrollment_token("a");
    let (_, machine) = app.enroll(&token, "win-07");
    let queue = |n: usize| {
        for _ in 0..n {
            assert_eq!(app.start_run(&key, "default/sync", &json!({})).status, 202);
        }
    };
    queue(3);
    let run = app.claim(&machine, 0).json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    app.complete(
        &machine,
        &run,
        &json!({ "status": "completed", "result": {} }),
    );
    let counted = |admin: &mut crate::helpers::Client, query: &str| {
        let page = admin.get(&format!("/api-management/jobs{query}"));
        assert_eq!(page.status, 200, "{}", page.body);
        page.body
            .split("aria-label=\"Job pages\">")
            .nth(1)
            .and_then(|nav| nav.split("<span>").nth(1))
            .and_then(|span| span.split("</span>").next())
            .unwrap_or_else(|| panic!("no count on {query}: {}", page.body))
            .to_owned()
    };
    assert_eq!(counted(&mut admin, ""), "3 jobs");
    assert_eq!(counted(&mut admin, "?status=queued"), "2 jobs");
    assert_eq!(counted(&mut admin, "?status=completed"), "1 job");
    let mut rival = app.rival();
    assert!(
        rival.get("/api-management/jobs").body.contains("No jobs"),
        "another organization's runs are not counted"
    );

    queue(998);
    assert_eq!(
        counted(&mut admin, ""),
        "More than 1,000 jobs — filter by status to narrow"
    );
    assert_eq!(counted(&mut admin, "?status=queued"), "1,000 jobs");
    // The Queue Status tile groups its thousands too.
    let queue_status = admin.get_with("/api-management/queue", &[("HX-Request", "true")]);
    assert!(
        queue_status
            .body
            .contains(r#"<dd data-metric="jobs-queued">1,000</dd>"#),
        "{}",
        queue_status.body
    );
    assert!(
        admin
            .get("/api-management/jobs?status=queued&page=20")
            .body
            .contains("Page 20 of 20")
    );
}

fn a_run_page_shows_every_attempt_with_machine_names(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, first_token) = admin.create_enrollment_token("a");
    let (_, second_token) = admin.create_enrollment_token("b");
    let (first_id, first) = app.enroll(&first_token, "win-07");
    let (second_id, second) = app.enroll(&second_token, "win-08");

    // win-07 finishes one run, takes another and gives it back; win-08 finishes that one.
    let earlier = app
        .start_run(&key, "default/earlier", &json!({ "n": 1 }))
        .run_id();
    assert_eq!(app.claim(&first, 0).json()["runId"], earlier.as_str());
    app.complete(
        &first,
        &earlier,
        &json!({ "status": "completed", "result": {"rows": 3} }),
    );
    // win-08, idle the longest, would get the next run: paused, it leaves it to win-07.
    let path = |action: &str| format!("/api-management/machines/{second_id}/{action}");
    assert_eq!(admin.htmx_post(&path("pause"), &[]).status, 200);
    let id = app
        .start_run(
            &key,
            "default/invoice-sync?priority=4&requires=linux",
            &json!({ "invoice": 42 }),
        )
        .run_id();
    assert_eq!(app.claim(&first, 0).json()["runId"], id.as_str());
    assert_eq!(admin.htmx_post(&path("resume"), &[]).status, 200);
    let released = app.post_json(
        &format!("/api/v1/driver/jobs/{id}/release"),
        &json!({}),
        Some(&first),
    );
    assert_eq!(released.status, 200, "{}", released.body);
    assert_eq!(app.claim(&second, 0).json()["runId"], id.as_str());
    app.complete(&second, &id, &json!({ "status": "failed", "error": {"type": "timeout", "message": "the portal never answered"} }));

    let page = admin.get(&format!("/api-management/jobs/{id}"));
    assert_eq!(page.status, 200, "{}", page.body);
    for shown in [
        "invoice-sync",
        "Failed",
        "&#34;invoice&#34;: 42",
        "the portal never answered",
        ">linux<",
        "data-attempt=\"1\"",
        "data-attempt=\"2\"",
        "Given back",
        ">win-07<",
        ">win-08<",
    ] {
        assert!(
            page.body.contains(shown),
            "{shown} on the run page:\n{}",
            page.body
        );
    }
    assert!(!page.body.contains("data-attempt=\"3\""));

    // The jobs list names machines, and keeps the name of a removed one.
    let list = admin.get("/api-management/jobs");
    assert!(list.body.contains(">win-08<"), "{}", list.body);
    assert!(!list.body.contains("machine 1<"), "names, not ids");
    let removed = admin.htmx_post(&format!("/api-management/machines/{first_id}/remove"), &[]);
    assert_eq!(removed.status, 200);
    let list = admin.get("/api-management/jobs");
    assert!(list.body.contains(">win-07 (removed)<"), "{}", list.body);
    let page = admin.get(&format!("/api-management/jobs/{earlier}"));
    assert!(page.body.contains(">win-07 (removed)<"));
    let machine = admin.get(&format!("/api-management/machines/{first_id}"));
    assert_eq!(
        machine.status, 200,
        "a removed machine's page says so, never a bare Not found"
    );
    assert!(machine.body.contains("An admin removed this machine"));
    assert!(
        !machine.body.contains("Remove machine win-07"),
        "and offers nothing to do"
    );
    assert_eq!(
        admin
            .get("/api-management/jobs/run_000000000000000000000000")
            .status,
        404
    );
}

fn admins_cancel_and_retry_runs_from_the_dashboard(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("vm");
    let (_, credential) = app.enroll(&token, "vm-1");
    app.add_user(
        "viewer@example.com",
        "viewer password 1",
        Role::Viewer,
        None,
    );
    let mut viewer = app.signed_in("viewer@example.com", "viewer password 1");

    // Cancel a running run: its machine hears of it.
    let running = app
        .start_run(&key, "default/long-job", &json!({ "x": 1 }))
        .run_id();
    assert_eq!(app.claim(&credential, 0).json()["runId"], running.as_str());
    assert_eq!(
        viewer
            .htmx_post(&format!("/api-management/jobs/{running}/cancel"), &[])
            .status,
        403
    );
    let page = admin.get(&format!("/api-management/jobs/{running}"));
    assert!(
        page.body
            .contains(&format!("aria-label=\"Cancel run {running}\""))
    );
    assert!(
        !page.body.contains("aria-label=\"Retry run"),
        "a running run is not retried"
    );
    let cancelled = admin.htmx_post(&format!("/api-management/jobs/{running}/cancel"), &[]);
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(
        cancelled.header("hx-redirect"),
        Some(format!("/api-management/jobs/{running}").as_str())
    );
    assert_eq!(app.run_of(&key, &running)["status"], "cancelled");
    let heard = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({ "status": "busy", "current_run_id": running }),
        Some(&credential),
    );
    assert_eq!(heard.json()["cancel"], json!([running]));
    assert_eq!(
        admin
            .htmx_post(&format!("/api-management/jobs/{running}/cancel"), &[])
            .status,
        400,
        "a finished run cannot be cancelled again"
    );

    // Retry it: a new run with the same parameters, linked both ways.
    assert_eq!(
        viewer
            .htmx_post(&format!("/api-management/jobs/{running}/retry"), &[])
            .status,
        403
    );
    let retried = admin.htmx_post(&format!("/api-management/jobs/{running}/retry"), &[]);
    assert_eq!(retried.status, 200, "{}", retried.body);
    let new_page = retried.header("hx-redirect").unwrap().to_owned();
    let new_id = new_page.rsplit('/').next().unwrap().to_owned();
    assert_ne!(new_id, running);
    let new_run = app.run_of(&key, &new_id);
    assert_eq!(new_run["status"], "queued");
    assert_eq!(new_run["endpoint"], "long-job");
    assert_eq!(new_run["parameters"], json!({ "x": 1 }));
    assert!(
        admin
            .get(&new_page)
            .body
            .contains(&format!("/api-management/jobs/{running}\""))
    );
    assert!(
        admin
            .get(&format!("/api-management/jobs/{running}"))
            .body
            .contains(&new_id)
    );
    assert_eq!(
        admin
            .htmx_post(&format!("/api-management/jobs/{new_id}/retry"), &[])
            .status,
        400,
        "only failed or cancelled runs are retried"
    );
    assert_eq!(app.audit_count("run_cancelled"), 1);
    assert_eq!(app.audit_count("run_retried"), 1);
}

/// The list of every status merges the statuses newest first (runs of one moment by id, newest
/// first): page after page it gives each run once, in the order one status's list gives it.
fn the_list_of_every_status_pages_newest_first(backend: Backend) {
    use diesel::prelude::*;
    use granite::db::schema::runs;
    use granite::runs::{NewRun, QueuedRow, list, store_queued};
    use granite::status::RunStatus;
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("caller");
    let first = app.start_run(&key, "default/first", &json!({})).run_id();
    let mut conn = app.pool.get().unwrap();
    let organization_id: i64 = runs::table
        .filter(runs::public_id.eq(&first))
        .select(runs::organization_id)
        .first(&mut *conn)
        .unwrap();
    let batch: Vec<QueuedRow> = (0..40)
        .map(|_| {
            let new = NewRun {
                endpoint: "default/listed".into(),
                parameters: json!({}),
                requires: Vec::new(),
                priority: 0,
            };
            QueuedRow::new(organization_id, key_id, new)
        })
        .collect();
    store_queued(&mut conn, &batch).unwrap();
    // Statuses in turn and ages out of insertion order, three runs to each second.
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let ids: Vec<i64> = runs::table
        .filter(runs::organization_id.eq(organization_id))
        .order(runs::id)
        .select(runs::id)
        .load(&mut *conn)
        .unwrap();
    for (n, id) in ids.iter().enumerate() {
        diesel::update(runs::table.find(id))
            .set((
                runs::status.eq(RunStatus::ALL[n % 5]),
                runs::created_at.eq(base + chrono::Duration::seconds(((n * 7) % 41 / 3) as i64)),
            ))
            .execute(&mut *conn)
            .unwrap();
    }
    let mut expected: Vec<(chrono::NaiveDateTime, i64)> = runs::table
        .filter(runs::organization_id.eq(organization_id))
        .select((runs::created_at, runs::id))
        .load(&mut *conn)
        .unwrap();
    expected.sort_by(|a, b| b.cmp(a));
    let mut listed = Vec::new();
    for page in 0..7 {
        let (runs, matching) = list(&mut conn, organization_id, None, page * 7, 7).unwrap();
        assert_eq!(matching.count, 41);
        listed.extend(runs.iter().map(|r| (r.created_at, r.id)));
    }
    assert_eq!(listed, expected);
    for status in RunStatus::ALL {
        let (of_status, _) = list(&mut conn, organization_id, Some(status), 0, 50).unwrap();
        let merged: Vec<_> = listed
            .iter()
            .copied()
            .filter(|(_, id)| of_status.iter().any(|r| r.id == *id))
            .collect();
        let own: Vec<_> = of_status.iter().map(|r| (r.created_at, r.id)).collect();
        assert_eq!(own, merged, "{status:?}");
        assert!(of_status.iter().all(|r| r.status == status));
    }
}
