//! Real headless Chromium, driven the way an admin uses the page.

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};
use crate::webdriver::Browser;

both_backends!(admin_signs_in_and_sees_the_four_sections, wrong_password_shows_an_error_and_no_session);

fn sign_in(browser: &Browser, app: &TestApp, password: &str) {
    browser.goto(&app.url("/api-management"));
    browser.wait_until("the sign-in page", || browser.current_url().ends_with("/login").then_some(()));
    browser.type_into(&browser.field_labelled("Email"), ADMIN_EMAIL);
    browser.type_into(&browser.field_labelled("Password"), password);
    browser.click(&browser.button_named("Sign in"));
}

fn admin_signs_in_and_sees_the_four_sections(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let browser = Browser::start();
    sign_in(&browser, &app, ADMIN_PASSWORD);
    browser.wait_until("the API Management page", || browser.current_url().ends_with("/api-management").then_some(()));
    let headings: Vec<String> = browser.wait_for_css("section h2").iter().map(|h| browser.text(h)).collect();
    assert_eq!(headings, ["API Keys", "Enrollment Tokens", "VM Machines", "Queue Status"]);
    let jobs_queued = browser.wait_for_css("[data-metric=jobs-queued]");
    assert_eq!(browser.text(&jobs_queued[0]), "0");
    // htmx loaded under the Content-Security-Policy (a blocked script would leave `htmx` undefined).
    assert_eq!(browser.execute("return typeof window.htmx + ' ' + window.htmx.version"), "object 2.0.11");
    browser.screenshot(&format!("api-management-{backend:?}").to_lowercase());

    browser.click(&browser.button_named("Sign out"));
    browser.wait_until("the sign-in page after sign-out", || browser.current_url().ends_with("/login").then_some(()));
}

fn wrong_password_shows_an_error_and_no_session(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let browser = Browser::start();
    sign_in(&browser, &app, "definitely wrong");
    let alert = browser.wait_for_css("[role=alert]");
    assert_eq!(browser.text(&alert[0]), "Incorrect email or password.");
    assert!(browser.current_url().ends_with("/login"));
    browser.goto(&app.url("/api-management"));
    browser.wait_until("a redirect to sign-in", || browser.current_url().ends_with("/login").then_some(()));
}
