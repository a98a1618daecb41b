//! Hostile bytes, numbers and races: text PostgreSQL cannot store (the NUL character) is refused where
//! it comes in, with the field named, on both backends alike, and changes nothing; a page number far
//! past the end is answered, not overflowed; the reference driver whose automation answers such text
//! reports the run failed instead of retrying forever; and one credential claiming in parallel (on
//! one server, or on two replicas) gets one run.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use granite::db::schema::{api_keys, enrollment_tokens, machines};
use serde_json::json;

use crate::both_backends;
use crate::driver::{DriverProcess, Workspace, enroll, quick_heartbeats};
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Reply, TestApp, TestDb};

both_backends!(
    text_with_nul_is_refused_with_the_field_named,
    page_numbers_past_any_end_are_answered,
    a_driver_whose_automation_answers_unstorable_text_reports_the_run_failed,
    parallel_claims_of_one_machine_get_one_run,
    metrics_need_the_token_and_https_is_kept,
    slow_clients_are_let_go,
    forwarded_addresses_only_from_trusted_proxies,
    a_guesser_waits_and_the_owner_signs_in_elsewhere,
    a_flood_of_sign_ins_is_turned_away_at_once,
    the_audit_log_keeps_the_peer_apart_from_the_claimed_address,
);

/// A 400 `invalid_request` naming `field`.
fn assert_refused(reply: &Reply, field: &str) {
    assert_eq!(
        reply.api_error(),
        (400, "invalid_request".into()),
        "{}",
        reply.body
    );
    assert_eq!(reply.json()["field"], field, "{}", reply.body);
    assert!(!reply.body.contains('\0') && !reply.body.contains("\\u0000\""));
}

fn text_with_nul_is_refused_with_the_field_named(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("hostile");
    let count = |app: &TestApp| -> (i64, i64, i64) {
        let mut conn = app.pool.get().unwrap();
        (
            api_keys::table.count().get_result(&mut *conn).unwrap(),
            enrollment_tokens::table
                .count()
                .get_result(&mut *conn)
                .unwrap(),
            machines::table.count().get_result(&mut *conn).unwrap(),
        )
    };

    // Enrollment: the token is not spent by a refused request.
    let refused = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": "vm\u{0}1", "capabilities": ["shell"] }),
        None,
    );
    assert_refused(&refused, "name");
    let refused = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": "vm-1", "capabilities": ["shell", "s\u{0}p"] }),
        None,
    );
    assert_refused(&refused, "capabilities[1]");
    let (_, credential) = app.enroll(&token, "vm-1");

    // A run, claimed; a report with a NUL in its error or result changes nothing.
    let queued = app.start_run(&key, "default/invoice", &json!({ "n": 1 }));
    assert_eq!(queued.status, 202, "{}", queued.body);
    let refused = app.start_run(&key, "default/invoice", &json!({ "note": "a\u{0}b" }));
    assert_refused(&refused, "note");
    let refused = app.start_run(&key, "default/invoice?priority=1%00", &json!({}));
    assert_refused(&refused, "priority");
    let claimed = app.claim(&credential, 0);
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    let run_id = claimed.json()["runId"].as_str().unwrap().to_owned();
    let refused = app.complete(
        &credential,
        &run_id,
        &json!({ "status": "failed", "error": { "type": "crash", "message": "bad\u{0}" } }),
    );
    assert_refused(&refused, "error.message");
    let refused = app.complete(
        &credential,
        &run_id,
        &json!({ "status": "completed", "result": { "rows": ["ok", "n\u{0}"] } }),
    );
    assert_refused(&refused, "result.rows[1]");
    assert_eq!(
        app.run_of(&key, &run_id)["status"],
        "running",
        "nothing was written"
    );
    let refused = app.complete(&credential, "run_%00", &json!({ "status": "completed" }));
    assert_refused(&refused, "run_id");
    let refused = app.api(Some(&key)).get("/api/agent-runs/run_%00x");
    assert_refused(&refused, "run_id");
    let done = app.complete(&credential, &run_id, &json!({ "status": "completed" }));
    assert_eq!(done.status, 200, "{}", done.body);

    // The dashboard: forms answer with their message and create nothing.
    let before = count(&app);
    let reply = admin.htmx_post("/api-management/api-keys", &[("name", "billing\u{0}")]);
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply.body.contains("cannot contain the NUL character"),
        "{}",
        reply.body
    );
    let reply = admin.htmx_post(
        "/api-management/enrollment-tokens",
        &[("description", "rack\u{0}4"), ("lifetime_hours", "24")],
    );
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply.body.contains("cannot contain the NUL character"),
        "{}",
        reply.body
    );
    assert_eq!(count(&app), before, "nothing was created");
    let search = admin.machine_list("q=vm%00");
    assert!(
        search.body.contains("vm-1"),
        "the NUL is dropped from the search"
    );

    // Signing in: the same answer as any wrong address, not an error page.
    let mut stranger = app.client();
    let reply = stranger.sign_in("admin\u{0}@example.com", ADMIN_PASSWORD);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply.body.contains("Incorrect email or password."),
        "{}",
        reply.body
    );
}

fn page_numbers_past_any_end_are_answered(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    for path in [
        "/api-management/machines/list?page=9223372036854775807",
        "/api-management/machines/list?page=-9223372036854775808",
        "/api-management/jobs?page=9223372036854775807",
        "/api-management/jobs?page=-5",
    ] {
        let reply = admin.get_with(path, &[("HX-Request", "true")]);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    for path in [
        "/api-management/machines/list?page=99999999999999999999999",
        "/api-management/jobs?page=1e9",
    ] {
        let reply = admin.get(path);
        assert_eq!(
            reply.status, 400,
            "{path}: a page that is not a number is refused"
        );
    }
    // Past the end of a list that has jobs, the page offers the last one instead of "No jobs".
    let (_, key) = admin.create_api_key("caller");
    assert_eq!(
        app.start_run(&key, "default/nightly", &json!({})).status,
        202
    );
    let past = admin.get("/api-management/jobs?page=999");
    assert!(
        past.body.contains("Page 999 is past the last page"),
        "{}",
        past.body
    );
    assert!(
        past.body.contains(
            "href=\"/api-management/jobs?status=&amp;page=1\">Go to the last page (1)</a>"
        )
    );
}

fn a_driver_whose_automation_answers_unstorable_text_reports_the_run_failed(backend: Backend) {
    let db = TestDb::new(backend);
    let app = quick_heartbeats(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("driver");
    let workspace = Workspace::new();
    workspace.script("nul", "#!/bin/sh\nprintf '{\"text\": \"a\\\\u0000b\"}'\n");
    let (ok, output) = enroll(&app.url(""), &token, &workspace.credentials(), &[]);
    assert!(ok, "{output}");
    let mut driver = DriverProcess::start(&workspace);

    let reply = app.start_run(&key, "default/nul?wait=true&timeout=30", &json!({}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let run = reply.json();
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["type"], "invalid_outcome", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("result.text"),
        "the server's reason is kept: {run}"
    );

    // And the driver goes on taking work.
    let started = Instant::now();
    let next = app.start_run(
        &key,
        "default/square?wait=true&timeout=30",
        &json!({ "n": 2 }),
    );
    assert_eq!(next.json()["status"], "completed", "{}", next.body);
    assert!(started.elapsed() < Duration::from_secs(30));
    driver.signal("INT");
    let (_, log) = driver.wait_for_exit(Duration::from_secs(20));
    assert!(
        log.contains("the server refused the automation's outcome"),
        "a clear log line: {log}"
    );
    assert_eq!(
        log.matches("the server refused the automation's outcome")
            .count(),
        1,
        "refused once, not retried: {log}"
    );
}

const PARALLEL_CLAIMS: usize = 10;

fn parallel_claims_of_one_machine_get_one_run(backend: Backend) {
    let db = TestDb::new(backend);
    // On PostgreSQL the claims are split between two replicas of one database.
    let replicas: Vec<TestApp> = match backend {
        Backend::Sqlite => vec![TestApp::spawn(&db)],
        Backend::Postgres => vec![TestApp::spawn(&db), TestApp::spawn(&db)],
    };
    let app = &replicas[0];
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("racer");
    let (_, credential) = app.enroll(&token, "racer");
    for n in 0..PARALLEL_CLAIMS {
        let queued = app.start_run(&key, "default/race", &json!({ "n": n }));
        assert_eq!(queued.status, 202, "{}", queued.body);
    }

    let go = std::sync::Barrier::new(PARALLEL_CLAIMS);
    let answers: Vec<Reply> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..PARALLEL_CLAIMS)
            .map(|i| {
                let (replica, credential, go) = (&replicas[i % replicas.len()], &credential, &go);
                scope.spawn(move || {
                    go.wait();
                    replica.claim(credential, 2)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let won: Vec<&Reply> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "one claim wins: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in answers.iter().filter(|r| r.status != 200) {
        match reply.status {
            409 => assert_eq!(reply.api_error(), (409, "claim_in_progress".into())),
            204 => {}
            other => panic!(
                "a second claim answers 409 or, once the first is over, 204: {other} {}",
                reply.body
            ),
        }
    }
    assert!(
        answers.iter().any(|r| r.status == 409),
        "claims that overlapped on one server were refused at once"
    );

    // The machine holds the one run it won; every other run is still queued, never handed out.
    let run_id = won[0].json()["runId"].as_str().unwrap().to_owned();
    let mut conn = app.pool.get().unwrap();
    let held: Option<i64> = machines::table
        .select(machines::current_run_id)
        .first(&mut *conn)
        .unwrap();
    let statuses: Vec<(String, String, i32)> = granite::db::schema::runs::table
        .select((
            granite::db::schema::runs::public_id,
            granite::db::schema::runs::status,
            granite::db::schema::runs::attempts,
        ))
        .load(&mut *conn)
        .unwrap();
    drop(conn);
    assert!(held.is_some(), "the machine is busy with its run");
    for (id, status, attempts) in &statuses {
        if *id == run_id {
            assert_eq!((status.as_str(), *attempts), ("running", 1), "{id}");
        } else {
            assert_eq!(
                (status.as_str(), *attempts),
                ("queued", 0),
                "{id} was never handed out"
            );
        }
    }
    // Once it reports, it claims again as usual.
    let done = app.complete(&credential, &run_id, &json!({ "status": "completed" }));
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(app.claim(&credential, 0).status, 200);
}

fn metrics_need_the_token_and_https_is_kept(backend: Backend) {
    let db = TestDb::new(backend);
    // No token: this machine (the test connects over loopback) may scrape; no HSTS over plain HTTP.
    let open = TestApp::spawn(&db);
    let reply = open.client().get("/metrics");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("Strict-Transport-Security"), None);
    drop(open);

    let guarded = TestApp::spawn_with(&db, |s| {
        s.metrics_token = Some("scrape-7Hq2".into());
        s.public_url = Some("https://granite.example.com".into());
    });
    for bearer in [None, Some("Bearer scrape-7Hq"), Some("Basic scrape-7Hq2")] {
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", *b)).collect();
        let reply = guarded.client().get_with("/metrics", &headers);
        assert_eq!(reply.status, 401, "{bearer:?}: {}", reply.body);
        assert!(
            !reply.body.contains("granite_"),
            "nothing of the metrics shown"
        );
    }
    let reply = guarded
        .client()
        .get_with("/metrics", &[("Authorization", "Bearer scrape-7Hq2")]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("granite_queue_depth"));
    // The enroll command shown with a new token names the public URL, not the request's Host.
    let mut admin = guarded.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let reply = admin.htmx_post(
        "/api-management/enrollment-tokens",
        &[("description", "rack 4"), ("lifetime_hours", "24")],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("granite driver enroll --server https://granite.example.com"),
        "{}",
        reply.body
    );
    for path in ["/login", "/livez", "/api/openapi.json"] {
        let reply = guarded.client().get(path);
        assert_eq!(
            reply.header("Strict-Transport-Security"),
            Some("max-age=31536000"),
            "{path}: browsers keep to HTTPS"
        );
    }
}

/// Sends `request` on a new connection and stalls; returns what the server answered and how long it
/// took to close the connection.
fn stall(app: &TestApp, request: &str) -> (String, Duration) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(app.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // Until the server closes the connection (or resets it).
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn slow_clients_are_let_go(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let key = app
        .signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .create_api_key("caller")
        .1;
    // A sign-in form whose body stops arriving, with a real session cookie and token.
    let mut visitor = app.client();
    let token = visitor.get("/login").csrf_token();
    let stalled_sign_in = format!(
        "POST /login HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nCookie: granite_session={cookie}\r\n\
         X-CSRF-Token: {token}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 200\r\n\r\nemail=admin%40example.com&pass",
        host = app.address,
        cookie = visitor.session_cookie().unwrap(),
    );
    // Enrollment bodies that stop arriving, on the unauthenticated route.
    let stalled_enroll = "POST /api/v1/driver/enroll HTTP/1.1\r\nHost: granite\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"token\": \"enroll_";

    // One client holds as many requests in flight as it may: one sign-in and the rest enrollments.
    let per_client = granite::ops::in_flight::PER_CLIENT as usize;
    let stalls: Vec<_> = std::thread::scope(|scope| {
        let mut handles = vec![scope.spawn(|| stall(&app, &stalled_sign_in))];
        for _ in 1..per_client {
            handles.push(scope.spawn(|| stall(&app, stalled_enroll)));
        }
        std::thread::sleep(Duration::from_millis(1500));
        // Meanwhile the next change from that client is turned away at once, its body unread.
        let started = Instant::now();
        let refused = app.post_json(
            "/api/v1/driver/enroll",
            &json!({ "token": "enroll_x", "name": "vm-1" }),
            None,
        );
        assert_eq!(
            refused.api_error(),
            (429, "rate_limited".into()),
            "{}",
            refused.body
        );
        assert_eq!(refused.header("retry-after"), Some("1"));
        let refused_form = app.client().sign_in(ADMIN_EMAIL, ADMIN_PASSWORD);
        assert_eq!(refused_form.status, 429);
        assert!(
            refused_form
                .body
                .contains("Too many requests from your address at once.")
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Reading pages and the authenticated APIs are not held up.
        assert_eq!(app.client().get("/login").status, 200);
        assert_eq!(app.api(Some(&key)).get("/api/me").status, 200);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (answer, took)) in stalls.iter().enumerate() {
        assert!(answer.starts_with("HTTP/1.1 408"), "stall {i}: {answer}");
        assert!(
            *took >= Duration::from_secs(9) && *took < Duration::from_secs(15),
            "stall {i} let go after the body deadline: {took:?}"
        );
    }
    assert!(stalls[0].0.contains("The form took too long to arrive."));
    assert!(stalls[1].0.contains("request_timeout"), "{}", stalls[1].0);
    // Let go, the client's places are free again.
    assert_eq!(
        app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
            .get("/api-management")
            .status,
        200
    );

    // A head that never ends: let go within a few seconds.
    let (answer, took) = stall(&app, "POST /api/v1/driver/enroll HTTP/1.1\r\nHost: gran");
    assert!(took < Duration::from_secs(9), "{took:?}: {answer}");
}

fn forwarded_addresses_only_from_trusted_proxies(backend: Backend) {
    let db = TestDb::new(backend);
    let last_used_ip = |app: &TestApp, secret: &str| -> Option<String> {
        // Usage is written every second.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ip: Option<String> = api_keys::table
                .filter(api_keys::secret_hash.eq(granite::secret::sha256_hex(secret)))
                .select(api_keys::last_used_ip)
                .first(&mut *app.pool.get().unwrap())
                .unwrap();
            if ip.is_some() || Instant::now() > deadline {
                return ip;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let forged = [("X-Forwarded-For", "203.0.113.5")];

    // No trusted proxies: anyone can send the header, so it is ignored.
    let direct = TestApp::spawn(&db);
    let (_, key) = direct
        .signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .create_api_key("direct");
    assert_eq!(
        direct.api(Some(&key)).get_with("/api/me", &forged).status,
        200
    );
    assert_eq!(last_used_ip(&direct, &key).as_deref(), Some("127.0.0.1"));
    drop(direct);

    // Behind a trusted proxy (the test's loopback peer): the client it forwards for.
    let proxied = TestApp::spawn_with(&db, |s| {
        s.trusted_proxies =
            granite::ops::client_address::parse_trusted("127.0.0.0/8, 10.0.0.0/8").unwrap();
    });
    let mut admin = proxied.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("proxied");
    let chain = [("X-Forwarded-For", "198.51.100.1, 203.0.113.5, 10.0.0.3")];
    assert_eq!(
        proxied.api(Some(&key)).get_with("/api/me", &chain).status,
        200
    );
    assert_eq!(last_used_ip(&proxied, &key).as_deref(), Some("203.0.113.5"));
    // And a machine enrolling through it is recorded at the client's address.
    let (_, token) = admin.create_enrollment_token("proxied");
    let enrolled = proxied.post_json_with(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": "behind-proxy" }),
        &forged,
    );
    assert_eq!(enrolled.status, 201, "{}", enrolled.body);
    let ip: String = machines::table
        .filter(machines::name.eq("behind-proxy"))
        .select(machines::ip_address)
        .first(&mut *proxied.pool.get().unwrap())
        .unwrap();
    assert_eq!(ip, "203.0.113.5");
}

/// Signs in as a client at `ip` (the test's loopback peer is a trusted proxy): the reply.
fn sign_in_from(app: &TestApp, ip: &str, password: &str) -> Reply {
    let mut client = app.client();
    let token = client.get("/login").csrf_token();
    client.post_form_with(
        "/login",
        &[
            ("email", ADMIN_EMAIL),
            ("password", password),
            ("csrf_token", &token),
        ],
        &[("X-Forwarded-For", ip)],
    )
}

fn behind_a_proxy(db: &TestDb) -> TestApp {
    TestApp::spawn_with(db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.trusted_proxies = granite::ops::client_address::parse_trusted("127.0.0.0/8").unwrap();
    })
}

fn a_guesser_waits_and_the_owner_signs_in_elsewhere(backend: Backend) {
    let db = TestDb::new(backend);
    let a = behind_a_proxy(&db);
    // On PostgreSQL the failures counted through one replica hold on the other.
    let b = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(behind_a_proxy(&db)),
    };
    let guesser = "203.0.113.66";
    for _ in 0..5 {
        assert_eq!(sign_in_from(&a, guesser, "wrong password").status, 401);
    }
    for replica in std::iter::once(&a).chain(b.as_ref()) {
        let refused = sign_in_from(replica, guesser, ADMIN_PASSWORD);
        assert_eq!(
            refused.status, 429,
            "even the right password waits: {}",
            refused.body
        );
        assert!(
            refused
                .body
                .contains("Too many failed sign-ins from this address")
        );
        let retry: u64 = refused.header("Retry-After").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
    }
    // The owner, elsewhere, is not held up.
    assert_eq!(sign_in_from(&a, "198.51.100.7", ADMIN_PASSWORD).status, 303);
    // After the wait the guesser's next guess is checked again, and the next wait is longer.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(sign_in_from(&a, guesser, "wrong again").status, 401);
    let refused = sign_in_from(&a, guesser, "and again");
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.header("Retry-After").unwrap().parse().unwrap();
    assert!((2..=3).contains(&retry), "the wait doubled: {retry}");
    // Nothing stored names the address or the account.
    let subjects: Vec<String> = granite::db::schema::sign_in_failures::table
        .select(granite::db::schema::sign_in_failures::subject)
        .load(&mut *a.pool.get().unwrap())
        .unwrap();
    assert!(!subjects.is_empty());
    assert!(
        subjects
            .iter()
            .all(|s| !s.contains("203.0") && !s.contains("admin"))
    );
}

fn a_flood_of_sign_ins_is_turned_away_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let app = behind_a_proxy(&db);
    const FLOOD: usize = 24;
    let go = std::sync::Barrier::new(FLOOD);
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..FLOOD)
            .map(|i| {
                let (app, go) = (&app, &go);
                scope.spawn(move || {
                    let ip = format!("192.0.2.{}", i + 1);
                    let mut client = app.client();
                    let token = client.get("/login").csrf_token();
                    go.wait();
                    client
                        .post_form_with(
                            "/login",
                            &[
                                ("email", ADMIN_EMAIL),
                                ("password", "guess"),
                                ("csrf_token", &token),
                            ],
                            &[("X-Forwarded-For", &ip)],
                        )
                        .status
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "refused or turned away, never an error: {statuses:?}"
    );
    let turned_away = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        turned_away >= FLOOD / 2,
        "beyond the machine's processors, sign-ins wait for nothing: {statuses:?}"
    );
    eprintln!(
        "{backend:?}: {turned_away} of {FLOOD} turned away in {:?}",
        started.elapsed()
    );
    // And the owner signs in once the flood has passed.
    assert_eq!(
        sign_in_from(&app, "198.51.100.7", ADMIN_PASSWORD).status,
        303
    );
}

fn the_audit_log_keeps_the_peer_apart_from_the_claimed_address(backend: Backend) {
    use granite::db::schema::audit_events;
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let (_, token) = app
        .signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .create_enrollment_token("claims");
    // The machine says it is somewhere else than where its request came from.
    let enrolled = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": "claimer", "ip_address": "10.9.9.9" }),
        None,
    );
    assert_eq!(enrolled.status, 201, "{}", enrolled.body);
    let (source_ip, details): (Option<String>, String) = audit_events::table
        .filter(audit_events::action.eq("machine_enrolled"))
        .select((audit_events::source_ip, audit_events::details))
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(
        source_ip.as_deref(),
        Some("127.0.0.1"),
        "the peer, as the server saw it"
    );
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["claimed_ip_address"], "10.9.9.9", "{details}");
    // The machine list shows what the machine says.
    let ip: String = machines::table
        .select(machines::ip_address)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(ip, "10.9.9.9");
}
