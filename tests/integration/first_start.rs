//! First start: the configured admin is created once; without one, the setup URL works once; sessions
//! survive restarts and work across replicas.

use diesel::prelude::*;
use granite::db::schema::users;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    configured_admin_is_created_once,
    setup_url_creates_the_first_admin_once,
    bad_admin_configuration_stops_the_start,
    sessions_survive_restarts_and_span_replicas,
);

fn user_count(app: &TestApp) -> i64 {
    users::table
        .count()
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap()
}

fn as_refs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn configured_admin_is_created_once(backend: Backend) {
    let db = TestDb::new(backend);
    {
        let app = TestApp::spawn(&db);
        assert_eq!(user_count(&app), 1);
        assert!(
            app.setup_url.is_none(),
            "no setup URL when an admin is configured"
        );
    }
    // Restarted with another password and then another email: neither changes anything.
    let app = TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some("a different password".into());
    });
    drop(app);
    let app = TestApp::spawn_with(&db, |s| {
        s.admin_email = Some("second@example.com".into());
        s.admin_password = Some("another password".into());
    });
    assert_eq!(user_count(&app), 1);
    assert_eq!(
        app.client()
            .sign_in(ADMIN_EMAIL, "a different password")
            .status,
        401
    );
    assert_eq!(
        app.client()
            .sign_in("second@example.com", "another password")
            .status,
        401
    );
    assert_eq!(
        app.client().sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).status,
        303
    );
    let created = app.audit_count("first_admin_created");
    assert_eq!(created, 1);
}

fn setup_url_creates_the_first_admin_once(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn_with(&db, |_| {});
    let setup_url = app
        .setup_url
        .clone()
        .expect("a setup URL when no admin is configured");
    let path = setup_url.strip_prefix(&app.url("")).unwrap().to_owned();
    let code = path.split("code=").nth(1).unwrap().to_owned();
    let mut client = app.client();
    // Before set-up, the sign-in page says where the link is.
    let login = client.get("/login");
    assert!(
        login.body.contains("Granite is not set up yet") && login.body.contains("/setup?code="),
        "{}",
        login.body
    );
    assert!(
        !login.body.contains(&code),
        "the page never shows the code itself"
    );

    let wrong = client.get("/setup?code=wrong");
    assert!(wrong.body.contains("This setup link is not valid"));
    assert!(!wrong.body.contains("Create admin"));

    let form = client.get(&path);
    assert!(form.body.contains("Create admin"), "{}", form.body);
    let token = form.csrf_token();
    let fields = |password: &'static str, confirmation: &'static str| {
        vec![
            ("csrf_token", token.clone()),
            ("code", code.clone()),
            ("organization_name", "Acme Robotics".to_owned()),
            ("email", "owner@acme.test".to_owned()),
            ("password", password.to_owned()),
            ("password_confirmation", confirmation.to_owned()),
        ]
    };

    let short = fields("short", "short");
    let reply = client.post_form("/setup", &as_refs(&short));
    assert_eq!(reply.status, 422);
    assert!(reply.body.contains("at least 10 characters"));
    let mismatch = fields("long enough password", "long enough passwort");
    let reply = client.post_form("/setup", &as_refs(&mismatch));
    assert!(reply.body.contains("The two passwords differ."));
    assert_eq!(user_count(&app), 0, "bad input changes nothing");

    let good = fields("long enough password", "long enough password");
    let reply = client.post_form("/setup", &as_refs(&good));
    assert_eq!(reply.status, 303, "{}", reply.body);
    let page = client.get("/api-management");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Acme Robotics"));
    assert!(page.body.contains("owner@acme.test"));

    // The link is spent.
    let mut other = app.client();
    assert!(
        other
            .get(&path)
            .body
            .contains("This setup link is not valid")
    );
    let login = other.get("/login");
    assert!(!login.body.contains("not set up yet"), "set up now");
    let replay = login.csrf_token();
    let mut again = fields("another long password", "another long password");
    again[0].1 = replay;
    let reply = other.post_form("/setup", &as_refs(&again));
    assert_eq!(reply.status, 422);
    assert_eq!(user_count(&app), 1);
    drop(app);
    let restarted = TestApp::spawn_with(&db, |_| {});
    assert!(
        restarted.setup_url.is_none(),
        "no new setup URL once an admin exists"
    );
}

fn bad_admin_configuration_stops_the_start(backend: Backend) {
    let db = TestDb::new(backend);
    let mut settings =
        granite::config::Settings::new(db.url.clone(), "127.0.0.1:0".parse().unwrap());
    settings.admin_email = Some(ADMIN_EMAIL.into());
    settings.admin_password = Some("short".into());
    let error = TestApp::try_spawn(settings.clone())
        .err()
        .expect("a short password must stop the start");
    assert!(error.contains("GRANITE_ADMIN_PASSWORD"), "{error}");
    settings.admin_password = None;
    let error = TestApp::try_spawn(settings)
        .err()
        .expect("an email without a password must stop the start");
    assert!(
        error.contains("GRANITE_ADMIN_EMAIL and GRANITE_ADMIN_PASSWORD"),
        "{error}"
    );
}

fn sessions_survive_restarts_and_span_replicas(backend: Backend) {
    let db = TestDb::new(backend);
    let first = TestApp::spawn(&db);
    let second = TestApp::spawn(&db);
    let client = first.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let mut on_second = second.client();
    on_second.adopt_session_of(&client);
    assert_eq!(
        on_second.get("/api-management").status,
        200,
        "a replica accepts another's session"
    );
    drop(first);
    drop(second);
    let restarted = TestApp::spawn(&db);
    let mut after_restart = restarted.client();
    after_restart.adopt_session_of(&client);
    assert_eq!(
        after_restart.get("/api-management").status,
        200,
        "sessions survive a restart"
    );
}
