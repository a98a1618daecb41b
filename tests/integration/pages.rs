//! What every response carries, static files, health, and the storage the server sets up by itself.

use diesel::prelude::*;
use diesel::sql_types::Text;
use granite::db::DbConnection;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    pages_carry_security_headers,
    htmx_is_served_from_the_binary_with_a_long_cache_life,
    health_reports_the_database,
    storage_is_created_and_migrated_at_start,
    the_status_strip_tells_the_fleet_and_queue_above_the_fold,
);

fn pages_carry_security_headers(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    let login = client.get("/login");
    let mut signed_in = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let page = signed_in.get("/api-management");
    for reply in [&login, &page] {
        let csp = reply.header("content-security-policy").expect("a CSP");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("referrer-policy"), Some("same-origin"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(!reply.body.contains("<script>"), "no inline script");
        assert!(
            !has_inline_event_handler(&reply.body),
            "no inline event handlers"
        );
    }
    // htmx sends the CSRF token with every request it makes.
    assert!(
        page.body
            .contains("hx-headers='{&#34;X-CSRF-Token&#34;:&#34;"),
        "hx-headers on <body>"
    );
}

/// Whether some tag carries an `on…=` attribute (`onclick=`, `onload=`, …).
fn has_inline_event_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

fn htmx_is_served_from_the_binary_with_a_long_cache_life(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    let login = client.get("/login");
    let src = login
        .body
        .split("<script src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(src.starts_with("/static/htmx-2.0.11.min.js?v="), "{src}");
    let htmx = client.get(&src);
    assert_eq!(htmx.status, 200);
    assert!(
        htmx.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(
        htmx.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(htmx.body.contains("htmx"), "the real htmx");
    assert!(htmx.body.len() > 40_000);
    // idiomorph, vendored and fingerprinted the same way.
    let idiomorph = login
        .body
        .split("<script src=\"")
        .nth(2)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        idiomorph.starts_with("/static/idiomorph-ext-0.8.0.min.js?v="),
        "{idiomorph}"
    );
    let morph = client.get(&idiomorph);
    assert_eq!(morph.status, 200);
    assert!(morph.body.contains("Idiomorph") && morph.body.contains("defineExtension"));
    // A URL without the current fingerprint is not cached forever.
    assert_eq!(
        client.get("/static/app.css").header("cache-control"),
        Some("no-cache")
    );
    assert_eq!(client.get("/static/nothing.js").status, 404);
    assert!(
        !login.body.contains("src=\"http"),
        "nothing is fetched from elsewhere"
    );
}

fn health_reports_the_database(backend: Backend) {
    use diesel::connection::SimpleConnection;
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    let live = client.get("/livez");
    assert_eq!((live.status, live.body.as_str()), (200, "ok"));
    let ready = client.get("/healthz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body, "ok\nread: ok\nwrite: ok\nschema: ok\n");

    match &db.url {
        // Another process holds SQLite's write lock: reads work, writes would wait; not ready.
        granite::db::DatabaseUrl::Sqlite(path) => {
            let mut other = diesel::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
            // The server's own background writers may hold the lock for a moment: wait for it.
            other
                .batch_execute("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE")
                .unwrap();
            // An answer serves for a second.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let locked = client.get("/healthz");
            assert_eq!(locked.status, 503, "{}", locked.body);
            assert!(
                locked
                    .body
                    .starts_with("not ready\nread: ok\nwrite: FAILED: cannot take the write lock"),
                "{}",
                locked.body
            );
            assert_eq!(client.get("/livez").status, 200, "alive all the same");
            other.batch_execute("ROLLBACK").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            assert_eq!(client.get("/healthz").status, 200);
        }
        // The schema was dropped under the server: not ready, and it says which part.
        granite::db::DatabaseUrl::Postgres(url) => {
            let mut other = diesel::PgConnection::establish(url).unwrap();
            other
                .batch_execute("DROP TABLE __diesel_schema_migrations")
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let missing = client.get("/healthz");
            assert_eq!(missing.status, 503, "{}", missing.body);
            assert!(
                missing
                    .body
                    .contains("schema: FAILED: the schema is missing"),
                "{}",
                missing.body
            );
            assert_eq!(client.get("/livez").status, 200, "alive all the same");
        }
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

fn storage_is_created_and_migrated_at_start(backend: Backend) {
    let db = TestDb::new(backend);
    if let Some(path) = db.sqlite_path() {
        assert!(
            !path.parent().unwrap().exists(),
            "the test starts without the folder"
        );
    }
    let app = TestApp::spawn(&db);
    let mut conn = app.pool.get().unwrap();
    match &mut *conn {
        DbConnection::Sqlite(conn) => {
            assert!(
                db.sqlite_path().unwrap().exists(),
                "the SQLite file and its folder are created"
            );
            let mode: Row =
                diesel::sql_query("SELECT journal_mode AS value FROM pragma_journal_mode")
                    .get_result(conn)
                    .unwrap();
            assert_eq!(mode.value, "wal");
            let fk: Row = diesel::sql_query(
                "SELECT CAST(foreign_keys AS TEXT) AS value FROM pragma_foreign_keys",
            )
            .get_result(conn)
            .unwrap();
            assert_eq!(fk.value, "1");
            let busy: Row =
                diesel::sql_query("SELECT CAST(timeout AS TEXT) AS value FROM pragma_busy_timeout")
                    .get_result(conn)
                    .unwrap();
            assert_eq!(busy.value, "5000");
            // Only the server's user can read the data: the file, its WAL files, the folder made.
            let path = db.sqlite_path().unwrap();
            let mode = |p: &std::path::Path| {
                std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(p).unwrap().permissions(),
                ) & 0o777
            };
            assert_eq!(
                mode(path.parent().unwrap()),
                0o700,
                "the folder Granite made"
            );
            for suffix in ["", "-wal", "-shm"] {
                let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
                assert!(file.exists(), "{} exists in WAL mode", file.display());
                assert_eq!(mode(&file), 0o600, "{}", file.display());
            }
        }
        DbConnection::Postgres(conn) => {
            let tables: Vec<Row> = diesel::sql_query(
                "SELECT table_name::text AS value FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
            )
            .load(conn)
            .unwrap();
            let names: Vec<&str> = tables.iter().map(|r| r.value.as_str()).collect();
            for table in [
                "api_keys",
                "audit_events",
                "enrollment_tokens",
                "machines",
                "organizations",
                "runs",
                "users",
            ] {
                assert!(names.contains(&table), "{table} missing from {names:?}");
            }
        }
    }
    // Starting again on the same database applies nothing twice.
    drop(conn);
    drop(app);
    let again = TestApp::spawn(&db);
    assert_eq!(again.client().get("/healthz").status, 200);
}

fn the_status_strip_tells_the_fleet_and_queue_above_the_fold(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("vm-1");
    let (_, credential) = app.enroll(&token, "vm-1");
    assert_eq!(app.heartbeat(&credential).status, 200);
    for _ in 0..2 {
        let run = app.start_run(&key, "default/nightly?requires=sap", &serde_json::json!({}));
        assert_eq!(run.status, 202);
    }
    let count = |body: &str, which: &str| -> String {
        let marker = format!("data-strip=\"{which}\">");
        let after = body
            .split(&marker)
            .nth(1)
            .unwrap_or_else(|| panic!("{which} in {body}"));
        after
            .split("<strong>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned()
    };
    let page = admin.get("/api-management");
    let strip_at = page
        .body
        .find("id=\"status-strip\"")
        .expect("a status strip");
    assert!(
        strip_at < page.body.find("id=\"api-keys\"").unwrap(),
        "the strip comes before the first section"
    );
    // The fleet census may be up to a second old.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let strip = admin.get_with("/api-management/status-strip", &[("HX-Request", "true")]);
    assert_eq!(strip.status, 200);
    assert_eq!(count(&strip.body, "online"), "1");
    assert_eq!(count(&strip.body, "busy"), "0");
    assert_eq!(count(&strip.body, "offline"), "0");
    assert_eq!(count(&strip.body, "jobs-queued"), "2");
    assert_eq!(count(&strip.body, "avg-wait"), "—");
    assert!(strip.body.contains("href=\"#queue-status\""));
    assert!(
        strip.body.contains("Online</span>"),
        "status in words, not colour alone"
    );
    // Opened directly, it leads to the page.
    assert_eq!(admin.get("/api-management/status-strip").status, 303);
}
