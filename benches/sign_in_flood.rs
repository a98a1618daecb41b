//! A flood of bad sign-ins against everyone else's latency and the server's memory:
//! `cargo bench --bench sign_in_flood`.
//!
//! 200 clients (wrk's connections when wrk is installed, else threads) send wrong passwords as fast
//! as they are answered, each guess from a different address (the server trusts loopback as a proxy and every guess names a new `X-Forwarded-For`), so
//! the per-address waits never start and only the bound on concurrent password checks holds the
//! flood: the worst case. Meanwhile one caller sends `GET /api/me` with a valid key every 5 ms (an
//! open loop, so its latency is what a service sees, not a saturated queue), first with the server
//! idle, then under a flood of the favicon by as many clients (the control: what any flood costs on
//! this machine), then under the sign-in flood. Goals: `/api/me` p99 under the flood within 2× of idle; resident
//! memory under 500 MB. Each backend runs in a process of its own.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use granite::db::DatabaseUrl;
use support::Server;

const FLOODERS: usize = 200;
const PROBE_EVERY: Duration = Duration::from_millis(5);
const PROBE_FOR: Duration = Duration::from_secs(6);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Latencies (ms) of `GET /api/me`, one every [`PROBE_EVERY`], for [`PROBE_FOR`].
fn probe(base: &str, key: &str) -> Vec<f64> {
    let agent = agent();
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < PROBE_FOR {
        let sent = Instant::now();
        let mut response = agent
            .get(format!("{base}/api/me"))
            .header("X-Granite-API-Key", key)
            .call()
            .expect("probe sent");
        let _ = response.body_mut().read_to_vec();
        assert_eq!(response.status().as_u16(), 200, "the probe's key works");
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        next += PROBE_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Answers the flood got: [checked and refused (401), turned away (429), anything else].
type Answers = [u64; 3];

/// What the server has answered `POST /login` so far, from its own `/metrics`.
fn sign_in_answers(base: &str) -> Answers {
    let text = agent()
        .get(format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .unwrap();
    let mut answers = [0; 3];
    for line in text.lines() {
        let Some(rest) =
            line.strip_prefix("granite_http_requests_total{route=\"/login\",status=\"")
        else {
            continue;
        };
        let (status, count) = rest.split_once("\"} ").unwrap();
        let count = count.trim().parse::<f64>().unwrap() as u64;
        match status {
            "401" => answers[0] += count,
            "429" => answers[1] += count,
            // The flooders' own first visit to the form.
            "200" => {}
            _ => answers[2] += count,
        }
    }
    answers
}

/// What the flood sends.
#[derive(Clone, Copy, PartialEq)]
enum Flood {
    /// Wrong passwords, each from a new address.
    SignIns,
    /// The favicon: the cheapest request there is, the same number of clients (the control: what any
    /// flood of 200 clients as fast as they are answered costs on this machine).
    Favicon,
}

/// The flood as wrk sends it: one connection per client.
fn flood_with_wrk(base: &str, flood: Flood) -> std::process::Child {
    let lua = |s: &str| format!("{s:?}");
    let (script, path) = match flood {
        Flood::SignIns => {
            let (cookie, token) = support::anonymous_form(&agent(), base);
            let body =
                format!("email=bench%40example.com&password=not+the+password&csrf_token={token}");
            let script = format!(
                "wrk.method = \"POST\"\nwrk.body = {}\n\
                 wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
                 wrk.headers[\"Cookie\"] = {}\nwrk.headers[\"Origin\"] = {}\n\
                 local n = 0\nfunction init(args) n = math.random(1, 1000000) end\n\
                 function request()\n  n = n + 1\n\
                   wrk.headers[\"X-Forwarded-For\"] = string.format(\"10.%d.%d.%d\", n % 250, math.floor(n / 250) % 250, math.floor(n / 62500) % 250)\n\
                   return wrk.format()\nend\n",
                lua(&body),
                lua(&cookie),
                lua(base)
            );
            (script, "/login")
        }
        Flood::Favicon => (String::new(), "/static/favicon.svg"),
    };
    let file = std::env::temp_dir().join(format!(
        "granite-flood-{}.lua",
        granite::secret::random_base62(8)
    ));
    std::fs::write(&file, script).unwrap();
    std::process::Command::new("wrk")
        .args(["-t1", &format!("-c{FLOODERS}"), "-d60s", "-s"])
        .arg(&file)
        .arg(format!("{base}{path}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("wrk runs")
}

/// The flood without wrk: one thread per client.
fn flooder(base: String, flood: Flood, stop: Arc<AtomicBool>, n: usize) {
    let agent = agent();
    let (cookie, token) = support::anonymous_form(&agent, &base);
    let mut guess = 0u64;
    while !stop.load(Ordering::Relaxed) {
        guess += 1;
        if flood == Flood::Favicon {
            let _ = agent.get(format!("{base}/static/favicon.svg")).call();
            continue;
        }
        let address = format!("10.{}.{}.{}", n % 250, (guess / 250) % 250, guess % 250);
        let _ = agent
            .post(format!("{base}/login"))
            .header("Cookie", &cookie)
            .header("Origin", &base)
            .header("X-Forwarded-For", &address)
            .send_form([
                ("email", "bench@example.com"),
                ("password", "not the password"),
                ("csrf_token", token.as_str()),
            ]);
    }
}

/// `/api/me` latencies under `flood`, the sign-in answers meanwhile, and the peak resident memory.
fn under(base: &str, key: &str, flood: Flood) -> (Vec<f64>, [f64; 3], u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (mut wrk, flooders) = if support::uses_wrk() {
        (Some(flood_with_wrk(base, flood)), Vec::new())
    } else {
        let flooders: Vec<_> = (0..FLOODERS)
            .map(|n| {
                let (base, stop) = (base.to_owned(), stop.clone());
                std::thread::spawn(move || flooder(base, flood, stop, n))
            })
            .collect();
        (None, flooders)
    };
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(support::resident_mb() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = sign_in_answers(base);
    let latencies = probe(base, key);
    let after = sign_in_answers(base);
    stop.store(true, Ordering::Relaxed);
    if let Some(wrk) = &mut wrk {
        let _ = wrk.kill();
        let _ = wrk.wait();
    }
    for flooder in flooders {
        flooder.join().unwrap();
    }
    sampler.join().unwrap();
    let per_second = |i: usize| (after[i] - before[i]) as f64 / PROBE_FOR.as_secs_f64();
    (
        latencies,
        [per_second(0), per_second(1), per_second(2)],
        peak.load(Ordering::Relaxed),
    )
}

fn bench(label: &str, url: DatabaseUrl) {
    let server = Server::start_with(url, |settings| {
        settings.trusted_proxies =
            granite::ops::client_address::parse_trusted("127.0.0.1/32").unwrap();
    });
    let key = server.api_key("probe");
    let base = format!("http://{}", server.address);

    probe(&base, &key); // warm-up
    let idle = probe(&base, &key);
    let idle_rss = support::resident_mb();
    let (control, _, _) = under(&base, &key, Flood::Favicon);
    let (flooded, answers, peak) = under(&base, &key, Flood::SignIns);

    let p99 = |latencies: &[f64]| percentile(latencies, 0.99);
    println!(
        "\n{label}: {FLOODERS} clients ({}) guessing passwords as fast as answered, each guess from a new address",
        if support::uses_wrk() {
            "wrk connections"
        } else {
            "threads"
        }
    );
    println!(
        "  sign-ins answered: {:.0}/s checked and refused (401), {:.0}/s turned away at once (429), {:.0}/s other",
        answers[0], answers[1], answers[2]
    );
    println!(
        "  /api/me every {} ms, p50 / p99: idle {:.2} / {:.2} ms; favicon flood {:.2} / {:.2} ms; sign-in flood {:.2} / {:.2} ms",
        PROBE_EVERY.as_millis(),
        percentile(&idle, 0.5),
        p99(&idle),
        percentile(&control, 0.5),
        p99(&control),
        percentile(&flooded, 0.5),
        p99(&flooded),
    );
    println!(
        "  ratio p99 sign-in flood / idle: {:.2} (goal ≤ 2); sign-in flood / favicon flood: {:.2}",
        p99(&flooded) / p99(&idle),
        p99(&flooded) / p99(&control)
    );
    println!(
        "  resident memory (server and probe{}): idle {idle_rss:.0} MB, peak under the sign-in flood {peak} MB (goal < 500 MB)",
        if support::uses_wrk() {
            ""
        } else {
            " and flood threads"
        },
    );
}

fn main() {
    support::each_backend_in_its_own_process(
        "GRANITE_BENCH_FLOOD_BACKEND",
        || bench("SQLite", support::sqlite_url()),
        || match support::postgres_url() {
            Some(url) => bench("PostgreSQL", url),
            None => println!("\nPostgreSQL: not reachable (GRANITE_BENCH_POSTGRES_URL), skipped"),
        },
    );
}
