//! `GET /livez`: the process is up (no database). `GET /healthz`: this server can serve — the
//! database takes a read and a write and has the schema this build expects, all within a few seconds.
//! Each check is listed with what it found, so a failing probe says which part failed. One check runs
//! at a time and its answer serves every probe for a second: load balancers polling many times a
//! second (or a flood of requests) cost one check a second, not one each.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};

use crate::db::readiness::{self, Check};
use crate::db::{DbError, Pool};

/// The longest `/healthz` waits for the database.
const WITHIN: Duration = Duration::from_secs(3);
/// How long one answer serves.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The latest answer: when it was made, whether ready, and the listing.
#[derive(Default)]
pub struct LatestCheck(tokio::sync::Mutex<Option<(Instant, bool, String)>>);

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

pub async fn check(pool: web::Data<Pool>, latest: web::Data<LatestCheck>) -> HttpResponse {
    let mut latest = latest.0.lock().await;
    let (ready, body) = match latest.as_ref() {
        Some((at, ready, body)) if at.elapsed() < FRESH_FOR => (*ready, body.clone()),
        _ => {
            let (ready, body) = run_checks(&pool).await;
            *latest = Some((Instant::now(), ready, body.clone()));
            (ready, body)
        }
    };
    drop(latest);
    if ready {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("ok\n{body}"))
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready\n{body}"))
    }
}

/// Runs every check: whether all passed, and one line per check.
async fn run_checks(pool: &Pool) -> (bool, String) {
    let checked = tokio::time::timeout(
        WITHIN,
        pool.run(|conn| Ok::<_, DbError>(readiness::check(conn))),
    )
    .await;
    let checks = match checked {
        Ok(Ok(checks)) => checks,
        Ok(Err(error)) => vec![Check {
            name: "connection",
            outcome: Err(format!("no database connection: {error}")),
        }],
        Err(_) => vec![Check {
            name: "connection",
            outcome: Err(format!("the database did not answer within {WITHIN:?}")),
        }],
    };
    let ready = checks.iter().all(|c| c.outcome.is_ok());
    let body: String = checks
        .iter()
        .map(|c| match &c.outcome {
            Ok(()) => format!("{}: ok\n", c.name),
            Err(problem) => format!("{}: FAILED: {problem}\n", c.name),
        })
        .collect();
    if !ready {
        tracing::warn!(checks = %body.trim_end().replace('\n', "; "), "not ready");
    }
    (ready, body)
}
