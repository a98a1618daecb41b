//! Runs at speed: `cargo bench --bench runs`.
//!
//! Enqueue throughput (`POST /api/{org}/{endpoint}`), claim-and-complete throughput (a driver taking a
//! run and reporting it done: two requests), both against unauthenticated routes of the same server in
//! the same run; and the latency from `POST /api/{org}/{endpoint}` to a long-polling driver holding the
//! run (goal: under 5 ms at the median). On PostgreSQL, also how many WAL flushes each claim-and-complete
//! cycle costs (concurrent commits share PostgreSQL's flushes).

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use granite::api_keys::{self, KeyName};
use granite::db::DatabaseUrl;
use support::{Call, Request, Server, measure, measure_call, median};

const THREADS: usize = 4;
/// A fleet finishing runs together: this many machines claim and complete at once.
const FLEET: usize = 32;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;
const LATENCY_SAMPLES: usize = 200;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn enqueue(base: &str, key: &str) -> Call {
    Call::post_json(format!("{base}/api/default/bench-job"), "{\"n\":1}")
        .header("X-Granite-API-Key", key)
}

/// One driver cycle: claim a run, report it completed. Each cycle borrows a machine no other cycle is
/// using, so machines never trip over each other.
fn claim_and_complete(base: &str, credentials: Vec<String>) -> Request {
    let base = base.to_owned();
    let idle = Arc::new(Mutex::new(credentials));
    Arc::new(move |agent: &ureq::Agent| {
        let credential = idle
            .lock()
            .unwrap()
            .pop()
            .expect("a machine per load thread");
        let (status, run) = support::claim(agent, &base, &credential, 0);
        assert_eq!(status, 200, "the queue ran dry during the benchmark");
        let done = support::complete(agent, &base, &credential, &run.expect("a run"));
        idle.lock().unwrap().push(credential);
        done
    })
}

fn setup(server: &Server, machines: usize) -> (String, Vec<String>) {
    let mut conn = server.pool.get().unwrap();
    let (_, key) = api_keys::create(
        &mut conn,
        1,
        &KeyName::parse("bench").unwrap(),
        &support::admin(),
    )
    .unwrap();
    (
        key.expose().to_owned(),
        server.enroll_machines("driver", machines),
    )
}

/// Median and 95th percentile, in milliseconds, from queuing a run to a waiting driver holding it.
fn latency(base: &str, key: &str, credential: &str) -> (f64, f64) {
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (got_tx, got_rx) = mpsc::channel::<Instant>();
    let driver = {
        let (base, credential) = (base.to_owned(), credential.to_owned());
        std::thread::spawn(move || {
            let agent = agent();
            for _ in 0..LATENCY_SAMPLES {
                ready_tx.send(()).unwrap();
                let (_, run) = support::claim(&agent, &base, &credential, 30);
                let received = Instant::now();
                got_tx.send(received).unwrap();
                support::complete(&agent, &base, &credential, &run.expect("a run"));
            }
        })
    };
    let caller = agent();
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        ready_rx.recv().unwrap();
        // Let the claim arrive and go to sleep on the server first.
        std::thread::sleep(Duration::from_millis(20));
        let sent = Instant::now();
        let mut response = caller
            .post(format!("{base}/api/default/latency"))
            .header("X-Granite-API-Key", key)
            .header("Content-Type", "application/json")
            .send(&b"{}"[..])
            .unwrap();
        let _ = response.body_mut().read_to_vec();
        let received = got_rx.recv().unwrap();
        samples.push((received - sent).as_secs_f64() * 1000.0);
    }
    driver.join().unwrap();
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[samples.len() * 95 / 100],
    )
}

/// How long PostgreSQL may keep a connection's statistics before reporting them (an idle
/// connection reports within 10 s).
const STATISTICS_REPORTED: Duration = Duration::from_secs(11);

/// PostgreSQL: WAL flushes to disk per claim + complete cycle while `machines` machines cycle
/// together. Each cycle commits a claim and a report: two flushes, fewer where concurrent commits
/// shared one.
/// The flush count is the server's whole (`pg_stat_wal`), so nothing else should run meanwhile.
fn flushes_per_cycle(server: &Server, machines: usize, cycle: Request) -> f64 {
    use diesel::dsl::sql;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;
    let counts = || {
        let mut conn = server.pool.get().unwrap();
        let flushes = diesel::select(sql::<BigInt>("(SELECT wal_sync FROM pg_stat_wal)"))
            .get_result::<i64>(&mut *conn)
            .unwrap();
        let completed = diesel::select(sql::<BigInt>(
            "(SELECT count(*) FROM runs WHERE status = 'completed')",
        ))
        .get_result::<i64>(&mut *conn)
        .unwrap();
        (flushes, completed)
    };
    std::thread::sleep(STATISTICS_REPORTED);
    let (flushes, completed) = counts();
    measure(machines, ROUND, 200, cycle);
    std::thread::sleep(STATISTICS_REPORTED);
    let (flushes_after, completed_after) = counts();
    (flushes_after - flushes) as f64 / (completed_after - completed).max(1) as f64
}

fn bench(label: &str, url: DatabaseUrl) {
    let server = Server::start(url);
    let (key, credentials) = setup(&server, FLEET + 1);
    let base = format!("http://{}", server.address);
    let static_file = Call::get(format!("{base}/static/favicon.svg"));
    let health = Call::get(format!("{base}/healthz"));
    let enqueue = enqueue(&base, &key);
    let cycle = claim_and_complete(&base, credentials[..THREADS].to_vec());
    let fleet_cycle = claim_and_complete(&base, credentials[..FLEET].to_vec());
    // Latency on a fresh queue, and again below once the throughput rounds have churned through
    // thousands of runs (on PostgreSQL their dead index entries stay until autovacuum passes).
    let (fresh_p50, fresh_p95) = latency(&base, &key, &credentials[FLEET]);
    measure_call(THREADS, Duration::from_millis(300), 200, &static_file);
    measure_call(THREADS, Duration::from_millis(300), 200, &health);
    let mut rates = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut enqueue_p99 = Vec::new();
    for _ in 0..ROUNDS {
        rates[0].push(measure_call(THREADS, ROUND, 200, &static_file).0);
        rates[1].push(measure_call(THREADS, ROUND, 200, &health).0);
        // Enqueue first: it leaves the runs the claim round takes.
        let (rate, p99) = measure_call(THREADS, ROUND, 202, &enqueue);
        rates[2].push(rate);
        enqueue_p99.push(p99);
        rates[3].push(measure(THREADS, ROUND / 2, 200, cycle.clone()));
        rates[4].push(measure(FLEET, ROUND / 2, 200, fleet_cycle.clone()));
    }
    let [
        static_rate,
        health_rate,
        enqueue_rate,
        cycle_rate,
        fleet_rate,
    ] = rates.map(median);
    println!(
        "  p99 of enqueue under load: {:.2} ms (median of rounds)",
        median(enqueue_p99)
    );
    let flushes = matches!(server.pool.url(), DatabaseUrl::Postgres(_)).then(|| {
        [THREADS, FLEET].map(|machines| {
            let cycle = claim_and_complete(&base, credentials[..machines].to_vec());
            (machines, flushes_per_cycle(&server, machines, cycle))
        })
    });
    // What the rounds left queued is cancelled in one statement (draining it through the API would
    // take minutes), so the latency runs meet an empty queue that has seen the churn.
    {
        use diesel::prelude::*;
        use granite::db::schema::runs;
        use granite::status::RunStatus;
        let left = diesel::update(runs::table.filter(runs::status.eq(RunStatus::Queued)))
            .set((
                runs::status.eq(RunStatus::Cancelled),
                runs::finished_at.eq(chrono::Utc::now().naive_utc()),
            ))
            .execute(&mut *server.pool.get().unwrap())
            .unwrap();
        println!("  ({left} runs left queued by the rounds were cancelled)");
    }
    let (aged_p50, aged_p95) = latency(&base, &key, &credentials[FLEET]);
    println!(
        "\n{label}: {} (claim + complete: {THREADS} and {FLEET} built-in clients), median of {ROUNDS} rounds",
        support::load_label(THREADS)
    );
    println!("  static file (no database)      {static_rate:>9.0} req/s");
    println!("  /healthz (checked once a second) {health_rate:>7.0} req/s");
    println!("  enqueue                        {enqueue_rate:>9.0} req/s");
    println!(
        "  claim + complete               {cycle_rate:>9.0} cycles/s ({:.0} req/s)",
        cycle_rate * 2.0
    );
    println!(
        "  claim + complete, {FLEET} machines    {fleet_rate:>9.0} cycles/s ({:.0} req/s)",
        fleet_rate * 2.0
    );
    println!(
        "  ratio enqueue / static file:        {:.3}",
        enqueue_rate / static_rate
    );
    println!(
        "  ratio enqueue / healthz:            {:.2}",
        enqueue_rate / health_rate
    );
    println!(
        "  ratio claim+complete req / healthz: {:.2}",
        cycle_rate * 2.0 / health_rate
    );
    println!(
        "  queued → long-polling driver, fresh queue:     median {fresh_p50:.2} ms, p95 {fresh_p95:.2} ms (goal: median < 5 ms)"
    );
    println!(
        "  queued → long-polling driver, after the churn: median {aged_p50:.2} ms, p95 {aged_p95:.2} ms"
    );
    for (machines, flushes) in flushes.into_iter().flatten() {
        println!(
            "  WAL flushes per claim + complete (two commits), {machines} machines: {flushes:.2}"
        );
    }
}

fn main() {
    bench("SQLite", support::sqlite_url());
    match support::postgres_url() {
        Some(url) => bench("PostgreSQL", url),
        None => println!("\nPostgreSQL: not reachable (GRANITE_BENCH_POSTGRES_URL), skipped"),
    }
}
