//! The fleet at scale: `cargo bench --bench fleet`.
//!
//! 10,000 enrolled machines. Measures heartbeat throughput (each call authenticates the machine and
//! records the contact) and the VM Machines fragment (counts per status over all 10,000 and one page of
//! rows) against unauthenticated routes of the same server, in the same run. The contract's load is
//! 10,000 machines every 10 s: 1,000 heartbeats per second.

mod support;

use std::time::{Duration, Instant};

use granite::db::{DatabaseUrl, write_transaction};
use granite::enrollment;
use granite::machines::{self, MachineProfile};
use granite::secret::{Secret, SecretKind};
use support::{Call, Server, measure_routes};

const MACHINES: usize = 10_000;
const THREADS: usize = 4;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

fn enroll_fleet(server: &Server) -> Vec<String> {
    let mut conn = server.pool.get().unwrap();
    let (token, _) =
        enrollment::create(&mut conn, 1, "bench fleet", 24, &support::admin()).unwrap();
    let now = chrono::Utc::now().naive_utc();
    let credentials: Vec<Secret> = (0..MACHINES)
        .map(|_| Secret::generate(SecretKind::MachineCredential))
        .collect();
    write_transaction(&mut conn, |conn| {
        for (i, credential) in credentials.iter().enumerate() {
            let profile = MachineProfile::parse(
                &format!("vm-{i:05}"),
                "Windows 11",
                Some("10.0.0.1"),
                None,
                &[],
                "1.0",
            )
            .unwrap();
            machines::insert(conn, 1, &profile, &credential.hash(), token.id, now)?;
        }
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
    credentials.iter().map(|c| c.expose().to_owned()).collect()
}

/// Heartbeats round-robin over every machine of the fleet.
fn heartbeats(base: &str, credentials: Vec<String>) -> Call {
    Call::post_json(
        format!("{base}/api/v1/driver/heartbeat"),
        "{\"status\":\"idle\"}",
    )
    .rotating(
        "Authorization",
        credentials.iter().map(|c| format!("Bearer {c}")).collect(),
    )
}

fn bench(label: &str, url: DatabaseUrl) {
    let server = Server::start(url);
    let started = Instant::now();
    let credentials = enroll_fleet(&server);
    let enrolled_in = started.elapsed();
    // What autovacuum does within a minute of a bulk enrollment: without statistics PostgreSQL
    // would sort all 10,000 machines for each page of the list.
    diesel::connection::SimpleConnection::batch_execute(
        &mut *server.pool.get().unwrap(),
        "ANALYZE",
    )
    .unwrap();
    let base = format!("http://{}", server.address);
    let (cookie, _) = support::sign_in(&base, "bench@example.com", "benchmark password");
    let fragment = Call::get(format!("{base}/api-management/machines/list"))
        .header("Cookie", cookie.clone())
        .header("HX-Request", "true");
    let routes = vec![
        (
            "static file (no database)",
            Call::get(format!("{base}/static/favicon.svg")),
            200,
        ),
        (
            "/healthz (readiness, checked once a second)",
            Call::get(format!("{base}/healthz")),
            200,
        ),
        (
            "heartbeat (10,000 machines)",
            heartbeats(&base, credentials),
            200,
        ),
        ("VM Machines fragment", fragment.clone(), 200),
    ];
    let rates = measure_routes(&routes, THREADS, ROUND, ROUNDS);
    // Render time as one admin sees it: sequential requests, one at a time.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let fragment = fragment.request();
    let timed = Instant::now();
    let runs = 50;
    for _ in 0..runs {
        assert_eq!(fragment(&agent), 200);
    }
    let fragment_ms = timed.elapsed().as_secs_f64() * 1000.0 / runs as f64;

    println!(
        "\n{label}: {MACHINES} machines (enrolled in {:.1}s), {}, median of {ROUNDS} rounds of {}s",
        enrolled_in.as_secs_f64(),
        support::load_label(THREADS),
        ROUND.as_secs()
    );
    for ((name, _, _), rate) in routes.iter().zip(&rates) {
        println!("  {name:<30} {rate:>9.0} req/s");
    }
    let (static_rate, health, beats, list) = (rates[0], rates[1], rates[2], rates[3]);
    println!(
        "  heartbeats / needed (1,000/s):       {:.1}x",
        beats / 1000.0
    );
    println!(
        "  ratio heartbeat / static file:       {:.2}",
        beats / static_rate
    );
    println!(
        "  ratio heartbeat / healthz:           {:.2}",
        beats / health
    );
    println!(
        "  ratio fragment / static file:        {:.3}",
        list / static_rate
    );
    println!(
        "  ratio fragment / healthz:            {:.3}",
        list / health
    );
    println!("  fragment render, one at a time:      {fragment_ms:.1} ms");
}

fn main() {
    bench("SQLite", support::sqlite_url());
    match support::postgres_url() {
        Some(url) => bench("PostgreSQL", url),
        None => println!("\nPostgreSQL: not reachable (GRANITE_BENCH_POSTGRES_URL), skipped"),
    }
}
