//! `granite demo`: a server on a fresh SQLite file with a demo admin, a handful of simulated drivers
//! enrolled through the real driver API, and a trickle of jobs queued through the real public API, so the
//! dashboard is alive within seconds. It keeps quiet (warnings only) and repeats where to sign in every
//! minute; Ctrl-C stops everything and deletes its data unless `--keep`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::api_keys::{self, KeyName};
use crate::app::Application;
use crate::audit::Actor;
use crate::config::Settings;
use crate::db::{DatabaseUrl, Pool};
use crate::driver::client::{DriverClient, Job};
use crate::driver::{self, DriverState, Executor};
use crate::enrollment;
use crate::runs::Outcome;
use crate::secret::random_base62;

const DEMO_EMAIL: &str = "admin@demo.granite";
/// Name, operating system as a driver reports it, capabilities.
const DRIVERS: [(&str, &str, &[&str]); 5] = [
    (
        "win-desktop-01",
        "Windows 11 Pro 23H2",
        &["windows", "chrome", "excel"],
    ),
    (
        "win-desktop-02",
        "Windows 10 Enterprise 22H2",
        &["windows", "chrome"],
    ),
    (
        "linux-runner-01",
        "Ubuntu 24.04.1 LTS",
        &["linux", "chrome"],
    ),
    (
        "linux-runner-02",
        "Debian GNU/Linux 12 (bookworm)",
        &["linux"],
    ),
    ("mac-mini-01", "macOS 14.6 Sonoma", &["macos", "safari"]),
];
/// How often the demo says again where to sign in.
const REMIND_EVERY: Duration = Duration::from_secs(60);
const AUTOMATIONS: [(&str, &str); 6] = [
    ("invoice-sync", ""),
    ("crm-export", "chrome"),
    ("report-pdf", ""),
    ("inbox-triage", "windows"),
    ("price-scrape", "chrome"),
    ("ledger-close", "excel"),
];

pub fn run(bind: SocketAddr, keep: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("granite-demo-{}", random_base62(8)));
    let url = DatabaseUrl::parse(&format!("sqlite://{}/demo.db", dir.display()))
        .map_err(|e| anyhow::anyhow!(e))?;
    let password = random_base62(16);
    let mut settings = Settings::new(url, bind);
    settings.admin_email = Some(DEMO_EMAIL.into());
    settings.admin_password = Some(password.clone().into());
    settings.heartbeat_secs = 3;
    settings.offline_after_secs = 10;
    let data = dir.clone();
    let served = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        let base = format!("http://{}", app.address());
        let sign_in = format!(
            "  Granite demo: open {base} and sign in as {DEMO_EMAIL} with password {password}"
        );
        let data_note = if keep {
            format!(
                "  (data in {}, kept; Ctrl-C stops everything)",
                data.display()
            )
        } else {
            "  (Ctrl-C stops everything and deletes the demo's data; --keep keeps it)".to_owned()
        };
        println!("\n{sign_in}\n{data_note}\n");
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(REMIND_EVERY);
                println!("{sign_in}");
            }
        });
        let (pool, server) = (app.pool().clone(), base.clone());
        std::thread::spawn(move || {
            if let Err(e) = populate(&pool, &server) {
                tracing::error!(error = %e, "the demo could not start its drivers");
            }
        });
        app.run_until_stopped().await?;
        Ok::<_, anyhow::Error>(())
    });
    if keep {
        println!("  Demo stopped; its data is in {}", dir.display());
    } else if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("could not delete {}: {e}", dir.display()))?;
        println!("  Demo stopped; its data was deleted.");
    }
    served
}

/// Enrolls the simulated drivers through the driver API and feeds jobs through the public API.
fn populate(pool: &Pool, base: &str) -> anyhow::Result<()> {
    let actor = Actor {
        user_id: 1,
        email: DEMO_EMAIL.into(),
        role: crate::users::Role::Admin,
        source_ip: None,
    };
    let mut conn = pool.get()?;
    let (_, key) = api_keys::create(
        &mut conn,
        1,
        &KeyName::parse("demo-scheduler").map_err(|e| anyhow::anyhow!(e))?,
        &actor,
    )?;
    for (name, os_version, capabilities) in DRIVERS {
        let (_, token) = enrollment::create(&mut conn, 1, &format!("demo: {name}"), 1, &actor)?;
        let capabilities: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
        let enrolled = DriverClient::new(base, None).enroll(
            token.expose(),
            name,
            os_version,
            &capabilities,
        )?;
        let client = Arc::new(DriverClient::new(base, Some(enrolled.credential)));
        std::thread::spawn(move || {
            driver::run(
                client,
                Arc::new(Simulated),
                Arc::new(DriverState::default()),
            )
        });
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(conn);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    loop {
        let (endpoint, requires) = AUTOMATIONS[random_below(AUTOMATIONS.len() as u64) as usize];
        let url = format!(
            "{base}/api/default/{endpoint}?requires={requires}&priority={}",
            random_below(3)
        );
        let body = serde_json::json!({ "batch": random_below(1000) });
        if agent
            .post(&url)
            .header("X-Granite-API-Key", key.expose())
            .send_json(&body)
            .is_err()
        {
            return Ok(()); // The server stopped.
        }
        std::thread::sleep(Duration::from_millis(800 + random_below(1700)));
    }
}

/// A driver that pretends to work: a few seconds per job, now and then a failure.
struct Simulated;

impl Executor for Simulated {
    fn execute(&self, job: &Job, interrupt: &AtomicBool) -> Outcome {
        let millis = 2000 + random_below(7000);
        let step = Duration::from_millis(100);
        for _ in 0..millis / 100 {
            if interrupt.load(Ordering::Relaxed) {
                return Outcome {
                    succeeded: false,
                    result: None,
                    error: Some(("interrupted".into(), "Stopped.".into())),
                };
            }
            std::thread::sleep(step);
        }
        if random_below(10) == 0 {
            return Outcome {
                succeeded: false,
                result: None,
                error: Some((
                    "element_not_found".into(),
                    format!("{}: the Submit button never appeared", job.endpoint),
                )),
            };
        }
        Outcome {
            succeeded: true,
            result: Some(serde_json::json!({ "processed": 1 + random_below(50), "ms": millis })),
            error: None,
        }
    }
}

fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes) % n.max(1)
}
