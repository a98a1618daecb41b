use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    signed_out_visitors_land_on_login,
    admin_signs_in_and_sees_the_four_sections,
    wrong_password_shows_an_error_and_no_session,
    unknown_email_gets_the_same_answer,
    sign_out_ends_the_session,
    session_cookie_is_locked_down,
    an_idle_session_ends,
);

fn an_idle_session_ends(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.session_idle_exact = Some(std::time::Duration::from_secs(3));
    });
    let mut client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    for _ in 0..3 {
        // Activity within the limit keeps the session.
        assert_eq!(client.get("/api-management").status, 200);
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    // Activity is kept to the second, so idle a little over the limit plus that second.
    std::thread::sleep(std::time::Duration::from_millis(4100));
    let reply = client.get("/api-management");
    assert_eq!(reply.status, 303, "idle longer than the limit: signed out");
    assert_eq!(reply.header("location"), Some("/login"));
}

fn signed_out_visitors_land_on_login(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    for path in ["/", "/api-management", "/no-such-page"] {
        let reply = client.get(path);
        assert_eq!(reply.status, 303, "{path}");
        assert_eq!(reply.header("location"), Some("/login"), "{path}");
    }
    // An htmx request is told to load the sign-in page as a whole instead of swapping it into a section.
    let reply = client.get_with("/api-management", &[("HX-Request", "true")]);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("hx-redirect"), Some("/login"));
    let login = client.get("/login");
    assert_eq!(login.status, 200);
    assert!(login.body.contains("<label for=\"email\">Email</label>"));
    assert!(
        login
            .body
            .contains("<label for=\"password\">Password</label>")
    );
    assert!(login.body.contains(">Sign in</button>"));
}

fn admin_signs_in_and_sees_the_four_sections(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    let reply = client.sign_in("  Admin@Example.com ", ADMIN_PASSWORD);
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.header("location"), Some("/api-management"));

    let page = client.get("/api-management");
    assert_eq!(page.status, 200);
    for heading in [
        "API Keys",
        "Enrollment Tokens",
        "VM Machines",
        "Queue Status",
    ] {
        assert!(
            page.body.contains(&format!("\">{heading}</h2>")),
            "missing section {heading}"
        );
    }
    assert!(page.body.contains(ADMIN_EMAIL));
    assert!(page.body.contains("Default organization"));
    for metric in ["jobs-queued", "avg-wait", "active-drivers"] {
        assert!(
            page.body.contains(&format!("data-metric=\"{metric}\"")),
            "missing metric {metric}"
        );
    }
    // `/` leads to the page once signed in, and so does /login.
    assert_eq!(client.get("/").header("location"), Some("/api-management"));
    assert_eq!(
        client.get("/login").header("location"),
        Some("/api-management")
    );
}

fn wrong_password_shows_an_error_and_no_session(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    let reply = client.sign_in(ADMIN_EMAIL, "not the password at all");
    assert_eq!(reply.status, 401);
    assert!(reply.body.contains("Incorrect email or password."));
    assert!(
        reply.body.contains(&format!("value=\"{ADMIN_EMAIL}\"")),
        "the email stays filled in"
    );
    assert!(
        !reply.body.contains("not the password at all"),
        "the password is never echoed"
    );
    let page = client.get("/api-management");
    assert_eq!(page.status, 303, "a failed sign-in must not open a session");
}

fn unknown_email_gets_the_same_answer(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    let unknown = client.sign_in("nobody@example.com", ADMIN_PASSWORD);
    assert_eq!(unknown.status, 401);
    assert!(unknown.body.contains("Incorrect email or password."));
    let malformed = client.sign_in("not an email", ADMIN_PASSWORD);
    assert_eq!(malformed.status, 401);
    assert!(malformed.body.contains("Incorrect email or password."));
    assert_eq!(client.get("/api-management").status, 303);
}

fn sign_out_ends_the_session(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let stolen_cookie_holder = client.get("/api-management");
    assert_eq!(stolen_cookie_holder.status, 200);
    let token = client.page_csrf_token();
    let reply = client.post_form("/logout", &[("csrf_token", &token)]);
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/login"));
    assert!(!client.has_session_cookie(), "sign-out clears the cookie");
    assert_eq!(client.get("/api-management").status, 303);
}

fn session_cookie_is_locked_down(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    let page = client.get("/login");
    let token = page.csrf_token();
    let reply = client.post_form(
        "/login",
        &[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("csrf_token", &token),
        ],
    );
    let cookie = reply
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("granite_session="))
        .unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Max-Age="), "the session expires: {cookie}");
    assert!(
        !cookie.contains(ADMIN_EMAIL),
        "the cookie is encrypted: {cookie}"
    );

    // Told that users arrive over HTTPS, the cookie is Secure.
    let secure_db = TestDb::new(backend);
    let secure_app = TestApp::spawn_with(&secure_db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.secure_cookies = true;
    });
    let mut client = secure_app.client();
    let reply = client.get("/login");
    let cookie = reply
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("granite_session="))
        .unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
}
