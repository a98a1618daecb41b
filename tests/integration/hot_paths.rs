//! The hot paths, proven against real servers: a verified key that a replica remembers is forgotten on
//! every replica within a second of its revocation or roll; a run is acknowledged (202) only once it
//! is stored, and a run's outcome only once it is stored, so killing the server outright loses none
//! that were; and heartbeats that change nothing,
//! written in batches, keep a machine Online on every replica until it goes quiet.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};
use granite::db::schema::{api_keys, machines, runs};
use granite::db::{DatabaseUrl, DbConnection, Pool};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, TestDb};
use crate::process::{Server, WorkDir, agent};

both_backends!(
    every_acknowledged_enqueue_survives_a_kill,
    every_acknowledged_completion_survives_a_kill,
    usage_older_than_a_flush_survives_a_kill,
    a_quiet_machine_goes_offline_on_another_replica,
    a_remembered_machine_follows_every_change_on_every_replica,
    readers_share_the_fleet_census_while_machines_change,
);

/// How long a replica may keep trusting a key after it was revoked or rolled elsewhere.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Polls `probe` every 20 ms until it answers `Some`, failing once `within` has passed since `since`;
/// returns the answer and how long after `since` the request that got it was sent.
fn within<T>(
    since: Instant,
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    loop {
        let asked = Instant::now();
        if let Some(value) = probe() {
            return (value, asked - since);
        }
        assert!(
            since.elapsed() < within,
            "{what}: not within {within:?} (still not after {:?})",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two replicas share one PostgreSQL database (SQLite has one server, so nothing to tell).
#[test]
fn a_revoked_key_fails_on_every_replica_within_a_second() {
    let db = TestDb::new(Backend::Postgres);
    let a = TestApp::spawn(&db);
    let b = TestApp::spawn(&db);
    let mut admin = a.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let warm = |secret: &str| {
        for _ in 0..3 {
            for replica in [&a, &b] {
                let me = replica.api(Some(secret)).get("/api/me");
                assert_eq!(me.status, 200, "{}", me.body);
            }
        }
    };

    // The control: B really answers from memory. A key revoked behind the servers' backs (no
    // NOTIFY) still opens B's API, so what refuses a key there below is the message from A.
    let (control, control_secret) = admin.create_api_key("control");
    warm(&control_secret);
    diesel::update(api_keys::table.find(control))
        .set(api_keys::revoked_at.eq(chrono::Utc::now().naive_utc()))
        .execute(&mut *a.pool.get().unwrap())
        .unwrap();
    assert_eq!(
        b.api(Some(&control_secret)).get("/api/me").status,
        200,
        "B remembers the keys it verified"
    );

    // Revoked through A's dashboard: A refuses it at once, B within a second.
    let (doomed, doomed_secret) = admin.create_api_key("doomed");
    warm(&doomed_secret);
    let reply = admin.htmx_post(&format!("/api-management/api-keys/{doomed}/revoke"), &[]);
    let revoked_at = Instant::now();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        a.api(Some(&doomed_secret)).error_of("/api/me"),
        (401, "revoked_api_key".into()),
        "the replica that revoked it refuses it at once"
    );
    let (refused, took) = within(revoked_at, PROPAGATION, "B refuses the revoked key", || {
        let reply = b.api(Some(&doomed_secret)).get("/api/me");
        (reply.status != 200).then(|| reply.api_error())
    });
    assert_eq!(refused, (401, "revoked_api_key".into()));
    eprintln!("revoked on A: refused by B {took:?} after the revoke's response");
    assert_eq!(
        a.api(Some(&doomed_secret)).error_of("/api/me"),
        (401, "revoked_api_key".into())
    );

    // Rolled on A with no grace: the old key stops on A at once and on B within a second; the new
    // one works on both.
    let (worker, worker_secret) = admin.create_api_key("worker");
    warm(&worker_secret);
    let reply = admin.htmx_post(
        &format!("/api-management/api-keys/{worker}/roll"),
        &[("grace", "now")],
    );
    let rolled_at = Instant::now();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let newest = reply.new_secret().expect("the new key is shown once");
    assert_eq!(
        a.api(Some(&worker_secret)).error_of("/api/me"),
        (401, "expired_api_key".into())
    );
    let (refused, took) = within(rolled_at, PROPAGATION, "B refuses the rolled key", || {
        let reply = b.api(Some(&worker_secret)).get("/api/me");
        (reply.status != 200).then(|| reply.api_error())
    });
    assert_eq!(refused, (401, "expired_api_key".into()));
    eprintln!("rolled on A: old key refused by B {took:?} after the roll's response");
    for replica in [&a, &b] {
        let me = replica.api(Some(&newest)).get("/api/me");
        assert_eq!(me.status, 200, "{}", me.body);
        assert_eq!(me.json()["key"]["name"], "worker");
    }
}

/// What one enqueuing thread saw: the runs acknowledged with a 202, and any other status.
#[derive(Default)]
struct Acknowledged {
    run_ids: Vec<String>,
    other_statuses: Vec<(u16, String)>,
}

const ENQUEUERS: usize = 8;

/// A server started as an operator would (on PostgreSQL the test's own schema; on SQLite a relative
/// path in the server's working folder), to be killed and started again on the same database.
struct Crashable {
    work: WorkDir,
    _pg: Option<TestDb>,
    url: String,
    db_url: DatabaseUrl,
}

impl Crashable {
    fn new(backend: Backend) -> (Self, Server) {
        let work = WorkDir::new();
        let pg = (backend == Backend::Postgres).then(|| TestDb::new(Backend::Postgres));
        let (url, db_url) = match &pg {
            Some(db) => (db.url_text.clone(), db.url.clone()),
            None => (
                "sqlite://granite.db".to_owned(),
                DatabaseUrl::Sqlite(work.0.join("granite.db")),
            ),
        };
        let server = Server::start(&work, &url, "first");
        assert_eq!(
            work.0.join("granite.db").exists(),
            backend == Backend::Sqlite,
            "the relative path is the server's working folder"
        );
        let crashable = Self {
            work,
            _pg: pg,
            url,
            db_url,
        };
        (crashable, server)
    }

    fn restart(&self) -> Server {
        Server::start(&self.work, &self.url, "restarted")
    }

    fn pool(&self) -> Pool {
        Pool::open(&self.db_url, 1).unwrap()
    }

    /// A real API key, made through the domain on the server's own database; unlimited, as an admin
    /// would make the key of a caller that streams thousands of runs a second.
    fn api_key(&self) -> String {
        let name = granite::api_keys::KeyName::parse("stream").unwrap();
        let mut conn = self.pool().get().unwrap();
        let (key, secret) = granite::api_keys::create(&mut conn, 1, &name, &actor()).unwrap();
        granite::api_keys::set_rate_limit(&mut conn, 1, key.id, Some(0), &actor()).unwrap();
        secret.expose().to_owned()
    }

    /// A one-time enrollment token, made the same way.
    fn enrollment_token(&self) -> String {
        let (_, secret) =
            granite::enrollment::create(&mut self.pool().get().unwrap(), 1, "stream", 1, &actor())
                .unwrap();
        secret.expose().to_owned()
    }
}

fn actor() -> granite::audit::Actor {
    granite::audit::Actor {
        user_id: 1,
        email: ADMIN_EMAIL.into(),
        role: granite::users::Role::Admin,
        source_ip: None,
    }
}

/// On PostgreSQL, how many transactions wrote the runs (rows a transaction wrote last share its id,
/// `xmin`); `None` on SQLite.
fn writing_transactions(conn: &mut DbConnection) -> Option<usize> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    match conn {
        DbConnection::Postgres(pg) => {
            let count: Count =
                diesel::sql_query("SELECT count(DISTINCT xmin::text) AS n FROM runs")
                    .get_result(pg)
                    .unwrap();
            Some(count.n as usize)
        }
        DbConnection::Sqlite(_) => None,
    }
}

/// From the server's metrics: how many transactions `writer` committed, and how many writes they held.
fn group_commits(metrics: &str, writer: &str) -> (u64, u64) {
    let value = |name: &str| {
        let prefix = format!("granite_group_commit_size_{name}{{writer=\"{writer}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap()) as u64
    };
    (value("count"), value("sum"))
}

/// Streams for about 1.5 s (longer, up to 5 s, on a machine too busy to acknowledge 150 by then).
fn stream_until_enough(acks: &AtomicUsize) -> Instant {
    let streaming = Instant::now();
    while streaming.elapsed() < Duration::from_millis(1500)
        || (acks.load(Ordering::Relaxed) < 150 && streaming.elapsed() < Duration::from_secs(5))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    streaming
}

fn every_acknowledged_enqueue_survives_a_kill(backend: Backend) {
    let (crashable, mut server) = Crashable::new(backend);
    let key = crashable.api_key();

    // Enqueue from 8 threads as fast as they can until the server dies under them.
    let address = server.address;
    let go = Arc::new(Barrier::new(ENQUEUERS + 1));
    let acks = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..ENQUEUERS)
        .map(|t| {
            let (key, go, acks) = (key.clone(), go.clone(), acks.clone());
            std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(10));
                let mut seen = Acknowledged::default();
                go.wait();
                for n in 0.. {
                    let sent = agent
                        .post(format!("http://{address}/api/default/stream"))
                        .header("X-Granite-API-Key", &key)
                        .send_json(json!({ "thread": t, "n": n }));
                    let mut reply = match sent {
                        Ok(reply) => reply,
                        // The server is gone: stop at the first connection error.
                        Err(_) => break,
                    };
                    let Ok(body) = reply.body_mut().read_to_string() else {
                        break;
                    };
                    if reply.status() == 202 {
                        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                        seen.run_ids
                            .push(json["runId"].as_str().unwrap().to_owned());
                        acks.fetch_add(1, Ordering::Relaxed);
                    } else {
                        seen.other_statuses.push((reply.status().as_u16(), body));
                    }
                }
                seen
            })
        })
        .collect();
    go.wait();
    let streaming = stream_until_enough(&acks);
    // How the reports were committed so far (the server counts transactions and what they held).
    let (status, metrics) = server.get("/metrics", None);
    assert_eq!(status, 200, "{metrics}");
    server.kill();
    let mut acknowledged = Vec::new();
    let mut other_statuses = Vec::new();
    for thread in threads {
        let seen = thread.join().unwrap();
        acknowledged.extend(seen.run_ids);
        other_statuses.extend(seen.other_statuses);
    }
    let streamed_for = streaming.elapsed();
    assert!(
        other_statuses.is_empty(),
        "every answer before the kill was a 202: {:?}",
        &other_statuses[..other_statuses.len().min(5)]
    );
    assert!(
        acknowledged.len() > 100,
        "the test really streamed: {} runs acknowledged",
        acknowledged.len()
    );
    let distinct: HashSet<&String> = acknowledged.iter().collect();
    assert_eq!(distinct.len(), acknowledged.len(), "each run id once");

    // Back up on the same database: every acknowledged run is there.
    let restarted = crashable.restart();
    let pool = crashable.pool();
    let mut conn = pool.get().unwrap();
    let stored: HashSet<String> = runs::table
        .select(runs::public_id)
        .load::<String>(&mut *conn)
        .unwrap()
        .into_iter()
        .collect();
    let transactions = writing_transactions(&mut conn);
    drop(conn);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged runs were lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    // And the API answers for them: the last ones each thread was told of (the ones at risk when
    // the server died), and a spread of the others.
    let agent = agent(Duration::from_secs(10));
    let step = (acknowledged.len() / 200).max(1);
    let sample: HashSet<&String> = acknowledged
        .iter()
        .rev()
        .take(4 * ENQUEUERS)
        .chain(acknowledged.iter().step_by(step))
        .collect();
    for id in &sample {
        let mut reply = agent
            .get(format!("http://{}/api/agent-runs/{id}", restarted.address))
            .header("X-Granite-API-Key", &key)
            .call()
            .unwrap();
        let body = reply.body_mut().read_to_string().unwrap();
        assert_eq!(reply.status(), 200, "{id}: {body}");
        let run: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(run["runId"], id.as_str());
        assert_eq!(run["status"], "queued");
    }
    eprintln!(
        "{backend:?}: {} runs acknowledged in {streamed_for:?} by {ENQUEUERS} threads before the kill, \
         all {} stored ({} stored in all{}), {} read back through the API",
        acknowledged.len(),
        acknowledged.len(),
        stored.len(),
        transactions.map_or(String::new(), |t| format!(", in {t} transactions")),
        sample.len()
    );
    if let Some(transactions) = transactions {
        assert!(
            transactions < stored.len(),
            "concurrent enqueues shared transactions: {} runs in {transactions}",
            stored.len()
        );
    }
    let (transactions, enqueues) = group_commits(&metrics, "intake");
    assert!(
        transactions > 0 && enqueues > transactions,
        "the server counted enqueues sharing transactions: {enqueues} in {transactions}"
    );
}

const MACHINES: usize = 8;

/// Lets threads go on together: each waits until all have arrived, or 200 ms (a thread that stopped
/// does not hold up the others for long).
struct Gate {
    arrived: std::sync::Mutex<(u64, usize)>,
    all_in: std::sync::Condvar,
    parties: usize,
}

impl Gate {
    fn new(parties: usize) -> Self {
        Self {
            arrived: std::sync::Mutex::new((0, 0)),
            all_in: std::sync::Condvar::new(),
            parties,
        }
    }

    fn pass(&self) {
        let mut state = self.arrived.lock().unwrap();
        let generation = state.0;
        state.1 += 1;
        if state.1 == self.parties {
            *state = (generation + 1, 0);
            self.all_in.notify_all();
            return;
        }
        let (mut state, waited) = self
            .all_in
            .wait_timeout_while(state, Duration::from_millis(200), |s| s.0 == generation)
            .unwrap();
        if waited.timed_out() {
            state.1 -= 1;
        }
    }
}

/// Machines report runs done (`complete`, 200) as fast as they can until the server is killed: every
/// outcome acknowledged is stored after a restart, and on SQLite reports that arrived together shared
/// a transaction (group commit).
fn every_acknowledged_completion_survives_a_kill(backend: Backend) {
    let (crashable, mut server) = Crashable::new(backend);
    let key = crashable.api_key();
    let address = server.address;
    let client = agent(Duration::from_secs(10));
    let credentials: Vec<String> = (0..MACHINES)
        .map(|m| {
            let token = crashable.enrollment_token();
            let mut reply = client
                .post(format!("http://{address}/api/v1/driver/enroll"))
                .send_json(json!({
                    "token": token, "name": format!("reporter-{m}"), "os_version": "Ubuntu 24.04",
                    "capabilities": [], "driver_version": "1.0.0",
                }))
                .unwrap();
            let body = reply.body_mut().read_to_string().unwrap();
            assert_eq!(reply.status(), 201, "{body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            json["credential"].as_str().unwrap().to_owned()
        })
        .collect();
    // More runs than the machines can finish before the kill.
    const QUEUED: usize = 3000;
    std::thread::scope(|scope| {
        for t in 0..ENQUEUERS {
            let (client, key) = (&client, &key);
            scope.spawn(move || {
                for n in (t..QUEUED).step_by(ENQUEUERS) {
                    let reply = client
                        .post(format!("http://{address}/api/default/report"))
                        .header("X-Granite-API-Key", key)
                        .send_json(json!({ "n": n }))
                        .unwrap();
                    assert_eq!(reply.status(), 202);
                }
            });
        }
    });

    // Each machine claims a run and reports it completed, with its number as the result, until
    // the server dies under it. The reports of a round go out together, as a fleet's do when a
    // burst of short runs ends.
    let go = Arc::new(Barrier::new(MACHINES + 1));
    let gate = Arc::new(Gate::new(MACHINES));
    let acks = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = credentials
        .into_iter()
        .map(|credential| {
            let (go, gate, acks) = (go.clone(), gate.clone(), acks.clone());
            std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(10));
                let bearer = format!("Bearer {credential}");
                let mut seen = Acknowledged::default();
                go.wait();
                loop {
                    let Ok(mut claimed) = agent
                        .post(format!("http://{address}/api/v1/driver/jobs/claim"))
                        .header("Authorization", &bearer)
                        .send_json(json!({ "wait_seconds": 0 }))
                    else {
                        break;
                    };
                    let Ok(body) = claimed.body_mut().read_to_string() else {
                        break;
                    };
                    if claimed.status() != 200 {
                        seen.other_statuses.push((claimed.status().as_u16(), body));
                        break;
                    }
                    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let run_id = run["runId"].as_str().unwrap().to_owned();
                    gate.pass();
                    let Ok(mut reported) = agent
                        .post(format!("http://{address}/api/v1/driver/jobs/{run_id}/complete"))
                        .header("Authorization", &bearer)
                        .send_json(json!({ "status": "completed", "result": { "n": run["parameters"]["n"] } }))
                    else {
                        break;
                    };
                    let Ok(body) = reported.body_mut().read_to_string() else {
                        break;
                    };
                    if reported.status() == 200 {
                        seen.run_ids.push(run_id);
                        acks.fetch_add(1, Ordering::Relaxed);
                    } else {
                        seen.other_statuses.push((reported.status().as_u16(), body));
                    }
                }
                seen
            })
        })
        .collect();
    go.wait();
    let streaming = stream_until_enough(&acks);
    // How the reports were committed so far (the server counts transactions and what they held).
    let (status, metrics) = server.get("/metrics", None);
    assert_eq!(status, 200, "{metrics}");
    server.kill();
    let mut acknowledged = Vec::new();
    let mut other_statuses = Vec::new();
    for thread in threads {
        let seen = thread.join().unwrap();
        acknowledged.extend(seen.run_ids);
        other_statuses.extend(seen.other_statuses);
    }
    let streamed_for = streaming.elapsed();
    assert!(
        other_statuses.is_empty(),
        "every answer before the kill was a 200: {:?}",
        &other_statuses[..other_statuses.len().min(5)]
    );
    assert!(
        acknowledged.len() > 100 && acknowledged.len() < QUEUED,
        "the test really streamed, and ran out of neither runs nor time: {} reports acknowledged",
        acknowledged.len()
    );

    // Back up on the same database: every acknowledged outcome is stored, result and all.
    let _restarted = crashable.restart();
    let pool = crashable.pool();
    let mut conn = pool.get().unwrap();
    let completed: Vec<(String, String, Option<String>)> = runs::table
        .filter(runs::status.eq("completed"))
        .select((runs::public_id, runs::parameters, runs::result))
        .load(&mut *conn)
        .unwrap();
    drop(conn);
    let stored: HashSet<&String> = completed.iter().map(|(id, _, _)| id).collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged reports were lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    for (id, parameters, result) in &completed {
        let n = serde_json::from_str::<serde_json::Value>(parameters).unwrap()["n"].clone();
        let result: serde_json::Value = serde_json::from_str(result.as_deref().unwrap()).unwrap();
        assert_eq!(
            result,
            json!({ "n": n }),
            "{id}: each run stored its own outcome"
        );
    }
    let (transactions, reports) = group_commits(&metrics, "reports");
    eprintln!(
        "{backend:?}: {} reports acknowledged in {streamed_for:?} by {MACHINES} machines before the kill, \
         all stored ({} completed in all); {reports} reports in {transactions} transactions by then",
        acknowledged.len(),
        completed.len(),
    );
    match backend {
        Backend::Sqlite => assert!(
            transactions > 0 && reports > transactions,
            "reports that arrived together shared transactions: {reports} in {transactions}"
        ),
        // Concurrent commits share WAL flushes there; each report is its own transaction.
        Backend::Postgres => assert_eq!(transactions, 0, "no report batches on PostgreSQL"),
    }
}

/// API key usage is tallied in memory and written every [`FLUSH_EVERY`]: a crash loses at most the
/// calls of the last interval. Calls made longer ago than that are all counted after a `kill -9`.
fn usage_older_than_a_flush_survives_a_kill(backend: Backend) {
    use granite::api_keys::usage::FLUSH_EVERY;
    use granite::db::schema::api_key_usage;
    let (crashable, mut server) = Crashable::new(backend);
    let key = crashable.api_key();
    const CALLS: i64 = 150;
    for _ in 0..CALLS {
        let (status, body) = server.get("/api/me", Some(&key));
        assert_eq!(status, 200, "{body}");
    }
    std::thread::sleep(FLUSH_EVERY + Duration::from_millis(700));
    server.kill();
    let pool = crashable.pool();
    let counted: Vec<i64> = api_key_usage::table
        .select(api_key_usage::success_count)
        .load(&mut *pool.get().unwrap())
        .unwrap();
    assert_eq!(
        counted.iter().sum::<i64>(),
        CALLS,
        "every call older than one flush interval ({FLUSH_EVERY:?}) was counted"
    );
}

const OFFLINE_AFTER: Duration = Duration::from_secs(2);

fn a_quiet_machine_goes_offline_on_another_replica(backend: Backend) {
    let db = TestDb::new(backend);
    let spawn = || {
        TestApp::spawn_with(&db, |s| {
            s.admin_email = Some(ADMIN_EMAIL.into());
            s.admin_password = Some(ADMIN_PASSWORD.into());
            s.offline_after_secs = OFFLINE_AFTER.as_secs();
        })
    };
    let a = spawn();
    // On PostgreSQL B is a second replica on the same database. SQLite has one server, so there A
    // is B as well: what is proven is that the batched contacts reach every reader of the database.
    let second = (backend == Backend::Postgres).then(spawn);
    let b = second.as_ref().unwrap_or(&a);
    let mut admin_a = a.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin_a.create_api_key("watcher");
    let (_, token) = admin_a.create_enrollment_token("quiet");
    let (machine_id, credential) = a.enroll(&token, "vm-quiet");
    let mut admin_b = b.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    // (active drivers on B's /api/queue, the machine's status in B's machine list)
    let mut seen_on_b = || {
        let queue = b.api(Some(&key)).get("/api/queue");
        assert_eq!(queue.status, 200, "{}", queue.body);
        (
            queue.json()["active_drivers"].as_i64().unwrap(),
            admin_b.machine_list("").machine_status(machine_id),
        )
    };

    // Heartbeats every 300 ms for longer than offline_after: only the batched contact writes can
    // keep it Online on B.
    let written_seen_at = || -> chrono::NaiveDateTime {
        machines::table
            .find(machine_id)
            .select(machines::last_seen_at)
            .first::<Option<chrono::NaiveDateTime>>(&mut *a.pool.get().unwrap())
            .unwrap()
            .expect("seen at enrollment")
    };
    let started = Instant::now();
    let mut checked = 0;
    let mut answered_before_written = 0;
    let mut last_sent;
    let mut last_answered;
    loop {
        let sent_at = chrono::Utc::now().naive_utc();
        last_sent = Instant::now();
        let reply = a.heartbeat(&credential);
        last_answered = Instant::now();
        assert_eq!(reply.status, 200, "{}", reply.body);
        // Written in a batch, not by the heartbeat itself: often not in the database yet.
        if written_seen_at() < sent_at {
            answered_before_written += 1;
        }
        if started.elapsed() >= Duration::from_secs(1) {
            let seen = seen_on_b();
            assert_eq!(
                seen,
                (1, Some("online".to_owned())),
                "{:?} into the heartbeats, B shows the machine",
                started.elapsed()
            );
            checked += 1;
        }
        if started.elapsed() >= Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300).saturating_sub(last_sent.elapsed()));
    }
    assert!(checked >= 5, "B was checked {checked} times");
    assert!(
        answered_before_written > 0,
        "some heartbeats were answered before their contact was written (a batch writes it)"
    );

    // Quiet: Offline on B within offline_after + 2 s, and not before offline_after - 0.5 s.
    let offline_at = loop {
        let asked = Instant::now();
        let seen = seen_on_b();
        let answered = Instant::now();
        match seen {
            // The two reads are a moment apart: across the boundary the list may already say Offline.
            (1, Some(status)) if status == "online" || status == "offline" => {}
            (0, Some(status)) if status == "offline" => {
                assert!(
                    answered - last_sent >= OFFLINE_AFTER - Duration::from_millis(500),
                    "Offline on B only {:?} after the last heartbeat",
                    answered - last_sent
                );
                break asked - last_answered;
            }
            other => panic!(
                "B shows a half-changed machine {:?} after the last heartbeat: {other:?}",
                answered - last_answered
            ),
        }
        assert!(
            asked - last_answered <= OFFLINE_AFTER + Duration::from_secs(2),
            "still Online on B {:?} after the last heartbeat",
            asked - last_answered
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "{backend:?}: Online on B through {checked} checks over {:?} of heartbeats \
         ({answered_before_written} answered before their contact was written); \
         Offline {offline_at:?} after the last (offline_after {OFFLINE_AFTER:?})",
        last_answered - started
    );
}

/// Pauses or resumes a machine behind the servers' backs: on SQLite through a connection of its own
/// (without the server's triggers), on PostgreSQL with triggers off for the session.
fn pause_unannounced(db: &TestDb, machine_id: i64, paused: bool) {
    let paused_at = paused.then(|| chrono::Utc::now().naive_utc());
    let mut conn = match &db.url {
        DatabaseUrl::Sqlite(path) => {
            let mut sqlite = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
            // The servers' background writers may hold the lock for a moment: wait for it.
            diesel::connection::SimpleConnection::batch_execute(
                &mut sqlite,
                "PRAGMA busy_timeout = 5000",
            )
            .unwrap();
            DbConnection::Sqlite(sqlite)
        }
        DatabaseUrl::Postgres(url) => {
            let mut pg = PgConnection::establish(url).unwrap();
            diesel::sql_query("SET session_replication_role = replica")
                .execute(&mut pg)
                .unwrap();
            DbConnection::Postgres(pg)
        }
    };
    diesel::update(machines::table.find(machine_id))
        .set(machines::paused_at.eq(paused_at))
        .execute(&mut conn)
        .unwrap();
}

/// Heartbeats to A until `expected` holds of the answer, failing after [`PROPAGATION`].
fn a_hears(
    a: &TestApp,
    credential: &str,
    running: Option<&str>,
    what: &str,
    expected: impl Fn(&crate::helpers::Reply) -> bool,
) -> Duration {
    let body = match running {
        Some(run) => json!({ "status": "busy", "current_run_id": run }),
        None => json!({ "status": "idle" }),
    };
    let since = Instant::now();
    within(since, PROPAGATION, what, || {
        let reply = a.post_json("/api/v1/driver/heartbeat", &body, Some(credential));
        expected(&reply).then_some(())
    })
    .1
}

fn a_remembered_machine_follows_every_change_on_every_replica(backend: Backend) {
    let db = TestDb::new(backend);
    let a = TestApp::spawn(&db);
    // On PostgreSQL every change below is made through a second replica; SQLite has one server.
    let second = (backend == Backend::Postgres).then(|| TestApp::spawn(&db));
    let b = second.as_ref().unwrap_or(&a);
    let mut admin_a = a.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, key) = admin_a.create_api_key("caller");
    let (_, token) = admin_a.create_enrollment_token("remembered");
    let (machine_id, credential) = a.enroll(&token, "vm-remembered");
    let mut admin_b = b.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let beat = |running: Option<&str>| {
        let body = match running {
            Some(run) => json!({ "status": "busy", "current_run_id": run }),
            None => json!({ "status": "idle" }),
        };
        let reply = a.post_json("/api/v1/driver/heartbeat", &body, Some(&credential));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    };
    for _ in 0..3 {
        assert_eq!(beat(None)["paused"], false);
    }

    // The control: A answers from memory. A pause no server announced goes unheard.
    pause_unannounced(&db, machine_id, true);
    assert_eq!(
        beat(None)["paused"],
        false,
        "A remembers the machine and does not read it again"
    );
    pause_unannounced(&db, machine_id, false);

    // Paused and resumed on B's dashboard: A's answers follow.
    let path = |action: &str| format!("/api-management/machines/{machine_id}/{action}");
    assert_eq!(admin_b.htmx_post(&path("pause"), &[]).status, 200);
    let took = a_hears(
        &a,
        &credential,
        None,
        "A tells the driver it is paused",
        |r| r.json()["paused"] == true,
    );
    eprintln!("paused on B: heard through A {took:?} later");
    assert_eq!(admin_b.htmx_post(&path("resume"), &[]).status, 200);
    a_hears(
        &a,
        &credential,
        None,
        "A tells the driver it is resumed",
        |r| r.json()["paused"] == false,
    );

    // A run claimed through B: reporting it to A is the steady state again.
    let id = b.start_run(&key, "default/remembered", &json!({})).run_id();
    assert_eq!(b.claim(&credential, 0).json()["runId"], id.as_str());
    for _ in 0..3 {
        assert_eq!(beat(Some(&id))["cancel"], json!([]));
    }
    // Cancelled through B's API: A tells the driver to stop.
    let cancelled = b.post_json_with(
        &format!("/api/agent-runs/{id}/cancel"),
        &json!({}),
        &[("X-Granite-API-Key", &key)],
    );
    assert_eq!(
        cancelled.json()["status"],
        "cancelled",
        "{}",
        cancelled.body
    );
    let took = a_hears(&a, &credential, Some(&id), "A cancels the run", |r| {
        r.json()["cancel"] == json!([id])
    });
    eprintln!("cancelled on B: heard through A {took:?} later");
    for _ in 0..3 {
        assert_eq!(beat(None)["cancel"], json!([]));
    }

    // Removed on B's dashboard: A refuses the credential.
    assert_eq!(admin_b.htmx_post(&path("remove"), &[]).status, 200);
    a_hears(
        &a,
        &credential,
        None,
        "A refuses the removed machine",
        |r| r.status != 200 && r.api_error() == (401, "machine_removed".into()),
    );
}

/// The censuses `/metrics` says this server has taken.
fn censuses_taken(app: &TestApp) -> u64 {
    let metrics = app.client().get("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("granite_fleet_censuses_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no census count: {}", metrics.body))
}

/// 10,000 machines, one of them paused and resumed without pause while eight callers read
/// `/api/queue` (whose Active Drivers come from the census): every change makes the next census due,
/// but callers that queue behind one census share the next instead of each counting the fleet again.
/// The callers read only while changes are ahead of their reads, so whatever the machine's speed
/// every read finds a census due, and they arrive together, as callers do after a change.
fn readers_share_the_fleet_census_while_machines_change(backend: Backend) {
    const READERS: usize = 8;
    let db = TestDb::new(backend);
    let app = TestApp::spawn(&db);
    let mut admin = app.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (key_id, key) = admin.create_api_key("watcher");
    assert_eq!(admin.set_rate_limit(key_id, "0").status, 303, "unlimited");
    let (_, token) = admin.create_enrollment_token("seed");
    let (machine_id, _) = app.enroll(&token, "changing");
    let seed = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
             INSERT INTO machines (organization_id, name, capabilities, credential_hash, enrolled_at, last_seen_at) \
             SELECT organization_id, 'vm-' || i, '[\"c' || (i % 50) || '\"]', 'seed-' || i, enrolled_at, last_seen_at \
             FROM n, machines WHERE machines.name = 'changing'"
        }
        Backend::Postgres => {
            "INSERT INTO machines (organization_id, name, capabilities, credential_hash, enrolled_at, last_seen_at) \
             SELECT organization_id, 'vm-' || i, '[\"c' || (i % 50) || '\"]', 'seed-' || i, enrolled_at, last_seen_at \
             FROM generate_series(1, 10000) AS i, machines WHERE machines.name = 'changing'"
        }
    };
    diesel::sql_query(seed)
        .execute(&mut *app.pool.get().unwrap())
        .unwrap();

    let before = censuses_taken(&app);
    let reads = AtomicUsize::new(0);
    let changed = AtomicUsize::new(0);
    let until = Instant::now() + Duration::from_secs(2);
    let changes = std::thread::scope(|scope| {
        for _ in 0..READERS {
            scope.spawn(|| {
                let mut client = app.client();
                while Instant::now() < until {
                    if reads.load(Ordering::SeqCst) >= changed.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let queue =
                        client.get_with("/api/queue", &[("X-Granite-API-Key", key.as_str())]);
                    assert_eq!(queue.status, 200, "{}", queue.body);
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // On PostgreSQL a connection of its own that does not wait for each commit to reach the disk
        // (the triggers count the changes); SQLite's are told to the server as each pooled connection
        // comes back to the pool, so one per change.
        let mut own = match &db.url {
            DatabaseUrl::Postgres(url) => {
                let mut pg = PgConnection::establish(url).unwrap();
                diesel::sql_query("SET synchronous_commit = off")
                    .execute(&mut pg)
                    .unwrap();
                Some(DbConnection::Postgres(pg))
            }
            DatabaseUrl::Sqlite(_) => None,
        };
        let mut changes = 0;
        while Instant::now() < until {
            let paused_at = (changes % 2 == 0).then(|| chrono::Utc::now().naive_utc());
            let change = diesel::update(machines::table.find(machine_id))
                .set(machines::paused_at.eq(paused_at));
            match own.as_mut() {
                Some(conn) => change.execute(conn),
                None => change.execute(&mut *app.pool.get().unwrap()),
            }
            .unwrap();
            changes += 1;
            changed.fetch_add(1, Ordering::SeqCst);
        }
        changes
    });
    let taken = censuses_taken(&app) - before;
    let reads = reads.into_inner() as u64;
    eprintln!("{reads} reads, {changes} changes, {taken} censuses");
    // Every read came after a change it had not seen, so a census per read would be due if
    // readers did not share them.
    assert!(
        reads > 4 * READERS as u64 && changes + READERS > reads as usize,
        "enough reads to tell, none without a change before it"
    );
    assert!(taken > 1, "changes make censuses due");
    assert!(
        taken * 3 < reads * 2,
        "readers share censuses: {taken} censuses for {reads} reads"
    );
}
