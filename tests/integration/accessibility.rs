//! Accessibility, checked by a tool and by the keyboard: axe-core (pinned, `tests/fixtures`) in real
//! Chromium on every page at laptop and phone width; no page scrolls sideways on a phone; focus stays
//! where the user put it while live lists refresh.

use std::time::Duration;

use serde_json::Value;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};
use crate::webdriver::{Browser, ENTER, ESCAPE, TAB};

both_backends!(every_page_passes_axe_at_laptop_and_phone_width);

mod focus {
    use super::*;
    both_backends!(focus_stays_on_a_row_while_the_list_refreshes);
}

mod keyboard {
    use super::*;
    both_backends!(an_admin_does_everything_with_the_keyboard_alone);
}

const AXE: &str = include_str!("../fixtures/axe-4.14.1.min.js");
const LAPTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// Serious and critical axe violations of the page as it is, one line each.
fn axe_violations(browser: &Browser) -> Vec<String> {
    let script = format!(
        "{AXE}\n;const done = arguments[arguments.length - 1];\n\
         axe.run(document, {{ resultTypes: ['violations'] }}).then(function (results) {{\n\
           done(results.violations.filter(function (v) {{ return v.impact === 'serious' || v.impact === 'critical'; }})\n\
             .map(function (v) {{ return v.impact + ' ' + v.id + ': ' + v.help + ' at ' +\n\
               v.nodes.slice(0, 3).map(function (n) {{ return n.target.join(' '); }}).join(', '); }}));\n\
         }}, function (error) {{ done(['axe failed: ' + error]); }});"
    );
    match browser.execute_async(&script) {
        Value::Array(lines) => lines
            .into_iter()
            .map(|l| l.as_str().unwrap_or_default().to_owned())
            .collect(),
        other => vec![format!("axe answered {other}")],
    }
}

/// At each width: no serious or critical axe violation, nothing wider than the screen.
fn check_page(browser: &Browser, name: &str, failures: &mut Vec<String>) {
    for (width, height) in [LAPTOP, PHONE] {
        browser.resize(width, height);
        std::thread::sleep(Duration::from_millis(150));
        for violation in axe_violations(browser) {
            failures.push(format!("{name} at {width} px: {violation}"));
        }
        let (scroll, inner) = {
            let sizes = browser
                .execute("return [document.documentElement.scrollWidth, window.innerWidth];");
            (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap())
        };
        if scroll > inner {
            failures.push(format!(
                "{name} at {width} px scrolls sideways: {scroll} px wide in a {inner} px window"
            ));
        }
        // Every control in reach: nothing to press lies beyond the screen's edges.
        let outside = browser.execute(
            "return Array.from(document.querySelectorAll('button, a[href], input:not([type=hidden]), select, textarea'))\
               .filter(function (e) { const r = e.getBoundingClientRect(); return e.checkVisibility() && r.width > 0 && r.height > 0 && !e.closest('.skip-link') && (r.left < 0 || r.right > window.innerWidth + 0.5); })\
               .map(function (e) { return (e.getAttribute('aria-label') || e.textContent.trim() || e.name || e.tagName).slice(0, 60); });",
        );
        for control in outside.as_array().into_iter().flatten() {
            failures.push(format!(
                "{name} at {width} px: {control} lies off the screen"
            ));
        }
        browser.screenshot(&format!("a11y-{name}-{width}"));
    }
    browser.resize(LAPTOP.0, LAPTOP.1);
}

fn every_page_passes_axe_at_laptop_and_phone_width(backend: Backend) {
    let db = TestDb::new(backend);
    // No admin configured: the first start issues a setup link.
    let app = TestApp::spawn_with(&db, |_| {});
    let setup_url = app.setup_url.clone().expect("a setup link");
    let browser = Browser::start();
    let mut failures = Vec::new();

    browser.goto(&app.url("/login"));
    browser.wait_for_css("form");
    check_page(&browser, "sign-in", &mut failures);
    browser.goto(&setup_url);
    browser.wait_for_css("#organization_name");
    check_page(&browser, "setup", &mut failures);

    // Set up through the page, then look at the empty dashboard.
    browser.type_into(&browser.field_labelled("Organization"), "Acme Robotics");
    browser.type_into(&browser.field_labelled("Email"), ADMIN_EMAIL);
    browser.type_into(&browser.field_labelled("Password"), ADMIN_PASSWORD);
    browser.type_into(&browser.field_labelled("Repeat password"), ADMIN_PASSWORD);
    browser.click(&browser.button_named("Create admin"));
    browser.wait_for_css("#api-keys");
    check_page(&browser, "dashboard-empty", &mut failures);

    // Fill it: keys, tokens, machines in every state, runs.
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("billing-service");
    admin.create_api_key("nightly-reports");
    let (_, spare) = admin.create_enrollment_token("spare");
    let _ = spare;
    let mut machine = 0;
    for name in ["vm-build-1", "vm-build-2"] {
        let (_, token) = admin.create_enrollment_token(name);
        let (id, credential) = app.enroll(&token, name);
        assert_eq!(app.heartbeat(&credential).status, 200);
        machine = id;
    }
    let run = app.start_run(
        &key,
        "acme-robotics/invoice-sync",
        &serde_json::json!({ "n": 1 }),
    );
    assert_eq!(run.status, 202, "{}", run.body);
    let run_id = run.json()["runId"].as_str().unwrap().to_owned();

    browser.goto(&app.url("/api-management"));
    browser.wait_for_css("#machine-list tbody tr");
    check_page(&browser, "dashboard-full", &mut failures);
    // The Roll popover open, as an admin about to roll a key sees it.
    browser.execute("document.querySelector('details.roll').open = true; return null;");
    check_page(&browser, "dashboard-roll-open", &mut failures);
    // A click elsewhere closes it.
    browser.click(&browser.wait_for_css("main h1")[0]);
    browser.wait_until("Roll to close on a click outside it", || {
        (browser.count("details.roll[open]") == 0).then_some(())
    });
    browser.goto(&app.url(&format!("/api-management/machines/{machine}")));
    browser.wait_for_css("h1");
    check_page(&browser, "machine-detail", &mut failures);
    for tab in ["capabilities", "jobs", "settings"] {
        browser.goto(&app.url(&format!("/api-management/machines/{machine}?tab={tab}")));
        browser.wait_for_css("a[aria-current=page]");
        check_page(&browser, &format!("machine-{tab}"), &mut failures);
    }
    // A refused priority, as the admin sees it: the error beside the field.
    browser.execute(
        "const f = document.getElementById('machine-priority'); f.removeAttribute('max'); f.value = '5000'; return null;",
    );
    browser.click_button("Save priority");
    browser.wait_for_css("#machine-priority-error");
    check_page(&browser, "machine-settings-refused", &mut failures);
    browser.goto(&app.url("/api-management?capability=linux"));
    browser.wait_for_css("#machine-list .filter-note");
    check_page(&browser, "dashboard-capability-filter", &mut failures);
    browser.goto(&app.url("/api-management/machines/cleanup?days=1"));
    browser.wait_for_css("h1");
    check_page(&browser, "machine-cleanup", &mut failures);
    browser.goto(&app.url("/api-management/jobs"));
    browser.wait_for_css("h1");
    check_page(&browser, "jobs", &mut failures);
    browser.goto(&app.url(&format!("/api-management/jobs/{run_id}")));
    browser.wait_for_css("h1");
    check_page(&browser, "run-detail", &mut failures);
    browser.goto(&app.url("/account"));
    browser.wait_for_css("h1");
    check_page(&browser, "account", &mut failures);
    browser.goto(&app.url("/api-management/audit-log"));
    browser.wait_for_css("#audit-events tbody tr");
    check_page(&browser, "audit-log", &mut failures);
    browser.goto(&app.url("/api-management/audit-log?action=machine_paused"));
    browser.wait_for_css("#audit-events .empty-state");
    check_page(&browser, "audit-log-no-match", &mut failures);

    // Members with an invite link just made and one open invite; the link's own page.
    browser.goto(&app.url("/api-management/members"));
    browser.type_into(&browser.field_labelled("Email"), "new.member@example.com");
    browser.click(&browser.button_named("Create invite link"));
    let link = browser.wait_for_css("[data-testid=new-secret]").remove(0);
    let link = browser.text(&link);
    check_page(&browser, "members", &mut failures);
    // A key's analytics with its rate-limit form, refused input shown.
    browser.goto(&app.url(&format!("/api-management/api-keys/{key_id}/analytics")));
    browser.type_into(&browser.field_labelled("Requests per minute"), "lots");
    browser.click(&browser.button_named("Save limit"));
    browser.wait_for_css("#rate-limit-error");
    check_page(&browser, "api-key-analytics-refused", &mut failures);
    // The invite link's page (it reads the same signed in or out).
    browser.goto(&link);
    browser.wait_for_css("#password");
    check_page(&browser, "invite", &mut failures);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn focus_stays_on_a_row_while_the_list_refreshes(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("vm-3");
    let (_, credential) = app.enroll(&token, "vm-3");
    assert_eq!(app.heartbeat(&credential).status, 200);
    admin.create_enrollment_token("unused");

    let browser = Browser::start();
    browser.goto(&app.url("/login"));
    browser.type_into(&browser.field_labelled("Email"), ADMIN_EMAIL);
    browser.type_into(&browser.field_labelled("Password"), ADMIN_PASSWORD);
    browser.click(&browser.button_named("Sign in"));
    browser.wait_for_css("#machine-list tbody tr");

    browser.execute(
        "window.refreshes = {}; \
         document.body.addEventListener('htmx:afterSwap', function (event) { \
           const id = event.detail.target.id; window.refreshes[id] = (window.refreshes[id] || 0) + 1; }); \
         return null;",
    );
    for (label, list, selector) in [
        (
            "Remove machine vm-3",
            "machine-list",
            "#machine-list button[aria-label='Remove machine vm-3']",
        ),
        (
            "Revoke token",
            "token-list",
            "#token-list tbody tr button.danger",
        ),
    ] {
        browser.execute(&format!(
            "document.querySelector(\"{selector}\").focus(); window.refreshes['{list}'] = 0; return null;"
        ));
        let focused = |browser: &Browser| {
            browser
                .execute("const e = document.activeElement; return !e || e === document.body ? 'the page body' : (e.getAttribute('aria-label') || e.textContent.trim().slice(0, 80));")
                .as_str()
                .map(str::to_owned)
        };
        let before = focused(&browser).expect("something has focus");
        assert_ne!(before, "", "{label}: the button took focus");
        // Three refreshes of the lists (every 4 s).
        browser.wait_until("three refreshes", || {
            let refreshes = browser
                .execute(&format!("return window.refreshes['{list}'];"))
                .as_u64()?;
            (refreshes >= 3).then_some(())
        });
        assert_eq!(
            focused(&browser).as_deref(),
            Some(before.as_str()),
            "{label}: focus stayed on the same button through three refreshes"
        );
        let on_body = browser
            .execute("return document.activeElement === document.body;")
            .as_bool()
            .unwrap();
        assert!(!on_body, "{label}: focus did not fall to the page");
    }
}

fn an_admin_does_everything_with_the_keyboard_alone(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("vm-1");
    let (machine_id, credential) = app.enroll(&token, "vm-1");
    assert_eq!(app.heartbeat(&credential).status, 200);

    let browser = Browser::start();
    browser.goto(&app.url("/login"));
    browser.wait_for_css("#email");
    // Sign in: Tab to the email field, type, Tab, type, Enter.
    browser.tab_to("the email field", |name| name == "Email");
    browser.type_keys(ADMIN_EMAIL);
    browser.press(TAB);
    browser.type_keys(ADMIN_PASSWORD);
    browser.press(ENTER);
    browser.wait_for_css("#api-keys");
    let notice = |browser: &Browser, starts: &str| {
        let starts = starts.to_owned();
        browser.wait_until(&format!("the message {starts:?}"), || {
            browser
                .text_of("#notice[role=status]")
                .filter(|t| t.starts_with(&starts))
        })
    };

    // Create Key: focus lands on the new secret.
    browser.tab_to("the key name field", |name| name == "Name");
    browser.type_keys("billing");
    browser.press(TAB);
    assert_eq!(browser.focused(), "Create Key");
    browser.press(ENTER);
    notice(&browser, "Created key billing (gk_live_");
    browser.wait_until("focus on the new key", || {
        (browser.execute("return document.activeElement.id;") == "new-api-key").then_some(())
    });
    let first_hint = browser.text_of("#api-keys tbody tr code").unwrap();

    // Roll: Enter opens the popover, Escape closes it and gives focus back; then roll for real.
    let roll = format!("Roll key billing ({first_hint})");
    browser.tab_to(&roll, |name| name == roll);
    browser.press(ENTER);
    assert_eq!(browser.count("details.roll[open]"), 1, "Enter opened Roll");
    browser.press(ESCAPE);
    assert_eq!(browser.count("details.roll[open]"), 0, "Escape closed it");
    assert_eq!(browser.focused(), roll, "focus went back to Roll");
    browser.press(ENTER);
    browser.tab_to("the Roll key button", |name| name == "Roll key");
    browser.press(ENTER);
    notice(&browser, "“billing” was rolled");
    browser.wait_until("two keys named billing", || {
        (browser.count("#api-keys tbody tr") == 2).then_some(())
    });
    assert!(
        browser
            .text_of("#api-keys tbody")
            .unwrap()
            .contains(&format!("Replaces {first_hint}")),
        "the successor is marked"
    );

    // Revoke the old key, by name and hint, confirming.
    let revoke = format!("Revoke key billing ({first_hint})");
    browser.tab_to(&revoke, |name| name == revoke);
    browser.press(ENTER);
    assert!(browser.accept_dialog().contains(&first_hint));
    notice(&browser, &format!("Revoked key billing ({first_hint})"));
    browser.wait_until("one key left", || {
        (browser.count("#api-keys tbody tr") == 1).then_some(())
    });
    assert_ne!(
        browser.focused(),
        "the page body",
        "focus went somewhere sensible"
    );

    // Pause the machine: confirm; the button becomes Resume and keeps focus.
    browser.tab_to("Pause machine vm-1", |name| name == "Pause machine vm-1");
    browser.press(ENTER);
    browser.accept_dialog();
    notice(&browser, "Paused machine vm-1.");
    browser.wait_until("Resume in focus", || {
        (browser.focused() == "Resume machine vm-1").then_some(())
    });

    // Remove it: confirm; the row goes and focus does not fall to the page.
    browser.tab_to("Remove machine vm-1", |name| name == "Remove machine vm-1");
    browser.press(ENTER);
    browser.accept_dialog();
    notice(&browser, "Removed machine vm-1.");
    browser.wait_until("the row to go", || {
        browser
            .css(&format!("#machine-{machine_id}"))
            .is_empty()
            .then_some(())
    });
    assert_ne!(browser.focused(), "the page body");
}
