//! API keys end to end: created once, listed by hint, used with `X-Granite-API-Key`, revoked, rolled,
//! counted, and kept within their organization.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use granite::db::DbConnection;
use granite::db::schema::{api_key_usage, api_keys};
use granite::secret::{Secret, SecretKind, sha256_hex};
use granite::users::Role;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb, logs};

both_backends!(
    a_new_key_is_shown_once_and_only_its_hash_is_kept,
    key_names_are_checked_and_bad_ones_change_nothing,
    the_public_api_answers_each_kind_of_bad_key,
    revoking_removes_the_row_and_refuses_the_key_at_once,
    rolling_keeps_the_old_key_for_its_grace_period,
    usage_is_written_without_a_write_per_request,
    usage_is_written_at_shutdown,
    other_organizations_cannot_see_or_touch_a_key,
    viewers_see_keys_but_cannot_change_them,
    no_plaintext_key_in_the_database_or_the_logs,
);

fn a_new_key_is_shown_once_and_only_its_hash_is_kept(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, secret) = admin.create_api_key("  billing-service ");
    assert!(
        Secret::parse(SecretKind::ApiKey, &secret).is_ok(),
        "a gk_live_ key with a valid checksum: {secret}"
    );

    let page = admin.get("/api-management");
    assert!(
        !page.body.contains(&secret),
        "a reload never shows the key again"
    );
    assert!(
        page.body
            .contains(&format!("<tr id=\"api-key-{id}\" data-id=\"{id}\">"))
    );
    assert!(
        page.body.contains(">billing-service</a>"),
        "the name is trimmed"
    );
    assert!(
        page.body
            .contains(&format!("<code>{}…</code>", &secret[..12])),
        "the hint"
    );
    assert!(page.body.contains("by admin@example.com"));
    assert!(page.body.contains("Never"), "not used yet");
    assert!(
        page.body.contains(&format!(
            "aria-label=\"Revoke key billing-service ({}…)\"",
            &secret[..12]
        )),
        "buttons name the key by name and hint"
    );

    let (hash, hint): (String, String) = api_keys::table
        .find(id)
        .select((api_keys::secret_hash, api_keys::hint))
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(hash, sha256_hex(&secret));
    assert_eq!(hint, format!("{}…", &secret[..12]));
    assert_eq!(app.audit_count("api_key_created"), 1);

    // Newest first.
    let (second, _) = admin.create_api_key("reporting");
    assert_eq!(admin.get("/api-management").row_ids(), [second, id]);

    // From 90 days on, a key asks to be rotated.
    assert!(!admin.get("/api-management").body.contains(">Rotate</span>"));
    let long_ago = chrono::Utc::now().naive_utc() - chrono::Duration::days(91);
    diesel::update(api_keys::table.find(id))
        .set(api_keys::created_at.eq(long_ago))
        .execute(&mut *app.pool.get().unwrap())
        .unwrap();
    let page = admin.get("/api-management");
    assert!(page.body.contains(
        "title=\"Created 91 days ago. Roll it to rotate without downtime.\">Rotate</span>"
    ));
    assert!(page.body.contains("3 months ago"));
}

fn key_names_are_checked_and_bad_ones_change_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    for (name, message) in [
        ("   ", "Give the key a name"),
        (&"x".repeat(101) as &str, "at most 100 characters"),
    ] {
        let reply = admin.htmx_post("/api-management/api-keys", &[("name", name)]);
        assert_eq!(reply.status, 422);
        assert!(reply.body.contains(message), "{}", reply.body);
        assert!(reply.body.contains("role=\"alert\""));
        assert!(reply.new_secret().is_none());
    }
    let count: i64 = api_keys::table
        .count()
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(count, 0);
    // A name of exactly 100 characters (not bytes) is fine.
    admin.create_api_key(&"é".repeat(100));
}

fn the_public_api_answers_each_kind_of_bad_key(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, secret) = admin.create_api_key("ci");

    assert_eq!(
        app.api(None).error_of("/api/me"),
        (401, "missing_api_key".into())
    );
    assert_eq!(
        app.api(Some("hello")).error_of("/api/me"),
        (401, "malformed_api_key".into())
    );
    let mut wrong_checksum = secret.clone();
    wrong_checksum.replace_range(10..11, if &secret[10..11] == "a" { "b" } else { "a" });
    assert_eq!(
        app.api(Some(&wrong_checksum)).error_of("/api/me"),
        (401, "malformed_api_key".into())
    );
    let enrollment_token = Secret::generate(SecretKind::EnrollmentToken);
    assert_eq!(
        app.api(Some(enrollment_token.expose())).error_of("/api/me"),
        (401, "malformed_api_key".into())
    );
    let unknown = Secret::generate(SecretKind::ApiKey);
    assert_eq!(
        app.api(Some(unknown.expose())).error_of("/api/me"),
        (401, "invalid_api_key".into())
    );
    assert_eq!(
        app.api(Some(unknown.expose())).error_of("/api/queue"),
        (401, "invalid_api_key".into())
    );

    let me = app.api(Some(&secret)).get("/api/me");
    assert_eq!(me.status, 200, "{}", me.body);
    let me = me.json();
    assert_eq!(me["organization"]["slug"], "default");
    assert_eq!(me["organization"]["name"], "Default organization");
    assert_eq!(me["key"]["id"], id);
    assert_eq!(me["key"]["name"], "ci");
    assert_eq!(me["key"]["hint"], format!("{}…", &secret[..12]));

    let queue = app.api(Some(&secret)).get("/api/queue");
    assert_eq!(queue.status, 200);
    assert_eq!(
        queue.json(),
        serde_json::json!({
            "jobs_queued": 0, "jobs_running": 0, "avg_wait_seconds": null,
            "oldest_queued_seconds": null, "active_drivers": 0, "busy_drivers": 0,
        })
    );
    assert_eq!(
        app.api(Some(&secret)).error_of("/api/nothing-here"),
        (404, "not_found".into())
    );
}

fn revoking_removes_the_row_and_refuses_the_key_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (kept, kept_secret) = admin.create_api_key("kept");
    let (doomed, doomed_secret) = admin.create_api_key("doomed");
    assert_eq!(app.api(Some(&doomed_secret)).get("/api/me").status, 200);

    let reply = admin.htmx_post(&format!("/api-management/api-keys/{doomed}/revoke"), &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "", "the row is swapped for nothing");
    assert_eq!(
        app.api(Some(&doomed_secret)).error_of("/api/me"),
        (401, "revoked_api_key".into())
    );
    assert_eq!(
        app.api(Some(&kept_secret)).get("/api/me").status,
        200,
        "only that key"
    );
    assert_eq!(admin.get("/api-management").row_ids(), [kept]);
    assert_eq!(app.audit_count("api_key_revoked"), 1);

    // The last key: the section comes back with its empty state.
    let reply = admin.htmx_post(&format!("/api-management/api-keys/{kept}/revoke"), &[]);
    assert_eq!(reply.header("hx-retarget"), Some("#api-keys"));
    assert!(reply.body.contains("No API keys yet"));

    // A second replica on the same database refuses it too.
    let replica = TestApp::spawn(&db);
    assert_eq!(
        replica.api(Some(&doomed_secret)).error_of("/api/me"),
        (401, "revoked_api_key".into())
    );
}

fn rolling_keeps_the_old_key_for_its_grace_period(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (old, old_secret) = admin.create_api_key("worker");

    let reply = admin.htmx_post(
        &format!("/api-management/api-keys/{old}/roll"),
        &[("grace", "1h")],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let new_secret = reply.new_secret().expect("the new key is shown once");
    assert_ne!(new_secret, old_secret);
    assert!(reply.body.contains("the old key keeps working for 1 hour"));
    assert!(
        reply.body.contains("Expires in 1 hour"),
        "the old row says when it stops"
    );
    let rows = reply.row_ids();
    assert_eq!(rows.len(), 2);
    let new = rows[0];

    assert_eq!(
        app.api(Some(&old_secret)).get("/api/me").status,
        200,
        "the old key works during the grace period"
    );
    let me = app.api(Some(&new_secret)).get("/api/me").json();
    assert_eq!(me["key"]["name"], "worker");
    assert_eq!(me["key"]["id"], new);
    assert_eq!(app.audit_count("api_key_rolled"), 1);

    // Rolling the key being phased out again is refused: roll its successor.
    let again = admin.htmx_post(
        &format!("/api-management/api-keys/{old}/roll"),
        &[("grace", "1h")],
    );
    assert_eq!(again.status, 400);
    let bad_grace = admin.htmx_post(
        &format!("/api-management/api-keys/{new}/roll"),
        &[("grace", "forever")],
    );
    assert_eq!(bad_grace.status, 400);

    // The grace period ends (moved into the past rather than waited for). The edit bypasses the
    // server, so a server that has not remembered the key yet is asked; the running one keeps its
    // verified key for at most its memory's safety expiry.
    let past = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1);
    diesel::update(api_keys::table.find(old))
        .set(api_keys::expires_at.eq(past))
        .execute(&mut *app.pool.get().unwrap())
        .unwrap();
    let restarted = TestApp::spawn(&db);
    assert_eq!(
        restarted.api(Some(&old_secret)).error_of("/api/me"),
        (401, "expired_api_key".into())
    );
    assert_eq!(app.api(Some(&new_secret)).get("/api/me").status, 200);
    assert_eq!(
        admin.get("/api-management").row_ids(),
        [new],
        "an expired key leaves the list"
    );

    // "Now": the old key stops at once.
    let reply = admin.htmx_post(
        &format!("/api-management/api-keys/{new}/roll"),
        &[("grace", "now")],
    );
    let newest = reply.new_secret().unwrap();
    assert_eq!(
        app.api(Some(&new_secret)).error_of("/api/me"),
        (401, "expired_api_key".into())
    );
    assert_eq!(app.api(Some(&newest)).get("/api/me").status, 200);
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited 12 s for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

type LastUse = (
    Option<chrono::NaiveDateTime>,
    Option<String>,
    Option<String>,
);

fn last_use(conn: &mut DbConnection, id: i64) -> LastUse {
    api_keys::table
        .find(id)
        .select((
            api_keys::last_used_at,
            api_keys::last_used_ip,
            api_keys::last_used_user_agent,
        ))
        .first(conn)
        .unwrap()
}

fn usage_counts(conn: &mut DbConnection, id: i64) -> (i64, i64) {
    let rows: Vec<(i64, i64)> = api_key_usage::table
        .filter(api_key_usage::api_key_id.eq(id))
        .select((api_key_usage::success_count, api_key_usage::rejected_count))
        .load(conn)
        .unwrap();
    rows.into_iter()
        .fold((0, 0), |(s, r), (a, b)| (s + a, r + b))
}

fn usage_is_written_without_a_write_per_request(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, secret) = admin.create_api_key("busy");
    let (revoked, revoked_secret) = admin.create_api_key("retired");
    admin.htmx_post(&format!("/api-management/api-keys/{revoked}/revoke"), &[]);

    let billing: ureq::Agent = ureq::Agent::config_builder()
        .user_agent("billing-service/2.0")
        .http_status_as_error(false)
        .build()
        .into();
    let queued = billing
        .post(app.url("/api/default/invoice-sync"))
        .header("X-Granite-API-Key", &secret)
        .send_json(serde_json::json!({}))
        .unwrap();
    assert_eq!(queued.status().as_u16(), 202);
    for _ in 0..3 {
        assert_eq!(app.api(Some(&secret)).get("/api/me").status, 200);
    }
    // Calls the key authenticated but that were answered with an error count as refused.
    for _ in 0..2 {
        assert_eq!(
            app.api(Some(&secret))
                .get("/api/agent-runs/run_nosuchrun")
                .status,
            404
        );
    }
    let unsupported = app.post_json_with(
        "/api/rival-corp/nightly",
        &serde_json::json!({}),
        &[("X-Granite-API-Key", &secret)],
    );
    assert_eq!(unsupported.status, 404, "another organization's path");
    for _ in 0..2 {
        assert_eq!(app.api(Some(&revoked_secret)).get("/api/me").status, 401);
    }
    // Nothing is written by the requests themselves...
    let mut conn = app.pool.get().unwrap();
    assert_eq!(usage_counts(&mut conn, id), (0, 0), "no write per request");
    // ...and within the flush interval (5 s) it all lands.
    let (used_at, ip, agent) = wait_for("the last use to be written", || {
        let found = last_use(&mut conn, id);
        (found.2.as_deref() == Some("granite-tests/1.0")).then_some(found)
    });
    assert!(chrono::Utc::now().naive_utc() - used_at.unwrap() < chrono::Duration::seconds(30));
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(agent.as_deref(), Some("granite-tests/1.0"));
    wait_for("every call to be counted by its answer", || {
        (usage_counts(&mut conn, id) == (4, 3)).then_some(())
    });
    wait_for("rejected calls to be counted", || {
        (usage_counts(&mut conn, revoked) == (0, 2)).then_some(())
    });
    assert_eq!(
        last_use(&mut conn, revoked).0,
        None,
        "a refused call is not a use"
    );

    let page = admin.get("/api-management");
    assert!(
        page.body.contains("127.0.0.1 · granite-tests/1.0"),
        "last caller shown in the row"
    );
    // Revoking asks knowing what breaks: who called with the key, to what, in the last day.
    assert!(
        page.body.contains(
            "4 calls in the last 24 hours from 2 clients (127.0.0.1 · granite-tests/1.0; \
             127.0.0.1 · billing-service/2.0) to GET /api/me, invoice-sync will start failing."
        ),
        "{}",
        page.body
    );
    let analytics = admin.get(&format!("/api-management/api-keys/{id}/analytics"));
    assert_eq!(analytics.status, 200);
    assert!(analytics.body.contains("Requests per hour, last 24 hours"));
    assert!(analytics.body.contains("Requests per day, last 7 days"));
    assert!(
        analytics.body.contains("4 successful · 3 rejected"),
        "{}",
        analytics.body
    );
    assert!(analytics.body.contains("<svg"), "a server-rendered chart");
    assert!(!analytics.body.contains(&secret));
    let retired = admin.get(&format!("/api-management/api-keys/{revoked}/analytics"));
    assert!(retired.body.contains("0 successful · 2 rejected"));
    assert!(retired.body.contains("Revoked"));
}

fn usage_is_written_at_shutdown(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, secret) = admin.create_api_key("last-second");
    assert_eq!(app.api(Some(&secret)).get("/api/me").status, 200);
    let pool = app.pool.clone();
    drop(app);
    let mut conn = pool.get().unwrap();
    assert_eq!(
        usage_counts(&mut conn, id),
        (1, 0),
        "flushed while stopping"
    );
    assert!(last_use(&mut conn, id).0.is_some());
}

fn other_organizations_cannot_see_or_touch_a_key(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, secret) = admin.create_api_key("ours-only");
    let mut rival = app.rival();

    let page = rival.get("/api-management");
    assert!(!page.body.contains("ours-only"));
    assert!(page.row_ids().is_empty());
    assert_eq!(
        rival
            .htmx_post(&format!("/api-management/api-keys/{id}/revoke"), &[])
            .status,
        404
    );
    assert_eq!(
        rival
            .htmx_post(
                &format!("/api-management/api-keys/{id}/roll"),
                &[("grace", "now")]
            )
            .status,
        404
    );
    assert_eq!(
        rival
            .get(&format!("/api-management/api-keys/{id}/analytics"))
            .status,
        404
    );
    assert_eq!(
        app.api(Some(&secret)).get("/api/me").status,
        200,
        "untouched"
    );

    let (_, rival_secret) = rival.create_api_key("theirs");
    let me = app.api(Some(&rival_secret)).get("/api/me").json();
    assert_eq!(me["organization"]["slug"], "rival-corp");
    assert_ne!(me["key"]["id"], id);
}

fn viewers_see_keys_but_cannot_change_them(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    app.add_user("viewer@example.com", "viewer password", Role::Viewer, None);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, secret) = admin.create_api_key("watched");
    let mut viewer = app.signed_in("viewer@example.com", "viewer password");

    let page = viewer.get("/api-management");
    assert_eq!(page.row_ids(), [id]);
    assert!(!page.body.contains("Create Key"));
    assert!(!page.body.contains("Revoke key"));
    assert!(!page.body.contains("Roll key"));
    for (path, fields) in [
        (
            "/api-management/api-keys".to_owned(),
            vec![("name", "sneaky")],
        ),
        (format!("/api-management/api-keys/{id}/revoke"), vec![]),
        (
            format!("/api-management/api-keys/{id}/roll"),
            vec![("grace", "now")],
        ),
    ] {
        let reply = viewer.htmx_post(&path, &fields);
        assert_eq!(reply.status, 403, "{path}");
        assert!(
            reply
                .body
                .contains("Viewers see everything but change nothing.")
        );
    }
    assert_eq!(app.api(Some(&secret)).get("/api/me").status, 200);
    assert_eq!(admin.get("/api-management").row_ids(), [id]);
}

fn no_plaintext_key_in_the_database_or_the_logs(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (first, first_secret) = admin.create_api_key("scan-me");
    let rolled = admin.htmx_post(
        &format!("/api-management/api-keys/{first}/roll"),
        &[("grace", "7d")],
    );
    let second_secret = rolled.new_secret().unwrap();
    for secret in [&first_secret, &second_secret] {
        assert_eq!(app.api(Some(secret)).get("/api/me").status, 200);
    }
    let (_, third_secret) = admin.create_api_key("revoked-later");
    let third = admin.get("/api-management").row_ids()[0];
    admin.htmx_post(&format!("/api-management/api-keys/{third}/revoke"), &[]);
    app.api(Some(&third_secret)).get("/api/me");
    let pool = app.pool.clone();
    drop(app); // flushes usage and closes the server

    let secrets = [first_secret, second_secret, third_secret];
    let mut conn = pool.get().unwrap();
    let everything = match &mut *conn {
        DbConnection::Sqlite(_) => {
            drop(conn);
            drop(pool);
            let path = db.sqlite_path().unwrap();
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{}{suffix}", path.display());
                if let Ok(content) = std::fs::read(&file) {
                    bytes.extend(content);
                }
            }
            assert!(bytes.len() > 10_000, "the database file was read");
            String::from_utf8_lossy(&bytes).into_owned()
        }
        DbConnection::Postgres(pg) => {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Text)]
                content: String,
            }
            let tables: Vec<Row> = diesel::sql_query(
                "SELECT table_name::text AS content FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .load(pg)
            .unwrap();
            let mut dump = String::new();
            for table in tables {
                let rows: Vec<Row> = diesel::sql_query(format!(
                    "SELECT row_to_json(t)::text AS content FROM {} t",
                    table.content
                ))
                .load(pg)
                .unwrap();
                dump.extend(rows.into_iter().map(|r| r.content));
            }
            assert!(
                dump.contains("scan-me") && dump.contains(&sha256_hex(&secrets[0])),
                "the tables were read"
            );
            dump
        }
    };
    let log = logs();
    assert!(log.contains("API key created"), "the logs were captured");
    for secret in &secrets {
        assert!(
            !everything.contains(secret.as_str()),
            "a plaintext key is in the database"
        );
        assert!(
            !everything.contains(&secret[8..]),
            "the random part of a key is in the database"
        );
        assert!(!log.contains(&secret[8..]), "a key is in the logs");
    }
}
