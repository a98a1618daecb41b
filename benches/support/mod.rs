//! Shared by the benchmarks: a server started exactly as `granite serve` starts it, and a closed-loop
//! load generator on loopback that reports requests per second.

// Each benchmark uses part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use granite::app::Application;
use granite::config::Settings;
use granite::db::{DatabaseUrl, Pool};

pub struct Server {
    pub address: SocketAddr,
    pub pool: Pool,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(url: DatabaseUrl) -> Self {
        Self::start_with(url, |_| {})
    }

    /// A server with some settings changed from the defaults.
    pub fn start_with(url: DatabaseUrl, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::new(url, "127.0.0.1:0".parse().unwrap());
        settings.admin_email = Some("bench@example.com".into());
        settings.admin_password = Some("benchmark password".into());
        // Keys are rate-limited, as in production, but by more than any benchmark can send: the
        // limiter's cost is measured, never its refusals.
        settings.rate_limit_per_minute = granite::api_keys::rate_limit::MAX_LIMIT;
        configure(&mut settings);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings).await.expect("server starts");
                tx.send((app.address(), app.pool().clone(), app.handle()))
                    .unwrap();
                app.run_until_stopped().await.unwrap();
            })
        });
        let (address, pool, handle) = rx.recv().unwrap();
        Self {
            address,
            pool,
            handle,
            thread: Some(thread),
        }
    }
}

impl Server {
    /// A new API key of the first organization, named `name`; its secret.
    pub fn api_key(&self, name: &str) -> String {
        self.api_key_limited(name, None)
    }

    /// A new API key with its own rate limit (`Some(0)`: unlimited, the limiter skipped).
    pub fn api_key_limited(&self, name: &str, limit: Option<i64>) -> String {
        let actor = admin();
        let name = granite::api_keys::KeyName::parse(name).unwrap();
        let mut conn = self.pool.get().unwrap();
        let (key, secret) = granite::api_keys::create(&mut conn, 1, &name, &actor).unwrap();
        if limit.is_some() {
            granite::api_keys::set_rate_limit(&mut conn, 1, key.id, limit, &actor).unwrap();
        }
        secret.expose().to_owned()
    }
}

impl Server {
    /// `count` machines of the first organization, enrolled as `{prefix}-00000`, … with no
    /// capabilities (written directly, not through the driver API); their credentials.
    pub fn enroll_machines(&self, prefix: &str, count: usize) -> Vec<String> {
        use granite::secret::{Secret, SecretKind};
        let mut conn = self.pool.get().unwrap();
        let (token, _) = granite::enrollment::create(&mut conn, 1, prefix, 1, &admin()).unwrap();
        (0..count)
            .map(|i| {
                let credential = Secret::generate(SecretKind::MachineCredential);
                let profile = granite::machines::MachineProfile::parse(
                    &format!("{prefix}-{i:05}"),
                    "",
                    None,
                    None,
                    &[],
                    "",
                )
                .unwrap();
                granite::machines::insert(
                    &mut conn,
                    1,
                    &profile,
                    &credential.hash(),
                    token.id,
                    chrono::Utc::now().naive_utc(),
                )
                .unwrap();
                credential.expose().to_owned()
            })
            .collect()
    }
}

/// A driver's claim, waiting up to `wait_seconds`: the answer's status, and the run's id when one
/// was handed out.
pub fn claim(
    agent: &ureq::Agent,
    base: &str,
    credential: &str,
    wait_seconds: u64,
) -> (u16, Option<String>) {
    let mut answer = agent
        .post(format!("{base}/api/v1/driver/jobs/claim"))
        .header("Authorization", format!("Bearer {credential}"))
        .header("Content-Type", "application/json")
        .send(format!("{{\"wait_seconds\":{wait_seconds}}}").as_bytes())
        .expect("claim sent");
    let body = answer.body_mut().read_to_string().unwrap_or_default();
    let run = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|run| run["runId"].as_str().map(str::to_owned));
    (answer.status().as_u16(), run)
}

/// A driver reporting run `run_id` completed: the answer's status.
pub fn complete(agent: &ureq::Agent, base: &str, credential: &str, run_id: &str) -> u16 {
    let mut answer = agent
        .post(format!("{base}/api/v1/driver/jobs/{run_id}/complete"))
        .header("Authorization", format!("Bearer {credential}"))
        .header("Content-Type", "application/json")
        .send(&b"{\"status\":\"completed\"}"[..])
        .expect("complete sent");
    let _ = answer.body_mut().read_to_vec();
    answer.status().as_u16()
}

/// The first admin, as the benchmarks' server creates it.
pub fn admin() -> granite::audit::Actor {
    granite::audit::Actor {
        user_id: 1,
        email: "bench@example.com".into(),
        role: granite::users::Role::Admin,
        source_ip: None,
    }
}

/// Runs `sqlite`, then `postgres`, each in a process of its own (this benchmark started again with
/// `variable` naming the backend), so what a run measures of its process is that backend's alone.
pub fn each_backend_in_its_own_process(
    variable: &str,
    sqlite: impl FnOnce(),
    postgres: impl FnOnce(),
) {
    match std::env::var(variable).as_deref() {
        Ok("sqlite") => sqlite(),
        Ok("postgres") => postgres(),
        _ => {
            for backend in ["sqlite", "postgres"] {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(std::env::args().skip(1))
                    .env(variable, backend)
                    .status()
                    .expect("the benchmark runs itself");
                assert!(status.success(), "the {backend} run failed");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        actix_web::rt::System::new().block_on(self.handle.stop(true));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fresh database for one benchmark run: a temporary SQLite file, or a new PostgreSQL schema.
pub fn sqlite_url() -> DatabaseUrl {
    let dir = std::env::temp_dir().join(format!(
        "granite-bench-{}",
        granite::secret::random_base62(8)
    ));
    DatabaseUrl::parse(&format!("sqlite://{}/bench.db", dir.display())).unwrap()
}

pub fn postgres_url() -> Option<DatabaseUrl> {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let base = std::env::var("GRANITE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = diesel::PgConnection::establish(&base).ok()?;
    let schema = format!(
        "bench_{}",
        granite::secret::random_base62(10).to_lowercase()
    );
    conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .ok()?;
    DatabaseUrl::parse(&format!("{base}?options=-csearch_path%3D{schema}")).ok()
}

/// One request a load thread sends over and over (the built-in generator only).
pub type Request = Arc<dyn Fn(&ureq::Agent) -> u16 + Send + Sync>;

/// One HTTP request, described so that either load generator can send it: `wrk` (when installed;
/// 2 threads, 32 connections, as the performance goals are stated) or the built-in closed loop.
#[derive(Clone)]
pub struct Call {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// A header whose value takes each of these in turn (for example one credential per machine).
    pub rotate: Option<(String, Arc<Vec<String>>)>,
}

impl Call {
    pub fn get(url: String) -> Self {
        Self {
            method: "GET",
            url,
            headers: Vec::new(),
            body: None,
            rotate: None,
        }
    }

    pub fn post_json(url: String, body: &str) -> Self {
        Self {
            method: "POST",
            url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Some(body.into()),
            rotate: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn rotating(mut self, name: &str, values: Vec<String>) -> Self {
        self.rotate = Some((name.into(), Arc::new(values)));
        self
    }

    /// The same call as a closure for the built-in generator.
    pub fn request(&self) -> Request {
        let call = self.clone();
        let next = Arc::new(AtomicU64::new(0));
        Arc::new(move |agent: &ureq::Agent| {
            let mut headers = call.headers.clone();
            if let Some((name, values)) = &call.rotate {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % values.len();
                headers.push((name.clone(), values[i].clone()));
            }
            let mut response = match (call.method, &call.body) {
                ("GET", None) => {
                    let mut request = agent.get(&call.url);
                    for (name, value) in &headers {
                        request = request.header(name, value);
                    }
                    request.call()
                }
                ("POST", body) => {
                    let mut request = agent.post(&call.url);
                    for (name, value) in &headers {
                        request = request.header(name, value);
                    }
                    request.send(body.as_deref().unwrap_or_default())
                }
                (method, _) => panic!("the benchmarks do not send {method}"),
            }
            .expect("request sent");
            let _ = response.body_mut().read_to_vec();
            response.status().as_u16()
        })
    }

    /// A wrk script that sends this call and prints one summary line.
    fn wrk_script(&self, expect: u16) -> String {
        let lua = |s: &str| format!("{s:?}");
        let path = self
            .url
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap();
        let mut headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, value)| format!("[{}] = {}", lua(name), lua(value)))
            .collect();
        let mut script = String::from(
            "local threads = {}\nfunction setup(thread) table.insert(threads, thread) end\n",
        );
        let body = self
            .body
            .as_deref()
            .map(lua)
            .unwrap_or_else(|| "nil".into());
        match &self.rotate {
            None => {
                script += &format!(
                    "wrk.method = {}\nwrk.body = {body}\nwrk.headers = {{ {} }}\n",
                    lua(self.method),
                    headers.join(", ")
                );
            }
            Some((name, values)) => {
                let list: Vec<String> = values.iter().map(|v| lua(v)).collect();
                script += &format!("local values = {{ {} }}\n", list.join(",\n"));
                script += "local i = 0\nfunction init(args) i = math.random(#values) end\n";
                headers.push(format!("[{}] = values[i]", lua(name)));
                script += &format!(
                    "function request()\n  i = i % #values + 1\n  return wrk.format({}, {}, {{ {} }}, {body})\nend\n",
                    lua(self.method),
                    lua(&path),
                    headers.join(", ")
                );
            }
        }
        let failed = if (200..400).contains(&expect) {
            "summary.errors.status"
        } else {
            "summary.requests - summary.errors.status"
        };
        script += &format!(
            "function done(summary, latency, requests)\n  io.write(string.format(\"GRANITE %f %f %d %d\\n\", \
             summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, \
             {failed}, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
        );
        script
    }
}

/// The load generator: `wrk` with 2 threads and 32 connections when it is installed (the figures the
/// performance goals are stated in), otherwise the built-in closed loop; `GRANITE_BENCH_LOAD=builtin`
/// forces the latter.
pub fn uses_wrk() -> bool {
    static WRK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WRK.get_or_init(|| {
        std::env::var("GRANITE_BENCH_LOAD").as_deref() != Ok("builtin")
            && std::process::Command::new("wrk")
                .arg("--version")
                .output()
                .is_ok()
    })
}

pub const WRK_THREADS: usize = 2;
pub const WRK_CONNECTIONS: usize = 32;

/// Which generator the figures come from, for the report.
pub fn load_label(threads: usize) -> String {
    if uses_wrk() {
        format!("wrk, {WRK_THREADS} threads, {WRK_CONNECTIONS} keep-alive connections")
    } else {
        format!("built-in load, {threads} keep-alive clients")
    }
}

/// Requests per second and p99 (ms) of `call` for `duration`; every answer must have status `expect`.
pub fn measure_call(threads: usize, duration: Duration, expect: u16, call: &Call) -> (f64, f64) {
    if !uses_wrk() {
        return measure_with_p99(threads, duration, expect, call.request());
    }
    let script = std::env::temp_dir().join(format!(
        "granite-bench-{}.lua",
        granite::secret::random_base62(8)
    ));
    std::fs::write(&script, call.wrk_script(expect)).unwrap();
    let output = std::process::Command::new("wrk")
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(&call.url)
        .output()
        .expect("wrk runs");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("GRANITE "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no summary:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let fields: Vec<f64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
    assert_eq!(
        fields[2], 0.0,
        "{} answers other than {expect} from {}",
        fields[2], call.url
    );
    assert_eq!(
        fields[3], 0.0,
        "{} socket errors from {}",
        fields[3], call.url
    );
    (fields[0], fields[1])
}

/// Closed loop: `threads` clients, each with its own keep-alive connection, send `request` for
/// `duration`; returns requests per second. Every answer must have status `expect`.
pub fn measure(threads: usize, duration: Duration, expect: u16, request: Request) -> f64 {
    measure_with_p99(threads, duration, expect, request).0
}

/// [`measure`], also returning the 99th percentile latency in milliseconds.
pub fn measure_with_p99(
    threads: usize,
    duration: Duration,
    expect: u16,
    request: Request,
) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, done, request) = (stop.clone(), done.clone(), request.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let status = request(&agent);
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    assert_eq!(status, expect, "unexpected status during the benchmark");
                    done.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<f64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies
        .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN);
    (
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        p99,
    )
}

pub fn get(url: String, headers: Vec<(&'static str, String)>) -> Request {
    let mut call = Call::get(url);
    for (name, value) in headers {
        call = call.header(name, value);
    }
    call.request()
}

/// Requests per second of each route: a short warm-up, then `rounds` rounds in which every route takes
/// its turn (interleaved, so drift affects all alike); the median round of each.
pub fn measure_routes(
    routes: &[(&str, Call, u16)],
    threads: usize,
    round: Duration,
    rounds: usize,
) -> Vec<f64> {
    for (_, call, expect) in routes {
        measure_call(threads, Duration::from_millis(300), *expect, call);
    }
    let mut samples = vec![Vec::new(); routes.len()];
    let mut p99s = vec![Vec::new(); routes.len()];
    for _ in 0..rounds {
        for (i, (_, call, expect)) in routes.iter().enumerate() {
            let (rate, p99) = measure_call(threads, round, *expect, call);
            samples[i].push(rate);
            p99s[i].push(p99);
        }
    }
    println!("load: {}", load_label(threads));
    for ((name, _, _), p99) in routes.iter().zip(p99s) {
        println!(
            "  p99 {name:<32} {:>7.2} ms (median of rounds)",
            median(p99)
        );
    }
    samples.into_iter().map(median).collect()
}

/// Median of several rounds, measured interleaved so drift affects every route alike.
/// This process's resident memory now, in MB (server and client together).
pub fn resident_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// A signed-out visitor's session cookie and the sign-in form's CSRF token.
pub fn anonymous_form(agent: &ureq::Agent, base: &str) -> (String, String) {
    let mut login = agent.get(format!("{base}/login")).call().unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("granite_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
        .expect("a session cookie");
    let body = login.body_mut().read_to_string().unwrap();
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).unwrap() + marker.len();
    (cookie, body[start..].split('"').next().unwrap().to_owned())
}

/// Signs in through the real form and returns the session cookie and the page's CSRF token.
pub fn sign_in(base: &str, email: &str, password: &str) -> (String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let cookie_of = |response: &ureq::http::Response<ureq::Body>| {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("granite_session="))
            .map(|v| v.split(';').next().unwrap().to_owned())
    };
    let csrf_of = |body: &str| {
        let marker = "name=\"csrf_token\" value=\"";
        let start = body.find(marker).unwrap() + marker.len();
        body[start..].split('"').next().unwrap().to_owned()
    };
    let mut login = agent.get(format!("{base}/login")).call().unwrap();
    let cookie = cookie_of(&login).unwrap();
    let token = csrf_of(&login.body_mut().read_to_string().unwrap());
    let signed_in = agent
        .post(format!("{base}/login"))
        .header("Cookie", &cookie)
        .header("Origin", base)
        .send_form([
            ("email", email),
            ("password", password),
            ("csrf_token", token.as_str()),
        ])
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 303, "benchmark sign-in");
    let cookie = cookie_of(&signed_in).unwrap();
    let mut page = agent
        .get(format!("{base}/api-management"))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    let token = csrf_of(&page.body_mut().read_to_string().unwrap());
    (cookie, token)
}
