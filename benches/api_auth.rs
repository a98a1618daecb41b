//! Throughput of authenticated public API calls against unauthenticated routes of the same server, in
//! the same run: `cargo bench --bench api_auth`.
//!
//! Routes: `/static/favicon.svg` (no database: the bare cost of a request through every middleware),
//! `/healthz` (readiness, answered from a check made at most a second ago), `GET /api/me` with a
//! valid key (checksum, hash, one indexed lookup, usage tally, rate limit) and with malformed keys
//! (refused by checksum, no database work), and with an unlimited key (the rate limiter skipped), so
//! the limiter's own cost shows.
//! Logging is off (no subscriber), as it would cost every route alike.

mod support;

use std::time::Duration;

use granite::db::DatabaseUrl;
use support::{Call, Server, measure_routes};

const THREADS: usize = 4;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

fn bench(label: &str, url: DatabaseUrl) {
    let server = Server::start(url);
    let secret = server.api_key("bench");
    let unlimited = server.api_key_limited("bench-unlimited", Some(0));
    let mut malformed = secret.clone();
    malformed.replace_range(20..21, if &secret[20..21] == "x" { "y" } else { "x" });
    let base = format!("http://{}", server.address);
    let routes = [
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
            "/api/me, valid key",
            Call::get(format!("{base}/api/me")).header("X-Granite-API-Key", secret),
            200,
        ),
        (
            "/api/me, unlimited key",
            Call::get(format!("{base}/api/me")).header("X-Granite-API-Key", unlimited),
            200,
        ),
        (
            "/api/me, malformed key",
            Call::get(format!("{base}/api/me")).header("X-Granite-API-Key", malformed),
            401,
        ),
    ];
    let rates = measure_routes(&routes, THREADS, ROUND, ROUNDS);
    println!(
        "\n{label}: {}, median of {ROUNDS} rounds of {}s",
        support::load_label(THREADS),
        ROUND.as_secs()
    );
    for ((name, _, _), rate) in routes.iter().zip(&rates) {
        println!("  {name:<28} {rate:>9.0} req/s");
    }
    let (static_rate, health_rate, valid, unlimited, malformed) =
        (rates[0], rates[1], rates[2], rates[3], rates[4]);
    // The goals (≥ 0.60 valid, ≥ 0.90 malformed) are against an unauthenticated route; both baselines
    // are shown: the bare request (no database) and one that asks the database something.
    println!(
        "  ratio valid key / static file:      {:.2}",
        valid / static_rate
    );
    println!(
        "  ratio malformed key / static file:  {:.2}",
        malformed / static_rate
    );
    println!(
        "  ratio rate-limited / unlimited key: {:.2} (goal ≥ 0.90: the limiter costs at most 10%)",
        valid / unlimited
    );
    println!(
        "  ratio valid key / healthz:          {:.2} (goal ≥ 0.60)",
        valid / health_rate
    );
    println!(
        "  ratio malformed key / healthz:      {:.2} (goal ≥ 0.90)",
        malformed / health_rate
    );
}

fn main() {
    bench("SQLite", support::sqlite_url());
    match support::postgres_url() {
        Some(url) => bench("PostgreSQL", url),
        None => println!("\nPostgreSQL: not reachable (GRANITE_BENCH_POSTGRES_URL), skipped"),
    }
}
