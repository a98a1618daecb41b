//! Spawns the real server (the same `Application::build` that `granite serve` runs) on port 0 with its
//! own database, and talks to it over HTTP like a browser or an API client would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use granite::app::Application;
use granite::config::Settings;
use granite::db::{DatabaseUrl, Pool};
use granite::organizations::{self, OrganizationSlug};
use granite::users::password::Password;
use granite::users::{self, Email, Role};
use granite::web::middleware::session::SESSION_COOKIE;
use serde_json::Value;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// The admin of a second organization, for isolation tests.
pub const RIVAL_EMAIL: &str = "boss@rival.test";
pub const RIVAL_PASSWORD: &str = "rival password 1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once per backend: `both_backends!(name1, name2)` makes `name1::sqlite`,
/// `name1::postgres`, and so on, each calling `fn name1(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite)
                }
                #[test]
                fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres)
                }
            }
        )*
    };
}

fn postgres_base_url() -> String {
    std::env::var("GRANITE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn unique_name() -> String {
    format!("t_{}", granite::secret::random_base62(16).to_lowercase())
}

/// A database of the test's own: a fresh SQLite file, or a fresh PostgreSQL schema. Dropped at the end.
pub struct TestDb {
    pub url: DatabaseUrl,
    pub url_text: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Schema(String),
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("granite-{}", unique_name()));
                // A folder that does not exist yet: the server must create it.
                let url_text = format!("sqlite://{}/data/granite.db", dir.display());
                Self {
                    url: DatabaseUrl::parse(&url_text).unwrap(),
                    url_text,
                    cleanup: Cleanup::Dir(dir),
                }
            }
            Backend::Postgres => {
                let base = postgres_base_url();
                let schema = unique_name();
                let mut conn = PgConnection::establish(&base).unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for these tests and is not reachable at {base}: {e}. \
                         Start it (`.ci/run` does) or point GRANITE_TEST_POSTGRES_URL at one."
                    )
                });
                conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .unwrap();
                let separator = if base.contains('?') { '&' } else { '?' };
                let url_text = format!("{base}{separator}options=-csearch_path%3D{schema}");
                Self {
                    url: DatabaseUrl::parse(&url_text).unwrap(),
                    url_text,
                    cleanup: Cleanup::Schema(schema),
                }
            }
        }
    }

    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => Some(path.clone()),
            DatabaseUrl::Postgres(_) => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema(schema) => {
                if let Ok(mut conn) = PgConnection::establish(&postgres_base_url()) {
                    let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
            }
        }
    }
}

/// A running server on its own port.
pub struct TestApp {
    pub address: SocketAddr,
    pub pool: Pool,
    pub setup_url: Option<String>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestApp {
    /// A server with the first admin configured, as most tests want.
    pub fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(db, |settings| {
            settings.admin_email = Some(ADMIN_EMAIL.into());
            settings.admin_password = Some(ADMIN_PASSWORD.into());
        })
    }

    pub fn spawn_with(db: &TestDb, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::new(db.url.clone(), "127.0.0.1:0".parse().unwrap());
        settings.db_pool_size = 4;
        configure(&mut settings);
        Self::try_spawn(settings).unwrap_or_else(|e| panic!("the server did not start: {e}"))
    }

    pub fn try_spawn(settings: Settings) -> Result<Self, String> {
        capture_logs();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build(settings).await {
                    Ok(app) => {
                        let started = (
                            app.address(),
                            app.pool().clone(),
                            app.setup_url().map(str::to_owned),
                            app.handle(),
                        );
                        tx.send(Ok(started)).unwrap();
                        app.run_until_stopped().await.unwrap();
                    }
                    Err(e) => tx.send(Err(format!("{e:#}"))).unwrap(),
                }
            })
        });
        let (address, pool, setup_url, handle) = rx.recv().expect("server thread ended early")?;
        Ok(Self {
            address,
            pool,
            setup_url,
            handle,
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A client of the public API sending `key` (or no key) in `X-Granite-API-Key`.
    pub fn api(&self, key: Option<&str>) -> ApiClient {
        ApiClient {
            address: self.address,
            key: key.map(str::to_owned),
            agent: Client::new(self.address).agent,
        }
    }

    /// POSTs JSON to the public or driver API, with `Authorization: Bearer …` when given.
    pub fn post_json(&self, path: &str, body: &Value, bearer: Option<&str>) -> Reply {
        let authorization = bearer.map(|b| format!("Bearer {b}"));
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|a| ("Authorization", a.as_str()))
            .collect();
        self.post_json_with(path, body, &headers)
    }

    pub fn post_json_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut request = agent.post(format!("http://{}{path}", self.address));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        reply_of(request.send_json(body).expect("POST failed"))
    }

    /// `POST /api/{org}/{endpoint}?{query}` with an API key.
    pub fn start_run(&self, key: &str, path_and_query: &str, parameters: &Value) -> Reply {
        self.post_json_with(
            &format!("/api/{path_and_query}"),
            parameters,
            &[("X-Granite-API-Key", key)],
        )
    }

    /// `POST /api/v1/driver/jobs/claim`, waiting up to `wait_seconds`.
    pub fn claim(&self, credential: &str, wait_seconds: u64) -> Reply {
        self.post_json(
            "/api/v1/driver/jobs/claim",
            &serde_json::json!({ "wait_seconds": wait_seconds }),
            Some(credential),
        )
    }

    pub fn complete(&self, credential: &str, run_id: &str, outcome: &Value) -> Reply {
        self.post_json(
            &format!("/api/v1/driver/jobs/{run_id}/complete"),
            outcome,
            Some(credential),
        )
    }

    /// Enrolls a machine with `token` through the driver API; returns (machine id, credential).
    pub fn enroll(&self, token: &str, name: &str) -> (i64, String) {
        let body = serde_json::json!({
            "token": token, "name": name, "os_version": "Ubuntu 24.04", "capabilities": ["linux", "chrome"],
            "driver_version": "1.0.0",
        });
        let reply = self.post_json("/api/v1/driver/enroll", &body, None);
        assert_eq!(reply.status, 201, "{}", reply.body);
        let json = reply.json();
        (
            json["machine_id"].as_i64().unwrap(),
            json["credential"].as_str().unwrap().to_owned(),
        )
    }

    /// `GET /api/agent-runs/{id}` with an API key: the run object.
    pub fn run_of(&self, key: &str, id: &str) -> Value {
        self.api(Some(key))
            .get(&format!("/api/agent-runs/{id}"))
            .json()
    }

    pub fn heartbeat(&self, credential: &str) -> Reply {
        self.post_json(
            "/api/v1/driver/heartbeat",
            &serde_json::json!({ "status": "idle" }),
            Some(credential),
        )
    }

    /// A second organization, "Rival Corp" (slug `rival-corp`), and a client signed in as its admin.
    pub fn rival(&self) -> Client {
        self.add_user(RIVAL_EMAIL, RIVAL_PASSWORD, Role::Admin, Some("Rival Corp"));
        self.signed_in(RIVAL_EMAIL, RIVAL_PASSWORD)
    }

    /// How many audit events of this action were recorded.
    pub fn audit_count(&self, action: &str) -> i64 {
        use diesel::prelude::*;
        use granite::db::schema::audit_events;
        audit_events::table
            .filter(audit_events::action.eq(action))
            .count()
            .get_result(&mut *self.pool.get().unwrap())
            .unwrap()
    }

    /// Adds a user straight through the domain (faster than the CLI, which has its own test).
    pub fn add_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        new_organization: Option<&str>,
    ) {
        let mut conn = self.pool.get().unwrap();
        let organization = match new_organization {
            Some(name) => {
                organizations::create(&mut conn, &OrganizationSlug::from_name(name), name).unwrap()
            }
            None => organizations::find_by_slug(&mut conn, organizations::DEFAULT_SLUG)
                .unwrap()
                .unwrap(),
        };
        let hash = Password::parse(password).unwrap().hash();
        users::create(
            &mut conn,
            organization.id,
            &Email::parse(email).unwrap(),
            &hash,
            role,
        )
        .unwrap();
    }

    /// A browser-like client: keeps the session cookie, sends our own Origin, follows no redirects.
    pub fn client(&self) -> Client {
        Client::new(self.address)
    }

    /// A client already signed in as `email`.
    pub fn signed_in(&self, email: &str, password: &str) -> Client {
        let mut client = self.client();
        let response = client.sign_in(email, password);
        assert_eq!(response.status, 303, "sign-in failed: {}", response.body);
        client
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        actix_web::rt::System::new().block_on(self.handle.stop(true));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The text of `data-testid="new-secret"`, if the reply shows a new secret.
    pub fn new_secret(&self) -> Option<String> {
        let marker = "data-testid=\"new-secret\"";
        let start = self.body.find(marker)?;
        let text_start = self.body[start..].find('>')? + start + 1;
        Some(self.body[text_start..].split('<').next()?.to_owned())
    }

    /// The `data-status` of the machine row with this id, if the reply lists it.
    pub fn machine_status(&self, id: i64) -> Option<String> {
        let marker = format!("<tr id=\"machine-{id}\" data-id=\"{id}\" data-status=\"");
        let start = self.body.find(&marker)? + marker.len();
        Some(self.body[start..].split('"').next()?.to_owned())
    }

    /// The `data-id` of every row in the reply, in order.
    pub fn row_ids(&self) -> Vec<i64> {
        self.body
            .split("<tr ")
            .skip(1)
            .filter_map(|rest| {
                let tag = rest.split('>').next()?;
                tag.split("data-id=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// (status, `error` code) of a JSON error reply, checking the contract's shape on the way.
    pub fn api_error(&self) -> (u16, String) {
        let json = self.json();
        assert_eq!(json["code"], self.status, "{json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        (
            self.status,
            json["error"].as_str().unwrap_or_default().to_owned(),
        )
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `runId` of a reply that started a run.
    pub fn run_id(&self) -> String {
        self.json()["runId"]
            .as_str()
            .unwrap_or_else(|| panic!("no runId: {}", self.body))
            .to_owned()
    }

    /// The value of the hidden `csrf_token` field of the page.
    pub fn csrf_token(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self
            .body
            .find(marker)
            .expect("the page has a csrf_token field")
            + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

pub struct Client {
    address: SocketAddr,
    agent: ureq::Agent,
    cookie: Option<String>,
    /// `Origin` sent with unsafe requests; `None` sends none.
    pub origin: Option<String>,
}

impl Client {
    /// A client of the server at `address`; [`TestApp::client`] for an in-process one, this for a
    /// `granite serve` started as its own process.
    pub fn new(address: SocketAddr) -> Self {
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            address,
            agent,
            cookie: None,
            origin: Some(format!("http://{address}")),
        }
    }

    /// Sends the session cookie of `other` from now on (another replica, or the same server restarted).
    pub fn adopt_session_of(&mut self, other: &Client) {
        self.cookie = other.cookie.clone();
    }

    /// The session cookie's value as the browser holds it (encrypted).
    pub fn session_cookie(&self) -> Option<String> {
        let pair = self.cookie.as_deref()?;
        pair.strip_prefix(&format!("{SESSION_COOKIE}="))
            .map(str::to_owned)
    }

    /// Sends this value as the session cookie from now on (a forged or copied cookie).
    pub fn set_session_cookie(&mut self, value: &str) {
        self.cookie = Some(format!("{SESSION_COOKIE}={value}"));
    }

    pub fn has_session_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.get_with(path, &[])
    }

    pub fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.agent.get(format!("http://{}{path}", self.address));
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.absorb(request.call().expect("GET failed"))
    }

    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        self.post_form_with(path, fields, &[])
    }

    pub fn post_form_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.agent.post(format!("http://{}{path}", self.address));
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", cookie);
        }
        if let Some(origin) = &self.origin {
            request = request.header("Origin", origin);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send_form(fields.iter().copied())
            .expect("POST failed");
        self.absorb(response)
    }

    /// Signs in through the form, as a browser does: load the page (session + token), then post it.
    pub fn sign_in(&mut self, email: &str, password: &str) -> Reply {
        let page = self.get("/login");
        assert_eq!(page.status, 200);
        let token = page.csrf_token();
        self.post_form(
            "/login",
            &[
                ("email", email),
                ("password", password),
                ("csrf_token", &token),
            ],
        )
    }

    /// A POST as htmx sends it from the signed-in page: form fields, the CSRF header, `HX-Request`.
    pub fn htmx_post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let token = self.page_csrf_token();
        self.post_form_with(
            path,
            fields,
            &[("X-CSRF-Token", &token), ("HX-Request", "true")],
        )
    }

    /// Creates an API key through the dashboard and returns (its id, the secret shown once).
    pub fn create_api_key(&mut self, name: &str) -> (i64, String) {
        let reply = self.htmx_post("/api-management/api-keys", &[("name", name)]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let secret = reply.new_secret().expect("the new key is shown");
        let id = reply
            .row_ids()
            .into_iter()
            .next()
            .expect("a row for the key");
        (id, secret)
    }

    /// Sets a key's own rate limit through its analytics page's form, as an admin does ("" for the
    /// default, "0" for unlimited).
    pub fn set_rate_limit(&mut self, key_id: i64, per_minute: &str) -> Reply {
        let token = self.page_csrf_token();
        self.post_form(
            &format!("/api-management/api-keys/{key_id}/rate-limit"),
            &[("rate_limit", per_minute), ("csrf_token", &token)],
        )
    }

    /// Creates an enrollment token through the dashboard and returns (its id, the secret shown once).
    pub fn create_enrollment_token(&mut self, description: &str) -> (i64, String) {
        let reply = self.htmx_post(
            "/api-management/enrollment-tokens",
            &[("description", description), ("lifetime_hours", "24")],
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let secret = reply.new_secret().expect("the new token is shown");
        let id = reply
            .row_ids()
            .into_iter()
            .next()
            .expect("a row for the token");
        (id, secret)
    }

    /// The self-refreshing machine list, as htmx fetches it.
    pub fn machine_list(&mut self, query: &str) -> Reply {
        let reply = self.get_with(
            &format!("/api-management/machines/list?{query}"),
            &[("HX-Request", "true")],
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply
    }

    /// The CSRF token of the signed-in page, as htmx would send it.
    pub fn page_csrf_token(&mut self) -> String {
        let page = self.get("/api-management");
        assert_eq!(page.status, 200, "not signed in");
        page.csrf_token()
    }

    fn absorb(&mut self, mut response: ureq::http::Response<ureq::Body>) -> Reply {
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        for (name, value) in &headers {
            if name == "set-cookie" {
                let pair = value.split(';').next().unwrap_or_default();
                if let Some(content) = pair.strip_prefix(&format!("{SESSION_COOKIE}=")) {
                    self.cookie = (!content.is_empty() && !value.contains("Max-Age=0"))
                        .then(|| pair.to_owned());
                }
            }
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }
}

fn reply_of(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub struct ApiClient {
    address: SocketAddr,
    key: Option<String>,
    agent: ureq::Agent,
}

impl ApiClient {
    pub fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[])
    }

    /// A GET with more headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .agent
            .get(format!("http://{}{path}", self.address))
            .header("User-Agent", "granite-tests/1.0");
        if let Some(key) = &self.key {
            request = request.header("X-Granite-API-Key", key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        reply_of(request.call().expect("GET failed"))
    }

    /// The `error` code of a JSON error reply, checking the contract's shape on the way.
    pub fn error_of(&self, path: &str) -> (u16, String) {
        self.get(path).api_error()
    }
}

static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
    std::sync::OnceLock::new();

/// Everything the servers of this test run logged, at debug level and up.
pub fn logs() -> String {
    LOGS.get()
        .map(|buffer| String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = LogWriter(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

#[derive(Clone)]
struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
