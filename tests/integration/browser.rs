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
    browser.wait_until("the sign-in page", || {
        browser.current_url().ends_with("/login").then_some(())
    });
    browser.type_into(&browser.field_labelled("Email"), ADMIN_EMAIL);
    browser.type_into(&browser.field_labelled("Password"), password);
    browser.click(&browser.button_named("Sign in"));
}

fn admin_signs_in_and_sees_the_four_sections(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let browser = Browser::start();
    sign_in(&browser, &app, ADMIN_PASSWORD);
    browser.wait_until("the API Management page", || {
        browser
            .current_url()
            .ends_with("/api-management")
            .then_some(())
    });
    let headings: Vec<String> = browser
        .wait_for_css("section h2")
        .iter()
        .map(|h| browser.text(h))
        .collect();
    assert_eq!(
        headings,
        [
            "API Keys",
            "Enrollment Tokens",
            "VM Machines",
            "Queue Status"
        ]
    );
    let jobs_queued = browser.wait_for_css("[data-metric=jobs-queued]");
    assert_eq!(browser.text(&jobs_queued[0]), "0");
    // htmx loaded under the Content-Security-Policy (a blocked script would leave `htmx` undefined).
    assert_eq!(
        browser.execute("return typeof window.htmx + ' ' + window.htmx.version"),
        "object 2.0.11"
    );
    browser.screenshot(&format!("api-management-{backend:?}").to_lowercase());

    browser.click(&browser.button_named("Sign out"));
    browser.wait_until("the sign-in page after sign-out", || {
        browser.current_url().ends_with("/login").then_some(())
    });
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
    browser.wait_until("a redirect to sign-in", || {
        browser.current_url().ends_with("/login").then_some(())
    });
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
    assert!(
        secret.starts_with("gk_live_") && secret.len() == 46,
        "{secret}"
    );
    let copy = browser.button_named("Copy key");
    browser.click(&copy);
    browser.wait_until("the copy button to confirm", || {
        (browser.text(&copy) == "Copied").then_some(())
    });
    browser.screenshot(&format!("api-key-created-{backend:?}").to_lowercase());

    // The key works, like a service calling with curl would use it.
    let me = app.api(Some(&secret)).get("/api/me");
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["key"]["name"], "payments-service");

    // Analytics is one click from the row; usage appears once the server has written it (every 5 s).
    let analytics = browser
        .wait_for_css("#api-keys tbody tr[data-id] a")
        .remove(0);
    browser.click(&analytics);
    let heading = browser.wait_for_css("h1").remove(0);
    assert_eq!(browser.text(&heading), "payments-service");
    let url = browser.current_url();
    browser.wait_until("the call to show in analytics", || {
        let totals = browser.css(".chart-totals");
        let counted = totals
            .first()
            .is_some_and(|t| browser.text(t) == "1 successful · 0 rejected");
        if !counted {
            std::thread::sleep(std::time::Duration::from_millis(500));
            browser.goto(&url);
        }
        counted.then_some(())
    });
    browser.screenshot(&format!("api-key-analytics-{backend:?}").to_lowercase());
    browser.goto(&app.url("/api-management"));
    browser.execute("window.stillTheSamePage = true; return null;");

    let row = browser
        .wait_for_css("#api-keys tbody tr[data-id]")
        .remove(0);
    let id = browser.attribute(&row, "data-id").unwrap();
    browser.click(
        &browser.wait_for_css("button[aria-label^='Revoke key payments-service (gk_live_']")[0],
    );
    let question = browser.accept_dialog();
    assert!(
        question.contains("payments-service (gk_live_"),
        "{question}"
    );
    browser.wait_until("the row to go", || {
        browser
            .css(&format!("tr[data-id='{id}']"))
            .is_empty()
            .then_some(())
    });
    // The page says what happened, politely, and focus lands on the section, not the page body.
    browser.wait_until("the revocation announced", || {
        browser
            .text_of("#notice[role=status]")
            .filter(|t| t.starts_with("Revoked key payments-service (gk_live_"))
    });
    assert_eq!(
        browser.execute("return document.activeElement.id;"),
        "api-keys-heading",
        "focus went to the section heading of the now empty list"
    );
    assert_eq!(
        browser.execute("return window.stillTheSamePage === true"),
        true,
        "no reload happened"
    );
    assert!(
        browser.css("[data-testid=new-secret]").is_empty(),
        "the secret is gone with the section"
    );
    assert_eq!(
        app.api(Some(&secret)).error_of("/api/me"),
        (401, "revoked_api_key".into())
    );

    // And a reload shows no key and no secret.
    browser.goto(&app.url("/api-management"));
    let empty = browser.wait_for_css("#api-keys .empty-state");
    assert!(browser.text(&empty[0]).contains("No API keys yet"));
}

mod fleet {
    use super::*;
    both_backends!(admin_enrolls_watches_and_removes_a_machine);
}

fn admin_enrolls_watches_and_removes_a_machine(backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let db = TestDb::new(backend);
    let app = Arc::new(TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.offline_after_secs = 3;
    }));
    let browser = Browser::start();
    sign_in(&browser, &app, ADMIN_PASSWORD);
    browser.wait_for_css("#enrollment-tokens");
    browser.execute("window.stillTheSamePage = true; return null;");

    // Two tokens: one to enroll with, one to revoke.
    browser.type_into(&browser.field_labelled("Description"), "spare");
    browser.click_button("Create Token");
    browser.wait_until("the first token", || {
        (browser.count("#enrollment-tokens tbody tr") == 1).then_some(())
    });
    browser.type_into(&browser.field_labelled("Description"), "build agent");
    browser.click_button("Create Token");
    browser.wait_until("the second token", || {
        (browser.count("#enrollment-tokens tbody tr") == 2).then_some(())
    });
    let token = browser
        .text_of("#enrollment-tokens [data-testid=new-secret]")
        .unwrap();
    assert!(token.starts_with("enroll_"), "{token}");
    let command = browser.text_of("#enrollment-tokens pre.command").unwrap();
    assert!(
        command.starts_with("granite driver enroll --server http://"),
        "{command}"
    );
    assert!(
        !command.contains(&token),
        "the token stays out of the command (and of shell history): {command}"
    );
    // The organization's API base, with this server's origin, ready to copy.
    assert_eq!(
        browser.text_of("#api-base").unwrap(),
        format!("{}/api/default/", app.url("")),
    );
    browser.screenshot(&format!("enrollment-token-{backend:?}").to_lowercase());

    // The machine enrolls over HTTP and heartbeats until told to stop.
    let (machine_id, credential) = app.enroll(&token, "build-agent-7");
    let beating = Arc::new(AtomicBool::new(true));
    let heart = {
        let (app, beating, credential) = (app.clone(), beating.clone(), credential.clone());
        std::thread::spawn(move || {
            while beating.load(Ordering::Relaxed) {
                assert_eq!(app.heartbeat(&credential).status, 200);
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
    };
    let tile = format!("#machine-list tr[data-id='{machine_id}']");
    let enrolled = std::time::Instant::now();
    browser.wait_until("the machine to appear Online", || {
        (browser.attribute_of(&tile, "data-status").as_deref() == Some("online")).then_some(())
    });
    assert!(
        enrolled.elapsed() < std::time::Duration::from_secs(5),
        "it appeared within 5 s"
    );
    assert!(
        browser.text_of(&tile).unwrap().contains("Online"),
        "the status is written, not only coloured"
    );
    browser.wait_until("the token to show Used by the machine", || {
        let used = browser.text_of("#enrollment-tokens tr[data-state=used]")?;
        used.contains("build-agent-7").then_some(())
    });
    browser.execute("document.getElementById('enrollment-tokens').scrollIntoView(); return null;");
    browser.screenshot(&format!("machine-online-{backend:?}").to_lowercase());

    // Pause it from its row (after confirming): it shows Paused, in words; resume it again.
    browser.click_button("Pause machine build-agent-7");
    assert!(browser.accept_dialog().contains("build-agent-7"));
    browser.wait_until("the machine to show Paused", || {
        (browser.attribute_of(&tile, "data-paused").as_deref() == Some("true")).then_some(())
    });
    assert!(browser.text_of(&tile).unwrap().contains("Paused"));
    browser.execute("document.getElementById('machines').scrollIntoView(); return null;");
    browser.screenshot(&format!("machine-paused-{backend:?}").to_lowercase());
    assert_eq!(
        browser.attribute_of(&tile, "data-status").as_deref(),
        Some("online"),
        "Online is still shown beside Paused"
    );
    browser.click_button("Resume machine build-agent-7");
    browser.wait_until("the machine to be resumed", || {
        (browser.attribute_of(&tile, "data-paused").as_deref() == Some("false")).then_some(())
    });
    assert!(!browser.text_of(&tile).unwrap().contains("Paused"));

    // Heartbeats stop: the machine turns Offline by itself.
    beating.store(false, Ordering::Relaxed);
    heart.join().unwrap();
    browser.wait_until("the machine to turn Offline", || {
        (browser.attribute_of(&tile, "data-status").as_deref() == Some("offline")).then_some(())
    });
    assert!(browser.text_of(&tile).unwrap().contains("Offline"));

    // Revoke the spare token with its trash icon.
    let hint = browser
        .text_of("#enrollment-tokens tr[data-state=active] code")
        .unwrap();
    browser.click_button(&format!("Revoke token {hint}"));
    assert!(browser.accept_dialog().contains(&hint));
    browser.wait_until("the token row to show Revoked", || {
        (browser.count("#enrollment-tokens tr[data-state=revoked]") == 1).then_some(())
    });

    // Remove the machine with its trash icon: the row goes and the credential is refused.
    browser.click_button("Remove machine build-agent-7");
    assert!(browser.accept_dialog().contains("build-agent-7"));
    browser.wait_until("the machine row to go", || {
        (browser.count(&tile) == 0).then_some(())
    });
    assert_eq!(
        app.heartbeat(&credential).api_error(),
        (401, "machine_removed".into())
    );
    assert_eq!(
        browser.execute("return window.stillTheSamePage === true"),
        true,
        "all without a reload"
    );
}

mod queue {
    use super::*;
    both_backends!(jobs_flow_through_the_page_without_a_reload);
}

fn jobs_flow_through_the_page_without_a_reload(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("scheduler");
    let (_, token) = admin.create_enrollment_token("worker");
    let (machine_id, credential) = app.enroll(&token, "worker-1");

    let browser = Browser::start();
    sign_in(&browser, &app, ADMIN_PASSWORD);
    browser.wait_for_css("#queue-status");
    browser.execute("window.stillTheSamePage = true; return null;");
    assert_eq!(
        browser.text_of("[data-metric=jobs-queued]").as_deref(),
        Some("0")
    );

    for n in 0..2 {
        let reply = app.start_run(&key, "default/invoice-sync", &serde_json::json!({ "n": n }));
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    browser.wait_until("Jobs Queued to rise", || {
        (browser.text_of("[data-metric=jobs-queued]").as_deref() == Some("2")).then_some(())
    });

    let claimed = app.claim(&credential, 0).json();
    let run_id = claimed["runId"].as_str().unwrap().to_owned();
    let tile = format!("#machine-list tr[data-id='{machine_id}']");
    browser.wait_until("the tile to turn Busy with its job", || {
        let busy = browser.attribute_of(&tile, "data-status").as_deref() == Some("busy");
        let text = browser.text_of(&tile).unwrap_or_default();
        (busy && text.contains("Busy") && text.contains(&run_id)).then_some(())
    });
    browser.wait_until("the queue numbers to change", || {
        let queued = browser.text_of("[data-metric=jobs-queued]");
        let running = browser.text_of("[data-metric=jobs-running]");
        (queued.as_deref() == Some("1") && running.as_deref() == Some("1")).then_some(())
    });
    assert_ne!(
        browser.text_of("[data-metric=avg-wait]").as_deref(),
        Some("—"),
        "Avg Wait Time has a value once a job started"
    );
    browser.resize(1280, 1650);
    browser.execute("window.scrollTo(0, 0); return null;");
    browser.screenshot(&format!("api-management-busy-{backend:?}").to_lowercase());
    browser.resize(1280, 1000);

    let done = app.complete(
        &credential,
        &run_id,
        &serde_json::json!({ "status": "completed", "result": { "ok": true } }),
    );
    assert_eq!(done.status, 200);
    browser.wait_until("the tile to turn Online again", || {
        (browser.attribute_of(&tile, "data-status").as_deref() == Some("online")).then_some(())
    });
    assert_eq!(
        browser.execute("return window.stillTheSamePage === true"),
        true,
        "all without a reload"
    );
    browser.execute("document.getElementById('queue-status').scrollIntoView(); return null;");
    browser.screenshot(&format!("queue-status-{backend:?}").to_lowercase());

    // The job is in the machine's history.
    browser.goto(&app.url(&format!("/api-management/machines/{machine_id}?tab=jobs")));
    browser.wait_until("the job in the history", || {
        let history = browser.text_of("section[aria-labelledby=history-heading] tbody")?;
        let completed = history.to_lowercase().contains("completed");
        (history.contains("invoice-sync") && history.contains(&run_id) && completed).then_some(())
    });
}

mod job_actions {
    use super::*;
    both_backends!(admin_cancels_and_retries_a_run_in_the_browser);
}

mod machine_page {
    use super::*;
    both_backends!(the_machine_page_follows_the_machine);
}

fn the_machine_page_follows_the_machine(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("vm-7");
    let (machine_id, credential) = app.enroll(&token, "vm-7");
    assert_eq!(app.heartbeat(&credential).status, 200);

    let browser = Browser::start();
    sign_in(&browser, &app, ADMIN_PASSWORD);
    browser.wait_for_css("#api-keys");
    browser.goto(&app.url(&format!("/api-management/machines/{machine_id}")));
    browser.wait_for_css("#machine-live");
    browser.execute("window.stillTheSamePage = true; return null;");
    assert!(!browser.text_of("#machine-live").unwrap().contains("Paused"));
    // Another admin pauses it; the open page shows it within a refresh, without a reload.
    let token = admin.page_csrf_token();
    let paused = admin.post_form_with(
        &format!("/api-management/machines/{machine_id}/pause"),
        &[],
        &[("X-CSRF-Token", &token), ("HX-Request", "true")],
    );
    assert_eq!(paused.status, 200);
    browser.wait_until("the page to show Paused", || {
        browser
            .text_of("#machine-live .page-title")
            .filter(|t| t.contains("Paused"))
    });
    assert_eq!(
        browser.execute("return window.stillTheSamePage === true"),
        true,
        "no reload happened"
    );
}

fn admin_cancels_and_retries_a_run_in_the_browser(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("scheduler");
    let reply = app.start_run(
        &key,
        "default/nightly-export",
        &serde_json::json!({ "day": 1 }),
    );
    let run_id = reply.json()["runId"].as_str().unwrap().to_owned();

    let browser = Browser::start();
    sign_in(&browser, &app, ADMIN_PASSWORD);
    // Signed in once the form's answer has led to the page (going elsewhere earlier would cut it off).
    browser.wait_for_css("#api-keys");
    browser.goto(&app.url("/api-management/jobs"));
    browser.click(&browser.wait_for_css(&format!("a[href='/api-management/jobs/{run_id}']"))[0]);
    browser.wait_until("the run page", || {
        browser.text_of("h1").filter(|t| t == "nightly-export")
    });
    browser.click_button(&format!("Cancel run {run_id}"));
    assert!(browser.accept_dialog().contains("nightly-export"));
    browser.wait_until("the run to show Cancelled", || {
        browser
            .text_of(".page-title .badge")
            .filter(|t| t.eq_ignore_ascii_case("cancelled"))
    });
    browser.click_button(&format!("Retry run {run_id}"));
    assert!(browser.accept_dialog().contains("again"));
    let retry_page = browser.wait_until("the new run's page", || {
        let url = browser.current_url();
        (!url.ends_with(&run_id)).then_some(url)
    });
    browser.wait_until("the new run, queued and linked to the old one", || {
        let queued = browser
            .text_of(".page-title .badge")
            .is_some_and(|t| t.eq_ignore_ascii_case("queued"));
        let linked = browser
            .text_of(".facts")
            .is_some_and(|t| t.contains(&run_id));
        (queued && linked).then_some(())
    });
    browser.screenshot(&format!("run-retried-{backend:?}").to_lowercase());
    let new_id = retry_page.rsplit('/').next().unwrap();
    assert_eq!(
        app.api(Some(&key))
            .get(&format!("/api/agent-runs/{new_id}"))
            .json()["status"],
        "queued"
    );
}
