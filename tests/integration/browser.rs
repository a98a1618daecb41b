//! Real headless Chromium, driven the way an admin uses the page.

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};
use crate::webdriver::Browser;

both_backends!(
    admin_signs_in_and_sees_the_four_sections,
    wrong_password_shows_an_error_and_no_session,
    admin_creates_uses_and_revokes_an_api_key,
);

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

fn admin_creates_uses_and_revokes_an_api_key(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let browser = Browser::start();
    sign_in(&browser, &app, ADMIN_PASSWORD);
    browser.wait_for_css("#api-keys");
    // A marker that a full page load would wipe out.
    browser.execute("window.stillTheSamePage = true; return null;");

    browser.type_into(&browser.field_labelled("Name"), "payments-service");
    browser.click(&browser.button_named("Create Key"));
    let shown = browser.wait_for_css("[data-testid=new-secret]");
    let secret = browser.text(&shown[0]);
    assert!(secret.starts_with("gk_live_") && secret.len() == 46, "{secret}");
    let copy = browser.button_named("Copy");
    browser.click(&copy);
    browser.wait_until("the copy button to confirm", || (browser.text(&copy) == "Copied").then_some(()));
    browser.screenshot(&format!("api-key-created-{backend:?}").to_lowercase());

    // The key works, like a service calling with curl would use it.
    let me = app.api(Some(&secret)).get("/api/me");
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["key"]["name"], "payments-service");

    // Analytics is one click from the row; usage appears once the server has written it (every 5 s).
    let analytics = browser.wait_for_css("#api-keys tbody tr[data-id] a").remove(0);
    browser.click(&analytics);
    let heading = browser.wait_for_css("h1").remove(0);
    assert_eq!(browser.text(&heading), "payments-service");
    let url = browser.current_url();
    browser.wait_until("the call to show in analytics", || {
        let totals = browser.css(".chart-totals");
        let counted = totals.first().is_some_and(|t| browser.text(t) == "1 successful · 0 rejected");
        if !counted {
            std::thread::sleep(std::time::Duration::from_millis(500));
            browser.goto(&url);
        }
        counted.then_some(())
    });
    browser.screenshot(&format!("api-key-analytics-{backend:?}").to_lowercase());
    browser.goto(&app.url("/api-management"));
    browser.execute("window.stillTheSamePage = true; return null;");

    let row = browser.wait_for_css("#api-keys tbody tr[data-id]").remove(0);
    let id = browser.attribute(&row, "data-id").unwrap();
    browser.click(&browser.button_named("Revoke key payments-service"));
    let question = browser.accept_dialog();
    assert!(question.contains("payments-service"), "{question}");
    browser.wait_until("the row to go", || browser.css(&format!("tr[data-id='{id}']")).is_empty().then_some(()));
    assert_eq!(browser.execute("return window.stillTheSamePage === true"), true, "no reload happened");
    assert!(browser.css("[data-testid=new-secret]").is_empty(), "the secret is gone with the section");
    assert_eq!(app.api(Some(&secret)).error_of("/api/me"), (401, "revoked_api_key".into()));

    // And a reload shows no key and no secret.
    browser.goto(&app.url("/api-management"));
    let empty = browser.wait_for_css("#api-keys .empty-state");
    assert!(browser.text(&empty[0]).contains("No API keys yet"));
}
