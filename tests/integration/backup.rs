//! `granite backup`, run as the real binary the way an operator types it: a copy of a live SQLite
//! database taken while clients write to it serves as the database; PostgreSQL is sent to pg_dump.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::Text;
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Client, TestDb};
use crate::process::{Server, WorkDir, agent};

/// `granite backup PATH` in the work folder; returns (success, everything it printed).
fn run_backup(work: &WorkDir, url: &str, path: &str) -> (bool, String) {
    let output = work.granite(url).args(["backup", path]).output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// One run the load queued: its id, and when its request was sent and answered.
struct Queued {
    run_id: String,
    sent: Instant,
    answered: Instant,
}

/// Queues runs through the public API, one after another, until told to stop.
fn start_load(
    address: SocketAddr,
    key: String,
    stop: Arc<AtomicBool>,
    queued: Arc<Mutex<Vec<Queued>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let agent = agent(Duration::from_secs(30));
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let sent = Instant::now();
            let mut reply = agent
                .post(format!("http://{address}/api/default/backup-load"))
                .header("X-Granite-API-Key", &key)
                .send_json(json!({ "n": n }))
                .unwrap();
            let body = reply.body_mut().read_to_string().unwrap();
            assert_eq!(reply.status().as_u16(), 202, "{body}");
            let run_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["runId"]
                .as_str()
                .unwrap()
                .to_owned();
            queued.lock().unwrap().push(Queued {
                run_id,
                sent,
                answered: Instant::now(),
            });
        }
    })
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sqlite_backup_taken_under_load_serves_as_the_database() {
    let work = WorkDir::new();
    let live = Server::start(&work, "sqlite://granite.db", "live");
    let key = {
        // A real key, made through the domain on the server's own database.
        let pool = granite::db::Pool::open(
            &granite::db::DatabaseUrl::Sqlite(work.0.join("granite.db")),
            1,
        )
        .unwrap();
        let actor = granite::audit::Actor {
            user_id: 1,
            email: ADMIN_EMAIL.into(),
            role: granite::users::Role::Admin,
            source_ip: None,
        };
        let name = granite::api_keys::KeyName::parse("backup load").unwrap();
        let (_, secret) =
            granite::api_keys::create(&mut pool.get().unwrap(), 1, &name, &actor).unwrap();
        secret.expose().to_owned()
    };

    let stop = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(Mutex::new(Vec::new()));
    let load = start_load(live.address, key.clone(), stop.clone(), queued.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while queued.lock().unwrap().len() < 50 {
        assert!(Instant::now() < deadline, "the load did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let backup_started = Instant::now();
    let (ok, output) = run_backup(&work, "sqlite://granite.db", "backup.db");
    let backup_ended = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the load ran without errors");
    drop(live);
    assert!(ok, "{output}");
    // Where the command ran from, as the process saw it (symbolic links resolved).
    let backup = work.0.canonicalize().unwrap().join("backup.db");
    assert!(
        output.contains(&format!(
            "Backed up sqlite://granite.db to {}",
            backup.display()
        )),
        "the relative path is resolved from where the command ran: {output}"
    );
    let queued = std::mem::take(&mut *queued.lock().unwrap());
    assert!(
        queued
            .iter()
            .any(|q| q.sent < backup_ended && q.answered > backup_started),
        "no run was queued while the backup ran, so it was not taken under load"
    );

    assert_eq!(mode_of(&backup), 0o600, "readable by its owner only");
    let mut copy =
        diesel::SqliteConnection::establish(&backup.to_string_lossy()).expect("the copy opens");
    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = Text)]
        integrity_check: String,
    }
    let check: Check = diesel::sql_query("PRAGMA integrity_check")
        .get_result(&mut copy)
        .unwrap();
    assert_eq!(check.integrity_check, "ok");
    drop(copy);

    // A second backup to the same path is refused and leaves the first one as it was.
    let before = std::fs::read(&backup).unwrap();
    let (ok, output) = run_backup(&work, "sqlite://granite.db", "backup.db");
    assert!(!ok, "{output}");
    assert!(output.contains("backup.db exists already"), "{output}");
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        before,
        "the file is unchanged"
    );
    assert_eq!(mode_of(&backup), 0o600);

    // The copy is a database Granite serves: the admin signs in, the key works, and the runs it holds
    // are exactly the ones queued before some instant during the backup.
    let restored = Server::start(&work, "sqlite://backup.db", "restored");
    let mut admin = Client::new(restored.address);
    assert_eq!(admin.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).status, 303);
    assert_eq!(admin.get("/api-management").status, 200);
    let (status, me) = restored.get("/api/me", Some(&key));
    assert_eq!(status, 200, "{me}");
    let present: Vec<bool> = queued
        .iter()
        .map(|q| {
            let (status, body) = restored.get(&format!("/api/agent-runs/{}", q.run_id), Some(&key));
            match status {
                200 => {
                    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(run["status"], "queued", "{run}");
                    assert_eq!(run["endpoint"], "backup-load", "{run}");
                    true
                }
                404 => false,
                other => panic!("GET of a run answered {other}: {body}"),
            }
        })
        .collect();
    let kept = present.iter().take_while(|p| **p).count();
    assert!(
        present[kept..].iter().all(|p| !p),
        "the backup holds the runs queued up to one moment and none after it"
    );
    for (q, present) in queued.iter().zip(&present) {
        if q.answered < backup_started {
            assert!(present, "a run queued before the backup began is in it");
        }
        if q.sent > backup_ended {
            assert!(!present, "a run queued after the backup ended is not in it");
        }
    }
    let (status, body) = restored.get("/api/queue", Some(&key));
    assert_eq!(status, 200, "{body}");
    let queue: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(queue["jobs_queued"], kept as i64, "{queue}");
}

#[test]
fn postgres_backup_points_to_pg_dump_without_the_password() {
    let db = TestDb::new(Backend::Postgres);
    let password = "pg-secret-do-not-print";
    // The test server trusts local connections; the password only has to be in the URL.
    let url = match db.url_text.split_once('@') {
        Some((user, rest)) if !user.split("://").nth(1).unwrap_or("").contains(':') => {
            format!("{user}:{password}@{rest}")
        }
        _ => panic!(
            "expected a test URL with a user and no password: {}",
            db.url_text
        ),
    };
    let work = WorkDir::new();
    let (ok, output) = run_backup(&work, &url, "x.db");
    assert!(!ok, "{output}");
    assert!(
        output.contains("pg_dump --format=custom --file=x.db"),
        "{output}"
    );
    let redacted = granite::db::DatabaseUrl::parse(&url).unwrap().redacted();
    assert!(
        output.contains(&redacted),
        "the command names the database: {output}"
    );
    assert!(!output.contains(password), "{output}");
    assert!(!work.0.join("x.db").exists(), "nothing was written");
}
