//! Server-side dashboard sessions: the cookie carries a random id, the database only its hash; signing
//! out, a password change, removal and the absolute lifetime end a session for every copy of its cookie.

use actix_web::cookie::{Cookie, CookieJar, Key};
use base64::Engine;
use diesel::prelude::*;
use granite::db::schema::{server_settings, sessions};
use granite::secret::sha256_hex;
use granite::users::Role;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, TestApp, TestDb};

both_backends!(
    a_copy_of_the_database_opens_no_session,
    sign_out_ends_every_copy_of_the_cookie,
    a_session_ends_at_its_absolute_lifetime,
    sign_out_other_sessions_ends_them_and_keeps_this_one,
    a_password_change_ends_the_other_sessions,
    the_account_page_lists_sessions_where_they_came_from,
    removing_a_user_or_resetting_their_password_ends_their_sessions,
);

const COOKIE: &str = granite::web::middleware::session::SESSION_COOKIE;

/// The cookie key as stored in the database: what an attacker with a copy of it has.
fn stored_cookie_key(app: &TestApp) -> Key {
    let encoded: String = server_settings::table
        .find("session_key")
        .select(server_settings::value)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Key::from(&bytes)
}

fn decrypt(key: &Key, value: &str) -> String {
    // The browser holds the value percent-encoded, as the server sent it.
    let sent = Cookie::parse_encoded(format!("{COOKIE}={value}")).unwrap();
    let mut jar = CookieJar::new();
    jar.add_original(sent.into_owned());
    jar.private(key)
        .get(COOKIE)
        .expect("the cookie decrypts with the stored key")
        .value()
        .to_owned()
}

fn encrypt(key: &Key, plaintext: &str) -> String {
    let mut jar = CookieJar::new();
    jar.private_mut(key)
        .add(Cookie::new(COOKIE, plaintext.to_owned()));
    let encrypted = jar.get(COOKIE).unwrap().clone();
    encrypted
        .encoded()
        .to_string()
        .trim_start_matches(&format!("{COOKIE}="))
        .to_owned()
}

fn stored_hashes(app: &TestApp) -> Vec<String> {
    sessions::table
        .select(sessions::token_hash)
        .load(&mut *app.pool.get().unwrap())
        .unwrap()
}

fn session_count(app: &TestApp) -> i64 {
    sessions::table
        .count()
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap()
}

fn a_copy_of_the_database_opens_no_session(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let key = stored_cookie_key(&app);
    let plaintext = decrypt(&key, &admin.session_cookie().unwrap());

    // The cookie names the session by an id whose SHA-256 is all the database keeps.
    let hashes = stored_hashes(&app);
    assert_eq!(hashes.len(), 1);
    let chars: Vec<char> = plaintext.chars().collect();
    let session_id = chars
        .windows(43)
        .map(|w| w.iter().collect::<String>())
        .find(|candidate| sha256_hex(candidate) == hashes[0])
        .expect("the cookie carries the id whose hash is stored");
    assert!(!plaintext.contains(&hashes[0]));

    // Re-encrypting the cookie as it was works: the forging below is done right.
    let mut forger = app.client();
    forger.set_session_cookie(&encrypt(&key, &plaintext));
    assert_eq!(forger.get("/api-management").status, 200);

    // With only what the database holds (the key and the hash), no cookie opens a session.
    for forged_id in [
        hashes[0].clone(),
        hashes[0][..43].to_owned(),
        granite::secret::random_base62(43),
    ] {
        let mut forger = app.client();
        forger.set_session_cookie(&encrypt(&key, &plaintext.replace(&session_id, &forged_id)));
        let reply = forger.get("/api-management");
        assert_eq!(
            reply.status, 303,
            "forged id {forged_id} must not open a session"
        );
        assert_eq!(reply.header("location"), Some("/login"));
    }
    // The old self-contained form (a user id in the cookie) means nothing any more.
    let mut forger = app.client();
    forger.set_session_cookie(&encrypt(&key, r#"{"uid":"1","seen":"99999999999"}"#));
    assert_eq!(forger.get("/api-management").status, 303);
    assert_eq!(admin.get("/api-management").status, 200);
}

fn sign_out_ends_every_copy_of_the_cookie(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let mut thief = app.client();
    thief.adopt_session_of(&admin);
    assert_eq!(
        thief.get("/api-management").status,
        200,
        "a copied cookie works until sign-out"
    );
    let token = admin.page_csrf_token();
    assert_eq!(
        admin.post_form("/logout", &[("csrf_token", &token)]).status,
        303
    );
    assert_eq!(session_count(&app), 0, "sign-out deletes the session");
    let reply = thief.get("/api-management");
    assert_eq!(
        reply.status, 303,
        "the copy stopped working with the sign-out"
    );
    // Replaying it a while later does not bring it back either.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(thief.get("/api-management").status, 303);
}

fn a_session_ends_at_its_absolute_lifetime(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn_with(&db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.session_max_exact = Some(std::time::Duration::from_secs(3));
    });
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let started = std::time::Instant::now();
    // Busy all along: activity does not stretch the lifetime.
    while started.elapsed() < std::time::Duration::from_millis(2500) {
        assert_eq!(admin.get("/api-management").status, 200);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    let reply = admin.get("/api-management");
    assert_eq!(
        reply.status, 303,
        "older than the absolute lifetime: signed out"
    );
    // Signing in again starts a new session.
    let mut again = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(again.get("/api-management").status, 200);
}

fn sign_out_other_sessions_ends_them_and_keeps_this_one(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut laptop = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let mut phone = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let mut tablet = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    app.add_user("second@example.com", "second admin pw", Role::Admin, None);
    let mut colleague = app.signed_in("second@example.com", "second admin pw");

    let account = laptop.get("/account");
    assert_eq!(account.status, 200);
    assert!(account.body.contains("Sign out other sessions"));
    assert_eq!(account.body.matches("This session").count(), 1);
    let token = account.csrf_token();
    let reply = laptop.post_form(
        "/account/sessions/sign-out-others",
        &[("csrf_token", &token)],
    );
    assert_eq!(reply.status, 303);
    let location = reply.header("location").unwrap().to_owned();
    let page = laptop.get(&location);
    assert!(
        page.body.contains("Signed out 2 other sessions."),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("Sign out other sessions"),
        "nothing left to sign out"
    );

    assert_eq!(phone.get("/api-management").status, 303);
    assert_eq!(tablet.get("/api-management").status, 303);
    assert_eq!(
        laptop.get("/api-management").status,
        200,
        "this session stays"
    );
    assert_eq!(
        colleague.get("/api-management").status,
        200,
        "other users are untouched"
    );
    assert_eq!(app.audit_count("signed_out_other_sessions"), 1);

    // Without the CSRF token nothing happens.
    let mut phone = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let refused = laptop.post_form("/account/sessions/sign-out-others", &[]);
    assert_eq!(refused.status, 403);
    assert_eq!(phone.get("/api-management").status, 200);
}

fn a_password_change_ends_the_other_sessions(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut here = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let mut elsewhere = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let new_password = "a brand new passphrase";

    let token = here.get("/account").csrf_token();
    let change = |client: &mut Client, current: &str, new: &str, repeat: &str| {
        client.post_form(
            "/account/password",
            &[
                ("csrf_token", &token),
                ("current_password", current),
                ("new_password", new),
                ("new_password_confirmation", repeat),
            ],
        )
    };
    let wrong = change(&mut here, "not the password", new_password, new_password);
    assert_eq!(wrong.status, 422);
    assert!(wrong.body.contains("The current password is not right."));
    let short = change(&mut here, ADMIN_PASSWORD, "short", "short");
    assert_eq!(short.status, 422);
    assert!(short.body.contains("at least 10 characters"));
    let differ = change(
        &mut here,
        ADMIN_PASSWORD,
        new_password,
        "something else entirely",
    );
    assert_eq!(differ.status, 422);
    assert!(differ.body.contains("The two new passwords differ."));
    assert_eq!(
        elsewhere.get("/api-management").status,
        200,
        "refused changes change nothing"
    );

    let done = change(&mut here, ADMIN_PASSWORD, new_password, new_password);
    assert_eq!(done.status, 303, "{}", done.body);
    let page = here.get(done.header("location").unwrap());
    assert!(page.body.contains("Password changed."));
    assert_eq!(
        here.get("/api-management").status,
        200,
        "the changer stays signed in"
    );
    assert_eq!(
        elsewhere.get("/api-management").status,
        303,
        "every other session ended"
    );
    assert_eq!(session_count(&app), 1);
    assert_eq!(app.audit_count("password_changed"), 1);

    assert_eq!(
        app.client().sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).status,
        401
    );
    assert_eq!(app.client().sign_in(ADMIN_EMAIL, new_password).status, 303);
}

fn the_account_page_lists_sessions_where_they_came_from(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut firefox = app.client();
    let page = firefox.get("/login");
    let firefox_agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let reply = firefox.post_form_with(
        "/login",
        &[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("csrf_token", &page.csrf_token()),
        ],
        &[("User-Agent", firefox_agent)],
    );
    assert_eq!(reply.status, 303);
    let mut other = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);

    let account = other.get("/account");
    assert!(
        account.body.contains("Firefox on Linux"),
        "{}",
        account.body
    );
    assert!(account.body.contains(&format!("title=\"{firefox_agent}\"")));
    assert!(account.body.contains("127.0.0.1"));
    // Sign out just the Firefox one, by its row's button.
    let id = account
        .body
        .split("action=\"/account/sessions/")
        .skip(1)
        .filter_map(|rest| rest.split_once("/sign-out\"").map(|(id, _)| id.to_owned()))
        .find(|id| id.parse::<i64>().is_ok())
        .expect("a sign-out button for the other session");
    let reply = other.post_form(
        &format!("/account/sessions/{id}/sign-out"),
        &[("csrf_token", &account.csrf_token())],
    );
    assert_eq!(reply.status, 303);
    assert_eq!(firefox.get("/api-management").status, 303);
    assert_eq!(other.get("/api-management").status, 200);

    // Nobody ends someone else's session by its number.
    app.add_user("second@example.com", "second admin pw", Role::Admin, None);
    let mut colleague = app.signed_in("second@example.com", "second admin pw");
    let theirs: i64 = sessions::table
        .select(sessions::id)
        .order(sessions::id.desc())
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    let token = other.get("/account").csrf_token();
    let reply = other.post_form(
        &format!("/account/sessions/{theirs}/sign-out"),
        &[("csrf_token", &token)],
    );
    assert_eq!(reply.status, 404);
    assert_eq!(colleague.get("/api-management").status, 200);
}

fn removing_a_user_or_resetting_their_password_ends_their_sessions(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    app.add_user("second@example.com", "second admin pw", Role::Admin, None);
    let mut second = app.signed_in("second@example.com", "second admin pw");
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    // What the second admin made stays when they go.
    let token = second.page_csrf_token();
    let created = second.post_form_with(
        "/api-management/api-keys",
        &[("name", "made by second")],
        &[("X-CSRF-Token", &token), ("HX-Request", "true")],
    );
    assert_eq!(created.status, 200, "{}", created.body);

    let mut conn = app.pool.get().unwrap();
    let email = granite::users::Email::parse("second@example.com").unwrap();
    let user = granite::users::find_by_email(&mut conn, &email)
        .unwrap()
        .unwrap();
    granite::users::set_password(&mut conn, user.id, "not a real hash").unwrap();
    drop(conn);
    assert_eq!(
        second.get("/api-management").status,
        303,
        "a reset password ends the sessions"
    );

    let mut second = {
        let mut conn = app.pool.get().unwrap();
        let hash = granite::users::password::Password::parse("second admin pw 2")
            .unwrap()
            .hash();
        granite::users::set_password(&mut conn, user.id, &hash).unwrap();
        drop(conn);
        app.signed_in("second@example.com", "second admin pw 2")
    };
    granite::users::remove(&mut app.pool.get().unwrap(), &user, None).unwrap();
    assert_eq!(
        second.get("/api-management").status,
        303,
        "a removed user is out at once"
    );
    let page = admin.get("/api-management");
    assert!(page.body.contains("made by second"), "their key stays");
    assert_eq!(admin.get("/api-management").status, 200);

    // The last admin stays.
    let mut conn = app.pool.get().unwrap();
    let me = granite::users::find_by_email(
        &mut conn,
        &granite::users::Email::parse(ADMIN_EMAIL).unwrap(),
    )
    .unwrap()
    .unwrap();
    let refused = granite::users::remove(&mut conn, &me, None).unwrap_err();
    assert!(refused.to_string().contains("last admin"), "{refused}");
}
