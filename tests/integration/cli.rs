//! The `granite` command line, run as the real binary.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    user_add_adds_users_that_can_sign_in,
    user_password_and_remove_sign_the_user_out,
);

fn granite(args: &[&str], database_url: &str, stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_granite"))
        .args(args)
        .env("GRANITE_DATABASE_URL", database_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the granite binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn help_explains_every_setting_of_the_contract() {
    let output = Command::new(env!("CARGO_BIN_EXE_granite"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for variable in [
        "GRANITE_DATABASE_URL",
        "GRANITE_BIND",
        "GRANITE_ADMIN_EMAIL",
        "GRANITE_ADMIN_PASSWORD",
        "GRANITE_HEARTBEAT_SECS",
        "GRANITE_OFFLINE_AFTER_SECS",
        "GRANITE_ENROLLMENT_TTL_HOURS",
        "GRANITE_RUN_RETENTION_DAYS",
        "GRANITE_SESSION_MAX_HOURS",
    ] {
        assert!(
            help.contains(variable),
            "--help does not mention {variable}:\n{help}"
        );
    }
    assert!(
        help.contains("sqlite://granite.db") && help.contains("127.0.0.1:8080"),
        "defaults shown"
    );
    let serve_help = Command::new(env!("CARGO_BIN_EXE_granite"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&serve_help.stdout).contains("GRANITE_OFFLINE_AFTER_SECS"));
}

fn user_add_adds_users_that_can_sign_in(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);

    let (ok, out) = granite(
        &[
            "user",
            "add",
            "--email",
            "Viewer@Example.com",
            "--role",
            "viewer",
        ],
        &db.url_text,
        "viewer password 1\n",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("Added viewer@example.com as viewer of Default organization"),
        "{out}"
    );
    let mut viewer = app.signed_in("viewer@example.com", "viewer password 1");
    let page = viewer.get("/api-management");
    assert!(page.body.contains("viewer@example.com"));
    assert!(page.body.contains(">viewer</span>"));

    let (ok, out) = granite(
        &["user", "add", "--email", "viewer@example.com"],
        &db.url_text,
        "another password\n",
    );
    assert!(!ok && out.contains("exists already"), "{out}");
    let (ok, out) = granite(
        &["user", "add", "--email", "x@example.com"],
        &db.url_text,
        "short\n",
    );
    assert!(!ok && out.contains("at least 10 characters"), "{out}");
    let (ok, out) = granite(
        &["user", "add", "--email", "x@example.com", "--org", "nope"],
        &db.url_text,
        "long enough pw\n",
    );
    assert!(
        !ok && out.contains("no organization with the slug \"nope\""),
        "{out}"
    );
    let (ok, out) = granite(
        &["user", "add", "--email", "x@example.com", "--role", "owner"],
        &db.url_text,
        "long enough pw\n",
    );
    assert!(!ok && out.contains("admin, member or viewer"), "{out}");

    let (ok, out) = granite(
        &[
            "user",
            "add",
            "--email",
            "dev@example.com",
            "--role",
            "member",
        ],
        &db.url_text,
        "member password 1\n",
    );
    assert!(ok && out.contains("as member of"), "{out}");
    let mut member = app.signed_in("dev@example.com", "member password 1");
    assert!(
        member
            .get("/api-management")
            .body
            .contains(">member</span>")
    );

    let (ok, out) = granite(
        &[
            "user",
            "add",
            "--email",
            "boss@other.test",
            "--new-org",
            "Other Corp",
        ],
        &db.url_text,
        "other corp password\n",
    );
    assert!(ok, "{out}");
    let mut other = app.signed_in("boss@other.test", "other corp password");
    let page = other.get("/api-management");
    assert!(page.body.contains("Other Corp"));
    assert!(!page.body.contains("Default organization"));
    assert!(!page.body.contains(ADMIN_EMAIL));
    // With two organizations, which one must be said.
    let (ok, out) = granite(
        &["user", "add", "--email", "someone@example.com"],
        &db.url_text,
        "long enough pw\n",
    );
    assert!(
        !ok && out.contains("several organizations: name one with --org (default, other-corp)"),
        "{out}"
    );
    assert_eq!(
        app.client().sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).status,
        303
    );
}

fn user_password_and_remove_sign_the_user_out(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let (ok, out) = granite(
        &["user", "add", "--email", "ops@example.com"],
        &db.url_text,
        "first password 1\n",
    );
    assert!(ok, "{out}");
    let mut ops = app.signed_in("ops@example.com", "first password 1");

    let (ok, out) = granite(
        &["user", "password", "--email", "OPS@example.com"],
        &db.url_text,
        "second password 2\n",
    );
    assert!(ok, "{out}");
    assert!(out.contains("sessions were signed out"), "{out}");
    assert_eq!(
        ops.get("/api-management").status,
        303,
        "signed out by the reset"
    );
    assert_eq!(
        app.client()
            .sign_in("ops@example.com", "first password 1")
            .status,
        401
    );
    let mut ops = app.signed_in("ops@example.com", "second password 2");

    let (ok, out) = granite(
        &["user", "password", "--email", "ops@example.com"],
        &db.url_text,
        "short\n",
    );
    assert!(!ok && out.contains("at least 10 characters"), "{out}");
    assert_eq!(
        ops.get("/api-management").status,
        200,
        "a refused reset changes nothing"
    );
    let (ok, out) = granite(
        &["user", "remove", "--email", "nobody@example.com"],
        &db.url_text,
        "",
    );
    assert!(
        !ok && out.contains("no user with the email nobody@example.com"),
        "{out}"
    );

    let (ok, out) = granite(
        &["user", "remove", "--email", "ops@example.com"],
        &db.url_text,
        "",
    );
    assert!(ok, "{out}");
    assert_eq!(
        ops.get("/api-management").status,
        303,
        "a removed user is out at once"
    );
    assert_eq!(
        app.client()
            .sign_in("ops@example.com", "second password 2")
            .status,
        401
    );

    let (ok, out) = granite(
        &["user", "remove", "--email", ADMIN_EMAIL],
        &db.url_text,
        "",
    );
    assert!(!ok && out.contains("last admin"), "{out}");
    assert_eq!(
        app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
            .get("/api-management")
            .status,
        200
    );
}
