//! Every state-changing dashboard request needs the session's token and our own origin.

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    post_without_token_is_refused_and_changes_nothing,
    post_with_a_wrong_token_is_refused,
    cross_origin_post_is_refused_even_with_the_token,
    post_without_origin_or_referer_is_refused,
    header_token_is_accepted_like_the_form_field,
    sign_in_form_needs_its_token,
);

fn post_without_token_is_refused_and_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let reply = client.post_form("/logout", &[]);
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("did not come from this page"));
    assert_eq!(
        client.get("/api-management").status,
        200,
        "still signed in: the refused request changed nothing"
    );
}

fn post_with_a_wrong_token_is_refused(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let token = client.page_csrf_token();
    // The last character changed (to `x`, or to `y` where it already was `x`).
    let (kept, last) = token.split_at(token.len() - 1);
    let wrong = format!("{kept}{}", if last == "x" { "y" } else { "x" });
    assert_ne!(wrong, token);
    assert_eq!(
        client
            .post_form("/logout", &[("csrf_token", &wrong)])
            .status,
        403
    );
    assert_eq!(
        client
            .post_form_with("/logout", &[], &[("X-CSRF-Token", &wrong)])
            .status,
        403
    );
    assert_eq!(client.get("/api-management").status, 200);
}

fn cross_origin_post_is_refused_even_with_the_token(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let token = client.page_csrf_token();
    client.origin = Some("http://evil.example".into());
    assert_eq!(
        client
            .post_form("/logout", &[("csrf_token", &token)])
            .status,
        403
    );
    client.origin = None;
    let reply = client.post_form_with(
        "/logout",
        &[("csrf_token", &token)],
        &[("Referer", "http://evil.example/page")],
    );
    assert_eq!(reply.status, 403);
    assert_eq!(client.get("/api-management").status, 200);
}

fn post_without_origin_or_referer_is_refused(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let token = client.page_csrf_token();
    client.origin = None;
    assert_eq!(
        client
            .post_form("/logout", &[("csrf_token", &token)])
            .status,
        403
    );
    // A same-origin Referer is enough when a browser sends no Origin.
    let referer = app.url("/api-management");
    let reply = client.post_form_with(
        "/logout",
        &[("csrf_token", &token)],
        &[("Referer", &referer)],
    );
    assert_eq!(reply.status, 303);
}

fn header_token_is_accepted_like_the_form_field(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let token = client.page_csrf_token();
    let reply = client.post_form_with(
        "/logout",
        &[],
        &[("X-CSRF-Token", &token), ("HX-Request", "true")],
    );
    assert_eq!(reply.status, 303);
    assert_eq!(client.get("/api-management").status, 303, "signed out");
}

fn sign_in_form_needs_its_token(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut client = app.client();
    client.get("/login");
    let reply = client.post_form(
        "/login",
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
    );
    assert_eq!(reply.status, 403);
    assert_eq!(
        client.get("/api-management").status,
        303,
        "no session was opened"
    );
}
