//! The reference driver as a real process: `granite driver enroll` and `granite driver run` against a
//! real server, running real automation scripts.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};

both_backends!(
    a_driver_enrolls_and_runs_real_automations,
    a_job_survives_a_server_killed_mid_run,
    removing_the_machine_stops_the_driver,
    ctrl_c_finishes_the_job_then_stops,
    a_run_answered_to_a_killed_long_poll_comes_back_within_a_heartbeat,
);

pub(crate) struct Workspace {
    pub(crate) dir: PathBuf,
}

impl Workspace {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "granite-driver-{}",
            granite::secret::random_base62(10)
        ));
        std::fs::create_dir_all(dir.join("automations")).unwrap();
        let workspace = Self { dir };
        workspace.script(
            "square",
            "#!/bin/sh\ninput=$(cat)\nprintf '{\"received\": %s, \"square\": 49}' \"$input\"\n",
        );
        workspace.script(
            "broken",
            "#!/bin/sh\necho 'boom: the form never loaded' >&2\nexit 2\n",
        );
        workspace.script("slow", "#!/bin/sh\nsleep 3\necho '{\"done\": true}'\n");
        workspace
    }

    pub(crate) fn script(&self, name: &str, body: &str) {
        let path = self.dir.join("automations").join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub(crate) fn credentials(&self) -> PathBuf {
        self.dir.join("config").join("driver.json")
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn granite() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_granite"));
    command
        .env_remove("GRANITE_ENROLLMENT_TOKEN")
        .env("RUST_LOG", "info");
    command
}

/// `granite driver enroll` with the token on standard input; returns (success, output).
pub(crate) fn enroll(
    server: &str,
    token: &str,
    credentials: &Path,
    extra: &[&str],
) -> (bool, String) {
    let mut child = granite()
        .args([
            "driver",
            "enroll",
            "--server",
            server,
            "--name",
            "test-driver",
            "--capability",
            "shell",
            "--credentials",
        ])
        .arg(credentials)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

pub(crate) struct DriverProcess(Child);

impl DriverProcess {
    /// Starts `granite driver run --automations ./automations` from the workspace, as the README shows.
    pub(crate) fn start(workspace: &Workspace) -> Self {
        let child = granite()
            .current_dir(&workspace.dir)
            .args(["driver", "run", "--time-limit", "20", "--credentials"])
            .arg(workspace.credentials())
            .args(["--automations", "./automations"])
            .args(["--capability", "shell", "--capability", "sap"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self(child)
    }

    pub(crate) fn signal(&self, name: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &self.0.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the process to end; returns its exit code and what it wrote to stderr.
    pub(crate) fn wait_for_exit(&mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                self.0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return (status.code(), stderr);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the driver did not stop within {within:?}");
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn quick_heartbeats(db: &TestDb) -> TestApp {
    TestApp::spawn_with(db, |s| {
        s.admin_email = Some(ADMIN_EMAIL.into());
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.heartbeat_secs = 1;
    })
}

fn a_driver_enrolls_and_runs_real_automations(backend: Backend) {
    let db = TestDb::new(backend);
    let app = quick_heartbeats(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("driver test");
    let workspace = Workspace::new();

    let (ok, output) = enroll(&app.url(""), &token, &workspace.credentials(), &[]);
    assert!(ok, "{output}");
    assert!(
        output.contains("Enrolled test-driver as machine"),
        "{output}"
    );
    assert!(!output.contains(&token), "the token is never echoed");
    let mode = std::fs::metadata(workspace.credentials())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "only its owner can read the credential");
    let saved = std::fs::read_to_string(workspace.credentials()).unwrap();
    assert!(saved.contains("\"credential\": \"gd_"));
    let (_, again) = admin.create_enrollment_token("second");
    let (ok, output) = enroll(&app.url(""), &again, &workspace.credentials(), &[]);
    assert!(
        !ok && output.contains("already holds an enrollment"),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.credentials()).unwrap(),
        saved,
        "not overwritten"
    );
    let page = admin.get("/api-management");
    assert!(page.body.contains("test-driver"));
    assert!(
        page.body.contains("data-state=\"active\""),
        "the refused enrollment did not spend the second token"
    );

    let _driver = DriverProcess::start(&workspace);
    let reply = app.start_run(
        &key,
        "default/square?wait=true&timeout=30&requires=shell",
        &json!({ "n": 7 }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let run = reply.json();
    assert_eq!(run["status"], "completed");
    assert_eq!(
        run["result"],
        json!({ "received": { "n": 7 }, "square": 49 })
    );
    let id = run["runId"].as_str().unwrap();
    assert_eq!(
        app.api(Some(&key))
            .get(&format!("/api/agent-runs/{id}"))
            .json()["result"]["square"],
        49
    );

    // It announced the capabilities it was started with: runs requiring sap are its now.
    let sap = app
        .start_run(
            &key,
            "default/square?wait=true&timeout=30&requires=sap",
            &json!({ "n": 7 }),
        )
        .json();
    assert_eq!(sap["status"], "completed", "{sap}");

    let failed = app
        .start_run(&key, "default/broken?wait=true&timeout=30", &json!({}))
        .json();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["type"], "exit_status");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boom: the form never loaded"),
        "{failed}"
    );
    let unknown = app
        .start_run(
            &key,
            "default/no-such-automation?wait=true&timeout=30",
            &json!({}),
        )
        .json();
    assert_eq!(unknown["status"], "failed");
    assert_eq!(unknown["error"]["type"], "unknown_automation");
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `granite serve` as its own process, so it can be killed outright.
fn serve(db: &TestDb, port: u16) -> Child {
    serve_with(db, port, &[])
}

/// The same, with more settings in its environment; returns once `/healthz` answers.
pub(crate) fn serve_with(db: &TestDb, port: u16, settings: &[(&str, &str)]) -> Child {
    let child = granite()
        .arg("serve")
        .env("GRANITE_DATABASE_URL", &db.url_text)
        .env("GRANITE_BIND", format!("127.0.0.1:{port}"))
        .env("GRANITE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("GRANITE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("GRANITE_HEARTBEAT_SECS", "1")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "granite serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn a_job_survives_a_server_killed_mid_run(backend: Backend) {
    let db = TestDb::new(backend);
    let port = free_port();
    let mut server = serve(&db, port);
    let base = format!("http://127.0.0.1:{port}");
    // Keys and tokens straight through the domain, on the server's own database.
    let pool = granite::db::Pool::open(&db.url, 2).unwrap();
    let actor = granite::audit::Actor {
        user_id: 1,
        email: ADMIN_EMAIL.into(),
        role: granite::users::Role::Admin,
        source_ip: None,
    };
    let (key, token) = {
        let mut conn = pool.get().unwrap();
        let (_, key) = granite::api_keys::create(
            &mut conn,
            1,
            &granite::api_keys::KeyName::parse("k").unwrap(),
            &actor,
        )
        .unwrap();
        let (_, token) = granite::enrollment::create(&mut conn, 1, "", 1, &actor).unwrap();
        (key.expose().to_owned(), token.expose().to_owned())
    };
    let workspace = Workspace::new();
    let (ok, output) = enroll(&base, &token, &workspace.credentials(), &[]);
    assert!(ok, "{output}");
    let mut driver = DriverProcess::start(&workspace);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut started = agent
        .post(format!("{base}/api/default/slow"))
        .header("X-Granite-API-Key", &key)
        .send_json(json!({}))
        .unwrap();
    let id =
        serde_json::from_str::<serde_json::Value>(&started.body_mut().read_to_string().unwrap())
            .unwrap()["runId"]
            .as_str()
            .unwrap()
            .to_owned();
    let status = |agent: &ureq::Agent| -> serde_json::Value {
        let mut reply = agent
            .get(format!("{base}/api/agent-runs/{id}"))
            .header("X-Granite-API-Key", &key)
            .call()
            .unwrap();
        serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(&agent)["status"] != "running" {
        assert!(Instant::now() < deadline, "the driver never took the run");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Kill the server outright while the automation runs, and bring it back a moment later.
    server.kill().unwrap();
    server.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut server = serve(&db, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = status(&agent);
        if run["status"] == "completed" {
            break run;
        }
        assert!(Instant::now() < deadline, "the job was lost: {run}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(run["result"], json!({ "done": true }));
    assert!(
        driver.0.try_wait().unwrap().is_none(),
        "the driver outlived the restart"
    );
    let _ = server.kill();
    let _ = server.wait();
}

fn removing_the_machine_stops_the_driver(backend: Backend) {
    let db = TestDb::new(backend);
    let app = quick_heartbeats(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, token) = admin.create_enrollment_token("doomed driver");
    let workspace = Workspace::new();
    assert!(enroll(&app.url(""), &token, &workspace.credentials(), &[]).0);
    let mut driver = DriverProcess::start(&workspace);
    let machine_id = admin.machine_list("").row_ids()[0];
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        admin
            .htmx_post(
                &format!("/api-management/machines/{machine_id}/remove"),
                &[]
            )
            .status,
        200
    );
    let (code, stderr) = driver.wait_for_exit(Duration::from_secs(15));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("This machine was removed from Granite by an admin"),
        "{stderr}"
    );
}

fn wait_until_running(app: &TestApp, key: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while app
        .api(Some(key))
        .get(&format!("/api/agent-runs/{id}"))
        .json()["status"]
        != "running"
    {
        assert!(Instant::now() < deadline, "the driver never took the run");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ctrl_c_finishes_the_job_then_stops(backend: Backend) {
    let db = TestDb::new(backend);
    let app = quick_heartbeats(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("polite driver");
    let workspace = Workspace::new();
    assert!(enroll(&app.url(""), &token, &workspace.credentials(), &[]).0);
    let mut driver = DriverProcess::start(&workspace);
    let id = app.start_run(&key, "default/slow", &json!({})).json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until_running(&app, &key, &id);
    driver.signal("INT");
    let (code, stderr) = driver.wait_for_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("finishing the current job"), "{stderr}");
    let run = app
        .api(Some(&key))
        .get(&format!("/api/agent-runs/{id}"))
        .json();
    assert_eq!(
        run["status"], "completed",
        "the job was finished before stopping: {run}"
    );

    // Twice: the job goes back to the queue at once.
    let mut driver = DriverProcess::start(&workspace);
    let id = app.start_run(&key, "default/slow", &json!({})).json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until_running(&app, &key, &id);
    driver.signal("INT");
    std::thread::sleep(Duration::from_millis(200));
    driver.signal("INT");
    let (code, stderr) = driver.wait_for_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    let run = app
        .api(Some(&key))
        .get(&format!("/api/agent-runs/{id}"))
        .json();
    assert_eq!(run["status"], "queued", "given back: {run}");
}

/// A folder that is missing or holds no executable is refused at start, before any job is taken.
#[test]
fn a_driver_refuses_a_folder_without_automations() {
    let workspace = Workspace::new();
    std::fs::create_dir_all(workspace.dir.join("empty")).unwrap();
    for (folder, says) in [
        ("./missing", "cannot be used"),
        ("./empty", "holds no executable"),
    ] {
        let output = granite()
            .current_dir(&workspace.dir)
            .args(["driver", "run", "--credentials"])
            .arg(workspace.credentials())
            .args(["--automations", folder])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{folder}: {stderr}");
        assert!(stderr.contains(says), "{folder}: {stderr}");
    }
}

/// A driver killed while its long-poll is open may be handed a run it never sees. Restarted, its first
/// claim (or, at the latest, a heartbeat that reports no run) gives the run back, so it completes within
/// seconds instead of after the offline timeout (30 s here), on the same machine, which is not removed.
fn a_run_answered_to_a_killed_long_poll_comes_back_within_a_heartbeat(backend: Backend) {
    let db = TestDb::new(backend);
    let app = quick_heartbeats(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin.create_api_key("caller");
    let (_, token) = admin.create_enrollment_token("restarting");
    let workspace = Workspace::new();
    let (ok, output) = enroll(&app.url(""), &token, &workspace.credentials(), &[]);
    assert!(ok, "{output}");
    let mut driver = DriverProcess::start(&workspace);
    // Let it settle into its long-poll, then freeze it (its connection stays open, as when a machine
    // hangs or loses power), queue a run that the open long-poll takes, and kill the driver outright.
    std::thread::sleep(Duration::from_millis(1500));
    driver.signal("STOP");
    let id = app
        .start_run(&key, "default/square?requires=shell", &json!({ "n": 3 }))
        .json()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until_running(&app, &key, &id);
    let _ = driver.0.kill();
    let _ = driver.0.wait();
    let restarted = Instant::now();
    let _driver = DriverProcess::start(&workspace);
    let run = loop {
        let run = app
            .api(Some(&key))
            .get(&format!("/api/agent-runs/{id}"))
            .json();
        if run["status"] == "completed" {
            break run;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "the run did not come back: {run}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(run["result"]["square"], 49);
    eprintln!(
        "a run answered to a dead long-poll completed {:.1} s after the driver's restart",
        restarted.elapsed().as_secs_f64()
    );
    assert!(
        admin.get("/api-management").body.contains("test-driver"),
        "the machine is still enrolled"
    );
}
