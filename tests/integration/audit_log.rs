//! The audit log, readable: the page (newest first, filters, keyset pages), its JSON lines download,
//! one organization never seeing another's events, bad filters refused without a 500, each query on
//! its index, and the page found from the navigation in a real browser.

use std::collections::HashSet;

use diesel::prelude::*;
use granite::audit::{self, Action};
use granite::organizations;
use granite::users::Role;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, RIVAL_EMAIL, Reply, TestApp, TestDb,
};
use crate::webdriver::Browser;

both_backends!(
    events_appear_newest_first_with_actor_action_target_and_ip,
    the_log_filters_by_action_and_by_actor,
    older_pages_continue_where_the_last_one_ended,
    another_organizations_events_are_never_shown_nor_downloaded,
    the_download_is_the_filtered_events_as_json_lines,
    bad_filter_values_are_refused_clearly,
    every_filter_reads_its_own_index_in_order,
    a_viewer_opens_the_log_from_the_navigation_and_filters_it,
);

const PAGE: &str = "/api-management/audit-log";
const DOWNLOAD: &str = "/api-management/audit-log.jsonl";

fn organization_id(app: &TestApp, slug: &str) -> i64 {
    organizations::find_by_slug(&mut app.pool.get().unwrap(), slug)
        .unwrap()
        .unwrap()
        .id
}

/// Records `count` events straight through the domain, cycling through `actions` and `actors`.
fn seed(app: &TestApp, organization_id: i64, count: usize, actions: &[Action], actors: &[&str]) {
    let mut conn = app.pool.get().unwrap();
    for i in 0..count {
        audit::record(
            &mut conn,
            audit::Event {
                organization_id: Some(organization_id),
                actor_user_id: None,
                actor: actors[i % actors.len()],
                action: actions[i % actions.len()],
                target_type: "machine",
                target_id: Some((i + 1).to_string()),
                source_ip: Some("10.1.2.3"),
                details: serde_json::json!({ "name": format!("vm-{i}"), "n": i }),
            },
        )
        .unwrap();
    }
}

/// `data-action` of every row, in order.
fn row_actions(reply: &Reply) -> Vec<String> {
    reply
        .body
        .split("data-action=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

/// The href of the link whose text is `text`, as a browser would follow it (entities decoded).
fn link(reply: &Reply, text: &str) -> Option<String> {
    let end = reply.body.find(&format!(">{text}</a>"))?;
    let start = reply.body[..end].rfind("href=\"")? + "href=\"".len();
    let href = reply.body[start..].split('"').next()?;
    Some(href.replace("&amp;", "&").replace("&#38;", "&"))
}

fn events_total(app: &TestApp, organization_id: i64) -> i64 {
    use granite::db::schema::audit_events;
    audit_events::table
        .filter(audit_events::organization_id.eq(organization_id))
        .count()
        .get_result(&mut *app.pool.get().unwrap())
        .unwrap()
}

fn events_appear_newest_first_with_actor_action_target_and_ip(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, _) = admin.create_api_key("billing");
    let (_, token) = admin.create_enrollment_token("vm-1");
    let (machine_id, _) = app.enroll(&token, "vm-1");
    let revoked = admin.htmx_post(&format!("/api-management/api-keys/{key_id}/revoke"), &[]);
    assert_eq!(revoked.status, 200, "{}", revoked.body);

    let page = admin.get(PAGE);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        row_actions(&page),
        [
            "api_key_revoked",
            "machine_enrolled",
            "enrollment_token_created",
            "api_key_created",
            "signed_in",
            "first_admin_created",
        ]
    );
    let ids = page.row_ids();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for shown in [
        "<th scope=\"row\">API key revoked</th>",
        "<th scope=\"row\">Machine enrolled</th>",
        ADMIN_EMAIL,
        "machine vm-1",
        &format!(
            "<a href=\"/api-management/api-keys/{key_id}/analytics\"><code>{key_id}</code></a>"
        ),
        &format!("<a href=\"/api-management/machines/{machine_id}\"><code>{machine_id}</code></a>"),
        "<code>127.0.0.1</code>",
        "<div class=\"sub\">billing</div>",
        "data-label=\"IP address\"",
    ] {
        assert!(page.body.contains(shown), "{shown} missing:\n{}", page.body);
    }
    // Relative time, with the exact time on hover.
    assert!(page.body.contains("just now</time>"), "{}", page.body);
    assert!(page.body.contains(" UTC\">"), "exact time in the title");
    // The navigation of every signed-in page leads here.
    let dashboard = admin.get("/api-management");
    assert!(
        dashboard
            .body
            .contains("<a href=\"/api-management/audit-log\">Audit log</a>"),
        "linked from the navigation"
    );

    // Every role may read it.
    app.add_user("viewer@example.com", "viewer password", Role::Viewer, None);
    let mut viewer = app.signed_in("viewer@example.com", "viewer password");
    let seen = viewer.get(PAGE);
    assert_eq!(seen.status, 200);
    assert_eq!(
        row_actions(&seen)[0],
        "signed_in",
        "the viewer's own sign-in"
    );
    assert_eq!(seen.row_ids().len(), ids.len() + 1);
    // Signed out: to the sign-in page, for the page and the download alike.
    let mut stranger = app.client();
    for path in [PAGE, DOWNLOAD] {
        let reply = stranger.get(path);
        assert_eq!(reply.status, 303, "{path}");
        assert_eq!(reply.header("location"), Some("/login"), "{path}");
    }
}

fn the_log_filters_by_action_and_by_actor(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let org = organization_id(&app, organizations::DEFAULT_SLUG);
    seed(
        &app,
        org,
        12,
        &[
            Action::MachinePaused,
            Action::MachineResumed,
            Action::MachineRemoved,
        ],
        &["ops@example.com", "machine vm-7"],
    );

    let paused = admin.get(&format!("{PAGE}?action=machine_paused"));
    assert_eq!(paused.status, 200);
    assert_eq!(row_actions(&paused), vec!["machine_paused"; 4]);
    assert!(
        paused
            .body
            .contains("<option value=\"machine_paused\" selected>Machine paused</option>")
    );

    let by_machine = admin.get(&format!("{PAGE}?actor=machine+vm-7"));
    assert_eq!(by_machine.row_ids().len(), 6);
    assert!(
        !by_machine
            .body
            .contains("<td data-label=\"Actor\">ops@example.com</td>")
    );
    assert!(
        by_machine.body.contains("value=\"machine vm-7\""),
        "the field keeps the actor"
    );

    // Both: i % 3 == 0 (paused) and i % 2 == 1 (the machine): i = 3 and 9.
    let both = admin.get(&format!(
        "{PAGE}?action=machine_paused&actor=machine%20vm-7"
    ));
    assert_eq!(row_actions(&both), ["machine_paused", "machine_paused"]);
    assert!(
        both.body.contains("<div class=\"sub\">vm-9</div>"),
        "{}",
        both.body
    );

    // Exact match only, and an empty state that offers the way back.
    let nobody = admin.get(&format!("{PAGE}?actor=machine"));
    assert_eq!(nobody.status, 200);
    assert!(nobody.row_ids().is_empty());
    assert!(nobody.body.contains("No events match these filters"));
    assert_eq!(link(&nobody, "Clear filters").as_deref(), Some(PAGE));

    // The actors seen in the organization are offered in the filter, the admin among them.
    let page = admin.get(PAGE);
    for actor in ["ops@example.com", "machine vm-7", ADMIN_EMAIL] {
        assert!(
            page.body
                .contains(&format!("<option value=\"{actor}\"></option>")),
            "{actor} offered"
        );
    }
    // htmx asks for the list alone when the filter is submitted.
    let fragment = admin.get_with(
        &format!("{PAGE}?action=machine_removed"),
        &[("HX-Request", "true")],
    );
    assert!(
        fragment
            .body
            .trim_start()
            .starts_with("<div id=\"audit-events\">")
    );
    assert!(!fragment.body.contains("<html"));
    assert_eq!(row_actions(&fragment), vec!["machine_removed"; 4]);
    // Back to a filtered address htmx no longer holds: the whole page again.
    let restored = admin.get_with(
        &format!("{PAGE}?action=machine_removed"),
        &[
            ("HX-Request", "true"),
            ("HX-History-Restore-Request", "true"),
        ],
    );
    assert!(restored.body.contains("<h1>Audit log</h1>") && restored.body.contains("<html"));
    assert_eq!(row_actions(&restored), vec!["machine_removed"; 4]);
}

fn older_pages_continue_where_the_last_one_ended(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let org = organization_id(&app, organizations::DEFAULT_SLUG);
    seed(
        &app,
        org,
        130,
        &[Action::SignedIn, Action::ApiKeyCreated],
        &["ops@example.com"],
    );
    let total = events_total(&app, org) as usize;
    assert_eq!(total, 132, "130 seeded, the first admin and the sign-in");

    let mut seen = Vec::new();
    let mut path = PAGE.to_owned();
    let mut pages = 0;
    loop {
        let page = admin.get(&path);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let ids = page.row_ids();
        assert!(ids.len() <= 50, "{} rows on a page", ids.len());
        if let Some(&last) = seen.last() {
            assert!(
                ids[0] < last,
                "page {pages} starts older than the last one ended"
            );
        }
        seen.extend(ids);
        pages += 1;
        if pages > 1 {
            assert_eq!(link(&page, "Newest").as_deref(), Some(PAGE));
        }
        match link(&page, "Older events") {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), total, "every event once");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        total,
        "no duplicates"
    );
    assert!(seen.windows(2).all(|w| w[0] > w[1]));

    // The filter goes along to the older pages.
    let first = admin.get(&format!("{PAGE}?action=api_key_created"));
    assert_eq!(first.row_ids().len(), 50);
    let older = link(&first, "Older events").expect("a second page");
    assert!(
        older.starts_with(&format!("{PAGE}?action=api_key_created&before=")),
        "{older}"
    );
    let second = admin.get(&older);
    assert_eq!(row_actions(&second), vec!["api_key_created"; 15]);
    assert!(link(&second, "Older events").is_none());

    // Past the oldest: said so, with the way back.
    let oldest = *seen.last().unwrap();
    let beyond = admin.get(&format!("{PAGE}?before={oldest}"));
    assert!(beyond.row_ids().is_empty());
    assert!(beyond.body.contains("No older events"));
}

fn another_organizations_events_are_never_shown_nor_downloaded(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let mut rival = app.rival();
    rival.create_api_key("rival-secret-project");
    let ours = organization_id(&app, organizations::DEFAULT_SLUG);
    let theirs = organization_id(&app, "rival-corp");
    seed(
        &app,
        theirs,
        60,
        &[Action::MachineRemoved],
        &["spy@rival.test"],
    );
    seed(
        &app,
        ours,
        3,
        &[Action::MachinePaused],
        &["ops@example.com"],
    );

    let page = admin.get(PAGE);
    let download = admin.get(DOWNLOAD);
    for reply in [&page, &download] {
        assert_eq!(reply.status, 200);
        for foreign in [RIVAL_EMAIL, "spy@rival.test", "rival-secret-project"] {
            assert!(!reply.body.contains(foreign), "{foreign} leaked");
        }
    }
    assert!(!row_actions(&page).contains(&"machine_removed".to_owned()));
    assert!(!download.body.contains("machine_removed"));
    assert_eq!(
        download.body.lines().count() as i64,
        events_total(&app, ours)
    );
    // Asking for them by name, or by position, finds nothing either.
    for query in [
        "?actor=spy%40rival.test",
        "?action=machine_removed",
        "?actor=boss%40rival.test&action=api_key_created",
    ] {
        let reply = admin.get(&format!("{PAGE}{query}"));
        assert!(reply.row_ids().is_empty(), "{query}");
        assert!(
            admin.get(&format!("{DOWNLOAD}{query}")).body.is_empty(),
            "{query}"
        );
    }
    let newest_theirs: i64 = {
        use granite::db::schema::audit_events;
        audit_events::table
            .filter(audit_events::organization_id.eq(theirs))
            .select(diesel::dsl::max(audit_events::id))
            .first::<Option<i64>>(&mut *app.pool.get().unwrap())
            .unwrap()
            .unwrap()
    };
    let positioned = admin.get(&format!("{PAGE}?before={}", newest_theirs + 1));
    assert!(!positioned.body.contains("spy@rival.test"));
    // And the rival sees theirs only.
    let rivals = rival.get(DOWNLOAD);
    assert_eq!(
        rivals.body.lines().count(),
        62,
        "60 seeded, the sign-in, the key"
    );
    assert!(!rivals.body.contains(ADMIN_EMAIL) && !rivals.body.contains("ops@example.com"));
}

fn parse_lines(reply: &Reply) -> Vec<Value> {
    reply
        .body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn the_download_is_the_filtered_events_as_json_lines(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, secret) = admin.create_api_key("billing");
    let (_, token) = admin.create_enrollment_token("vm-1");
    app.enroll(&token, "vm-1");
    let org = organization_id(&app, organizations::DEFAULT_SLUG);
    // More than two batches of the download.
    seed(
        &app,
        org,
        1_100,
        &[Action::MachinePaused, Action::MachineResumed],
        &["ops@example.com", "machine vm-7", "system"],
    );

    let all = admin.get(DOWNLOAD);
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), Some("application/x-ndjson"));
    let disposition = all.header("content-disposition").unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(disposition.contains(".jsonl"), "{disposition}");
    let lines = parse_lines(&all);
    assert_eq!(lines.len() as i64, events_total(&app, org));
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    for line in &lines {
        let keys: HashSet<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            HashSet::from([
                "id",
                "time",
                "actor",
                "action",
                "target_type",
                "target_id",
                "ip",
                "details"
            ])
        );
        let time = line["time"].as_str().unwrap();
        assert!(time.ends_with('Z'), "{time}");
        chrono::DateTime::parse_from_rfc3339(time).unwrap();
        assert!(
            line["details"].is_object(),
            "details are JSON, not text: {line}"
        );
    }
    let enrolled = lines
        .iter()
        .find(|l| l["action"] == "machine_enrolled")
        .unwrap();
    assert_eq!(enrolled["actor"], "machine vm-1");
    assert_eq!(enrolled["target_type"], "machine");
    assert_eq!(enrolled["ip"], "127.0.0.1");
    assert_eq!(
        enrolled["details"]["token_hint"]
            .as_str()
            .map(|h| h.starts_with("enroll_")),
        Some(true)
    );
    // No secret of any kind, only hints.
    assert!(
        !all.body.contains(&secret),
        "the API key's secret is in the download"
    );
    assert!(
        !all.body.contains(&token),
        "the enrollment token is in the download"
    );
    let created = lines
        .iter()
        .find(|l| l["action"] == "api_key_created")
        .unwrap();
    assert_eq!(created["details"]["name"], "billing");

    // Filtered as the page is.
    let filtered = admin.get(&format!(
        "{DOWNLOAD}?action=machine_paused&actor=machine+vm-7"
    ));
    let lines = parse_lines(&filtered);
    assert_eq!(
        lines.len(),
        183,
        "paused (i even) by vm-7 (i % 3 == 1): i % 6 == 4"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["action"] == "machine_paused" && l["actor"] == "machine vm-7")
    );
    // The page links to the download of what it shows.
    let page = admin.get(&format!("{PAGE}?action=machine_paused"));
    assert_eq!(
        link(&page, "Download JSON lines").as_deref(),
        Some("/api-management/audit-log.jsonl?action=machine_paused")
    );
}

fn bad_filter_values_are_refused_clearly(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    for (query, said) in [
        ("action=drop_tables", "There is no action “drop_tables”"),
        ("action=%00", "There is no action"),
        (
            "actor=admin%00%40example.com",
            "must not contain control characters",
        ),
        ("before=-1", "must be the number of an event"),
        ("before=abc", "must be the number of an event"),
        ("before=1%00", "must be the number of an event"),
    ] {
        for path in [PAGE, DOWNLOAD] {
            let reply = admin.get(&format!("{path}?{query}"));
            assert_eq!(reply.status, 400, "{path}?{query}: {}", reply.body);
            assert!(reply.body.contains(said), "{path}?{query}: {}", reply.body);
        }
    }
    // Beyond every id: the newest page. Invalid UTF-8: refused by the query parser. Never a 500.
    let huge = admin.get(&format!("{PAGE}?before=99999999999999999999999999999"));
    assert_eq!(huge.status, 200);
    assert_eq!(row_actions(&huge), ["signed_in", "first_admin_created"]);
    assert_eq!(admin.get(&format!("{PAGE}?before=0")).status, 200);
    let not_utf8 = admin.get(&format!("{PAGE}?actor=%FF"));
    assert!(
        not_utf8.status == 400 || (not_utf8.status == 200 && not_utf8.row_ids().is_empty()),
        "{}: {}",
        not_utf8.status,
        not_utf8.body
    );
    let long = admin.get(&format!("{PAGE}?actor={}", "a".repeat(2_000)));
    assert_eq!(long.status, 400);
    assert_eq!(
        admin
            .get(&format!("{DOWNLOAD}?before=9223372036854775807"))
            .status,
        200
    );
}

/// The database's own account of how it runs each filter's statement: through its index, in index
/// order (no sort), on both backends.
fn every_filter_reads_its_own_index_in_order(backend: Backend) {
    use diesel::connection::SimpleConnection;
    use granite::audit::history::Filter;
    use granite::db::DbConnection;

    #[derive(QueryableByName)]
    struct SqlitePlan {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    #[derive(QueryableByName)]
    struct PostgresPlan {
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[diesel(column_name = "QUERY PLAN")]
        plan: String,
    }

    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let org = organization_id(&app, organizations::DEFAULT_SLUG);
    seed(
        &app,
        org,
        300,
        &[Action::SignedIn, Action::MachinePaused, Action::RunRetried],
        &["a@example.com", "b@example.com"],
    );
    // Ours is the smaller organization, as most are on a shared server: reading another's events
    // and skipping them would not do.
    app.add_user(
        "boss@big.test",
        "big password 1",
        Role::Admin,
        Some("Big Corp"),
    );
    let big = organization_id(&app, "big-corp");
    let mut conn = app.pool.get().unwrap();
    for _ in 0..4 {
        conn.batch_execute(&format!(
            "INSERT INTO audit_events (organization_id, actor, action, target_type, details, created_at) \
             SELECT {big}, actor, action, target_type, details, created_at FROM audit_events"
        ))
        .unwrap();
    }
    if let DbConnection::Postgres(pg) = &mut *conn {
        // What autovacuum does on its own soon after.
        pg.batch_execute("ANALYZE audit_events").unwrap();
    }
    // Both filters at once: either index, the one the planner finds narrower; it may then sort the
    // few rows that pass both.
    for (action, actor, index, in_order) in [
        ("", "", "audit_events_by_organization_id", true),
        ("signed_in", "", "audit_events_by_organization_action", true),
        (
            "",
            "a@example.com",
            "audit_events_by_organization_actor",
            true,
        ),
        (
            "signed_in",
            "a@example.com",
            "audit_events_by_organization_a",
            false,
        ),
    ] {
        let filter = Filter::parse(action, actor).unwrap();
        let sql = filter
            .page_sql()
            .replace("$1", &org.to_string())
            .replace("$2", &i64::MAX.to_string())
            .replace("$3", "51")
            .replace("$4", &format!("'{action}'"))
            .replace("$5", &format!("'{actor}'"));
        let plan = match &mut *conn {
            DbConnection::Sqlite(sqlite) => diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load::<SqlitePlan>(sqlite)
                .unwrap()
                .into_iter()
                .map(|row| row.detail)
                .collect::<Vec<_>>()
                .join("\n"),
            DbConnection::Postgres(pg) => {
                // A few thousand rows fit in a few pages, where a table scan is cheapest: ask
                // whether the index serves the query, as it must once the log is a year long.
                pg.batch_execute("SET enable_seqscan = off").unwrap();
                diesel::sql_query(format!("EXPLAIN {sql}"))
                    .load::<PostgresPlan>(pg)
                    .unwrap()
                    .into_iter()
                    .map(|row| row.plan)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        assert!(
            plan.contains(index),
            "{action:?} {actor:?} does not use {index}:\n{plan}"
        );
        if in_order {
            assert!(
                !plan.contains("TEMP B-TREE") && !plan.contains("Sort"),
                "{action:?} {actor:?} sorted:\n{plan}"
            );
        }
    }
    if let DbConnection::Postgres(pg) = &mut *conn {
        pg.batch_execute("RESET enable_seqscan").unwrap();
    }
}

fn sign_in(browser: &Browser, app: &TestApp, email: &str, password: &str) {
    browser.goto(&app.url("/login"));
    browser.type_into(&browser.field_labelled("Email"), email);
    browser.type_into(&browser.field_labelled("Password"), password);
    browser.click(&browser.button_named("Sign in"));
    browser.wait_for_css("#api-keys");
}

fn a_viewer_opens_the_log_from_the_navigation_and_filters_it(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin: Client = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, _) = admin.create_api_key("billing");
    admin.htmx_post(&format!("/api-management/api-keys/{key_id}/revoke"), &[]);
    app.add_user("viewer@example.com", "viewer password", Role::Viewer, None);

    let browser = Browser::start();
    sign_in(&browser, &app, "viewer@example.com", "viewer password");
    browser.click(
        &browser.wait_for_css("nav[aria-label=Main] a[href='/api-management/audit-log']")[0],
    );
    browser.wait_until("the audit log", || {
        browser.current_url().ends_with(PAGE).then_some(())
    });
    assert_eq!(browser.text_of("main h1").as_deref(), Some("Audit log"));
    assert!(browser.count("#audit-events tbody tr") >= 4);

    // Choose "API key revoked" with the keyboard, then Filter.
    browser.type_into(&browser.field_labelled("Action"), "API key revoked");
    assert_eq!(
        browser.execute("return document.getElementById('audit-action').value;"),
        "api_key_revoked"
    );
    browser.click_button("Filter");
    browser.wait_until("only the revocation listed", || {
        (browser.count("#audit-events tbody tr") == 1
            && browser.count("#audit-events tr[data-action=api_key_revoked]") == 1)
            .then_some(())
    });
    let row = browser.text_of("#audit-events tbody tr").unwrap();
    assert!(
        row.contains("API key revoked") && row.contains(ADMIN_EMAIL),
        "{row}"
    );
    assert!(row.contains(&format!("API key {key_id}")), "{row}");
    assert!(
        browser.current_url().contains("action=api_key_revoked"),
        "the address is the filtered view, to share: {}",
        browser.current_url()
    );
    browser.screenshot(&format!("audit-log-filtered-{backend:?}").to_lowercase());
}
