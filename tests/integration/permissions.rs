//! Who may do what on the dashboard: every route of the signed-in scope, for an admin, a member and a
//! viewer, on both backends. A refused request is 403 and changes nothing; an allowed one is anything
//! but 403. The table must name every route `src/web/mod.rs` registers, so a new route cannot be
//! added without deciding who may call it.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, TestApp, TestDb};
use granite::users::Role;

both_backends!(every_route_admits_exactly_the_roles_it_should);

/// What a case acts on: made fresh for each request, so one allowed change cannot spoil the next.
#[derive(Clone, Copy, Debug)]
enum Target {
    Nothing,
    /// A key (or token) the admin created.
    AdminsKey,
    /// A key the acting user created (the admin's, for a viewer, who cannot create one).
    OwnKey,
    AdminsToken,
    OwnToken,
    Machine,
    Run,
    Invite,
    OtherUser,
}

struct Case {
    method: &'static str,
    /// The route as registered; `{id}` / `{run_id}` are filled from the target.
    route: &'static str,
    target: Target,
    fields: &'static [(&'static str, &'static str)],
    /// Allowed for admin, member, viewer.
    allowed: [bool; 3],
}

const ALL: [bool; 3] = [true, true, true];
const OPERATORS: [bool; 3] = [true, true, false];
const ADMINS: [bool; 3] = [true, false, false];

fn cases() -> Vec<Case> {
    use Target::*;
    let case = |method, route, target, fields, allowed| Case {
        method,
        route,
        target,
        fields,
        allowed,
    };
    vec![
        case("GET", "/", Nothing, &[], ALL),
        case("GET", "/api-management", Nothing, &[], ALL),
        case("GET", "/account", Nothing, &[], ALL),
        case(
            "POST",
            "/account/password",
            Nothing,
            &[("current_password", "wrong")],
            ALL,
        ),
        case(
            "POST",
            "/account/sessions/sign-out-others",
            Nothing,
            &[],
            ALL,
        ),
        case("POST", "/account/sessions/{id}/sign-out", Nothing, &[], ALL),
        case("GET", "/api-management/api-keys", Nothing, &[], ALL),
        case(
            "POST",
            "/api-management/api-keys",
            Nothing,
            &[("name", "new")],
            OPERATORS,
        ),
        case(
            "POST",
            "/api-management/api-keys/{id}/revoke",
            AdminsKey,
            &[],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/api-keys/{id}/revoke",
            OwnKey,
            &[],
            OPERATORS,
        ),
        case(
            "POST",
            "/api-management/api-keys/{id}/roll",
            AdminsKey,
            &[("grace", "now")],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/api-keys/{id}/roll",
            OwnKey,
            &[("grace", "now")],
            OPERATORS,
        ),
        case(
            "GET",
            "/api-management/api-keys/{id}/analytics",
            AdminsKey,
            &[],
            ALL,
        ),
        case(
            "POST",
            "/api-management/api-keys/{id}/rate-limit",
            OwnKey,
            &[("rate_limit", "5")],
            ADMINS,
        ),
        case(
            "GET",
            "/api-management/enrollment-tokens",
            Nothing,
            &[],
            ALL,
        ),
        case(
            "POST",
            "/api-management/enrollment-tokens",
            Nothing,
            &[("description", "x")],
            OPERATORS,
        ),
        case(
            "GET",
            "/api-management/enrollment-tokens/list",
            Nothing,
            &[],
            ALL,
        ),
        case(
            "POST",
            "/api-management/enrollment-tokens/{id}/revoke",
            AdminsToken,
            &[],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/enrollment-tokens/{id}/revoke",
            OwnToken,
            &[],
            OPERATORS,
        ),
        case("GET", "/api-management/machines/list", Nothing, &[], ALL),
        case("GET", "/api-management/machines/{id}", Machine, &[], ALL),
        case(
            "POST",
            "/api-management/machines/{id}/rename",
            Machine,
            &[("name", "renamed")],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/machines/{id}/priority",
            Machine,
            &[("priority", "3")],
            ADMINS,
        ),
        case(
            "GET",
            "/api-management/machines/cleanup",
            Nothing,
            &[],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/machines/cleanup",
            Nothing,
            &[("days", "30"), ("ids", "")],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/machines/{id}/pause",
            Machine,
            &[],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/machines/{id}/resume",
            Machine,
            &[],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/machines/{id}/remove",
            Machine,
            &[],
            ADMINS,
        ),
        case("GET", "/api-management/members", Nothing, &[], ADMINS),
        case(
            "POST",
            "/api-management/members/invites",
            Nothing,
            &[("email", "new@example.com"), ("role", "viewer")],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/members/invites/{id}/revoke",
            Invite,
            &[],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/members/{id}/role",
            OtherUser,
            &[("role", "admin")],
            ADMINS,
        ),
        case(
            "POST",
            "/api-management/members/{id}/remove",
            OtherUser,
            &[],
            ADMINS,
        ),
        case("GET", "/api-management/audit-log", Nothing, &[], ALL),
        case("GET", "/api-management/audit-log.jsonl", Nothing, &[], ALL),
        case("GET", "/api-management/queue", Nothing, &[], ALL),
        case("GET", "/api-management/status-strip", Nothing, &[], ALL),
        case("GET", "/api-management/jobs", Nothing, &[], ALL),
        case("GET", "/api-management/jobs/{run_id}", Run, &[], ALL),
        case(
            "POST",
            "/api-management/jobs/{run_id}/cancel",
            Run,
            &[],
            OPERATORS,
        ),
        case(
            "POST",
            "/api-management/jobs/{run_id}/retry",
            Run,
            &[],
            OPERATORS,
        ),
    ]
}

/// Routes outside the signed-in scope, or that end the session: not in the table.
const PUBLIC: [&str; 5] = ["/login", "/logout", "/setup", "/invite", "/metrics"];

#[test]
fn the_table_names_every_dashboard_route() {
    let source = include_str!("../../src/web/mod.rs");
    let table: Vec<&str> = cases().iter().map(|c| c.route).collect();
    let mut missing = Vec::new();
    for line in source.lines() {
        let line = line.trim();
        let Some(start) = line.find("\"/") else {
            continue;
        };
        let rest = &line[start + 1..];
        let Some(end) = rest.find('"') else { continue };
        let route = &rest[..end];
        let is_route = route.starts_with('/') && !route.contains('#');
        if is_route && !PUBLIC.contains(&route) && !table.contains(&route) {
            missing.push(route.to_owned());
        }
    }
    // Routes registered by a constant rather than a literal.
    for route in [
        granite::web::pages::account::PATH,
        granite::web::pages::members::PATH,
        granite::web::pages::machine_cleanup::PATH,
        granite::web::pages::audit_log::PATH,
        granite::web::pages::audit_log::DOWNLOAD_PATH,
    ] {
        if !table.contains(&route) {
            missing.push(route.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "routes without permission cases: {missing:?}"
    );
}

struct World<'a> {
    app: &'a TestApp,
    admin: Client,
    key: String,
    n: usize,
}

impl World<'_> {
    fn fresh(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}-{}", self.n)
    }

    /// Makes the case's target; returns the id to put in the path.
    fn make(&mut self, target: Target, actor: &mut Client, role: Role) -> String {
        let name = self.fresh("t");
        let actor_creates = role != Role::Viewer;
        match target {
            Target::Nothing => "1".into(),
            Target::AdminsKey => self.admin.create_api_key(&name).0.to_string(),
            Target::OwnKey if actor_creates => actor.create_api_key(&name).0.to_string(),
            Target::OwnKey => self.admin.create_api_key(&name).0.to_string(),
            Target::AdminsToken => self.admin.create_enrollment_token(&name).0.to_string(),
            Target::OwnToken if actor_creates => actor.create_enrollment_token(&name).0.to_string(),
            Target::OwnToken => self.admin.create_enrollment_token(&name).0.to_string(),
            Target::Machine => {
                let (_, token) = self.admin.create_enrollment_token(&name);
                self.app.enroll(&token, &name).0.to_string()
            }
            Target::Run => {
                let reply = self.app.start_run(&self.key, "default/sync", &json!({}));
                assert_eq!(reply.status, 202, "{}", reply.body);
                reply.run_id()
            }
            Target::Invite => {
                let token = self.admin.page_csrf_token();
                let reply = self.admin.post_form(
                    "/api-management/members/invites",
                    &[
                        ("email", &format!("{name}@example.com")),
                        ("role", "member"),
                        ("csrf_token", &token),
                    ],
                );
                assert_eq!(reply.status, 200, "{}", reply.body);
                invite_id(self.app, &format!("{name}@example.com")).to_string()
            }
            Target::OtherUser => {
                let email = format!("{name}@example.com");
                self.app
                    .add_user(&email, "a long enough password", Role::Member, None);
                user_id(self.app, &email).to_string()
            }
        }
    }
}

fn every_route_admits_exactly_the_roles_it_should(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("runs");
    assert_eq!(admin.set_rate_limit(key_id, "0").status, 303);
    let mut world = World {
        app: &app,
        admin,
        key,
        n: 0,
    };
    let roles = [
        (Role::Admin, "second-admin@example.com"),
        (Role::Member, "member@example.com"),
        (Role::Viewer, "viewer@example.com"),
    ];
    let mut wrong = Vec::new();
    for (index, (role, email)) in roles.into_iter().enumerate() {
        app.add_user(email, "a long enough password", role, None);
        let mut actor = app.signed_in(email, "a long enough password");
        for case in cases() {
            let id = world.make(case.target, &mut actor, role);
            let path = case.route.replace("{id}", &id).replace("{run_id}", &id);
            let status = match case.method {
                "GET" => actor.get(&path).status,
                _ => actor.htmx_post(&path, case.fields).status,
            };
            let allowed = case.allowed[index];
            if allowed == (status == 403) || status >= 500 {
                wrong.push(format!(
                    "{} {} ({:?}) as {}: {status}",
                    case.method,
                    case.route,
                    case.target,
                    role.as_str()
                ));
            }
            if !allowed && let Target::AdminsKey | Target::OwnKey = case.target {
                // Refused means unchanged: the key is neither revoked nor rolled.
                let page = world
                    .admin
                    .get(&format!("/api-management/api-keys/{id}/analytics"));
                assert!(
                    !page.body.contains("Revoked") && !page.body.contains("Expires in"),
                    "{} {path} as {} changed the key",
                    case.method,
                    role.as_str()
                );
            }
        }
        // The actor is still signed in after every case (nothing above ended its session).
        assert_eq!(actor.get("/api-management").status, 200);
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
}

fn invite_id(app: &TestApp, email: &str) -> i64 {
    use diesel::prelude::*;
    use granite::db::schema::invites;
    invites::table
        .filter(invites::email.eq(email))
        .select(invites::id)
        .first(&mut *app.pool.get().unwrap())
        .unwrap()
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
