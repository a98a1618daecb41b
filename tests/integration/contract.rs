//! The contract as a document: the OpenAPI reference the server serves, the examples in `docs/api.md`,
//! and bodies of the wrong shape refused before anything is written.

use std::collections::{BTreeMap, BTreeSet};

use diesel::prelude::*;
use granite::db::schema::{audit_events, enrollment_tokens, machines, runs};
use granite::wire::driver::{
    ClaimRequest, CompleteRequest, EnrollRequest, EnrollResponse, HeartbeatRequest,
    HeartbeatResponse,
};
use granite::wire::public::{MeResponse, QueueStatusResponse, QueuedResponse};
use granite::wire::{ErrorBody, RunObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Reply, TestApp, TestDb};

both_backends!(
    the_openapi_document_is_served_and_lists_every_route,
    bad_shapes_are_refused_and_change_nothing,
);

/// Every route of both APIs as the contract names them, with the status of success.
const CONTRACT_ROUTES: [(&str, &str, &str); 11] = [
    ("get", "/api/me", "200"),
    ("post", "/api/{org}/{endpoint}", "202"),
    ("get", "/api/agent-runs/{run_id}", "200"),
    ("post", "/api/agent-runs/{run_id}/cancel", "200"),
    ("get", "/api/queue", "200"),
    ("post", "/api/v1/driver/enroll", "201"),
    ("post", "/api/v1/driver/heartbeat", "200"),
    ("post", "/api/v1/driver/jobs/claim", "204"),
    ("post", "/api/v1/driver/jobs/{run_id}/complete", "200"),
    ("post", "/api/v1/driver/jobs/{run_id}/release", "200"),
    ("get", "/api/openapi.json", "200"),
];

fn the_openapi_document_is_served_and_lists_every_route(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let reply = app.api(None).get("/api/openapi.json");
    assert_eq!(reply.status, 200, "served without a key: {}", reply.body);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    let doc = reply.json();

    let problems = openapi_problems(&doc);
    assert!(problems.is_empty(), "not valid OpenAPI 3.1: {problems:#?}");

    let documented: BTreeSet<(String, String)> = operations(&doc)
        .map(|(method, path, _)| (method.to_owned(), path.to_owned()))
        .collect();
    let expected: BTreeSet<(String, String)> = CONTRACT_ROUTES
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        documented, expected,
        "the document lists exactly the API's routes"
    );
    for (method, path, success) in CONTRACT_ROUTES {
        let responses = &doc["paths"][path][method]["responses"];
        assert!(
            responses.get(success).is_some(),
            "{method} {path} documents its {success}"
        );
        if path != "/api/openapi.json" {
            let errors: Vec<&String> = responses
                .as_object()
                .unwrap()
                .keys()
                .filter(|code| code.starts_with('4'))
                .collect();
            assert!(!errors.is_empty(), "{method} {path} documents its errors");
        }
    }

    // Every documented route is served by its own handler: without credentials each answers its own
    // refusal, never the catch-all 404 of an unknown route.
    for (method, path, _) in CONTRACT_ROUTES {
        let concrete = path
            .replace("{org}", "default")
            .replace("{endpoint}", "invoice-sync")
            .replace("{run_id}", "run_missing");
        let reply = match method {
            "get" => app.api(None).get(&concrete),
            _ => app.post_json(&concrete, &json!({}), None),
        };
        let expected = match path {
            "/api/openapi.json" => (200, String::new()),
            "/api/v1/driver/enroll" => (400, "invalid_request".to_owned()),
            driver if driver.starts_with("/api/v1/driver/") => {
                (401, "missing_credential".to_owned())
            }
            _ => (401, "missing_api_key".to_owned()),
        };
        let answered = if reply.status == 200 {
            (200, String::new())
        } else {
            reply.api_error()
        };
        assert_eq!(answered, expected, "{method} {concrete}: {}", reply.body);
    }
    assert_eq!(
        app.api(None)
            .get("/api/no-such-route/at-all/here")
            .api_error(),
        (404, "not_found".to_owned())
    );
}

/// The operations of the document: (method, path, operation).
fn operations(doc: &Value) -> impl Iterator<Item = (&str, &str, &Value)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter(|(method, _)| METHODS.contains(&method.as_str()))
                .map(move |(method, operation)| (method.as_str(), path.as_str(), operation))
        })
}

/// What keeps `doc` from being a valid OpenAPI 3.1 document, beyond what its JSON Schema checks: every
/// reference resolves, every operation answers, path templates and parameters agree, security names
/// defined schemes, operation ids are unique.
fn openapi_problems(doc: &Value) -> Vec<String> {
    let mut problems = schema_violations(doc);
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1."))
    {
        problems.push(format!("openapi is {}, not 3.1.x", doc["openapi"]));
    }
    let mut references = Vec::new();
    collect_refs(doc, &mut references);
    for reference in references {
        if !reference.starts_with("#/") || doc.pointer(&reference[1..]).is_none() {
            problems.push(format!("{reference} does not resolve"));
        }
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(doc) {
        let here = format!("{method} {path}");
        match operation["responses"].as_object() {
            Some(responses) if !responses.is_empty() => {
                for code in responses.keys() {
                    let valid = code == "default"
                        || (code.len() == 3 && code.chars().all(|c| c.is_ascii_digit()));
                    if !valid {
                        problems.push(format!("{here}: response key {code}"));
                    }
                }
            }
            _ => problems.push(format!("{here} has no responses")),
        }
        if let Some(id) = operation["operationId"].as_str()
            && !operation_ids.insert(id.to_owned())
        {
            problems.push(format!("{here}: operationId {id} is not unique"));
        }
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                if p["required"] != true {
                    problems.push(format!("{here}: path parameter {} not required", p["name"]));
                }
                p["name"].as_str().unwrap_or_default()
            })
            .collect();
        let templated: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .collect();
        if declared != templated {
            problems.push(format!(
                "{here}: declares {declared:?}, path has {templated:?}"
            ));
        }
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for name in requirement
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, _)| n)
            {
                if !schemes.contains_key(name) {
                    problems.push(format!("{here}: unknown security scheme {name}"));
                }
            }
        }
    }
    problems
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => into.push(target.clone()),
                    _ => collect_refs(inner, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, into)),
        _ => {}
    }
}

/// Violations of the OpenAPI 3.1 JSON Schema (the OpenAPI Initiative's, vendored in
/// `tests/fixtures/`).
fn schema_violations(doc: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/openapi-3.1-schema.json")
            .expect("the vendored OpenAPI 3.1 schema"),
    )
    .expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the OpenAPI schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_schema_check_catches_a_broken_document() {
    let broken = json!({
        "openapi": "3.1.0",
        "paths": { "/x": { "get": { "responses": "none" } } },
    });
    let violations = schema_violations(&broken);
    assert!(
        !violations.is_empty(),
        "a document without info and with bad responses is refused"
    );
}

/// The wire types of `docs/api.md`'s examples, by the name its `<!-- wire: Name -->` marks use.
/// Returns (the example read back as the type and written again, whether it is a response).
fn through_wire_type(name: &str, example: &Value) -> Result<(Value, bool), String> {
    fn read<T: DeserializeOwned + Serialize>(example: &Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(example.clone()).map_err(|e| e.to_string())?;
        Ok(serde_json::to_value(typed).expect("wire types serialize"))
    }
    Ok(match name {
        "ErrorBody" => (read::<ErrorBody>(example)?, true),
        "MeResponse" => (read::<MeResponse>(example)?, true),
        "QueuedResponse" => (read::<QueuedResponse>(example)?, true),
        "RunObject" => (read::<RunObject>(example)?, true),
        "QueueStatusResponse" => (read::<QueueStatusResponse>(example)?, true),
        "EnrollResponse" => (read::<EnrollResponse>(example)?, true),
        "HeartbeatResponse" => (read::<HeartbeatResponse>(example)?, true),
        "EnrollRequest" => (read::<EnrollRequest>(example)?, false),
        "HeartbeatRequest" => (read::<HeartbeatRequest>(example)?, false),
        "ClaimRequest" => (read::<ClaimRequest>(example)?, false),
        "CompleteRequest" => (read::<CompleteRequest>(example)?, false),
        other => return Err(format!("no wire type named {other}")),
    })
}

#[test]
fn every_example_in_the_api_reference_is_its_wire_type() {
    let text = std::fs::read_to_string("docs/api.md").expect("docs/api.md");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- wire:")
            .and_then(|rest| rest.strip_suffix("-->"))
            .map(str::trim)
        else {
            continue;
        };
        let at = format!("docs/api.md:{} ({name})", number + 1);
        let (_, fence) = lines.next().unwrap_or_else(|| panic!("{at}: no block"));
        assert_eq!(fence.trim(), "```json", "{at}: a ```json block follows");
        let block: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| l.trim() != "```")
            .collect();
        let example: Value = serde_json::from_str(&block.join("\n"))
            .unwrap_or_else(|e| panic!("{at}: not JSON: {e}"));
        let (written, is_response) =
            through_wire_type(name, &example).unwrap_or_else(|e| panic!("{at}: {e}"));
        // No field of the example is unknown to the type (a misspelt field would be ignored).
        let unknown: Vec<&String> = example
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| written.get(k.as_str()).is_none())
            .collect();
        assert!(
            unknown.is_empty(),
            "{at}: fields the type does not know: {unknown:?}"
        );
        if is_response {
            assert_eq!(
                written, example,
                "{at}: the server would write exactly this"
            );
        }
        *seen.entry(name.to_owned()).or_default() += 1;
    }
    let every_type = [
        "ErrorBody",
        "MeResponse",
        "QueuedResponse",
        "RunObject",
        "QueueStatusResponse",
        "EnrollRequest",
        "EnrollResponse",
        "HeartbeatRequest",
        "HeartbeatResponse",
        "ClaimRequest",
        "CompleteRequest",
    ];
    for name in every_type {
        assert!(
            seen.contains_key(name),
            "docs/api.md has an example of {name}"
        );
    }
}

/// What a bad request must not change: runs, machines, tokens and the audit log.
fn snapshot(app: &TestApp) -> String {
    let mut conn = app.pool.get().unwrap();
    type RunRow = (i64, String, i32, Option<i64>, Option<String>);
    let runs: Vec<RunRow> = runs::table
        .select((
            runs::id,
            runs::public_id,
            runs::attempts,
            runs::machine_id,
            runs::result,
        ))
        .order(runs::id)
        .load(&mut *conn)
        .unwrap();
    let statuses: Vec<granite::status::RunStatus> = runs::table
        .select(runs::status)
        .order(runs::id)
        .load(&mut *conn)
        .unwrap();
    let machines: Vec<(i64, Option<chrono::NaiveDateTime>, Option<i64>)> = machines::table
        .select((
            machines::id,
            machines::last_seen_at,
            machines::current_run_id,
        ))
        .order(machines::id)
        .load(&mut *conn)
        .unwrap();
    let tokens: Vec<(i64, Option<chrono::NaiveDateTime>)> = enrollment_tokens::table
        .select((enrollment_tokens::id, enrollment_tokens::used_at))
        .order(enrollment_tokens::id)
        .load(&mut *conn)
        .unwrap();
    let audit: i64 = audit_events::table.count().get_result(&mut *conn).unwrap();
    format!("{runs:?}\n{statuses:?}\n{machines:?}\n{tokens:?}\naudit {audit}")
}

/// POSTs raw bytes with a content type, and a header when given.
fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: &[u8],
    header: (&str, &str),
) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(app.url(path))
        .header("Content-Type", content_type)
        .header(header.0, header.1)
        .send(body)
        .expect("POST failed");
    Reply {
        status: response.status().as_u16(),
        headers: Vec::new(),
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn bad_shapes_are_refused_and_change_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("shapes");
    let (_, enrolled_with) = admin.create_enrollment_token("first");
    let (_, credential) = app.enroll(&enrolled_with, "vm-1");
    let (_, spare_token) = admin.create_enrollment_token("unused");
    // One run held by the machine, one still queued.
    let queued = |n: i64| app.start_run(&key, "default/shapes", &json!({ "n": n }));
    assert_eq!(queued(1).status, 202);
    let held = app.claim(&credential, 0).json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(queued(2).status, 202);
    let complete_path = format!("/api/v1/driver/jobs/{held}/complete");
    let bearer = format!("Bearer {credential}");
    let auth = ("Authorization", bearer.as_str());
    let api_key = ("X-Granite-API-Key", key.as_str());
    let megabyte = format!(r#"{{"token": "{}"}}"#, "a".repeat(1024 * 1024 + 1));

    let before = snapshot(&app);
    // (route, header, body, status, error code, the field named)
    type Case<'a> = (
        &'a str,
        (&'a str, &'a str),
        String,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        // The public API: a run's parameters are a JSON object.
        (
            "/api/default/shapes",
            api_key,
            "[1, 2]".into(),
            400,
            "invalid_request",
            None,
        ),
        (
            "/api/default/shapes",
            api_key,
            "\"text\"".into(),
            400,
            "invalid_request",
            None,
        ),
        (
            "/api/default/shapes",
            api_key,
            "{\"a\": ".into(),
            400,
            "invalid_request",
            None,
        ),
        (
            "/api/default/shapes?priority=high",
            api_key,
            "{}".into(),
            400,
            "invalid_request",
            Some("priority"),
        ),
        (
            "/api/default/shapes?priority=99999999999999999999",
            api_key,
            "{}".into(),
            400,
            "invalid_request",
            Some("priority"),
        ),
        (
            "/api/default/shapes?wait=soon",
            api_key,
            "{}".into(),
            400,
            "invalid_request",
            Some("wait"),
        ),
        (
            "/api/default/shapes",
            api_key,
            megabyte.clone(),
            413,
            "payload_too_large",
            None,
        ),
        // Enrollment: the spare token stays unused.
        (
            "/api/v1/driver/enroll",
            ("X-Unused", "1"),
            r#"{"token": 5, "name": "vm-2"}"#.to_string(),
            400,
            "invalid_request",
            Some("token"),
        ),
        (
            "/api/v1/driver/enroll",
            ("X-Unused", "1"),
            format!(r#"{{"token": "{spare_token}"}}"#),
            400,
            "invalid_request",
            Some("name"),
        ),
        (
            "/api/v1/driver/enroll",
            ("X-Unused", "1"),
            format!(r#"{{"token": "{spare_token}", "name": "vm-2", "capabilities": "chrome"}}"#),
            400,
            "invalid_request",
            Some("capabilities"),
        ),
        (
            "/api/v1/driver/enroll",
            ("X-Unused", "1"),
            megabyte.clone(),
            413,
            "payload_too_large",
            None,
        ),
        // Heartbeat: no contact is recorded.
        (
            "/api/v1/driver/heartbeat",
            auth,
            "{}".into(),
            400,
            "invalid_request",
            Some("status"),
        ),
        (
            "/api/v1/driver/heartbeat",
            auth,
            r#"{"status": 1}"#.into(),
            400,
            "invalid_request",
            Some("status"),
        ),
        (
            "/api/v1/driver/heartbeat",
            auth,
            r#"{"status": "asleep"}"#.into(),
            400,
            "invalid_request",
            Some("status"),
        ),
        (
            "/api/v1/driver/heartbeat",
            auth,
            r#"{"status": "idle", "current_run_id": 7}"#.into(),
            400,
            "invalid_request",
            Some("current_run_id"),
        ),
        (
            "/api/v1/driver/heartbeat",
            auth,
            megabyte.clone(),
            413,
            "payload_too_large",
            None,
        ),
        // Claim: the queued run stays queued.
        (
            "/api/v1/driver/jobs/claim",
            auth,
            r#"{"wait_seconds": "soon"}"#.into(),
            400,
            "invalid_request",
            Some("wait_seconds"),
        ),
        (
            "/api/v1/driver/jobs/claim",
            auth,
            r#"{"wait_seconds": 1e30}"#.into(),
            400,
            "invalid_request",
            Some("wait_seconds"),
        ),
        (
            "/api/v1/driver/jobs/claim",
            auth,
            r#"{"wait_seconds": -1}"#.into(),
            400,
            "invalid_request",
            Some("wait_seconds"),
        ),
        (
            "/api/v1/driver/jobs/claim",
            auth,
            r#"{"wait_seconds": 31}"#.into(),
            400,
            "invalid_request",
            Some("wait_seconds"),
        ),
        (
            "/api/v1/driver/jobs/claim",
            auth,
            "[]".into(),
            400,
            "invalid_request",
            None,
        ),
        (
            "/api/v1/driver/jobs/claim",
            auth,
            megabyte.clone(),
            413,
            "payload_too_large",
            None,
        ),
        // Complete: the held run stays running.
        (
            complete_path.as_str(),
            auth,
            "{}".into(),
            400,
            "invalid_request",
            Some("status"),
        ),
        (
            complete_path.as_str(),
            auth,
            r#"{"status": "done"}"#.into(),
            400,
            "invalid_request",
            Some("status"),
        ),
        (
            complete_path.as_str(),
            auth,
            r#"{"status": "failed", "error": {"type": 5}}"#.into(),
            400,
            "invalid_request",
            Some("error.type"),
        ),
        (
            complete_path.as_str(),
            auth,
            r#"{"status": "failed", "error": "broke"}"#.into(),
            400,
            "invalid_request",
            Some("error"),
        ),
        (
            complete_path.as_str(),
            auth,
            megabyte.clone(),
            413,
            "payload_too_large",
            None,
        ),
    ];
    for (path, header, body, status, code, field) in &cases {
        let reply = post_raw(&app, path, "application/json", body.as_bytes(), *header);
        let shown = &reply.body[..reply.body.len().min(300)];
        assert_eq!(
            reply.status,
            *status,
            "{path} {}: {shown}",
            &body[..body.len().min(80)]
        );
        let error: ErrorBody = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{path}: not the error JSON ({e}): {shown}"));
        assert_eq!(error.error, *code, "{path}: {shown}");
        assert_eq!(error.code, *status);
        assert_eq!(error.field.as_deref(), *field, "{path} {body:.80}: {shown}");
        assert!(!error.message.is_empty());
    }
    // Bodies that are not JSON at all.
    for (path, header) in [
        ("/api/default/shapes", api_key),
        ("/api/v1/driver/enroll", ("X-Unused", "1")),
        ("/api/v1/driver/heartbeat", auth),
        ("/api/v1/driver/jobs/claim", auth),
        (complete_path.as_str(), auth),
    ] {
        let reply = post_raw(&app, path, "text/plain", b"status=idle", header);
        assert_eq!(reply.status, 415, "{path}: {}", reply.body);
        let error: ErrorBody = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(error.error, "unsupported_media_type");
    }
    // A key the database refuses is refused before its body is read, however bad the body.
    let unknown_key = granite::secret::Secret::generate(granite::secret::SecretKind::ApiKey);
    let unknown = ("X-Granite-API-Key", unknown_key.expose());
    for body in ["[1, 2]", "{\"a\": ", megabyte.as_str()] {
        let reply = post_raw(
            &app,
            "/api/default/shapes",
            "application/json",
            body.as_bytes(),
            unknown,
        );
        assert_eq!(
            reply.status,
            401,
            "{}",
            &reply.body[..reply.body.len().min(200)]
        );
        let error: ErrorBody = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(error.error, "invalid_api_key");
    }
    // Another organization's URL is not found, whatever the body.
    let reply = post_raw(
        &app,
        "/api/rival-corp/shapes",
        "application/json",
        b"[1]",
        api_key,
    );
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(snapshot(&app), before, "no bad request changed anything");

    // The same routes with good bodies do change things (so the snapshot can see a change).
    let beat = app.post_json(
        "/api/v1/driver/heartbeat",
        &json!({"status": "busy", "current_run_id": held}),
        Some(&credential),
    );
    assert_eq!(beat.status, 200, "{}", beat.body);
    let done = app.complete(
        &credential,
        &held,
        &json!({"status": "completed", "result": {"ok": true}}),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_ne!(snapshot(&app), before);
}
