//! Per-key rate limits of the public API: the `X-RateLimit-*` headers on every answer to a known key,
//! 429 `rate_limited` with `Retry-After` and nothing done over the limit, a new window after the reset,
//! the limit shared by two replicas, and the admin's per-key setting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use granite::users::Role;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, Reply, TestApp, TestDb};

both_backends!(
    every_answer_to_a_known_key_carries_its_limit,
    over_the_limit_nothing_is_done_until_the_window_resets,
    the_limit_is_set_per_key_by_admins_only,
);

fn app(db: &TestDb, configure: impl FnOnce(&mut granite::config::Settings)) -> Arc<TestApp> {
    Arc::new(TestApp::spawn_with(db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        configure(s);
    }))
}

fn number(reply: &Reply, header: &str) -> i64 {
    reply
        .header(header)
        .unwrap_or_else(|| panic!("{header} missing: {:?}", reply.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{header} is not a number"))
}

fn every_answer_to_a_known_key_carries_its_limit(backend: Backend) {
    let db = TestDb::new(backend);
    let app = app(&db, |_| {});
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("billing");
    let api = app.api(Some(&key));

    let first = api.get("/api/me");
    assert_eq!(first.status, 200);
    assert_eq!(number(&first, "x-ratelimit-limit"), 600, "the default");
    assert_eq!(number(&first, "x-ratelimit-remaining"), 599);
    let now = chrono::Utc::now().timestamp();
    let reset = number(&first, "x-ratelimit-reset");
    assert!(
        reset > now && reset <= now + 61 && reset % 60 == 0,
        "the end of this minute: {reset} (now {now})"
    );

    // Errors after the key is known carry them too, and count.
    let missing = api.get("/api/agent-runs/run_doesnotexist");
    assert_eq!(missing.status, 404);
    assert_eq!(number(&missing, "x-ratelimit-remaining"), 598);
    let started = app.start_run(&key, "default/sync", &json!({}));
    assert_eq!(started.status, 202);
    assert_eq!(number(&started, "x-ratelimit-remaining"), 597);

    // Before the key is known there is nothing to tell.
    let unknown = app.api(Some("gk_live_notakey")).get("/api/me");
    assert_eq!(unknown.status, 401);
    assert!(unknown.header("x-ratelimit-limit").is_none());
}

fn over_the_limit_nothing_is_done_until_the_window_resets(backend: Backend) {
    let db = TestDb::new(backend);
    let app = app(&db, |s| s.rate_window_exact = Some(Duration::from_secs(3)));
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("scheduler");
    let (_, watcher) = admin.create_api_key("watcher");
    assert_eq!(admin.set_rate_limit(key_id, "3").status, 303);

    // Start at the beginning of a window, so all of this happens inside one.
    let window_end = number(&app.api(Some(&watcher)).get("/api/me"), "x-ratelimit-reset");
    wait_until_unix(window_end);
    let answers: Vec<Reply> = (0..5)
        .map(|i| app.start_run(&key, &format!("default/job-{i}"), &json!({})))
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    let refused = &answers[3];
    assert_eq!(refused.api_error(), (429, "rate_limited".into()));
    assert_eq!(number(refused, "x-ratelimit-limit"), 3);
    assert_eq!(number(refused, "x-ratelimit-remaining"), 0);
    let retry_after = number(refused, "retry-after");
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        number(refused, "x-ratelimit-reset"),
        number(&answers[0], "x-ratelimit-reset")
    );
    // Nothing was enqueued for the refused calls (asked with another key, which has its own limit).
    let queue = app.api(Some(&watcher)).get("/api/queue");
    assert_eq!(queue.json()["jobs_queued"], 3);

    // The next window admits the key again.
    wait_until_unix(number(refused, "x-ratelimit-reset"));
    let again = app.start_run(&key, "default/job-after-reset", &json!({}));
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(number(&again, "x-ratelimit-remaining"), 2);

    // The analytics count the refused calls apart, once usage is written (every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = admin.get(&format!("/api-management/api-keys/{key_id}/analytics"));
        if page.body.contains("2 calls were refused") {
            assert!(
                page.body.contains("3 / min"),
                "the key's own limit is shown"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{}", page.body);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_until_unix(at: i64) {
    let now = chrono::Utc::now();
    let wait = at * 1000 - now.timestamp_millis();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64 + 20));
    }
}

fn the_limit_is_set_per_key_by_admins_only(backend: Backend) {
    let db = TestDb::new(backend);
    let app = app(&db, |_| {});
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("crm");

    for bad in [
        "abc",
        "-1",
        "1.5",
        "99999999999999999999",
        "1000000001",
        "12\u{0}",
    ] {
        let reply = admin.set_rate_limit(key_id, bad);
        assert_eq!(reply.status, 422, "{bad:?}: {}", reply.body);
        assert!(reply.body.contains("whole number of requests per minute"));
        assert!(!reply.body.contains('\u{0}'));
    }
    let me = app.api(Some(&key)).get("/api/me");
    assert_eq!(
        number(&me, "x-ratelimit-limit"),
        600,
        "unchanged by bad input"
    );

    assert_eq!(admin.set_rate_limit(key_id, " 1200 ").status, 303);
    let me = app.api(Some(&key)).get("/api/me");
    assert_eq!(
        number(&me, "x-ratelimit-limit"),
        1200,
        "takes effect at once"
    );
    let list = admin.get("/api-management");
    assert!(list.body.contains("1,200 / min"));
    assert_eq!(app.audit_count("api_key_rate_limit_changed"), 1);

    // 0 is unlimited: no limit to tell.
    assert_eq!(admin.set_rate_limit(key_id, "0").status, 303);
    let me = app.api(Some(&key)).get("/api/me");
    assert_eq!(me.status, 200);
    assert!(me.header("x-ratelimit-limit").is_none());
    // Empty: back to the default.
    assert_eq!(admin.set_rate_limit(key_id, "").status, 303);
    let me = app.api(Some(&key)).get("/api/me");
    assert_eq!(number(&me, "x-ratelimit-limit"), 600);

    // Members and viewers cannot change it; nor can another organization's admin.
    for (email, role) in [
        ("m@example.com", Role::Member),
        ("v@example.com", Role::Viewer),
    ] {
        app.add_user(email, "a long enough password", role, None);
        let mut user: Client = app.signed_in(email, "a long enough password");
        assert_eq!(user.set_rate_limit(key_id, "5").status, 403);
    }
    let mut rival = app.rival();
    assert_eq!(rival.set_rate_limit(key_id, "5").status, 404);
    let me = app.api(Some(&key)).get("/api/me");
    assert_eq!(number(&me, "x-ratelimit-limit"), 600);
}

/// Two replicas on one PostgreSQL admit at most the limit between them, and not much less.
#[test]
fn two_replicas_share_one_limit() {
    const LIMIT: i64 = 200;
    let db = TestDb::new(Backend::Postgres);
    let first = app(&db, |_| {});
    let second = Arc::new(TestApp::spawn_with(&db, |_| {}));
    let mut admin = first.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("fleet");
    assert_eq!(admin.set_rate_limit(key_id, &LIMIT.to_string()).status, 303);

    // Eight callers, alternating replicas, 600 calls: three times the limit.
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let app = if c % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let key = key.clone();
            std::thread::spawn(move || {
                let api = app.api(Some(&key));
                (0..75)
                    .map(|_| {
                        let reply = api.get("/api/me");
                        (reply.status, number(&reply, "x-ratelimit-reset"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_window: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    for caller in callers {
        for (status, reset) in caller.join().unwrap() {
            let counts = by_window.entry(reset).or_default();
            match status {
                200 => counts.0 += 1,
                429 => counts.1 += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    // The calls may straddle the turn of a minute; each window is judged on its own.
    let mut judged = 0;
    for (window, (admitted, refused)) in by_window {
        assert!(admitted <= LIMIT, "window {window}: {admitted} admitted");
        if refused > 0 {
            assert!(
                admitted >= LIMIT * 9 / 10,
                "window {window}: only {admitted} admitted before refusing"
            );
            judged += 1;
        }
    }
    assert!(judged >= 1, "the limit was reached");
}
