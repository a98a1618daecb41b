//! Idle machines long-polling while runs arrive: what one queued run costs as the idle fleet grows.
//! `cargo bench --bench herd`.
//!
//! 10, 100 and 400 idle machines each long-poll a claim (as the reference driver does) while 40 runs
//! are queued, one every 50 ms; every machine that gets one completes it at once and claims again.
//! Prints, per run, the processor time of this process (server and drivers) and, on PostgreSQL, the
//! transactions the database committed, and the ratio of 400 idle machines to 10 (goal: flat; what
//! grows is the waiting claims' own recheck every 2 seconds, not the runs). Before runs woke only the
//! first machines in line, every idle machine went to the database for every run.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use granite::db::DatabaseUrl;
use support::Server;

const RUNS: usize = 40;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks * 10.0
}

/// Transactions the database has committed, on PostgreSQL (its statistics lag by about a second).
fn transactions(server: &Server) -> Option<i64> {
    use diesel::prelude::*;
    match &mut *server.pool.get().unwrap() {
        granite::db::DbConnection::Postgres(pg) => {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())",
            ))
            .get_result(pg)
            .ok()
        }
        _ => None,
    }
}

fn bench(label: &str, url: DatabaseUrl, machines: usize) -> f64 {
    let server = Server::start(url);
    let key = server.api_key("herd");
    let base = format!("http://{}", server.address);
    let stop = Arc::new(AtomicBool::new(false));
    let claimed = Arc::new(AtomicU64::new(0));
    let drivers: Vec<_> = server
        .enroll_machines("herd", machines)
        .into_iter()
        .map(|credential| {
            let (base, stop, claimed) = (base.clone(), stop.clone(), claimed.clone());
            std::thread::spawn(move || {
                let agent = agent();
                while !stop.load(Ordering::Relaxed) {
                    if let (200, Some(run)) = support::claim(&agent, &base, &credential, 25) {
                        claimed.fetch_add(1, Ordering::Relaxed);
                        support::complete(&agent, &base, &credential, &run);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let agent = agent();
    let transactions_before = transactions(&server);
    let before = cpu_ms();
    let started = std::time::Instant::now();
    for _ in 0..RUNS {
        let _ = agent
            .post(format!("{base}/api/default/herd"))
            .header("X-Granite-API-Key", &key)
            .header("Content-Type", "application/json")
            .send(&b"{}"[..])
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    while claimed.load(Ordering::Relaxed) < RUNS as u64 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let cpu = cpu_ms() - before;
    std::thread::sleep(Duration::from_millis(1500));
    let committed = transactions(&server)
        .zip(transactions_before)
        .map(|(after, before)| {
            format!(
                ", {:.0} database transactions per run",
                (after - before) as f64 / RUNS as f64
            )
        })
        .unwrap_or_default();
    println!(
        "{label}: {machines} idle machines long-polling, {RUNS} runs queued one every 50 ms: \
         {:.1} ms of this process's processor time per run{committed} ({:.2} s in all)",
        cpu / RUNS as f64,
        elapsed.as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    drop(drivers);
    cpu / RUNS as f64
}

fn main() {
    let fleets = [10, 100, 400];
    let sqlite: Vec<f64> = fleets
        .iter()
        .map(|&machines| bench("SQLite", support::sqlite_url(), machines))
        .collect();
    println!(
        "SQLite: processor time per run, 400 idle machines ÷ 10: {:.1}×",
        sqlite[2] / sqlite[0]
    );
    if support::postgres_url().is_some() {
        let postgres: Vec<f64> = fleets
            .iter()
            .map(|&machines| bench("PostgreSQL", support::postgres_url().unwrap(), machines))
            .collect();
        println!(
            "PostgreSQL: processor time per run, 400 idle machines ÷ 10: {:.1}×",
            postgres[2] / postgres[0]
        );
    } else {
        println!("PostgreSQL: not reachable (GRANITE_BENCH_POSTGRES_URL), skipped");
    }
    // The drivers' threads are still long-polling; they need not be waited for.
    std::process::exit(0);
}
