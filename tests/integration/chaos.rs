//! Chaos: ten real `granite driver run` processes work through a thousand runs while drivers are
//! SIGKILLed and restarted every second or two, and the server itself is SIGKILLed once and restarted
//! on the same database (on PostgreSQL, two replicas with half the drivers each, one of them killed).
//! At the end every run completed, or failed with `lease_lost` after its attempts; none is left
//! queued or running; and no automation ran more often than its run was handed out.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use granite::db::schema::runs;
use granite::status::RunStatus;
use serde_json::{Value, json};

use crate::both_backends;
use crate::driver::{Workspace, enroll, free_port, granite, serve_with};
use crate::helpers::{ADMIN_EMAIL, Backend, TestDb};

both_backends!(drivers_and_a_server_killed_at_random_lose_no_run);

const DRIVERS: usize = 10;
const RUNS: usize = 1000;

/// `granite serve` as its own process, quick to notice quiet machines.
fn serve(db: &TestDb, port: u16) -> Child {
    serve_with(
        db,
        port,
        &[
            ("GRANITE_OFFLINE_AFTER_SECS", "4"),
            ("GRANITE_DB_POOL_SIZE", "8"),
        ],
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One driver machine: its folder (credential, automation) and, while it runs, its process.
struct Machine {
    workspace: Workspace,
    process: Option<Child>,
}

impl Machine {
    fn start(&mut self) {
        let child = granite()
            .current_dir(&self.workspace.dir)
            .args(["driver", "run", "--time-limit", "30", "--credentials"])
            .arg(self.workspace.credentials())
            .args(["--automations", "./automations"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.process = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill(); // SIGKILL: no goodbye, no release.
            let _ = child.wait();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small pseudo-random sequence, seeded by the clock, printed so a failing run can be replayed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn drivers_and_a_server_killed_at_random_lose_no_run(backend: Backend) {
    let db = TestDb::new(backend);
    let replicas = match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    };
    let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let mut servers: Vec<Child> = ports.iter().map(|&port| serve(&db, port)).collect();
    let base = |i: usize| format!("http://127.0.0.1:{}", ports[i % replicas]);

    let pool = granite::db::Pool::open(&db.url, 2).unwrap();
    let actor = granite::audit::Actor {
        user_id: 1,
        email: ADMIN_EMAIL.into(),
        role: granite::users::Role::Admin,
        source_ip: None,
    };
    let key = {
        let mut conn = pool.get().unwrap();
        let name = granite::api_keys::KeyName::parse("chaos").unwrap();
        let (created, key) = granite::api_keys::create(&mut conn, 1, &name, &actor).unwrap();
        // A thousand runs in seconds: more than the default rate limit allows.
        granite::api_keys::set_rate_limit(&mut conn, 1, created.id, Some(0), &actor).unwrap();
        key.expose().to_owned()
    };

    // Every execution appends the run's parameters to one file shared by all machines.
    let executions_log = std::env::temp_dir().join(format!(
        "granite-chaos-{}.log",
        granite::secret::random_base62(10)
    ));
    let mut machines: Vec<Machine> = (0..DRIVERS)
        .map(|i| {
            let workspace = Workspace::new();
            workspace.script(
                "count",
                &format!(
                    "#!/bin/sh\ninput=$(cat)\nsleep 0.15\necho \"$input\" >> {}\necho '{{\"ok\": true}}'\n",
                    executions_log.display()
                ),
            );
            let token = {
                let mut conn = pool.get().unwrap();
                let (_, token) =
                    granite::enrollment::create(&mut conn, 1, "chaos", 1, &actor).unwrap();
                token.expose().to_owned()
            };
            let (ok, output) = enroll(&base(i), &token, &workspace.credentials(), &[]);
            assert!(ok, "{output}");
            Machine {
                workspace,
                process: None,
            }
        })
        .collect();
    let queue = agent();
    for n in 0..RUNS {
        let reply = queue
            .post(format!("{}/api/default/count", base(n)))
            .header("X-Granite-API-Key", &key)
            .send_json(json!({ "n": n }))
            .unwrap();
        assert_eq!(reply.status(), 202);
    }
    for machine in &mut machines {
        machine.start();
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos ({backend:?}): seed {seed}");
    let mut dice = Dice(seed);
    let (mut driver_kills, mut server_kills) = (0, 0);
    let started = Instant::now();
    let unfinished = || -> i64 {
        runs::table
            .filter(runs::status.eq_any([RunStatus::Queued, RunStatus::Running]))
            .count()
            .get_result(&mut *pool.get().unwrap())
            .unwrap()
    };
    // Chaos while work remains (at most 45 s), then let the fleet finish in peace (at most 60 s more).
    while started.elapsed() < Duration::from_secs(45) && unfinished() > 0 {
        std::thread::sleep(Duration::from_millis(1200 + 100 * dice.below(8) as u64));
        let victim = dice.below(DRIVERS);
        machines[victim].kill();
        driver_kills += 1;
        std::thread::sleep(Duration::from_millis(200));
        machines[victim].start();
        if server_kills == 0 && started.elapsed() > Duration::from_secs(4) {
            let replica = dice.below(replicas);
            let _ = servers[replica].kill();
            let _ = servers[replica].wait();
            server_kills += 1;
            std::thread::sleep(Duration::from_millis(1000));
            servers[replica] = serve(&db, ports[replica]);
        }
    }
    let calm = Instant::now();
    while unfinished() > 0 {
        assert!(
            calm.elapsed() < Duration::from_secs(60),
            "{} runs still queued or running a minute after the chaos (seed {seed})",
            unfinished()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let elapsed = started.elapsed();
    for machine in &mut machines {
        machine.kill();
    }
    for server in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }

    type Row = (String, RunStatus, i32, Option<String>, Option<String>);
    let rows: Vec<Row> = runs::table
        .select((
            runs::parameters,
            runs::status,
            runs::attempts,
            runs::error_type,
            runs::error_message,
        ))
        .load(&mut *pool.get().unwrap())
        .unwrap();
    assert_eq!(rows.len(), RUNS);
    let log = std::fs::read_to_string(&executions_log).unwrap_or_default();
    let _ = std::fs::remove_file(&executions_log);
    let mut executions: HashMap<i64, i32> = HashMap::new();
    // An automation whose driver was killed before it wrote the job's input logs an empty line.
    let mut without_input = 0;
    for line in log.lines() {
        if line.trim().is_empty() {
            without_input += 1;
            continue;
        }
        let n = serde_json::from_str::<Value>(line).unwrap()["n"]
            .as_i64()
            .unwrap();
        *executions.entry(n).or_default() += 1;
    }
    let (mut completed, mut lease_lost, mut again) = (0, 0, 0);
    for (parameters, status, attempts, error_type, error_message) in &rows {
        let n = serde_json::from_str::<Value>(parameters).unwrap()["n"]
            .as_i64()
            .unwrap();
        let ran = executions.get(&n).copied().unwrap_or(0);
        match status {
            RunStatus::Completed => {
                completed += 1;
                assert!(ran >= 1, "run {n} completed without running (seed {seed})");
            }
            RunStatus::Failed => {
                assert_eq!(
                    error_type.as_deref(),
                    Some("lease_lost"),
                    "run {n} failed: {error_message:?} (seed {seed})"
                );
                assert!(
                    *attempts >= 3,
                    "run {n} lost its lease after {attempts} attempts"
                );
                lease_lost += 1;
            }
            other => panic!("run {n} ended {other} (seed {seed})"),
        }
        assert!(
            ran <= *attempts,
            "run {n} ran {ran} times in {attempts} hand-outs (seed {seed})"
        );
        again += (ran - 1).max(0);
    }
    eprintln!(
        "chaos ({backend:?}, {replicas} replica(s)): {RUNS} runs in {:.1} s; {completed} completed, \
         {lease_lost} failed with lease_lost; {} executions ({again} repeated after a lost \
         attempt, {without_input} cut off before their input); {driver_kills} drivers and \
         {server_kills} server SIGKILLed",
        elapsed.as_secs_f64(),
        executions.values().sum::<i32>(),
    );
    assert_eq!(completed + lease_lost, RUNS);
    assert!(driver_kills >= 3, "the chaos happened");
    assert_eq!(server_kills, 1, "the server was killed once");
}
