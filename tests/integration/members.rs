//! The Members page: invite links (once, 7 days, revocable, bound to an email and role), role changes
//! that never leave an organization without an admin, and removal that ends sessions at once.

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, Reply, TestApp, TestDb};
use granite::users::Role;

both_backends!(
    an_invite_link_works_once_for_its_email_and_role,
    expired_and_revoked_invites_do_not_work,
    roles_change_but_an_admin_always_remains,
    a_removed_member_is_signed_out_at_once,
);

const PASSWORD: &str = "a long enough password";

fn invite(admin: &mut Client, email: &str, role: &str) -> (Reply, Option<String>) {
    let token = admin.page_csrf_token();
    let reply = admin.post_form(
        "/api-management/members/invites",
        &[("email", email), ("role", role), ("csrf_token", &token)],
    );
    let link = reply.new_secret();
    (reply, link)
}

/// The path and query of a link the page showed (`http://host/invite?code=…`).
fn path_of(link: &str) -> String {
    let at = link.find("/invite?code=").expect("an invite link");
    link[at..].to_owned()
}

fn code_of(link: &str) -> String {
    link.rsplit_once("code=").unwrap().1.to_owned()
}

fn accept(app: &TestApp, link: &str, password: &str) -> (Client, Reply) {
    let mut browser = app.client();
    assert!(browser.get(&path_of(link)).status < 500);
    // The session's token (an invalid link's page has no form to take it from).
    let token = browser.get("/login").csrf_token();
    let code = code_of(link);
    let reply = browser.post_form(
        "/invite",
        &[
            ("code", &code),
            ("password", password),
            ("password_confirmation", password),
            ("csrf_token", &token),
        ],
    );
    (browser, reply)
}

fn an_invite_link_works_once_for_its_email_and_role(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (reply, link) = invite(&mut admin, "New.Person@Example.com", "member");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let link = link.expect("the link is shown once");
    assert!(
        reply.body.contains("new.person@example.com"),
        "listed as open"
    );
    // Shown once: the page loaded again lists the invite but not its link.
    let again = admin.get("/api-management/members");
    assert!(again.new_secret().is_none());
    assert!(!again.body.contains(&code_of(&link)));
    assert_eq!(app.audit_count("member_invited"), 1);

    // The link names the address and role; the invitee only chooses a password.
    let page = app.client().get(&path_of(&link));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("new.person@example.com") && page.body.contains("Member"));
    let short = {
        let mut browser = app.client();
        let token = browser.get(&path_of(&link)).csrf_token();
        browser.post_form(
            "/invite",
            &[
                ("code", &code_of(&link)),
                ("password", "short"),
                ("password_confirmation", "short"),
                ("csrf_token", &token),
            ],
        )
    };
    assert_eq!(short.status, 422, "a bad password changes nothing");

    let (mut member, joined) = accept(&app, &link, PASSWORD);
    assert_eq!(joined.status, 303, "{}", joined.body);
    let home = member.get("/api-management");
    assert_eq!(home.status, 200, "signed in at once");
    assert!(home.body.contains("new.person@example.com"));
    assert!(home.body.contains(">member<"), "with the invited role");
    assert_eq!(app.audit_count("invite_accepted"), 1);
    // The new member can sign in with the chosen password.
    assert_eq!(
        app.signed_in("new.person@example.com", PASSWORD)
            .get("/api-management")
            .status,
        200
    );

    // Once: the link is spent.
    let (_, second) = accept(&app, &link, "another long password");
    assert_eq!(second.status, 410, "{}", second.body);
    assert_eq!(app.client().get(&path_of(&link)).status, 404);
    // An address with an account cannot be invited again; nor can a bad address or role.
    let (taken, _) = invite(&mut admin, "new.person@example.com", "viewer");
    assert_eq!(taken.status, 422);
    assert!(taken.body.contains("already has an account"));
    for (email, role) in [
        ("not an email", "viewer"),
        ("x@example.com", "owner"),
        ("a\u{0}@b.c", "viewer"),
    ] {
        let (bad, link) = invite(&mut admin, email, role);
        assert_eq!(bad.status, 422, "{email:?} {role:?}");
        assert!(link.is_none());
    }
    assert_eq!(
        app.audit_count("member_invited"),
        1,
        "refused invites change nothing"
    );
}

fn expired_and_revoked_invites_do_not_work(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);

    let (_, link) = invite(&mut admin, "late@example.com", "viewer");
    let link = link.unwrap();
    {
        // Eight days pass for this invite.
        use diesel::prelude::*;
        use granite::db::schema::invites;
        let past = chrono::Utc::now().naive_utc() - chrono::Duration::days(8);
        diesel::update(invites::table.filter(invites::email.eq("late@example.com")))
            .set((
                invites::created_at.eq(past),
                invites::expires_at.eq(past + granite::users::invites::LIFETIME),
            ))
            .execute(&mut *app.pool.get().unwrap())
            .unwrap();
    }
    assert_eq!(app.client().get(&path_of(&link)).status, 404);
    let (_, refused) = accept(&app, &link, PASSWORD);
    assert_eq!(refused.status, 410);
    let page = admin.get("/api-management/members");
    assert!(!page.body.contains("late@example.com"), "no longer open");

    let (_, link) = invite(&mut admin, "changed-mind@example.com", "admin");
    let link = link.unwrap();
    let page = admin.get("/api-management/members");
    let id = page
        .body
        .split("<tr id=\"invite-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let revoked = admin.htmx_post(&format!("/api-management/members/invites/{id}/revoke"), &[]);
    assert_eq!(revoked.status, 200);
    assert_eq!(
        revoked.header("hx-redirect"),
        Some("/api-management/members")
    );
    assert_eq!(app.audit_count("invite_revoked"), 1);
    let (_, refused) = accept(&app, &link, PASSWORD);
    assert_eq!(refused.status, 410);
    let nobody = app.client().sign_in("changed-mind@example.com", PASSWORD);
    assert_ne!(nobody.status, 303, "no account was made");

    // Another organization's admin cannot revoke or see this organization's invites.
    let (_, link) = invite(&mut admin, "mine@example.com", "viewer");
    let id = admin
        .get("/api-management/members")
        .body
        .split("<tr id=\"invite-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let mut rival = app.rival();
    assert!(
        !rival
            .get("/api-management/members")
            .body
            .contains("mine@example.com")
    );
    let refused = rival.htmx_post(&format!("/api-management/members/invites/{id}/revoke"), &[]);
    assert_eq!(refused.status, 404);
    assert_eq!(
        app.client().get(&path_of(&link.unwrap())).status,
        200,
        "still open"
    );
}

fn roles_change_but_an_admin_always_remains(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    app.add_user("helper@example.com", PASSWORD, Role::Viewer, None);
    let helper_id = user_id(&app, "helper@example.com");
    let admin_id = user_id(&app, ADMIN_EMAIL);

    let token = admin.page_csrf_token();
    let promoted = admin.post_form(
        &format!("/api-management/members/{helper_id}/role"),
        &[("role", "member"), ("csrf_token", &token)],
    );
    assert_eq!(promoted.status, 303);
    let mut helper = app.signed_in("helper@example.com", PASSWORD);
    assert!(helper.get("/api-management").body.contains(">member<"));
    // A member may now create a key.
    let created = helper.htmx_post("/api-management/api-keys", &[("name", "helper's")]);
    assert_eq!(created.status, 200);

    // The only admin cannot demote themselves.
    let token = admin.page_csrf_token();
    let refused = admin.post_form(
        &format!("/api-management/members/{admin_id}/role"),
        &[("role", "viewer"), ("csrf_token", &token)],
    );
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("last admin"));
    assert_eq!(
        admin.get("/api-management/members").status,
        200,
        "still admin"
    );
    // With a second admin, they can; and two admins demoting each other at once leave one.
    let token = admin.page_csrf_token();
    let made_admin = admin.post_form(
        &format!("/api-management/members/{helper_id}/role"),
        &[("role", "admin"), ("csrf_token", &token)],
    );
    assert_eq!(made_admin.status, 303);
    let mut helper = app.signed_in("helper@example.com", PASSWORD);
    let (t1, t2) = (admin.page_csrf_token(), helper.page_csrf_token());
    let one = std::thread::spawn(move || {
        admin.post_form(
            &format!("/api-management/members/{helper_id}/role"),
            &[("role", "viewer"), ("csrf_token", &t1)],
        )
    });
    let two = std::thread::spawn(move || {
        helper.post_form(
            &format!("/api-management/members/{admin_id}/role"),
            &[("role", "viewer"), ("csrf_token", &t2)],
        )
    });
    let statuses = [one.join().unwrap().status, two.join().unwrap().status];
    assert!(statuses.contains(&303), "{statuses:?}");
    let admins: i64 = {
        use diesel::prelude::*;
        use granite::db::schema::users;
        users::table
            .filter(users::role.eq("admin"))
            .count()
            .get_result(&mut *app.pool.get().unwrap())
            .unwrap()
    };
    assert_eq!(admins, 1, "{statuses:?}");
    assert_eq!(app.audit_count("member_role_changed"), 3);
}

fn a_removed_member_is_signed_out_at_once(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    app.add_user("leaver@example.com", PASSWORD, Role::Member, None);
    let mut leaver = app.signed_in("leaver@example.com", PASSWORD);
    let mut leaver_elsewhere = app.signed_in("leaver@example.com", PASSWORD);
    assert_eq!(leaver.get("/api-management").status, 200);
    let id = user_id(&app, "leaver@example.com");

    let page = admin.get("/api-management/members");
    assert!(page.body.contains("Remove leaver@example.com"));
    assert!(
        !page.body.contains(&format!("Remove {ADMIN_EMAIL}")),
        "no removing yourself"
    );
    let removed = admin.htmx_post(&format!("/api-management/members/{id}/remove"), &[]);
    assert_eq!(removed.status, 200);
    assert_eq!(
        removed.header("hx-redirect"),
        Some("/api-management/members")
    );
    assert_eq!(app.audit_count("member_removed"), 1);

    // Both of the removed member's sessions are dead on their next request.
    for client in [&mut leaver, &mut leaver_elsewhere] {
        let next = client.get("/api-management");
        assert_eq!(next.status, 303);
        assert_eq!(next.header("location"), Some("/login"));
        let change = client.post_form("/api-management/api-keys", &[("name", "x")]);
        assert_ne!(change.status, 200);
    }
    let signed_in = app.client().sign_in("leaver@example.com", PASSWORD);
    assert_ne!(signed_in.header("location"), Some("/api-management"));
    let page = admin.get("/api-management/members");
    assert!(!page.body.contains(&format!("id=\"member-{id}\"")));
}

fn user_id(app: &TestApp, email: &str) -> i64 {
    use diesel::prelude::*;
    use granite::db::schema::users;
    users::table
        .filter(users::email.eq(email))
        .select(users::id)
        .first(&mut *app.pool.get().unwrap())
        .unwrap()
}
