//! The machine list's capability filter and queue depth, the machine page's tabs and settings, and
//! cleaning up machines offline for days: over HTTP and in the browser, on both backends.

use diesel::prelude::*;
use granite::db::schema::{audit_events, machines};
use granite::users::Role;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, TestApp, TestDb};
use crate::webdriver::{Browser, ENTER};

both_backends!(
    the_list_filters_by_capability_in_sql,
    the_capability_filter_pages_and_counts,
    queue_depth_counts_the_runs_a_machine_could_take,
    tabs_show_what_they_hold,
    rename_and_priority_are_checked_and_audited,
    members_and_viewers_are_refused_every_settings_change,
    cleanup_previews_then_removes_exactly_those_listed,
    the_overview_shows_the_address_and_port_the_driver_gave,
);

mod in_the_browser {
    use super::*;
    both_backends!(
        an_admin_switches_tabs_by_keyboard_and_sets_priority,
        an_admin_cleans_up_offline_machines_after_confirming,
    );
}

const MEMBER_EMAIL: &str = "member@example.com";
const VIEWER_EMAIL: &str = "viewer@example.com";
const OTHER_PASSWORD: &str = "another fine password";

/// Enrolls a machine with these capabilities; returns (machine id, credential).
fn enroll_with(app: &TestApp, admin: &mut Client, name: &str, caps: &[&str]) -> (i64, String) {
    let (_, token) = admin.create_enrollment_token(name);
    let reply = app.post_json(
        "/api/v1/driver/enroll",
        &json!({ "token": token, "name": name, "os_version": "Windows 11", "ip_address": "10.0.0.9",
                 "capabilities": caps, "driver_version": "3.1.4" }),
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let json = reply.json();
    (
        json["machine_id"].as_i64().unwrap(),
        json["credential"].as_str().unwrap().to_owned(),
    )
}

/// The queue depth a list shows in the row of this machine.
fn depth_in(body: &str, id: i64) -> i64 {
    let row = body
        .split(&format!("<tr id=\"machine-{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no row for machine {id}: {body}"));
    let row = row.split("</tr>").next().unwrap();
    row.split("data-queue-depth=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no queue depth in {row}"))
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort();
    ids
}

fn machine_row(app: &TestApp, id: i64) -> (String, i32, Option<chrono::NaiveDateTime>) {
    machines::table
        .find(id)
        .select((machines::name, machines::priority, machines::removed_at))
        .first(&mut *app.pool.get().unwrap())
        .unwrap()
}

/// Makes a machine look silent since `days` days ago.
fn last_seen_days_ago(app: &TestApp, id: i64, days: i64) {
    let then = chrono::Utc::now().naive_utc() - chrono::Duration::days(days);
    diesel::update(machines::table.find(id))
        .set(machines::last_seen_at.eq(then))
        .execute(&mut *app.pool.get().unwrap())
        .unwrap();
}

fn the_list_filters_by_capability_in_sql(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (both, _) = enroll_with(&app, &mut admin, "win-sap", &["windows", "sap"]);
    let (_, _) = enroll_with(&app, &mut admin, "linux-1", &["linux"]);
    let (sap_only, sap_credential) = enroll_with(&app, &mut admin, "sap-2", &["sap"]);
    // A capability that merely contains the word is another capability.
    let (_, _) = enroll_with(&app, &mut admin, "sapling", &["sapx", "x-sap"]);
    let mut rival = app.rival();
    let (rival_sap, _) = enroll_with(&app, &mut rival, "rival-sap", &["sap"]);

    let list = admin.machine_list("capability=sap");
    assert_eq!(sorted(list.row_ids()), sorted(vec![both, sap_only]));
    assert!(
        list.body.contains("Showing machines with <code>sap</code>"),
        "{}",
        list.body
    );
    assert!(
        list.body
            .contains("href=\"/api-management?#machines\">clear"),
        "a link clears it: {}",
        list.body
    );
    // Combined with the status filter and a search (which clearing the capability keeps).
    let searched = admin.machine_list("capability=sap&q=win");
    assert_eq!(searched.row_ids(), [both]);
    assert!(
        searched
            .body
            .contains("href=\"/api-management?q=win#machines\">clear")
    );
    assert_eq!(
        admin
            .machine_list("capability=sap&status=offline")
            .row_ids(),
        Vec::<i64>::new()
    );
    // Chips link to the filter; the page opened from one shows the filter, filled in.
    let page = admin.get("/api-management?capability=sap");
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("href=\"/api-management?capability=sap#machines\"")
    );
    assert!(page.body.contains("name=\"capability\" type=\"search\" maxlength=\"50\" placeholder=\"e.g. sap\" autocomplete=\"off\" value=\"sap\""));
    let shown: Vec<i64> = page
        .body
        .split("id=\"machine-list\"")
        .nth(1)
        .map(|list| crate::helpers::Reply {
            status: 200,
            headers: Vec::new(),
            body: list.to_owned(),
        })
        .unwrap()
        .row_ids();
    assert_eq!(sorted(shown), sorted(vec![both, sap_only]));
    // A query that is no filter still shows the page.
    assert_eq!(admin.get("/api-management?page=abc").status, 200);
    // Nothing of another organization, either way.
    assert_eq!(rival.machine_list("capability=sap").row_ids(), [rival_sap]);
    assert!(!list.row_ids().contains(&rival_sap));
    // Text no capability holds matches nothing, harmlessly.
    for odd in ["%25", "sa_", "sa%25", "%27%3B--", "%3Cb%3E"] {
        let reply = admin.machine_list(&format!("capability={odd}"));
        assert_eq!(reply.row_ids(), Vec::<i64>::new(), "{odd}");
        assert!(!reply.body.contains("<b>"));
    }
    // A NUL byte no stored capability can hold is dropped, not sent to the database.
    let nul = admin.machine_list("capability=sap%00");
    assert_eq!(sorted(nul.row_ids()), sorted(vec![both, sap_only]));

    // In name order, and it follows every change to a machine: a rename moves it, a driver announcing
    // other capabilities moves it in or out, a removed machine leaves.
    assert_eq!(list.row_ids(), [sap_only, both], "sap-2 before win-sap");
    let renamed = admin.htmx_post(
        &format!("/api-management/machines/{both}/rename"),
        &[("name", "a-win-sap")],
    );
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(
        admin.machine_list("capability=sap").row_ids(),
        [both, sap_only]
    );
    let announced = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({ "status": "idle", "capabilities": ["excel"] }),
        Some(&sap_credential),
    );
    assert_eq!(announced.status, 200, "{}", announced.body);
    assert_eq!(admin.machine_list("capability=sap").row_ids(), [both]);
    assert_eq!(admin.machine_list("capability=excel").row_ids(), [sap_only]);
    let removed = admin.htmx_post(&format!("/api-management/machines/{both}/remove"), &[]);
    assert!(removed.status < 400, "{}", removed.body);
    assert_eq!(
        admin.machine_list("capability=sap").row_ids(),
        Vec::<i64>::new()
    );
    assert_eq!(
        admin.machine_list("capability=windows").row_ids(),
        Vec::<i64>::new()
    );
}

/// More machines with a capability than a page holds: pages in name order, counted right, with the
/// status filter and a search too.
fn the_capability_filter_pages_and_counts(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (first, credential) = enroll_with(&app, &mut admin, "vm-000", &["sap", "excel"]);
    let (other, _) = enroll_with(&app, &mut admin, "other", &["linux"]);
    // Fifty-four more with sap, named in order, written straight to the table (the triggers keep the
    // capability index, whoever writes).
    let organization_id: i64 = machines::table
        .find(first)
        .select(machines::organization_id)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    let now = chrono::Utc::now().naive_utc();
    let mut conn = app.pool.get().unwrap();
    for n in 1..=54 {
        diesel::insert_into(machines::table)
            .values((
                machines::organization_id.eq(organization_id),
                machines::name.eq(format!("vm-{n:03}")),
                machines::capabilities.eq(if n % 2 == 0 {
                    r#"["sap"]"#
                } else {
                    r#"["excel","sap"]"#
                }),
                machines::credential_hash.eq(format!("copy-{n}")),
                machines::enrolled_at.eq(now),
            ))
            .execute(&mut *conn)
            .unwrap();
    }
    drop(conn);
    let names = |reply: &crate::helpers::Reply| -> Vec<String> {
        reply
            .body
            .split("<th scope=\"row\"><a href=\"/api-management/machines/")
            .skip(1)
            .map(|rest| {
                let text = rest.split_once("\">").unwrap().1;
                text.split('<').next().unwrap().to_owned()
            })
            .collect()
    };
    let page_one = admin.machine_list("capability=sap");
    assert_eq!(page_one.row_ids().len(), 50);
    assert_eq!(page_one.row_ids()[0], first);
    assert!(page_one.body.contains("1–50 of 55"), "{}", page_one.body);
    let page_two = admin.machine_list("capability=sap&page=2");
    assert!(page_two.body.contains("51–55 of 55"), "{}", page_two.body);
    let shown: Vec<String> = names(&page_one)
        .into_iter()
        .chain(names(&page_two))
        .collect();
    let expected: Vec<String> = (0..=54).map(|n| format!("vm-{n:03}")).collect();
    assert_eq!(shown, expected);
    assert!(!page_two.row_ids().contains(&other));
    // Only the first is in contact: Online 1, Offline 54 of those with sap; 28 with excel.
    assert_eq!(app.heartbeat(&credential).status, 200);
    let online = admin.machine_list("capability=sap&status=online");
    assert_eq!(online.row_ids(), [first]);
    let offline = admin.machine_list("capability=sap&status=offline&page=2");
    assert!(offline.body.contains("51–54 of 54"), "{}", offline.body);
    assert_eq!(admin.machine_list("capability=excel").row_ids().len(), 28);
    // A search within the capability is counted by the database.
    let searched = admin.machine_list("capability=excel&q=vm-05");
    assert_eq!(names(&searched), ["vm-051", "vm-053"]);
}

fn queue_depth_counts_the_runs_a_machine_could_take(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("scheduler");
    let (sap_excel, _) = enroll_with(&app, &mut admin, "a-sap-excel", &["sap", "excel"]);
    let (linux, linux_credential) = enroll_with(&app, &mut admin, "b-linux", &["linux"]);
    let (bare, _) = enroll_with(&app, &mut admin, "c-bare", &[]);
    for (requires, runs) in [("", 2), ("sap", 3), ("sap,excel", 1), ("gpu", 4)] {
        for _ in 0..runs {
            let path = if requires.is_empty() {
                "default/sync".to_owned()
            } else {
                format!("default/sync?requires={requires}")
            };
            let reply = app.start_run(&key, &path, &json!({}));
            assert_eq!(reply.status, 202, "{}", reply.body);
        }
    }
    // Another organization's queue is not this one's.
    let mut rival = app.rival();
    let (_, rival_key) = rival.create_api_key("theirs");
    assert_eq!(
        app.start_run(&rival_key, "rival-corp/sync", &json!({}))
            .status,
        202
    );

    let list = admin.machine_list("");
    assert!(list.body.contains(">Queue depth<"), "{}", list.body);
    assert_eq!(depth_in(&list.body, sap_excel), 2 + 3 + 1);
    assert_eq!(depth_in(&list.body, linux), 2);
    assert_eq!(depth_in(&list.body, bare), 2);
    // The machine's Capabilities tab says the same.
    let tab = admin.get(&format!(
        "/api-management/machines/{sap_excel}?tab=capabilities"
    ));
    assert!(tab.body.contains("data-queue-depth=\"6\""), "{}", tab.body);

    // A run taken is no longer queued. (b-linux gets the second run that needs nothing: the first
    // falls to a-sap-excel, idle longer.)
    assert_eq!(app.claim(&linux_credential, 0).status, 200);
    let list = admin.machine_list("");
    assert_eq!(depth_in(&list.body, linux), 1);
    assert_eq!(depth_in(&list.body, sap_excel), 5);
}

fn tabs_show_what_they_hold(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    app.add_user(VIEWER_EMAIL, OTHER_PASSWORD, Role::Viewer, None);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("scheduler");
    let (id, credential) = enroll_with(&app, &mut admin, "vm-tabs", &["sap", "excel"]);
    let url = |tab: &str| format!("/api-management/machines/{id}?tab={tab}");
    let current = |tab: &str| format!("data-tab=\"{tab}\" aria-current=\"page\"");

    let overview = admin.get(&format!("/api-management/machines/{id}"));
    assert_eq!(overview.status, 200);
    for fact in [
        current("overview").as_str(),
        "<dt>Machine ID</dt><dd><code>",
        "10.0.0.9",
        "Windows 11",
        "3.1.4",
        "data-connection=\"online\">Online",
        "created by admin@example.com",
        "not announced by its driver",
    ] {
        assert!(overview.body.contains(fact), "Overview lacks {fact}");
    }
    assert_eq!(overview.body.matches("aria-current=\"page\"").count(), 1);
    assert!(!overview.body.contains("id=\"machine-settings\""));
    // A driver that says when it started has an uptime.
    let started = chrono::Utc::now() - chrono::Duration::hours(3);
    let announced = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({ "status": "idle", "started_at": started.to_rfc3339() }),
        Some(&credential),
    );
    assert_eq!(announced.status, 200, "{}", announced.body);
    let overview = admin.get(&url("overview"));
    assert!(
        overview
            .body
            .contains("<dd data-uptime>3 hours <span class=\"muted\">(driver started <time"),
        "{}",
        overview.body
    );

    let capabilities = admin.get(&url("capabilities"));
    assert!(capabilities.body.contains(&current("capabilities")));
    for chip in ["sap", "excel"] {
        assert!(capabilities.body.contains(&format!(
            "href=\"/api-management?capability={chip}#machines\""
        )));
    }

    // Job History, paged: 27 jobs are two pages, newest first.
    for n in 0..27 {
        let run = app
            .start_run(&key, &format!("default/job-{n:02}"), &json!({}))
            .run_id();
        assert_eq!(app.claim(&credential, 0).run_id(), run);
        let done = app.complete(&credential, &run, &json!({ "status": "completed" }));
        assert_eq!(done.status, 200);
    }
    let jobs = admin.get(&url("jobs"));
    assert!(jobs.body.contains(&current("jobs")));
    assert_eq!(jobs.body.matches("<th scope=\"row\">job-").count(), 25);
    assert!(jobs.body.contains(">job-26<"), "newest first");
    assert!(jobs.body.contains("?tab=jobs&amp;page=2\">Older</a>"));
    let older = admin.get(&format!("{}&page=2", url("jobs")));
    assert_eq!(older.body.matches("<th scope=\"row\">job-").count(), 2);
    assert!(older.body.contains(">job-00<") && older.body.contains(">job-01<"));
    assert!(older.body.contains("page=1\">Newer</a>"));
    assert!(!older.body.contains(">Older</a>"));
    // The live part refreshes the tab it shows.
    assert!(older.body.contains(&format!(
        "hx-get=\"/api-management/machines/{id}?tab=jobs&#38;page=2\""
    )));

    let settings = admin.get(&url("settings"));
    assert!(settings.body.contains(&current("settings")));
    for control in [
        "<label for=\"machine-name\">Name</label>",
        "<label for=\"machine-priority\">Priority</label>",
        "aria-label=\"Pause machine vm-tabs\"",
        "aria-label=\"Remove machine vm-tabs\"",
        "hx-confirm=\"Remove machine “vm-tabs”?",
    ] {
        assert!(settings.body.contains(control), "Settings lacks {control}");
    }
    // The forms are outside the part that refreshes itself.
    let live_end = settings.body.find("id=\"machine-settings\"").unwrap();
    let live = &settings.body[settings.body.find("id=\"machine-live\"").unwrap()..live_end];
    assert!(!live.contains("machine-priority"));

    let mut viewer = app.signed_in(VIEWER_EMAIL, OTHER_PASSWORD);
    let read_only = viewer.get(&url("settings"));
    assert_eq!(read_only.status, 200);
    assert!(
        read_only
            .body
            .contains("Only admins can change these settings.")
    );
    assert!(read_only.body.contains("data-priority=\"0\""));
    assert!(!read_only.body.contains("name=\"priority\""));
    assert!(!read_only.body.contains("Remove machine vm-tabs"));

    // An unknown tab is the Overview; another organization's machine is not found.
    assert!(
        admin
            .get(&url("nonsense"))
            .body
            .contains(&current("overview"))
    );
    let mut rival = app.rival();
    assert_eq!(rival.get(&url("overview")).status, 404);
}

fn rename_and_priority_are_checked_and_audited(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, _) = enroll_with(&app, &mut admin, "vm-old", &["sap"]);
    let rename = format!("/api-management/machines/{id}/rename");
    let priority = format!("/api-management/machines/{id}/priority");

    let renamed = admin.htmx_post(&rename, &[("name", "  vm-new  ")]);
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(
        renamed.header("hx-redirect"),
        Some(format!("/api-management/machines/{id}?tab=settings").as_str())
    );
    assert_eq!(machine_row(&app, id).0, "vm-new");
    assert_eq!(app.audit_count("machine_renamed"), 1);
    // Without htmx: a form post answered with a redirect, as a browser without script needs.
    let token = admin.page_csrf_token();
    let plain = admin.post_form(&rename, &[("name", "vm-plain"), ("csrf_token", &token)]);
    assert_eq!(plain.status, 303);
    assert_eq!(machine_row(&app, id).0, "vm-plain");
    assert_eq!(app.audit_count("machine_renamed"), 2);

    let long = "n".repeat(101);
    for bad in ["", "   ", long.as_str(), "vm\0", "two\nlines"] {
        let reply = admin.htmx_post(&rename, &[("name", bad)]);
        assert_eq!(reply.status, 422, "{bad:?}");
        assert!(
            reply.body.contains("id=\"machine-name-error\""),
            "{}",
            reply.body
        );
        assert!(reply.body.contains("aria-invalid=\"true\""));
    }
    assert_eq!(
        machine_row(&app, id).0,
        "vm-plain",
        "bad names change nothing"
    );
    assert_eq!(app.audit_count("machine_renamed"), 2);

    let set = admin.htmx_post(&priority, &[("priority", "7")]);
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(machine_row(&app, id).1, 7);
    assert_eq!(app.audit_count("machine_priority_changed"), 1);
    let details: String = audit_events::table
        .filter(audit_events::action.eq("machine_priority_changed"))
        .select(audit_events::details)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(
        (details["from"].as_i64(), details["to"].as_i64()),
        (Some(0), Some(7))
    );
    assert!(admin.machine_list("").body.contains(">Priority 7</span>"));
    assert!(
        admin
            .get(&format!("/api-management/machines/{id}?tab=settings"))
            .body
            .contains("value=\"7\"")
    );

    for bad in [
        "1001",
        "-1001",
        "1.5",
        "seven",
        "",
        "99999999999999999999999",
        "7\0",
        "\0",
    ] {
        let reply = admin.htmx_post(&priority, &[("priority", bad)]);
        assert_eq!(reply.status, 422, "{bad:?}");
        assert!(
            reply
                .body
                .contains("Priority must be a whole number from -1000 to 1000."),
            "{}",
            reply.body
        );
        assert!(!reply.body.contains('\0'));
    }
    assert_eq!(machine_row(&app, id).1, 7, "bad priorities change nothing");
    assert_eq!(app.audit_count("machine_priority_changed"), 1);
    assert_eq!(
        admin.htmx_post(&priority, &[("priority", "-1000")]).status,
        200
    );
    assert_eq!(machine_row(&app, id).1, -1000);
    // The same value again is not a change.
    assert_eq!(
        admin.htmx_post(&priority, &[("priority", "-1000")]).status,
        200
    );
    assert_eq!(app.audit_count("machine_priority_changed"), 2);

    // Another organization's admin finds no such machine.
    let mut rival = app.rival();
    assert_eq!(rival.htmx_post(&rename, &[("name", "mine")]).status, 404);
    assert_eq!(rival.htmx_post(&priority, &[("priority", "1")]).status, 404);
    assert_eq!(machine_row(&app, id), ("vm-plain".to_owned(), -1000, None));
}

fn members_and_viewers_are_refused_every_settings_change(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    app.add_user(MEMBER_EMAIL, OTHER_PASSWORD, Role::Member, None);
    app.add_user(VIEWER_EMAIL, OTHER_PASSWORD, Role::Viewer, None);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, credential) = enroll_with(&app, &mut admin, "vm-kept", &["sap"]);
    last_seen_days_ago(&app, id, 90);
    let id_text = id.to_string();
    for email in [MEMBER_EMAIL, VIEWER_EMAIL] {
        let mut user = app.signed_in(email, OTHER_PASSWORD);
        for (path, fields) in [
            (
                format!("/api-management/machines/{id}/rename"),
                vec![("name", "taken")],
            ),
            (
                format!("/api-management/machines/{id}/priority"),
                vec![("priority", "9")],
            ),
            (format!("/api-management/machines/{id}/pause"), vec![]),
            (format!("/api-management/machines/{id}/resume"), vec![]),
            (format!("/api-management/machines/{id}/remove"), vec![]),
            (
                "/api-management/machines/cleanup".to_owned(),
                vec![("days", "30"), ("ids", id_text.as_str())],
            ),
        ] {
            let reply = user.htmx_post(&path, &fields);
            assert_eq!(reply.status, 403, "{email} {path}");
        }
        assert_eq!(
            user.get("/api-management/machines/cleanup?days=30").status,
            403
        );
        assert!(
            !user
                .get("/api-management")
                .body
                .contains("Clean up offline machines")
        );
    }
    assert_eq!(machine_row(&app, id), ("vm-kept".to_owned(), 0, None));
    let paused: Option<chrono::NaiveDateTime> = machines::table
        .find(id)
        .select(machines::paused_at)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    assert_eq!(paused, None);
    assert_eq!(app.heartbeat(&credential).status, 200);
}

fn cleanup_previews_then_removes_exactly_those_listed(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("scheduler");
    let (gone, gone_credential) = enroll_with(&app, &mut admin, "old-1", &[]);
    let (returns, returns_credential) = enroll_with(&app, &mut admin, "old-2", &[]);
    let (recent, _) = enroll_with(&app, &mut admin, "recent", &[]);
    let (week_old, _) = enroll_with(&app, &mut admin, "week-old", &[]);
    // The machine about to go holds a running job: it goes back to the queue.
    let run = app.start_run(&key, "default/sync", &json!({})).run_id();
    assert_eq!(app.claim(&gone_credential, 0).run_id(), run);
    last_seen_days_ago(&app, gone, 45);
    last_seen_days_ago(&app, returns, 31);
    last_seen_days_ago(&app, week_old, 7);
    let mut rival = app.rival();
    let (rival_old, rival_credential) = enroll_with(&app, &mut rival, "rival-old", &[]);
    last_seen_days_ago(&app, rival_old, 400);

    let section = admin.get("/api-management");
    assert!(
        section
            .body
            .contains("href=\"/api-management/machines/cleanup\">Clean up offline machines</a>")
    );
    let form = admin.get("/api-management/machines/cleanup");
    assert_eq!(form.status, 200);
    assert!(form.body.contains(
        "name=\"days\" type=\"number\" min=\"1\" max=\"3650\" step=\"1\" required value=\"30\""
    ));
    for bad in ["0", "3651", "abc", "-3", "1e3", "99999999999999", "3%00"] {
        let reply = admin.get(&format!("/api-management/machines/cleanup?days={bad}"));
        assert_eq!(reply.status, 422, "{bad}");
        assert!(
            reply
                .body
                .contains("Enter a whole number of days from 1 to 3650.")
        );
        assert!(!reply.body.contains("name=\"ids\""));
    }

    let preview = admin.get("/api-management/machines/cleanup?days=30");
    assert_eq!(preview.status, 200);
    assert_eq!(preview.row_ids(), [gone, returns], "longest offline first");
    assert!(
        preview
            .body
            .contains(">2 machines offline for more than 30 days<")
    );
    assert!(preview.body.contains(">Remove 2 machines</button>"));
    assert!(!preview.body.contains("recent") && !preview.body.contains("week-old"));
    assert!(!preview.body.contains("rival-old"));
    let ids = preview
        .body
        .split("name=\"ids\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(ids, format!("{gone},{returns}"));
    assert_eq!(
        admin
            .get("/api-management/machines/cleanup?days=5")
            .row_ids(),
        [gone, returns, week_old]
    );

    // One comes back before the admin confirms; someone also slips in another organization's id.
    assert_eq!(app.heartbeat(&returns_credential).status, 200);
    let smuggled = format!("{ids},{rival_old},{recent}");
    let confirmed = admin.htmx_post(
        "/api-management/machines/cleanup",
        &[("days", "30"), ("ids", &smuggled)],
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(
        confirmed.header("hx-redirect"),
        Some("/api-management#machines")
    );
    let flash = admin.get("/api-management");
    assert!(
        flash
            .body
            .contains("Removed 1 machine offline for more than 30 days."),
        "{}",
        flash.body
    );

    assert!(machine_row(&app, gone).2.is_some());
    for kept in [returns, recent, week_old, rival_old] {
        assert_eq!(machine_row(&app, kept).2, None, "machine {kept} stays");
    }
    assert_eq!(
        app.heartbeat(&gone_credential).api_error(),
        (401, "machine_removed".into())
    );
    assert_eq!(app.heartbeat(&rival_credential).status, 200);
    assert_eq!(
        app.run_of(&key, &run)["status"],
        "queued",
        "its job went back to the queue"
    );
    assert_eq!(app.audit_count("machines_cleaned_up"), 1);
    let details: String = audit_events::table
        .filter(audit_events::action.eq("machines_cleaned_up"))
        .select(audit_events::details)
        .first(&mut *app.pool.get().unwrap())
        .unwrap();
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["count"], 1);
    assert_eq!(details["ids"], json!([gone]));

    // Confirming again removes nothing more and records nothing.
    let again = admin.htmx_post(
        "/api-management/machines/cleanup",
        &[("days", "30"), ("ids", &ids)],
    );
    assert_eq!(again.status, 200);
    assert_eq!(app.audit_count("machines_cleaned_up"), 1);
    assert_eq!(machine_row(&app, returns).2, None);
    // A confirmation that is not one is refused.
    for (days, ids) in [("0", "1"), ("30", "1,x"), ("30", "1;2")] {
        let reply = admin.htmx_post(
            "/api-management/machines/cleanup",
            &[("days", days), ("ids", ids)],
        );
        assert_eq!(reply.status, 400, "{days} {ids}");
    }
}

fn sign_in(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/api-management"));
    browser.wait_until("the sign-in page", || {
        browser.current_url().ends_with("/login").then_some(())
    });
    browser.type_into(&browser.field_labelled("Email"), ADMIN_EMAIL);
    browser.type_into(&browser.field_labelled("Password"), ADMIN_PASSWORD);
    browser.click(&browser.button_named("Sign in"));
    browser.wait_for_css("#api-keys");
}

fn an_admin_switches_tabs_by_keyboard_and_sets_priority(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (id, credential) = enroll_with(&app, &mut admin, "vm-keys", &["sap"]);
    assert_eq!(app.heartbeat(&credential).status, 200);
    let browser = Browser::start();
    sign_in(&browser, &app);
    browser.goto(&app.url(&format!("/api-management/machines/{id}")));
    browser.wait_for_css("#machine-live");
    assert_eq!(
        browser
            .attribute_of("a[aria-current=page]", "data-tab")
            .as_deref(),
        Some("overview")
    );

    // Tab to "Capabilities", Enter; then on to "Settings", Enter.
    for (label, tab) in [("Capabilities", "capabilities"), ("Settings", "settings")] {
        browser.tab_to(label, |name| name == label);
        browser.press(ENTER);
        browser.wait_until(&format!("the {label} tab"), || {
            (browser
                .attribute_of("a[aria-current=page]", "data-tab")
                .as_deref()
                == Some(tab))
            .then_some(())
        });
    }
    assert!(browser.current_url().ends_with("?tab=settings"));

    // Focus on the Priority field survives the page's own refreshes.
    browser.tab_to("the Priority field", |name| name == "Priority");
    browser.execute("document.getElementById('machine-priority').select(); return null;");
    browser.type_keys("12");
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(
        browser.focused(),
        "Priority",
        "the refresh left focus where it was"
    );
    assert_eq!(
        browser.execute("return document.getElementById('machine-priority').value"),
        "12",
        "and what was typed"
    );
    browser.press(ENTER);
    browser.wait_until("the new priority on the page", || {
        browser
            .text_of("#machine-live .page-title")
            .filter(|t| t.to_lowercase().contains("priority 12"))
    });
    assert_eq!(machine_row(&app, id).1, 12);
    assert!(browser.current_url().ends_with("?tab=settings"));
    browser.wait_until("the change announced", || {
        browser
            .text_of("#notice")
            .filter(|t| t.contains("priority of vm-keys is now 12"))
    });

    // A number out of range is refused in words, next to the field.
    browser.execute("const f = document.getElementById('machine-priority'); f.removeAttribute('max'); f.value = '5000'; return null;");
    browser.click_button("Save priority");
    let error = browser.wait_until("the error", || browser.text_of("#machine-priority-error"));
    assert!(error.contains("from -1000 to 1000"), "{error}");
    assert_eq!(machine_row(&app, id).1, 12);
    assert_eq!(
        browser.focused(),
        "Priority",
        "focus is on the field to correct"
    );
}

fn an_admin_cleans_up_offline_machines_after_confirming(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (old, credential) = enroll_with(&app, &mut admin, "forgotten-vm", &[]);
    let (fresh, _) = enroll_with(&app, &mut admin, "busy-vm", &[]);
    last_seen_days_ago(&app, old, 60);
    let browser = Browser::start();
    sign_in(&browser, &app);
    browser.click(&browser.wait_for_css("a[href='/api-management/machines/cleanup']")[0]);
    let days = browser.field_labelled("Days offline");
    assert_eq!(browser.attribute(&days, "value").as_deref(), Some("30"));
    browser.click_button("Show machines");
    browser.wait_until("the preview", || {
        browser
            .text_of("#cleanup-preview h2")
            .filter(|t| t == "1 machine offline for more than 30 days")
    });
    assert!(
        browser
            .text_of("#cleanup-preview tbody")
            .unwrap()
            .contains("forgotten-vm")
    );
    assert_eq!(
        browser.count(&format!("#cleanup-preview tr[data-id='{fresh}']")),
        0
    );
    browser.screenshot(&format!("machine-cleanup-{backend:?}").to_lowercase());
    browser.click_button("Remove 1 machine");
    browser.wait_until("the machines section again", || {
        browser
            .current_url()
            .ends_with("/api-management#machines")
            .then_some(())
    });
    browser.wait_until("the removal announced", || {
        browser
            .text_of("#notice")
            .filter(|t| t.contains("Removed 1 machine offline for more than 30 days"))
    });
    browser.wait_until("the list without it", || {
        (browser.count(&format!("#machine-list tr[data-id='{fresh}']")) == 1
            && browser.count(&format!("#machine-list tr[data-id='{old}']")) == 0)
            .then_some(())
    });
    assert_eq!(
        app.heartbeat(&credential).api_error(),
        (401, "machine_removed".into())
    );
}

fn the_overview_shows_the_address_and_port_the_driver_gave(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("listener");
    let enroll = |token: &str, ip: &str| {
        app.post_json(
            "/api/v1/driver/enroll",
            &json!({ "token": token, "name": "listener", "ip_address": ip }),
            None,
        )
    };
    let refused = enroll(&token, "10.0.0.5:99999");
    assert_eq!(refused.api_error(), (400, "invalid_request".into()));
    let reply = enroll(&token, "10.0.0.5:5000");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["machine_id"].as_i64().unwrap();
    let overview = admin.get(&format!("/api-management/machines/{id}"));
    assert!(
        overview.body.contains("IP address and port"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("10.0.0.5:5000"));
}
