//! `granite` as its own process, started the way an operator types it: in a temporary folder, so a
//! `sqlite://granite.db` URL is a relative path, and killed outright when a test wants a crash.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::driver::{free_port, granite};
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD};

/// A temporary folder the processes of a test run in; removed when dropped.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "granite-work-{}",
            granite::secret::random_base62(10)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// `granite ARGS` started in this folder, on the database `url` as the user would type it.
    pub fn granite(&self, url: &str) -> Command {
        let mut command = granite();
        command
            .current_dir(&self.0)
            .env("GRANITE_DATABASE_URL", url);
        command
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `granite serve` in a work folder, with the test admin configured; killed when dropped.
pub struct Server {
    child: Child,
    pub address: SocketAddr,
}

impl Server {
    /// Starts it and waits for `/healthz`. Its log goes to `serve-{name}.log` in the folder, and is
    /// shown if it exits before it answers.
    pub fn start(work: &WorkDir, url: &str, name: &str) -> Self {
        let port = free_port();
        let log_path = work.0.join(format!("serve-{name}.log"));
        let child = work
            .granite(url)
            .arg("serve")
            .env("GRANITE_BIND", format!("127.0.0.1:{port}"))
            .env("GRANITE_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("GRANITE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.get("/healthz", None).0 != 200 {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "granite serve on {url} exited: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "granite serve on {url} did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// (status, body) of a GET, with an API key when given; status 0 when nothing answered.
    pub fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut request =
            agent(Duration::from_secs(30)).get(format!("http://{}{path}", self.address));
        if let Some(key) = key {
            request = request.header("X-Granite-API-Key", key);
        }
        match request.call() {
            Ok(mut reply) => (
                reply.status().as_u16(),
                reply.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// SIGKILL: no graceful stop, nothing flushed.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that reports every status instead of failing on 4xx/5xx.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}
