//! Enrollment tokens, driver enrollment and heartbeats, and the VM Machines section.

use std::sync::{Arc, Barrier};

use diesel::prelude::*;
use granite::db::schema::{enrollment_tokens, machines, runs};
use granite::machines::MachineProfile;
use granite::secret::{Secret, SecretKind, sha256_hex};
use granite::users::Role;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    a_token_is_shown_once_with_the_command_that_uses_it,
    token_form_input_is_checked,
    enrolling_creates_the_machine_and_spends_the_token,
    enrollment_refuses_bad_tokens_with_contract_errors,
    bad_enrollment_bodies_change_nothing,
    heartbeats_keep_a_machine_online,
    machines_go_offline_without_contact,
    removing_a_machine_refuses_its_credential_and_requeues_its_job,
    fifty_simultaneous_enrollments_with_one_token_make_one_machine,
    other_organizations_cannot_see_or_touch_tokens_or_machines,
    machine_supplied_markup_is_shown_as_text,
    the_list_filters_searches_and_pages,
    viewers_see_the_fleet_but_cannot_change_it,
    the_detail_page_tells_where_a_machine_came_from,
);

fn a_token_is_shown_once_with_the_command_that_uses_it(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let reply = admin.htmx_post(
        "/api-management/enrollment-tokens",
        &[("description", "rack 4"), ("lifetime_hours", "24")],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let secret = reply.new_secret().unwrap();
    assert!(
        Secret::parse(SecretKind::EnrollmentToken, &secret).is_ok(),
        "{secret}"
    );
    let command = format!("granite driver enroll --server {}", app.url(""));
    assert!(
        reply.body.contains(&format!(">{command}</pre>")),
        "the enroll command names this server: {}",
        reply.body
    );
    assert_eq!(
        reply.body.matches(&secret).count(),
        1,
        "the token is shown once, beside its copy button, and kept out of the command"
    );
    let id = reply.row_ids()[0];

    let page = admin.get("/api-management");
    assert!(!page.body.contains(&secret), "never shown again");
    assert!(
        page.body
            .contains(&format!("<code>{}…</code>", &secret[..11]))
    );
    assert!(page.body.contains("rack 4"));
    assert!(
        page.body
            .contains(&format!("aria-label=\"Revoke token {}…\"", &secret[..11]))
    );
    assert!(page.body.contains("data-state=\"active\""));

    let (hash, created, expires): (String, chrono::NaiveDateTime, chrono::NaiveDateTime) =
        enrollment_tokens::table
            .find(id)
            .select((
                enrollment_tokens::secret_hash,
                enrollment_tokens::created_at,
                enrollment_tokens::expires_at,
            ))
            .first(&mut *app.pool.get().unwrap())
            .unwrap();
    assert_eq!(hash, sha256_hex(&secret));
    assert_eq!(expires - created, chrono::Duration::hours(24));
    let audited = app.audit_count("enrollment_token_created");
    assert_eq!(audited, 1);
}

fn token_form_input_is_checked(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.enrollment_ttl_hours = 6;
    });
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let long = "d".repeat(201);
    for (fields, message) in [
        (
            vec![("description", long.as_str()), ("lifetime_hours", "24")],
            "at most 200 characters",
        ),
        (
            vec![("description", "x"), ("lifetime_hours", "169")],
            "between 1 hour and 7 days",
        ),
        (
            vec![("description", "x"), ("lifetime_hours", "0")],
            "between 1 hour and 7 days",
        ),
    ] {
        let reply = admin.htmx_post("/api-management/enrollment-tokens", &fields);
        assert_eq!(reply.status, 422);
        assert!(reply.body.contains(message), "{}", reply.body);
        assert!(reply.new_secret().is_none());
    }
    let count: i64 = enrollment_tokens::table
        .count()
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(count, 0, "bad input changes nothing");
    // Without a lifetime, GRANITE_ENROLLMENT_TTL_HOURS applies; the form preselects it.
    let reply = admin.htmx_post("/api-management/enrollment-tokens", &[("description", "")]);
    let id = reply.row_ids()[0];
    let (created, expires): (chrono::NaiveDateTime, chrono::NaiveDateTime) =
        enrollment_tokens::table
            .find(id)
            .select((enrollment_tokens::created_at, enrollment_tokens::expires_at))
            .first(&mut *app.pool.get().unwrap())
            .unwrap();
    assert_eq!(expires - created, chrono::Duration::hours(6));
    assert!(
        admin
            .get("/api-management")
            .body
            .contains("<option value=\"6\" selected>6 hours</option>")
    );
    let week = admin.htmx_post(
        "/api-management/enrollment-tokens",
        &[("lifetime_hours", "168")],
    );
    assert_eq!(week.status, 200, "7 days is the longest lifetime");
}

fn enrolling_creates_the_machine_and_spends_the_token(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (token_id, token) = admin.create_enrollment_token("first machine");
    let reply = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": "vm-01", "os_version": "Windows 11 23H2", "capabilities": ["windows", "chrome"], "driver_version": "1.4.2" }),
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    let credential = body["credential"].as_str().unwrap().to_owned();
    assert!(Secret::parse(SecretKind::MachineCredential, &credential).is_ok());
    assert_eq!(body["organization"]["slug"], "default");
    assert_eq!(body["heartbeat_interval_seconds"], 10);
    let machine_id = body["machine_id"].as_i64().unwrap();

    let mut conn = app.pool.get().unwrap();
    let (name, ip, caps, hash, token_ref): (String, String, String, String, Option<i64>) =
        machines::table
            .find(machine_id)
            .select((
                machines::name,
                machines::ip_address,
                machines::capabilities,
                machines::credential_hash,
                machines::enrollment_token_id,
            ))
            .first(&mut *conn)
            .unwrap();
    assert_eq!(
        (name.as_str(), ip.as_str()),
        ("vm-01", "127.0.0.1"),
        "the IP comes from the request when not given"
    );
    assert_eq!(caps, "[\"windows\",\"chrome\"]");
    assert_eq!(
        hash,
        sha256_hex(&credential),
        "only the credential's hash is kept"
    );
    assert_eq!(token_ref, Some(token_id));
    let (used, machine_ref): (Option<chrono::NaiveDateTime>, Option<i64>) =
        enrollment_tokens::table
            .find(token_id)
            .select((enrollment_tokens::used_at, enrollment_tokens::machine_id))
            .first(&mut *conn)
            .unwrap();
    assert!(used.is_some());
    assert_eq!(machine_ref, Some(machine_id));

    // The page: the machine is Online, the token Used and linked to it.
    let page = admin.get("/api-management");
    assert_eq!(page.machine_status(machine_id).as_deref(), Some("online"));
    assert!(page.body.contains("data-state=\"used\""));
    assert!(page.body.contains(&format!(
        "<a href=\"/api-management/machines/{machine_id}\">vm-01</a>"
    )));
    assert!(
        page.body.contains("data-count=\"online\">1<"),
        "{}",
        page.body
    );

    let again = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": "vm-02" }),
        None,
    );
    assert_eq!(again.api_error(), (410, "token_used".into()));
}

fn enrollment_refuses_bad_tokens_with_contract_errors(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let enroll = |token: &str| {
        app.post_json(
            "/api/v1/driver/enroll",
            &json!({ "token": token, "name": "vm" }),
            None,
        )
        .api_error()
    };

    assert_eq!(enroll("enroll_nope"), (401, "malformed_token".into()));
    let api_key = Secret::generate(SecretKind::ApiKey);
    assert_eq!(enroll(api_key.expose()), (401, "malformed_token".into()));
    let unknown = Secret::generate(SecretKind::EnrollmentToken);
    assert_eq!(enroll(unknown.expose()), (401, "invalid_token".into()));

    let (expired_id, expired) = admin.create_enrollment_token("expires");
    diesel::update(enrollment_tokens::table.find(expired_id))
        .set(
            enrollment_tokens::expires_at
                .eq(chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1)),
        )
        .execute(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(enroll(&expired), (410, "token_expired".into()));
    assert!(
        admin
            .get("/api-management")
            .body
            .contains("data-state=\"expired\"")
    );

    let (revoked_id, revoked) = admin.create_enrollment_token("revoke me");
    let row = admin.htmx_post(
        &format!("/api-management/enrollment-tokens/{revoked_id}/revoke"),
        &[],
    );
    assert_eq!(row.status, 200);
    assert!(
        row.body.starts_with(&format!(
            "<tr id=\"token-{revoked_id}\" data-id=\"{revoked_id}\" data-state=\"revoked\">"
        )),
        "{}",
        row.body
    );
    assert!(
        !row.body.contains("Revoke token"),
        "a revoked token has no trash icon"
    );
    assert_eq!(enroll(&revoked), (410, "token_revoked".into()));
    assert_eq!(
        admin
            .htmx_post(
                &format!("/api-management/enrollment-tokens/{revoked_id}/revoke"),
                &[]
            )
            .status,
        400
    );
    let audited = app.audit_count("enrollment_token_revoked");
    assert_eq!(audited, 1);
    let machines: i64 = machines::table
        .count()
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(machines, 0);
}

fn bad_enrollment_bodies_change_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("patient");
    for body in [
        json!({ "token": token }),
        json!({ "token": token, "name": "" }),
        json!({ "token": token, "name": "x".repeat(101) }),
        json!({ "token": token, "name": "vm", "ip_address": "999.1.1.1" }),
        json!({ "token": token, "name": "vm", "capabilities": ["has space"] }),
        json!({ "token": token, "name": "vm", "capabilities": "windows" }),
        json!({ "token": token, "name": "vm", "os_version": "o".repeat(101) }),
        json!([1, 2, 3]),
    ] {
        let reply = app.post_json("/api/v1/driver/enroll", &body, None);
        assert_eq!(reply.api_error(), (400, "invalid_request".into()), "{body}");
        assert!(
            !reply.body.contains(&token),
            "the error never echoes the token"
        );
    }
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = app.url("/api/v1/driver/enroll");
    let text = agent
        .post(&url)
        .header("Content-Type", "text/plain")
        .send(format!("{{\"token\":\"{token}\",\"name\":\"vm\"}}"))
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);
    let huge = format!(
        "{{\"token\":\"{token}\",\"name\":\"vm\",\"os_version\":\"{}\"}}",
        "x".repeat(1_100_000)
    );
    let big = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send(huge)
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    // The token is still unspent.
    app.enroll(&token, "vm-ok");
}

fn heartbeats_keep_a_machine_online(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("");
    let (machine_id, credential) = app.enroll(&token, "vm-hb");
    let before: Option<chrono::NaiveDateTime> = machines::table
        .find(machine_id)
        .select(machines::last_seen_at)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let reply = app.heartbeat(&credential);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({ "heartbeat_interval_seconds": 10, "cancel": [], "paused": false })
    );
    let stored = || -> (Option<chrono::NaiveDateTime>, String) {
        machines::table
            .find(machine_id)
            .select((machines::last_seen_at, machines::reported_status))
            .first(&mut *app.pool.get().unwrap())
            .unwrap()
    };
    // A heartbeat that changes nothing but the time of contact is written with the next batch,
    // within about a second.
    let written_within = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    while stored().0 <= before {
        assert!(
            std::time::Instant::now() < written_within,
            "the heartbeat's contact was written within a second or so"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(stored().1, "idle");

    // A change of state is written at once.
    let busy = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({ "status": "busy", "current_run_id": null }),
        Some(&credential),
    );
    assert_eq!(busy.status, 200);
    assert_eq!(stored().1, "busy");
    let bad = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({ "status": "sleepy" }),
        Some(&credential),
    );
    assert_eq!(bad.api_error(), (400, "invalid_request".into()));
    let heartbeat = |bearer: Option<&str>| {
        app.post_json(
            "/api/v1/driver/heartbeat",
            &json!({ "status": "idle" }),
            bearer,
        )
        .api_error()
    };
    assert_eq!(heartbeat(None), (401, "missing_credential".into()));
    assert_eq!(
        heartbeat(Some("gd_bad")),
        (401, "malformed_credential".into())
    );
    assert_eq!(
        heartbeat(Some(
            Secret::generate(SecretKind::MachineCredential).expose()
        )),
        (401, "invalid_credential".into())
    );
    assert_eq!(
        heartbeat(Some(&token)),
        (401, "malformed_credential".into())
    );
}

fn machines_go_offline_without_contact(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.offline_after_secs = 1;
    });
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("");
    let (machine_id, credential) = app.enroll(&token, "vm-quiet");
    assert_eq!(
        admin.machine_list("").machine_status(machine_id).as_deref(),
        Some("online")
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let list = admin.machine_list("");
    assert_eq!(list.machine_status(machine_id).as_deref(), Some("offline"));
    assert!(list.body.contains("data-count=\"offline\">1<"));
    assert!(
        list.body.contains(">Offline</span>"),
        "the status is written out, not only coloured"
    );
    assert_eq!(app.heartbeat(&credential).status, 200);
    assert_eq!(
        admin.machine_list("").machine_status(machine_id).as_deref(),
        Some("online")
    );
    // Active Drivers follows.
    let queue = admin.get_with("/api-management/queue", &[("HX-Request", "true")]);
    assert!(
        queue.body.contains("data-metric=\"active-drivers\">1<"),
        "{}",
        queue.body
    );
}

fn removing_a_machine_refuses_its_credential_and_requeues_its_job(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("");
    let (machine_id, credential) = app.enroll(&token, "vm-doomed");
    // A job it is running (the jobs API arrives later; the row is written directly).
    let now = chrono::Utc::now().naive_utc();
    let run_id: i64 = diesel::insert_into(runs::table)
        .values((
            runs::public_id.eq("run_test1"),
            runs::organization_id.eq(1i64),
            runs::endpoint.eq("invoice-sync"),
            runs::status.eq("running"),
            runs::machine_id.eq(machine_id),
            runs::attempts.eq(1),
            runs::created_at.eq(now),
            runs::started_at.eq(now),
        ))
        .returning(runs::id)
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap();
    diesel::update(machines::table.find(machine_id))
        .set(machines::current_run_id.eq(run_id))
        .execute(&mut *app.pool.get().unwrap())
        .unwrap();
    let list = admin.machine_list("");
    assert_eq!(list.machine_status(machine_id).as_deref(), Some("busy"));
    assert!(
        list.body.contains("invoice-sync (run_test1)"),
        "Busy shows its Current Job"
    );

    let reply = admin.htmx_post(
        &format!("/api-management/machines/{machine_id}/remove"),
        &[],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "");
    assert_eq!(
        app.heartbeat(&credential).api_error(),
        (401, "machine_removed".into())
    );
    assert_eq!(admin.machine_list("").machine_status(machine_id), None);
    let (status, machine): (String, Option<i64>) = runs::table
        .find(run_id)
        .select((runs::status, runs::machine_id))
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(
        (status.as_str(), machine),
        ("queued", None),
        "its running job is back in the queue"
    );
    let audited = app.audit_count("machine_removed");
    assert_eq!(audited, 1);
    assert_eq!(
        admin
            .htmx_post(
                &format!("/api-management/machines/{machine_id}/remove"),
                &[]
            )
            .status,
        404
    );
    // Its page stays, saying what happened (history links lead here), with nothing left to do.
    let page = admin.get(&format!("/api-management/machines/{machine_id}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("An admin removed this machine"));
    assert!(!page.body.contains("hx-post"));
}

fn fifty_simultaneous_enrollments_with_one_token_make_one_machine(backend: Backend) {
    let db = TestDb::new(backend);
    let app = Arc::new(TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.db_pool_size = 16;
    }));
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("contested");
    let start = Arc::new(Barrier::new(50));
    let racers: Vec<_> = (0..50)
        .map(|i| {
            let (app, start, token) = (app.clone(), start.clone(), token.clone());
            std::thread::spawn(move || {
                start.wait();
                app.post_json(
                    "/api/v1/driver/enroll",
                    &json!({ "token": token, "name": format!("racer-{i}") }),
                    None,
                )
            })
        })
        .collect();
    let replies: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let created = replies.iter().filter(|r| r.status == 201).count();
    let used = replies
        .iter()
        .filter(|r| r.status == 410 && r.json()["error"] == "token_used")
        .count();
    let others: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 201 && r.status != 410)
        .map(|r| &r.body)
        .collect();
    assert_eq!(
        created, 1,
        "exactly one enrollment wins; others: {others:?}"
    );
    assert_eq!(used, 49);
    let machines: i64 = machines::table
        .count()
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(machines, 1);
}

fn other_organizations_cannot_see_or_touch_tokens_or_machines(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (token_id, token) = admin.create_enrollment_token("ours");
    let (_, other_token) = admin.create_enrollment_token("ours too");
    let (machine_id, credential) = app.enroll(&other_token, "our-vm");
    let mut rival = app.rival();

    let page = rival.get("/api-management");
    assert!(!page.body.contains("our-vm") && !page.body.contains("ours too"));
    assert!(page.row_ids().is_empty());
    assert!(rival.machine_list("").row_ids().is_empty());
    assert_eq!(
        rival
            .htmx_post(
                &format!("/api-management/enrollment-tokens/{token_id}/revoke"),
                &[]
            )
            .status,
        404
    );
    assert_eq!(
        rival
            .htmx_post(
                &format!("/api-management/machines/{machine_id}/remove"),
                &[]
            )
            .status,
        404
    );
    assert_eq!(
        rival
            .get(&format!("/api-management/machines/{machine_id}"))
            .status,
        404
    );
    assert_eq!(app.heartbeat(&credential).status, 200, "untouched");

    // A rival's token enrolls into the rival's organization only.
    let (_, rival_token) = rival.create_enrollment_token("theirs");
    let reply = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": rival_token, "name": "their-vm" }),
        None,
    );
    assert_eq!(reply.json()["organization"]["slug"], "rival-corp");
    assert!(!admin.machine_list("").body.contains("their-vm"));
    app.enroll(&token, "still-works");
}

fn machine_supplied_markup_is_shown_as_text(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("<b>desc</b>");
    let evil = "<img src=x onerror=alert(1)>";
    let reply = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": evil, "os_version": evil, "driver_version": "<script>x</script>", "capabilities": [] }),
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let machine_id = reply.json()["machine_id"].as_i64().unwrap();
    let escaped = "&#60;img src=x onerror=alert(1)&#62;";
    for page in [
        admin.get("/api-management"),
        admin.machine_list(""),
        admin.machine_list("q=img"),
        admin.get(&format!("/api-management/machines/{machine_id}")),
    ] {
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains(escaped),
            "the name is shown, escaped: {}",
            page.body
        );
        assert!(
            !page.body.contains(evil),
            "raw markup from a driver reached a page"
        );
        assert!(!page.body.contains("<script>x"));
        assert!(!page.body.contains("<b>desc"));
    }
}

fn the_list_filters_searches_and_pages(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("");
    app.enroll(&token, "seed");
    let token_id: i64 = enrollment_tokens::table
        .select(enrollment_tokens::id)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    {
        let mut conn = app.pool.get().unwrap();
        let now = chrono::Utc::now().naive_utc();
        for i in 0..120 {
            let name = if i % 3 == 0 {
                format!("Win-Builder-{i:03}")
            } else {
                format!("linux-{i:03}")
            };
            let profile = MachineProfile::parse(&name, "", None, None, &[], "").unwrap();
            let seen = if i % 2 == 0 {
                now
            } else {
                now - chrono::Duration::minutes(5)
            };
            let machine = granite::machines::insert(
                &mut conn,
                1,
                &profile,
                &sha256_hex(&name),
                token_id,
                seen,
            )
            .unwrap();
            diesel::update(machines::table.find(machine.id))
                .set(machines::last_seen_at.eq(seen))
                .execute(&mut *conn)
                .unwrap();
        }
    }
    let all = admin.machine_list("");
    assert_eq!(all.row_ids().len(), 50, "a page holds 50");
    assert!(all.body.contains("1–50 of 121"));
    assert!(all.body.contains("Page 1 of 3"));
    assert!(
        all.body.contains("data-count=\"online\">61<")
            && all.body.contains("data-count=\"offline\">60<"),
        "{}",
        all.body
    );
    let last = admin.machine_list("page=3");
    assert_eq!(last.row_ids().len(), 21);
    assert!(
        last.body
            .contains("hx-get=\"/api-management/machines/list?status=&#38;q=&#38;page=3\""),
        "refreshes keep the page: {}",
        &last.body[..400]
    );
    let beyond = admin.machine_list("page=99");
    assert!(
        beyond.body.contains("Page 3 of 3"),
        "past the end shows the last page"
    );

    let offline = admin.machine_list("status=offline");
    assert!(offline.body.contains("of 60"));
    assert!(!offline.body.contains("data-status=\"online\""));
    let search = admin.machine_list("q=win-BUILDER");
    assert_eq!(
        search.row_ids().len(),
        40,
        "case-insensitive search by name"
    );
    assert!(
        search.body.contains(
            "hx-get=\"/api-management/machines/list?status=&#38;q=win-BUILDER&#38;page=1\""
        ),
        "refreshes keep the search"
    );
    let both = admin.machine_list("status=online&q=win");
    assert_eq!(both.row_ids().len(), 20);
    let none = admin.machine_list("q=%25");
    assert!(
        none.body.contains("No machine matches this filter."),
        "% is a character, not a wildcard"
    );
}

fn viewers_see_the_fleet_but_cannot_change_it(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    app.add_user("viewer@example.com", "viewer password", Role::Viewer, None);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (token_id, _) = admin.create_enrollment_token("active");
    let (_, used) = admin.create_enrollment_token("used");
    let (machine_id, credential) = app.enroll(&used, "watched-vm");
    let mut viewer = app.signed_in("viewer@example.com", "viewer password");
    let page = viewer.get("/api-management");
    assert!(page.body.contains("watched-vm") && page.body.contains(">active</th>"));
    for control in ["Create Token", "Revoke token", "Remove machine"] {
        assert!(!page.body.contains(control), "a viewer sees {control}");
    }
    assert_eq!(
        viewer
            .htmx_post("/api-management/enrollment-tokens", &[("description", "x")])
            .status,
        403
    );
    assert_eq!(
        viewer
            .htmx_post(
                &format!("/api-management/enrollment-tokens/{token_id}/revoke"),
                &[]
            )
            .status,
        403
    );
    assert_eq!(
        viewer
            .htmx_post(
                &format!("/api-management/machines/{machine_id}/remove"),
                &[]
            )
            .status,
        403
    );
    assert_eq!(app.heartbeat(&credential).status, 200);
    assert!(
        !viewer
            .get(&format!("/api-management/machines/{machine_id}"))
            .body
            .contains("Remove machine")
    );
}

fn the_detail_page_tells_where_a_machine_came_from(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("lab bench 2");
    let reply = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": "lab-2", "os_version": "macOS 15.1", "ip_address": "10.20.30.40",
                 "capabilities": ["macos", "safari"], "driver_version": "2.0.1" }),
        None,
    );
    let machine_id = reply.json()["machine_id"].as_i64().unwrap();
    let page = admin.get(&format!("/api-management/machines/{machine_id}"));
    assert_eq!(page.status, 200);
    let tab = |admin: &mut crate::helpers::Client, tab: &str| {
        let reply = admin.get(&format!("/api-management/machines/{machine_id}?tab={tab}"));
        assert_eq!(reply.status, 200);
        reply.body
    };
    let (capabilities, jobs, settings) = (
        tab(&mut admin, "capabilities"),
        tab(&mut admin, "jobs"),
        tab(&mut admin, "settings"),
    );
    for (body, fact) in [
        (&page.body, "10.20.30.40"),
        (&page.body, "macOS 15.1"),
        (&page.body, "2.0.1"),
        (&capabilities, ">macos</a>"),
        (&capabilities, ">safari</a>"),
        (
            &page.body,
            &format!(
                "with token <code>{}…</code> (lab bench 2), created by admin@example.com",
                &token[..11]
            ),
        ),
        (&jobs, "No jobs yet"),
        (&settings, "aria-label=\"Remove machine lab-2\""),
    ] {
        assert!(body.contains(fact), "detail lacks {fact}: {body}");
    }
    assert!(!page.body.contains(&token));
    let removed = admin.post_form_with(
        &format!("/api-management/machines/{machine_id}/remove?then=list"),
        &[],
        &[("X-CSRF-Token", &page.csrf_token()), ("HX-Request", "true")],
    );
    assert_eq!(
        removed.header("hx-redirect"),
        Some("/api-management#machines")
    );
}
