//! Real headless Chromium: an admin invites a member from the Members page, the member joins through
//! the link in another browser, the admin sets a key's rate limit on its Analytics page and removes
//! the member with a confirmation.

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};
use crate::webdriver::Browser;

both_backends!(admin_invites_a_member_sets_a_rate_limit_and_removes_the_member);

fn sign_in(browser: &Browser, app: &TestApp, email: &str, password: &str) {
    browser.goto(&app.url("/login"));
    browser.type_into(&browser.field_labelled("Email"), email);
    browser.type_into(&browser.field_labelled("Password"), password);
    browser.click(&browser.button_named("Sign in"));
    browser.wait_for_css("#api-keys");
}

fn admin_invites_a_member_sets_a_rate_limit_and_removes_the_member(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let admin = Browser::start();
    sign_in(&admin, &app, ADMIN_EMAIL, ADMIN_PASSWORD);

    // Members is in the top bar for admins.
    let members = admin
        .css("header.topbar a")
        .into_iter()
        .find(|a| admin.text(a) == "Members")
        .expect("a Members link");
    admin.click(&members);
    admin.wait_until("the Members page", || {
        admin
            .current_url()
            .ends_with("/api-management/members")
            .then_some(())
    });
    admin.type_into(&admin.field_labelled("Email"), "dana@example.com");
    admin.execute(
        "const s = document.getElementById('invite-role'); s.value = 'member'; return null;",
    );
    admin.click(&admin.button_named("Create invite link"));
    let link = admin.wait_for_css("[data-testid=new-secret]").remove(0);
    let link = admin.text(&link);
    assert!(link.contains("/invite?code="), "{link}");
    assert!(admin.text_of("#invites-heading").is_some());
    assert!(
        admin.css("tr[id^=invite-]").len() == 1,
        "the open invite is listed"
    );

    // The invitee opens the link in their own browser and chooses a password.
    let dana = Browser::start();
    dana.goto(&link);
    dana.type_into(&dana.field_labelled("Password"), "dana's long passphrase");
    dana.type_into(
        &dana.field_labelled("Repeat password"),
        "dana's long passphrase",
    );
    dana.click(&dana.button_named("Join"));
    dana.wait_for_css("#api-keys");
    let role = dana.text_of("header.topbar .who .badge").unwrap();
    assert_eq!(role.to_lowercase(), "member");
    // A member creates keys but sees no Members link.
    assert!(
        dana.css("header.topbar a")
            .iter()
            .all(|a| dana.text(a) != "Members")
    );

    // The admin gives a key its own rate limit.
    admin.goto(&app.url("/api-management"));
    admin.type_into(&admin.field_labelled("Name"), "billing");
    admin.click(&admin.button_named("Create Key"));
    admin.wait_for_css("[data-testid=new-secret]");
    let analytics = admin
        .wait_for_css("#api-keys tbody tr[data-id] a")
        .remove(0);
    admin.click(&analytics);
    let field = admin.field_labelled("Requests per minute");
    admin.type_into(&field, "120");
    admin.click(&admin.button_named("Save limit"));
    admin.wait_until("the new limit", || {
        admin
            .text_of("#rate-limit-heading + p strong")
            .filter(|t| t == "120 / min")
    });
    admin.goto(&app.url("/api-management"));
    let row = admin.wait_for_css("#api-keys tbody tr[data-id]").remove(0);
    assert!(admin.text(&row).contains("120 / min"));

    // The admin removes the member: a confirmation, then the row goes and Dana is signed out.
    admin.goto(&app.url("/api-management/members"));
    let remove = admin.button_named("Remove dana@example.com");
    admin.click(&remove);
    let asked = admin.accept_dialog();
    assert!(asked.contains("Remove dana@example.com?"), "{asked}");
    admin.wait_until("the row to go", || {
        (admin.css("tr[id^=member-]").len() == 1).then_some(())
    });
    dana.goto(&app.url("/api-management"));
    dana.wait_until("Dana to be signed out", || {
        dana.current_url().ends_with("/login").then_some(())
    });
}
